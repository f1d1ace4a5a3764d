"""Writing the files a user asked for: all of it or nothing.

Every report and checkpoint the app layer writes goes through `write_json_atomic`, so an
interruption, a full disk or a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from zaya_edge.errors import CheckpointError, ZayaEdgeError, first_line


def check_output(path: str | os.PathLike, force_flag: str | None = None) -> None:
    """Refuse, before any work, an output file that cannot be written.

    `force_flag`: the flag that allows replacing an existing file (None: the command replaces it).
    A device or pipe (/dev/stdout) is written in place, never replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise ZayaEdgeError(f"cannot write {path}: it is a folder")
    if path.exists() and not path.is_file():
        return
    if path.exists() and force_flag:
        raise ZayaEdgeError(f"{path} already exists; pass {force_flag} to replace it")
    parent = path.parent
    if not parent.exists():
        raise ZayaEdgeError(f"cannot write {path}: the folder {parent} does not exist")
    _check_writable_folder(path, parent)


def check_output_folder(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output folder that cannot be made (missing parents are made)."""
    path = Path(path)
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != path:
        _check_writable_folder(path, ancestor)


def _check_writable_folder(path: Path, folder: Path) -> None:
    """Creating and removing a probe file catches a read-only folder even where permissions say yes (root)."""
    if not folder.is_dir():
        raise ZayaEdgeError(f"cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ZayaEdgeError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write temp + fsync + rename beside `path`; the temp file never outlives the call.

    A device or pipe (/dev/stdout, /dev/full) is written in place: renaming over it would replace it.
    """
    path = Path(path)
    in_place = path.exists() and not path.is_file() and not path.is_dir()
    tmp = path if in_place else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            if not in_place:
                os.fsync(f.fileno())
        if not in_place:
            os.replace(tmp, path)
    except OSError as exc:
        raise ZayaEdgeError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if not in_place:
            with contextlib.suppress(OSError):  # under a file or in a missing folder there is none
                tmp.unlink(missing_ok=True)


def check_input(path: str | os.PathLike, flag: str) -> Path:
    """A file a person named with `flag` is read whole: a folder or a device (/dev/zero) is refused first."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ZayaEdgeError(f"cannot read {flag} {path}: not a regular file")
    return path


def read_text_file(path: str | os.PathLike, flag: str) -> str:
    """A UTF-8 text file a person named with `flag`."""
    path = check_input(path, flag)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ZayaEdgeError(f"cannot read {flag} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ZayaEdgeError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


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
        if not self.path.is_file() and not self.path.is_dir():  # /dev/zero would be read forever
            raise CheckpointError(f"cannot read checkpoint {self.path}: not a regular file")
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc}") from None
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:  # ValueError: a 5000-digit number
            raise CheckpointError(f"checkpoint {self.path} is corrupt ({first_line(exc)})") from None

    def save(self, record: dict) -> None:
        write_json_atomic(self.path, record)
