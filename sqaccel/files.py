"""Writing files and folders so that an interruption never leaves half of one.

Every file the toolchain writes goes through ``write_bytes`` (or its text and JSON forms):
the bytes go to a temporary file beside the target, which is renamed over it once complete.
Every output folder is built by ``staged_folder``: a temporary folder beside the target,
renamed into place when the block that fills it ends without an error; an older folder of
that name is moved aside first and deleted only once the new one is in place. Both honour
the umask (``tempfile`` would leave files 0600 and folders 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temp_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    return Path(tmp)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """``writer(tmp)`` writes the content to a temporary file, renamed to ``path`` when it
    returns (removed if it raises)."""
    path = Path(path)
    tmp = _new_temp_file(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, *, indent: int = 1, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def write_if_changed(path: str | Path, text: str) -> Path:
    """``write_text`` unless the file already holds ``text`` (its time stamp then stays,
    which keeps incremental builds incremental)."""
    path = Path(path)
    try:
        if path.is_file() and path.read_text() == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    return write_text(path, text)


def new_temp_folder(dest: str | Path) -> Path:
    """An empty folder beside ``dest``, hidden, with the umask's mode."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o777 & ~umask())
    return tmp


def replace_folder(src: Path, dest: Path) -> None:
    """Rename the complete folder ``src`` to ``dest``; an older ``dest`` is moved aside
    first and removed once ``src`` is in place (put back if the rename fails)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "previous")
    try:
        os.replace(src, dest)
    except BaseException:
        if old is not None and not dest.exists():
            os.replace(old / "previous", dest)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """A temporary folder to fill; it becomes ``dest`` when the block ends normally and is
    removed when the block raises (``dest`` is then as it was)."""
    dest = Path(dest)
    tmp = new_temp_folder(dest)
    try:
        yield tmp
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
