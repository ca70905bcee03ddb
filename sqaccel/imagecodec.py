"""The memory-image files: ``$readmemh`` text, raw binary, ``manifest.json`` and its checks.

The one reader and writer of an images folder's bytes (docs/arithmetic.md section 7,
"Files"). ``read_verified`` checks a folder before any of its words is used: the manifest's
format and version, every file named plainly, present, of the size, word count, digit
count and word width the manifest gives, with its SHA-256, and the hex and binary twin of
each image holding the same words. The toolchain's loader (``sqaccel.sw.images``) and the
RTL preload (``sqaccel.hw.preload``) both read through it, so both refuse a damaged folder
with the same message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from sqaccel.errors import SqaccelError

MANIFEST = "manifest.json"
FORMAT = "sqaccel-images"
VERSION = 2
FILE_FORMATS = ("hex", "bin")
MANIFEST_KEYS = ("config", "input", "steps", "files")
ENTRY_KEYS = ("layer", "image", "format", "words", "word_bits", "lanes", "lane_bits", "sha256")


class ImageError(SqaccelError):
    """A memory image or manifest that is missing, damaged or for another build."""


class NotAnImagesFolder(ImageError):
    """The folder is not there, or holds no manifest: nothing to check."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hex_digits(width: int) -> int:
    return -(-int(width) // 4)


def word_bytes(width: int) -> int:
    return -(-int(width) // 8)


# -- encoding ------------------------------------------------------------------------------


def to_hex(words: Sequence[int], width: int) -> bytes:
    """``$readmemh`` text: one zero-padded lower-case word per line, each line ended."""
    d = hex_digits(width)
    return "".join(f"{w:0{d}x}\n" for w in words).encode("ascii")


def to_bin(words: Sequence[int], width: int) -> bytes:
    """Raw little-endian binary, each word in ``ceil(width / 8)`` bytes."""
    nb = word_bytes(width)
    return b"".join(int(w).to_bytes(nb, "little") for w in words)


def encode(words: Sequence[int], width: int, fmt: str) -> bytes:
    if fmt == "hex":
        return to_hex(words, width)
    if fmt == "bin":
        return to_bin(words, width)
    raise ImageError(f"unknown image format {fmt!r} (formats: {', '.join(FILE_FORMATS)})")


def file_name(stem: str, kind: str, fmt: str) -> str:
    return f"{stem}.{kind}.{fmt}"


def file_stem(index: int, name: str) -> str:
    """``L<gg>_<name>`` of GEMM layer number ``index``, the name made file-safe."""
    return f"L{index:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def file_entry(data: bytes, *, layer: str, image: str, fmt: str, words: int, lanes: int,
               lane_bits: int, **extra) -> dict:
    """The manifest's record of one file (``extra``: shape, bits, method...)."""
    return {"layer": layer, "image": image, "format": fmt, "words": words,
            "word_bits": lanes * lane_bits, "lanes": lanes, "lane_bits": lane_bits,
            **extra, "sha256": sha256(data)}


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")


# -- decoding ------------------------------------------------------------------------------

_HEX_LINE = re.compile(r"[0-9a-fA-F]+")


def parse_hex(data: bytes, width: int, words: int, path: str) -> list[int]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ImageError(f"{path}: not ASCII text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    else:
        raise ImageError(f"{path}: the last line is not terminated (truncated file?)")
    if len(lines) != words:
        raise ImageError(f"{path}: {len(lines)} words, the manifest says {words} (truncated?)")
    d = hex_digits(width)
    out = []
    for i, line in enumerate(lines, 1):
        if not _HEX_LINE.fullmatch(line):
            raise ImageError(f"{path}: line {i} is not a hexadecimal word: {line[:40]!r}")
        if len(line) != d:
            raise ImageError(
                f"{path}: line {i} has {len(line)} digits, a {width}-bit word has {d}"
                + (" (wider than stated)" if len(line) > d else "")
            )
        v = int(line, 16)
        if v >> width:
            raise ImageError(f"{path}: line {i}: word {line} is wider than {width} bits")
        out.append(v)
    return out


def parse_bin(data: bytes, width: int, words: int, path: str) -> list[int]:
    nb = word_bytes(width)
    if len(data) != words * nb:
        raise ImageError(
            f"{path}: {len(data)} bytes, {words} words of {nb} bytes need {words * nb}"
            + (" (truncated)" if len(data) < words * nb else "")
        )
    out = []
    for i in range(words):
        v = int.from_bytes(data[i * nb : (i + 1) * nb], "little")
        if v >> width:
            raise ImageError(f"{path}: word {i} is wider than {width} bits")
        out.append(v)
    return out


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an images folder, its format, version and top-level keys checked."""
    d = Path(directory)
    p = d / MANIFEST
    if not d.is_dir():
        raise NotAnImagesFolder(f"{d}: images folder not found")
    if not p.is_file():
        raise NotAnImagesFolder(f"{p}: not found (not an images folder written by sqaccel "
                                "export)")
    try:
        m = json.loads(p.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageError(f"{p}: not valid JSON ({e})") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot be read ({e.strerror})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ImageError(f"{p}: not an {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ImageError(f"{p}: version {m.get('version')!r}, this toolchain reads {VERSION}")
    for key in MANIFEST_KEYS:
        if key not in m:
            raise ImageError(f"{p}: no {key!r} entry")
    if not isinstance(m["files"], dict):
        raise ImageError(f"{p}: 'files' is not a mapping")
    if not isinstance(m["steps"], list):
        raise ImageError(f"{p}: 'steps' is not a list")
    return m


def _entry_fields(mp: Path, fname: str, entry) -> tuple[str, int, int, str]:
    if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
        raise ImageError(f"{mp}: entry of {fname} is incomplete")
    try:
        width, words = int(entry["word_bits"]), int(entry["words"])
        lanes, lane_bits = int(entry["lanes"]), int(entry["lane_bits"])
    except (TypeError, ValueError):
        raise ImageError(f"{mp}: entry of {fname} has a non-integer size") from None
    if words < 0 or lanes < 1 or lane_bits < 1:
        raise ImageError(f"{mp}: entry of {fname} has an impossible size")
    if width != lanes * lane_bits:
        raise ImageError(f"{mp}: {fname}: word_bits is not lanes x lane_bits")
    fmt = entry["format"]
    if fmt not in FILE_FORMATS:
        raise ImageError(f"{mp}: {fname}: unknown format {fmt!r}")
    if not isinstance(entry["sha256"], str):
        raise ImageError(f"{mp}: {fname}: sha256 is not a string")
    return fmt, width, words, entry["sha256"]


def read_file(directory: Path, fname: str, entry) -> list[int]:
    """The words of one image file, checked against its manifest entry."""
    d = Path(directory)
    mp = d / MANIFEST
    if not isinstance(fname, str) or Path(fname).name != fname or fname in ("", ".", ".."):
        raise ImageError(f"{mp}: file name {fname!r} is not a plain name")
    fmt, width, words, digest = _entry_fields(mp, fname, entry)
    p = d / fname
    if not p.is_file():
        raise ImageError(f"{p}: image file missing")
    data = p.read_bytes()
    vals = parse_hex(data, width, words, str(p)) if fmt == "hex" else parse_bin(
        data, width, words, str(p))
    if sha256(data) != digest:
        raise ImageError(f"{p}: SHA-256 {sha256(data)[:16]}... differs from the manifest's")
    return vals


def read_verified(directory: str | Path) -> tuple[dict, dict[str, list[int]]]:
    """(manifest, file name -> words) of an images folder, every file checked (see the
    module docstring) before anything is returned."""
    d = Path(directory)
    m = read_manifest(d)
    files = m["files"]
    words = {fname: read_file(d, fname, files[fname]) for fname in sorted(files)}
    for fname, entry in files.items():
        if entry["format"] == "hex":
            twin = fname[: -len(".hex")] + ".bin"
            if twin not in words:
                raise ImageError(f"{d / twin}: binary twin of {fname} missing from the manifest")
            if words[twin] != words[fname]:
                raise ImageError(f"{d / twin}: words differ from {fname}")
    return m, words


def layer_images(manifest: dict, meta: dict, kinds: Sequence[str], where: Path) -> dict[str, str]:
    """kind -> hex file name of one GEMM step of the manifest, each present in 'files'."""
    images = meta.get("images")
    name = meta.get("name")
    if not isinstance(images, dict):
        raise ImageError(f"{where}: layer {name!r} lists no images")
    out = {}
    for kind in kinds:
        for fmt in FILE_FORMATS:
            entry = images.get(kind)
            fname = entry.get(fmt) if isinstance(entry, dict) else None
            if fname is None or fname not in manifest["files"]:
                raise ImageError(f"{where}: layer {name!r} has no {kind} {fmt} image")
        out[kind] = images[kind]["hex"]
    return out
