"""The exceptions a user (or an embedding app) can get: one base type, a few kinds to tell apart.

The CLI prints any of these as a single line (no traceback unless --debug); anything else is a
bug. Messages speak of the library's own arguments, never of CLI flags: the CLI adds those.

    ZayaEdgeError
      ├─ ArtifactError      an artifact folder is missing, corrupt, tampered with or inconsistent
      ├─ CheckpointError    a checkpoint cannot be used: a source model (not ZAYA, unreadable, unsafe)
      │                     or a saved Markovian RSA run (corrupt, another problem or settings)
      ├─ RequestError       a request's arguments are invalid (prompt, sampling, strategy settings)
      └─ ContextFullError   a sequence does not fit the artifact's context (or the memory budget)
"""


class ZayaEdgeError(Exception):
    """A problem with the user's input, files or options, explained in one line."""


class ArtifactError(ZayaEdgeError):
    """An artifact folder cannot be used as it is."""


class CheckpointError(ZayaEdgeError):
    """A source checkpoint cannot be exported, or a saved RSA run cannot be resumed."""


class RequestError(ZayaEdgeError, ValueError):
    """An argument of a request or a setting is out of range or malformed."""


class ContextFullError(RequestError):
    """The prompt plus what it may generate does not fit the context length."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one short line (its type when it has none): how a library's
    own error (onnxruntime, json, Ray) is quoted inside one of ours."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
