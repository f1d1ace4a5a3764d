"""Writing the files a user asked for: all of it or nothing.

Every report and checkpoint the app layer writes goes through `write_json_atomic`, so an
interruption, a full disk or a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zaya_edge.errors import CheckpointError, ZayaEdgeError


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write temp + fsync + rename beside `path`; the temp file never outlives the call."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ZayaEdgeError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


class JsonCheckpoint:
    """A Markovian RSA checkpoint store (runtime.rsa.CheckpointStore) in one JSON file.

    Replaced atomically after every round, so an interrupted solve resumes from its last complete round.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint {self.path} is corrupt ({exc})") from None

    def save(self, record: dict) -> None:
        write_json_atomic(self.path, record)
