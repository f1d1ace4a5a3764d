"""Text in and out: `tokenizers` for the vocabulary, jinja2 for the chat template, and a
streaming decoder that never splits a multi-byte character across deltas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as HFTokenizer

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError

# ChatML, the format ZAYA1 is tuned on; the model opens its reasoning with <think> itself.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Tokenizer:
    """tokenizer.json plus its chat template (tokenizer_config.json's, or a chat_template.jinja).

    Takes paths, not a folder: an artifact hands over only the files its manifest lists
    (`from_artifact`); `from_folder` reads a checkpoint or tokenizer folder by the usual names.
    """

    def __init__(self, tokenizer_file: Path, config_file: Path | None = None, template_file: Path | None = None):
        try:
            self._tok = HFTokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises its own exception types for a bad file
            raise ArtifactError(f"{tokenizer_file} cannot be read: {exc}") from None
        config = _read_config(config_file) if config_file is not None else {}
        template = config.get("chat_template")
        if template_file is not None:
            template = _read_text(template_file)
        if isinstance(template, list):  # HF's list-of-named-templates form
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        self.chat_template = template or DEFAULT_CHAT_TEMPLATE
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self._compiled = None

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        path = folder / A.TOKENIZER_FILE
        if not path.exists():
            raise ArtifactError(f"{folder} has no {A.TOKENIZER_FILE}: pass token ids, or export from a folder with a tokenizer")
        optional = [folder / n for n in (A.TOKENIZER_CONFIG_FILE, A.CHAT_TEMPLATE_FILE)]
        return cls(path, *(p if p.exists() else None for p in optional))

    @classmethod
    def from_artifact(cls, artifact: A.Artifact) -> "Tokenizer | None":
        """The artifact's tokenizer, from the files its manifest lists; None when it has none."""
        files = artifact.tokenizer_files
        if files is None:
            return None
        return cls(files[A.TOKENIZER_FILE], files.get(A.TOKENIZER_CONFIG_FILE), files.get(A.CHAT_TEMPLATE_FILE))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if self._compiled is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
            self._compiled = env.from_string(self.chat_template)
        return self._compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt))

    def chat_prompt(self, user_message: str) -> list[int]:
        return self.chat_ids([{"role": "user", "content": user_message}])


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(_read_text(path))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} is not a JSON object")
    return config


def _token_text(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


class StreamDecoder:
    """Incremental detokenization: emit text only once its bytes are complete.

    Decoding a short window (from `prefix` to the end) and diffing it against the window
    without the new tokens keeps each step O(1) in the sequence length; a trailing U+FFFD
    means a character's bytes are still arriving, so nothing is emitted yet.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix : self.read])
        after = self.tok.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (incomplete bytes decode as U+FFFD)."""
        before = self.tok.decode(self.ids[self.prefix : self.read])
        after = self.tok.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]
