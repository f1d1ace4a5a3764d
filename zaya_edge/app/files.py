"""Writing the files a user asked for: all of it or nothing.

Every report and checkpoint the app layer writes goes through `write_json_atomic`, so an
interruption, a full disk or a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zaya_edge.errors import ZayaEdgeError


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
