"""Text in and out: `tokenizers` for the vocabulary, the bounded chat template (chat_template.py),
and a streaming decoder that never splits a multi-byte character across deltas.

A prompt longer than its context can hold is refused before it is tokenized: no token is longer than
the vocabulary's longest entry (counted once), so a text of more than context_length x that many
characters cannot fit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as HFTokenizer

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError, ContextFullError, RequestError, first_line
from zaya_edge.typed_json import json_object

from .chat_template import ChatTemplate

MAX_PROMPT_CHARS = 1 << 22  # ~1M tokens of text: beyond any context, whatever the vocabulary
MAX_CONFIG_BYTES = 16 << 20  # tokenizer_config.json, chat_template.jinja

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

    def __init__(self, tokenizer_file: Path, config_file: Path | None = None, template_file: Path | None = None,
                 context_length: int | None = None):
        self._tok = _load_tokenizer(tokenizer_file)
        config = _read_config(config_file) if config_file is not None else {}
        template = _read_text(template_file) if template_file is not None else _config_template(config, config_file)
        self.chat_template = template or DEFAULT_CHAT_TEMPLATE
        self.bos_token = _token_text(config, "bos_token", config_file)
        self.eos_token = _token_text(config, "eos_token", config_file)
        self.context_length = context_length
        self._compiled: ChatTemplate | None = None

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
        return cls(files[A.TOKENIZER_FILE], files.get(A.TOKENIZER_CONFIG_FILE), files.get(A.CHAT_TEMPLATE_FILE),
                   context_length=artifact.context_length)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    @functools.cached_property
    def longest_token_chars(self) -> int:
        """Characters of the vocabulary's longest entry: no token covers more of a text."""
        return max(map(len, self._tok.get_vocab(with_added_tokens=True)), default=1)

    @property
    def max_prompt_chars(self) -> int:
        """The longest text that might fit the context (MAX_PROMPT_CHARS without a context length)."""
        if self.context_length is None:
            return MAX_PROMPT_CHARS
        return min(MAX_PROMPT_CHARS, self.context_length * self.longest_token_chars)

    def _bound(self) -> str:
        """Why a text over max_prompt_chars cannot be a prompt, as the end of a sentence."""
        if self.max_prompt_chars == MAX_PROMPT_CHARS:
            return f"is more than the {MAX_PROMPT_CHARS} characters a prompt may be"
        return (f"exceeds the context length {self.context_length} however it is tokenized "
                f"(no token is longer than {self.longest_token_chars} characters)")

    def check_fits(self, text: str) -> None:
        """Refuse, before tokenizing it, a text too long for the context whatever its tokens."""
        if len(text) > self.max_prompt_chars:
            raise ContextFullError(f"the prompt ({len(text)} characters) {self._bound()}; shorten it")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        try:
            return self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        except TypeError:  # tokenizers takes only str, and only valid Unicode
            raise RequestError(_not_text(text, "the text to tokenize")) from None

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the template renders it: bounded in time and in size (max_prompt_chars)."""
        if self._compiled is None:
            self._compiled = ChatTemplate(self.chat_template, self.max_prompt_chars, self._bound())
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


def _load_tokenizer(path: Path) -> HFTokenizer:
    try:
        return HFTokenizer.from_file(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # tokenizers raises its own types, and a Rust panic is a BaseException
        raise ArtifactError(f"{path} cannot be read: {first_line(exc)}") from None


def _read_text(path: Path) -> str:
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ArtifactError(f"{path} is {size} bytes, more than the {MAX_CONFIG_BYTES} it can be")
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None


def _read_config(path: Path) -> dict:
    return json_object(_read_text(path), str(path))


def _not_text(value, what: str) -> str | None:
    """Why `value` is not text that can be tokenized (a str without lone surrogates), or None."""
    if not isinstance(value, str):
        return f"{what} must be text, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{what} is not valid Unicode (a lone surrogate at character {exc.start})"
    return None


def _config_text(value, where, name: str) -> str | None:
    problem = None if value is None else _not_text(value, f"{where}: {name}")
    if problem:
        raise ArtifactError(problem)
    return value


def _config_template(config: dict, where) -> str | None:
    """tokenizer_config.json's chat_template: text, or HF's list of named templates (the default one)."""
    template = config.get("chat_template")
    if isinstance(template, list) and template and all(
            isinstance(t, dict) and isinstance(t.get("template"), str) for t in template):
        template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    return _config_text(template, where, "chat_template (text, or a list of named templates)")


def _token_text(config: dict, name: str, where) -> str | None:
    """A special token of tokenizer_config.json: text, or an AddedToken record's content."""
    token = config.get(name)
    if isinstance(token, dict):
        token = token.get("content")
    return _config_text(token, where, f"{name} (text, or an object with text content)")


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
