"""A small byte-level BPE tokenizer with ZAYA's chat tokens, made on the spot.

No real tokenizer can be downloaded here; tests and demos need one whose special tokens sit
where the tiny models expect them (pad 0, bos 2, eos = <|im_end|> 3).
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<|im_end|>", "<|im_start|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Über straße café naïve — ÆØÅ 你好世界 🙂",
    "What is 12 + 30? <think>12 plus 30 is 42.</think> The answer is \\boxed{42}.",
    "Add the numbers, carry the tens, and check the result once more before answering.",
]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def save_tokenizer(folder: str | Path, vocab_size: int = 384) -> None:
    """Write tokenizer.json and tokenizer_config.json (with the ChatML template) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(vocab_size).save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<bos>", "eos_token": "<|im_end|>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
