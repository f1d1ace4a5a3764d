"""The request bodies, as pydantic models: types and ranges checked before anything runs.

Field names are OpenAI's (plus vLLM's top_k / min_p / repetition_penalty / ignore_eos, and the
Markovian RSA fields of Zyphra's proxy); unknown fields are ignored, as OpenAI's clients send many.
Ranges that only the artifact knows (context length, vocabulary) are checked in `prepare`.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

MAX_STOPS = 8
MAX_TOP_LOGPROBS = 20


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class RSAFields(BaseModel):
    """Markovian RSA per request: Zyphra's proxy names (markovian-rsa.md) and our preset."""

    rsa_preset: Optional[str] = None
    rsa_n: Optional[int] = Field(None, ge=1)
    rsa_k: Optional[int] = Field(None, ge=1)
    rsa_t: Optional[int] = Field(None, ge=0)
    short_resp_len: Optional[int] = Field(None, ge=1)
    tail_window_len: Optional[int] = Field(None, ge=1)
    rsa_tail_window: Optional[StrictBool] = None
    rsa_tail_unit: Optional[Literal["tokens", "words"]] = None
    rsa_final_n: Optional[int] = Field(None, ge=0)
    final_temperature: Optional[float] = Field(None, ge=0)

    def rsa_given(self) -> dict:
        return {k: v for k in RSAFields.model_fields if (v := getattr(self, k)) is not None}


class Sampling(BaseModel):
    """The sampling fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    max_tokens: Optional[StrictInt] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[StrictInt] = Field(None, ge=-1)  # -1 or 0: off (vLLM's -1)
    min_p: Optional[float] = Field(None, ge=0, lt=1)
    repetition_penalty: Optional[float] = Field(None, gt=0)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    seed: Optional[StrictInt] = Field(None, ge=0, lt=2**64)
    stop: Union[str, list[str], None] = None
    n: StrictInt = Field(1, ge=1, le=64)
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    ignore_eos: StrictBool = False

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stops)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampling, RSAFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: Optional[StrictInt] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    reasoning_inline: StrictBool = False  # keep <think>…</think> in `content`

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(Sampling):
    prompt: Union[str, list[str], list[StrictInt], list[list[StrictInt]]]
    logprobs: Optional[StrictInt] = Field(None, ge=0, le=5)
    echo: StrictBool = False
    suffix: Optional[str] = None

    @property
    def budget(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions
