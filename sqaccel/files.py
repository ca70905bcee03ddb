"""Writing files and folders so that an interruption never leaves half of one, and no
folder the toolchain did not write is ever replaced.

Every file the toolchain writes goes through ``write_bytes`` (or its text and JSON forms):
the bytes go to a temporary file beside the target, which is renamed over it once complete.
Every output folder is built by ``staged_folder``: a temporary folder beside the target,
renamed into place when the block that fills it ends without an error; an older folder of
that name is moved aside first and deleted only once the new one is in place. Both honour
the umask (``tempfile`` would leave files 0600 and folders 0700).

**Ownership.** A folder the toolchain writes carries a marker, ``.sqaccel-output.json``: the
tool's format and version, the kind of output and the entries it wrote. A folder is replaced
only when it is absent, empty, or marked as an output of the same kind holding nothing but
what the toolchain put there; anything else stops the command with an error that names the
folder and says how to go on (another path, or ``--force``). Folders the toolchain writes
into without replacing (a demo run, a synthesis root, a log folder) are *containers*: they
must be absent, empty or marked as that kind of container.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sqaccel.errors import SqaccelError

MARKER = ".sqaccel-output.json"
MARKER_FORMAT = "sqaccel-output"
MARKER_VERSION = 1


class OutputError(SqaccelError):
    """An output path the toolchain must not write: a folder it did not write, a file where
    a folder goes, a path inside an input."""


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


# -- ownership -------------------------------------------------------------------------


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder the toolchain wrote, or None (no marker, or not one of ours)."""
    try:
        m = json.loads((Path(folder) / MARKER).read_bytes())
    except (OSError, ValueError):
        return None
    ok = (isinstance(m, dict) and m.get("format") == MARKER_FORMAT
          and m.get("version") == MARKER_VERSION and isinstance(m.get("kind"), str))
    return m if ok else None


def write_marker(folder: Path, kind: str, entries: list[str] | None) -> None:
    """Mark ``folder`` as a ``kind`` output holding ``entries`` (None: a container)."""
    # No time stamp: the same output is the same bytes.
    marker = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": kind,
              "entries": entries}
    write_text(Path(folder) / MARKER, json.dumps(marker, indent=1) + "\n")


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir())
    except OSError as e:
        raise OutputError(f"{folder}: cannot be read ({e.strerror})") from None


def _refuse(folder: Path, why: str) -> None:
    raise OutputError(f"{folder}: {why}; not writing there: choose another output path, or "
                      "add --force to replace it")


def check_replaceable(dest: str | Path, kind: str, force: bool = False) -> None:
    """Raise OutputError unless ``dest`` may be replaced by a ``kind`` output (see the
    module docstring); ``force`` allows any folder (never a file)."""
    dest = Path(dest)
    if dest.is_symlink() and not force:
        _refuse(dest, "a symbolic link")
    if not dest.exists():
        check_writable(dest)
        return
    if not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder; choose another output path")
    names = _entries(dest)
    if not names or force:
        return
    marker = read_marker(dest)
    if marker is None:
        _refuse(dest, f"a folder sqaccel did not write (it holds {names[0]!r}"
                      + (f" and {len(names) - 1} more" if len(names) > 1 else "") + ")")
    if marker["kind"] != kind:
        _refuse(dest, f"holds sqaccel's {marker['kind']} output, not {kind}")
    own = set(marker.get("entries") or []) | {MARKER}
    extra = [n for n in names if n not in own]
    if extra:
        _refuse(dest, f"holds {extra[0]!r}, which sqaccel did not write there")


def check_writable(dest: str | Path) -> None:
    """Refuse a path that cannot be created: a probe folder is made, and removed, in its
    nearest existing ancestor (so that a refusal comes before any work, and leaves
    nothing)."""
    dest = Path(dest).absolute()
    up = dest.parent
    while not up.exists():
        up = up.parent
    if not up.is_dir():
        raise OutputError(f"{dest}: {up} is not a folder; choose another output path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sqaccel-probe-", dir=up))
    except OSError as e:
        raise OutputError(f"{dest}: cannot be written in {up} ({e.strerror})") from None


def check_container(dest: str | Path, kind: str, force: bool = False,
                    create: bool = True) -> Path:
    """A folder the toolchain writes into (creating it if absent): it must be empty or a
    ``kind`` container; it is marked as one (``create`` False: only checked). Returns the
    folder."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder; choose another path")
    if dest.is_dir() and _entries(dest) and not force:
        marker = read_marker(dest)
        if marker is None:
            _refuse(dest, "a folder sqaccel did not write")
        if marker["kind"] != kind:
            _refuse(dest, f"holds sqaccel's {marker['kind']} output, not a {kind} folder")
        return dest
    if not create:
        if not dest.exists():
            check_writable(dest)
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{dest}: cannot be created ({e.strerror})") from None
    if read_marker(dest) is None:
        write_marker(dest, kind, None)
    return dest


def check_outside(out: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output path that is an input path or lies inside one (``inputs``: what
    each is, e.g. "--images", -> its path)."""
    o = Path(out).resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        i = Path(path).resolve()
        if o == i or i in o.parents:
            raise OutputError(f"{out}: the output would be inside the input {path} ({what}); "
                              "choose an output path outside it")


def remove_output(dest: str | Path, kind: str) -> None:
    """Delete a folder only if it is a ``kind`` output the toolchain wrote."""
    dest = Path(dest)
    marker = read_marker(dest) if dest.is_dir() and not dest.is_symlink() else None
    if marker is not None and marker["kind"] == kind:
        shutil.rmtree(dest, ignore_errors=True)


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold ``path`` (a build folder, a cache entry) for this process alone until the block
    ends: processes that share a build or cache folder (a second command, parallel test
    workers) wait their turn instead of building into the same files. The lock is an
    ``flock`` on a hidden file beside ``path``, released when the process ends."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    except OSError as e:
        raise OutputError(f"{lock}: cannot be created ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def staged_folder(dest: str | Path, kind: str, force: bool = False) -> Iterator[Path]:
    """A temporary folder to fill; it becomes ``dest``, marked as a ``kind`` output, when
    the block ends normally, and is removed when the block raises (``dest`` is then as it
    was). ``dest`` is checked first (``check_replaceable``)."""
    dest = Path(dest)
    check_replaceable(dest, kind, force)
    try:
        tmp = new_temp_folder(dest)
    except OSError as e:
        raise OutputError(f"{dest}: cannot be written ({e.strerror})") from None
    try:
        yield tmp
        write_marker(tmp, kind, _entries(tmp))
        check_replaceable(dest, kind, force)  # nothing may have appeared meanwhile
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
