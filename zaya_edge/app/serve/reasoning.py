"""The reasoning split: text inside `<think>…</think>` is `reasoning_content`, the rest `content`.

As vLLM's qwen3 reasoning parser does. ZAYA opens its reasoning with `<think>` itself; after the
first `</think>` everything is content. Streamed text may cut a tag anywhere, so a tail that could
still become a tag is held back until the next delta (or the end) decides it.
"""

from __future__ import annotations

THINK_START, THINK_END = "<think>", "</think>"


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that begins `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ReasoningSplitter:
    """push(delta) -> (reasoning, content) deltas; flush() at the end of the stream."""

    def __init__(self):
        self.state = "before"  # before <think> | inside | after </think>
        self.held = ""

    def push(self, text: str) -> tuple[str, str]:
        buf, self.held = self.held + text, ""
        reasoning = content = ""
        while buf and self.state != "after":
            tag = THINK_START if self.state == "before" else THINK_END
            i = buf.find(tag)
            cut = i if i >= 0 else len(buf) - _partial_tag(buf, tag)
            if self.state == "before":
                content += buf[:cut]
            else:
                reasoning += buf[:cut]
            if i < 0:
                self.held = buf[cut:]
                return reasoning, content
            buf = buf[i + len(tag):]
            self.state = "inside" if self.state == "before" else "after"
        return reasoning, content + buf

    def flush(self) -> tuple[str, str]:
        held, self.held = self.held, ""
        return (held, "") if self.state == "inside" else ("", held)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, content) of a whole reply."""
    splitter = ReasoningSplitter()
    r1, c1 = splitter.push(text)
    r2, c2 = splitter.flush()
    return r1 + r2, c1 + c2
