"""Memory images of an integer network, laid out as docs/arithmetic.md section 7 says.

Per GEMM layer: the weight codes, the step tables (shift-add PE), the biases and the
requantisation words, each as ``$readmemh`` text and raw little-endian binary, and one
``manifest.json`` that names every file (layer, shape, word width, bits, SHA-256) and carries
the config, the activation scales and the non-GEMM steps: enough to rebuild the
``IntNetwork`` from the images alone (``load``) and re-run the golden model (``verify``).

The packing functions (``weight_words``, ``activation_words``, ``result_words``, ...) are the
one definition of the buffer layouts; testbenches use them to drive and check the array.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sqaccel.config import AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.sw import arith
from sqaccel.sw.actquant import ActQuant
from sqaccel.sw.golden import GemmOperands, IntLayer, IntNetwork, IntStep

MANIFEST = "manifest.json"
FORMAT = "sqaccel-images"
VERSION = 1
IMAGE_KINDS = ("weights", "steps", "bias", "requant")
FILE_FORMATS = ("hex", "bin")


class ImageError(SqaccelError):
    """A memory image or manifest that is missing, damaged or for another build."""


# -- words ---------------------------------------------------------------------------------


def pack_lanes(values: list[int], lane_bits: int) -> int:
    """One word from lane values (lane 0 in the low bits); negative values as two's
    complement in ``lane_bits``."""
    mask = (1 << lane_bits) - 1
    word = 0
    for lane, v in enumerate(values):
        word |= (int(v) & mask) << (lane * lane_bits)
    return word


def unpack_lanes(word: int, lanes: int, lane_bits: int, signed: bool = False) -> list[int]:
    mask = (1 << lane_bits) - 1
    out = []
    for lane in range(lanes):
        v = (word >> (lane * lane_bits)) & mask
        if signed and v >> (lane_bits - 1):
            v -= 1 << lane_bits
        out.append(v)
    return out


def _tiles(n: int, size: int) -> int:
    return -(-n // size)


def requant_word_bits(cfg: AccelConfig) -> int:
    return cfg.requant_m_bits + cfg.requant_s_bits


def requant_pad(cfg: AccelConfig) -> tuple[int, int]:
    """(M, S) of padded lanes: M = 2^15, S = 1."""
    return 1 << (cfg.requant_m_bits - 1), 1


def weight_words(codes: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Weights: word ``j*K + k`` holds the codes of ``W[k, j*C + c]`` (padding code 0)."""
    k, n = codes.shape
    c = cfg.cols
    padded = torch.zeros(k, _tiles(n, c) * c, dtype=torch.int64)
    padded[:, :n] = codes
    return [
        pack_lanes(padded[kk, j * c : (j + 1) * c].tolist(), cfg.weight_bits)
        for j in range(_tiles(n, c))
        for kk in range(k)
    ]


def step_words(tables: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Steps: per channel, word ``j*L + e`` holds entry e of columns ``j*C + c`` (padding
    all-off); per layer, word ``e`` is entry e of the one table."""
    n, levels = tables.shape
    bits = cfg.universal.step_entry_bits
    if cfg.step_tables == "layer":
        if n and not bool((tables == tables[0]).all()):
            raise SqaccelError("per-layer step image of a layer with per-channel tables")
        return [int(v) for v in tables[0].tolist()]
    c = cfg.cols
    padded = torch.full((_tiles(n, c) * c, levels), arith.off_entry(cfg.universal),
                        dtype=torch.int64)
    padded[:n] = tables
    return [
        pack_lanes(padded[j * c : (j + 1) * c, e].tolist(), bits)
        for j in range(_tiles(n, c))
        for e in range(levels)
    ]


def bias_words(bias: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Bias: word j holds ``bias[j*C + c]``, two's complement ``acc_bits`` (padding 0)."""
    c = cfg.cols
    vals = bias.tolist() + [0] * (_tiles(len(bias), c) * c - len(bias))
    return [pack_lanes(vals[j * c : (j + 1) * c], cfg.acc_bits) for j in range(len(vals) // c)]


def requant_words(m: torch.Tensor, s: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Requant: word j holds ``S << 16 | M`` of column ``j*C + c`` (padding M = 2^15, S = 1)."""
    c = cfg.cols
    pm, ps = requant_pad(cfg)
    lane = [(int(sv) << cfg.requant_m_bits) | int(mv) for mv, sv in zip(m.tolist(), s.tolist(),
                                                                         strict=True)]
    lane += [(ps << cfg.requant_m_bits) | pm] * (_tiles(len(lane), c) * c - len(lane))
    return [pack_lanes(lane[j * c : (j + 1) * c], requant_word_bits(cfg))
            for j in range(len(lane) // c)]


def activation_words(x: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Activation buffer: word ``i*K + k`` holds ``X[i*R + r, k]`` (padding 0)."""
    m, k = x.shape
    r = cfg.rows
    padded = torch.zeros(_tiles(m, r) * r, k, dtype=torch.int64)
    padded[:m] = x
    return [
        pack_lanes(padded[i * r : (i + 1) * r, kk].tolist(), cfg.act_bits)
        for i in range(_tiles(m, r))
        for kk in range(k)
    ]


def result_words(y: torch.Tensor, cfg: AccelConfig) -> list[int]:
    """Results as they leave the array: column tile j outer, row tile i, row r inner, rows
    m < M only; C lanes of acc_bits, columns n >= N are 0."""
    m, n = y.shape
    c = cfg.cols
    padded = torch.zeros(m, _tiles(n, c) * c, dtype=torch.int64)
    padded[:, :n] = y
    return [
        pack_lanes(padded[row, j * c : (j + 1) * c].tolist(), cfg.acc_bits)
        for j in range(_tiles(n, c))
        for row in range(m)  # i outer, r inner is row order
    ]


def gemm_words(ops: GemmOperands, cfg: AccelConfig) -> dict[str, list[int]]:
    """Every buffer word of one GEMM (``IntNetwork.operands``): what a testbench loads
    (activations, weights, steps, bias, requant) and the result words it must read back."""
    out = {
        "activations": activation_words(ops.x, cfg),
        "weights": weight_words(ops.codes, cfg),
        "bias": bias_words(ops.bias, cfg),
        "requant": requant_words(ops.m, ops.s, cfg),
        "results": result_words(ops.out, cfg),
    }
    if ops.tables is not None:
        out["steps"] = step_words(ops.tables, cfg)
    return out


# -- word files ----------------------------------------------------------------------------


def hex_digits(width: int) -> int:
    return -(-width // 4)


def word_bytes(width: int) -> int:
    return -(-width // 8)


def to_hex(words: list[int], width: int) -> bytes:
    d = hex_digits(width)
    return "".join(f"{w:0{d}x}\n" for w in words).encode("ascii")


def to_bin(words: list[int], width: int) -> bytes:
    nb = word_bytes(width)
    return b"".join(w.to_bytes(nb, "little") for w in words)


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    """Hash of an integer tensor's values (int64 little-endian, row-major)."""
    a = arith.as_i64(t).contiguous().numpy().astype("<i8")
    return hashlib.sha256(a.tobytes()).hexdigest()


# -- one layer's images --------------------------------------------------------------------


@dataclass
class Image:
    kind: str
    words: list[int]
    lanes: int
    lane_bits: int
    shape: list[int]  # the logical tensor the image holds

    @property
    def width(self) -> int:
        return self.lanes * self.lane_bits


def layer_images(layer: IntLayer, cfg: AccelConfig) -> dict[str, Image]:
    c = cfg.cols
    out = {
        "weights": Image("weights", weight_words(layer.codes, cfg), c, cfg.weight_bits,
                         [layer.k, layer.n]),
        "bias": Image("bias", bias_words(layer.bias, cfg), c, cfg.acc_bits, [layer.n]),
        "requant": Image("requant", requant_words(layer.m, layer.s, cfg), c,
                         requant_word_bits(cfg), [layer.n]),
    }
    if layer.pe == "shift":
        bits = cfg.universal.step_entry_bits
        if cfg.step_tables == "layer":
            out["steps"] = Image("steps", step_words(layer.tables, cfg), 1, bits,
                                 [1, cfg.levels])
        else:
            out["steps"] = Image("steps", step_words(layer.tables, cfg), c, bits,
                                 [layer.n, cfg.levels])
    return out


def _file_stem(index: int, name: str) -> str:
    return f"L{index:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


# -- export --------------------------------------------------------------------------------


def reference_record(net: IntNetwork, x_int: torch.Tensor) -> dict:
    """Inputs, logits and per-step output hashes of ``net`` on ``x_int``, for ``verify``."""
    run = net.run(x_int)
    return {
        "inputs_shape": list(x_int.shape),
        "inputs": arith.as_i64(x_int).flatten().tolist(),
        "logits": run.logits.tolist(),
        "outputs_sha256": {k: tensor_sha256(v) for k, v in run.outputs.items()},
        "outputs_shape": {k: list(v.shape) for k, v in run.outputs.items()},
    }


def build_manifest_and_files(
    net: IntNetwork, reference: dict | None = None, info: dict | None = None
) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the bytes of every file, for ``net``."""
    cfg = net.cfg
    files: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    steps = []
    ordinal = 0
    for step in net.steps:
        if isinstance(step, IntStep):
            steps.append(step.meta())
            continue
        meta = step.meta()
        meta["images"] = {}
        stem = _file_stem(ordinal, step.name)
        ordinal += 1
        for kind, img in layer_images(step, cfg).items():
            meta["images"][kind] = {}
            for fmt in FILE_FORMATS:
                fname = f"{stem}.{kind}.{fmt}"
                data = to_hex(img.words, img.width) if fmt == "hex" else to_bin(img.words,
                                                                                 img.width)
                files[fname] = data
                meta["images"][kind][fmt] = fname
                entries[fname] = {
                    "layer": step.name,
                    "image": kind,
                    "format": fmt,
                    "shape": img.shape,
                    "words": len(img.words),
                    "word_bits": img.width,
                    "lanes": img.lanes,
                    "lane_bits": img.lane_bits,
                    "bits": step.bits,
                    "array_bits": cfg.weight_bits,
                    "method": step.method,
                    "pe": step.pe,
                    "sha256": sha256(data),
                }
        steps.append(meta)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "config": cfg.to_dict(),
        "input": {
            "quant": net.input.to_dict(),
            "shape": list(net.input_shape) if net.input_shape is not None else None,
        },
        "steps": steps,
        "files": entries,
        "reports": list(net.reports),
    }
    if reference is not None:
        manifest["reference"] = reference
    if info is not None:
        manifest["info"] = info
    return manifest, files


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")


def export(
    net: IntNetwork,
    out_dir: str | Path,
    reference_inputs: torch.Tensor | None = None,
    info: dict | None = None,
) -> Path:
    """Write the images of ``net`` to ``out_dir`` (replacing an earlier images folder).

    Everything goes to a temporary sibling folder first, renamed when complete, so a failed
    export leaves nothing behind. ``reference_inputs`` (integer network inputs) are run now
    and stored with their logits and per-step output hashes; ``verify`` re-runs them.
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise SqaccelError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise SqaccelError(f"{out}: a non-empty folder that holds no images; not replacing")
    reference = reference_record(net, reference_inputs) if reference_inputs is not None else None
    manifest, files = build_manifest_and_files(net, reference, info)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        (tmp / MANIFEST).write_bytes(manifest_bytes(manifest))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "images")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "images", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


# -- load and verify -----------------------------------------------------------------------


@dataclass
class LoadedImages:
    network: IntNetwork
    manifest: dict
    directory: Path
    checks: list[str] = field(default_factory=list)


def _read_manifest(d: Path) -> dict:
    p = d / MANIFEST
    if not d.is_dir():
        raise ImageError(f"{d}: images folder not found")
    if not p.is_file():
        raise ImageError(f"{p}: not found")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ImageError(f"{p}: not an {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ImageError(f"{p}: version {m.get('version')}, this toolchain reads {VERSION}")
    for key in ("config", "input", "steps", "files"):
        if key not in m:
            raise ImageError(f"{p}: no {key!r} entry")
    return m


def _config_of(m: dict, p: Path, cfg: AccelConfig | None) -> AccelConfig:
    try:
        built = AccelConfig.from_dict(m["config"])
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{p}: config is not valid ({e})") from None
    if built.to_dict() != m["config"]:
        diff = _dict_diff(built.to_dict(), m["config"])
        raise ImageError(f"{p}: config's derived values disagree with this toolchain: {diff}")
    if cfg is not None and cfg.to_dict() != built.to_dict():
        diff = _dict_diff(cfg.to_dict(), built.to_dict())
        raise ImageError(f"{p}: images built for config {built.name()}, not {cfg.name()}: {diff}")
    return built


def _dict_diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _dict_diff(va, vb, f"{prefix}{k}.")
            if sub:
                out.append(sub)
        elif va != vb:
            out.append(f"{prefix}{k} {vb!r} (expected {va!r})")
    return ", ".join(out)


def _read_words(d: Path, fname: str, entry: dict) -> list[int]:
    p = d / fname
    if not p.is_file():
        raise ImageError(f"{p}: image file missing")
    data = p.read_bytes()
    try:
        width, words = int(entry["word_bits"]), int(entry["words"])
        fmt, digest = entry["format"], entry["sha256"]
    except (KeyError, TypeError, ValueError):
        raise ImageError(f"{d / MANIFEST}: entry of {fname} is incomplete") from None
    if width != int(entry["lanes"]) * int(entry["lane_bits"]):
        raise ImageError(f"{d / MANIFEST}: {fname}: word_bits is not lanes x lane_bits")
    if fmt not in FILE_FORMATS:
        raise ImageError(f"{d / MANIFEST}: {fname}: unknown format {fmt!r}")
    vals = parse_hex(data, width, words, str(p)) if fmt == "hex" else parse_bin(
        data, width, words, str(p))
    if sha256(data) != digest:
        raise ImageError(f"{p}: SHA-256 {sha256(data)[:16]}... differs from the manifest's")
    return vals


def _expect(cond: bool, p: Path, what: str) -> None:
    if not cond:
        raise ImageError(f"{p}: {what}")


def _decode_layer(
    d: Path, meta: dict, files: dict, words: dict[str, list[int]], cfg: AccelConfig
) -> IntLayer:
    name = meta["name"]
    k, n = int(meta["K"]), int(meta["N"])
    c = cfg.cols
    tiles = _tiles(n, c)
    images = meta.get("images", {})
    need = ["weights", "bias", "requant"] + (["steps"] if meta["pe"] == "shift" else [])
    for kind in need:
        for fmt in FILE_FORMATS:
            fname = images.get(kind, {}).get(fmt)
            if fname is None or fname not in files:
                raise ImageError(f"{d / MANIFEST}: layer {name!r} has no {kind} {fmt} image")

    def get(kind: str) -> tuple[list[int], Path, dict]:
        fname = images[kind]["hex"]
        entry = files[fname]
        p = d / fname
        expected = layer_word_format(kind, k, n, cfg)
        got = (int(entry["words"]), int(entry["lanes"]), int(entry["lane_bits"]))
        _expect(got == expected, p, f"{kind} image of {got[0]} words x {got[1]} lanes x "
                f"{got[2]} bits, layer {name!r} on this config needs {expected}")
        return words[fname], p, entry

    # weights
    ww, p, _ = get("weights")
    codes = torch.zeros(k, tiles * c, dtype=torch.int64)
    for j in range(tiles):
        for kk in range(k):
            codes[kk, j * c : (j + 1) * c] = torch.tensor(
                unpack_lanes(ww[j * k + kk], c, cfg.weight_bits))
    _expect(not bool(codes[:, n:].any()), p, "padding lanes hold non-zero codes")
    codes = codes[:, :n].contiguous()
    # steps
    tables = None
    if meta["pe"] == "shift":
        sw, p, _ = get("steps")
        bits = cfg.universal.step_entry_bits
        if cfg.step_tables == "layer":
            tables = torch.tensor(sw, dtype=torch.int64).reshape(1, -1).expand(n, -1)
        else:
            full = torch.zeros(tiles * c, cfg.levels, dtype=torch.int64)
            for j in range(tiles):
                for e in range(cfg.levels):
                    full[j * c : (j + 1) * c, e] = torch.tensor(
                        unpack_lanes(sw[j * cfg.levels + e], c, bits))
            _expect(bool((full[n:] == arith.off_entry(cfg.universal)).all()), p,
                    "padding lanes hold step words other than all-off")
            tables = full[:n]
        for idx, word in enumerate(tables.flatten().tolist()):
            try:
                cfg.universal.decode_step_entry(word)
            except ConfigError as e:
                raise ImageError(
                    f"{p}: column {idx // cfg.levels} entry {idx % cfg.levels}: {e}") from None
        tables = tables.contiguous()
    # bias
    bw, p, _ = get("bias")
    bias = [v for w in bw for v in unpack_lanes(w, c, cfg.acc_bits, signed=True)]
    _expect(not any(bias[n:]), p, "padding lanes hold non-zero biases")
    bias_t = torch.tensor(bias[:n], dtype=torch.int64)
    _expect(bool((bias_t.abs() <= cfg.bias_max).all()), p, f"a bias is outside +-{cfg.bias_max}")
    # requant
    rw, p, _ = get("requant")
    lanes = [v for w in rw for v in unpack_lanes(w, c, requant_word_bits(cfg))]
    mb = cfg.requant_m_bits
    pm, ps = requant_pad(cfg)
    _expect(all(v == (ps << mb) | pm for v in lanes[n:]), p,
            "padding lanes are not M = 2^15, S = 1")
    m_t = torch.tensor([v & ((1 << mb) - 1) for v in lanes[:n]], dtype=torch.int64)
    s_t = torch.tensor([v >> mb for v in lanes[:n]], dtype=torch.int64)
    _expect(bool(((m_t >= 1 << (mb - 1)) & (s_t >= 1)).all()), p,
            "a requant word has M below 2^15 or S = 0")

    try:
        return IntLayer(
            name=name, kind=meta["kind"], in_channels=int(meta["in_channels"]),
            out_channels=n, kernel=tuple(meta["kernel"]), stride=tuple(meta["stride"]),
            padding=tuple(meta["padding"]), dilation=tuple(meta["dilation"]),
            bits=int(meta["bits"]), method=meta["method"], pe=meta["pe"], codes=codes,
            tables=tables, bias=bias_t, m=m_t, s=s_t, relu=bool(meta["relu"]),
            in_scale=float(meta["in_scale"]), in_zero_point=int(meta["in_zero_point"]),
            out_scale=None if meta["out_scale"] is None else float(meta["out_scale"]),
            weight_scale=torch.tensor(meta["weight_scale"], dtype=torch.float64),
            bias_saturated=tuple(meta.get("bias_saturated", ())),
            zeroed=tuple(meta.get("zeroed", ())),
        )
    except (KeyError, TypeError, ValueError, SqaccelError) as e:
        raise ImageError(f"{d / MANIFEST}: layer {name!r} is not valid ({e})") from None


def layer_word_format(kind: str, k: int, n: int, cfg: AccelConfig) -> tuple[int, int, int]:
    """(words, lanes, lane bits) of one image of a [K, N] layer on ``cfg``."""
    c, tiles = cfg.cols, _tiles(n, cfg.cols)
    if kind == "weights":
        return tiles * k, c, cfg.weight_bits
    if kind == "steps":
        if cfg.step_tables == "layer":
            return cfg.levels, 1, cfg.universal.step_entry_bits
        return tiles * cfg.levels, c, cfg.universal.step_entry_bits
    if kind == "bias":
        return tiles, c, cfg.acc_bits
    return tiles, c, requant_word_bits(cfg)


def load(directory: str | Path, cfg: AccelConfig | None = None) -> LoadedImages:
    """Re-read an images folder: hashes, sizes, word widths, hex against binary, the
    config (against ``cfg`` when given) and every code, step word, bias and requant word;
    then rebuild the IntNetwork from the images alone."""
    d = Path(directory)
    m = _read_manifest(d)
    mp = d / MANIFEST
    built = _config_of(m, mp, cfg)
    files = m["files"]
    if not isinstance(files, dict):
        raise ImageError(f"{mp}: 'files' is not a mapping")
    words: dict[str, list[int]] = {}
    for fname, entry in sorted(files.items()):
        if Path(fname).name != fname:
            raise ImageError(f"{mp}: file name {fname!r} is not a plain name")
        words[fname] = _read_words(d, fname, entry)
    for fname, entry in files.items():
        if entry["format"] == "hex":
            twin = fname[: -len(".hex")] + ".bin"
            if twin not in words:
                raise ImageError(f"{d / twin}: binary twin of {fname} missing from the manifest")
            if words[twin] != words[fname]:
                raise ImageError(f"{d / twin}: words differ from {fname}")
    steps: list[IntLayer | IntStep] = []
    for meta in m["steps"]:
        try:
            if meta.get("op") == "gemm":
                steps.append(_decode_layer(d, meta, files, words, built))
            else:
                steps.append(IntStep.from_meta(meta))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            name = meta.get("name") if isinstance(meta, dict) else None
            raise ImageError(f"{mp}: step {name!r} is not valid ({e!r})") from None
    try:
        inq = ActQuant.from_dict(m["input"]["quant"])
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{mp}: input quantisation is not valid ({e})") from None
    if inq.bits != built.act_bits:
        raise ImageError(f"{mp}: {inq.bits}-bit input on an {built.act_bits}-bit array")
    shape = m["input"].get("shape")
    try:
        net = IntNetwork(built, inq, steps, tuple(shape) if shape else None,
                         list(m.get("reports", [])))
    except SqaccelError as e:
        raise ImageError(f"{mp}: {e}") from None
    return LoadedImages(net, m, d, [f"{len(files)} files: sizes, widths, SHA-256 and hex = bin"])


def verify(directory: str | Path, cfg: AccelConfig | None = None) -> LoadedImages:
    """``load``, then re-run the stored reference inputs from the images alone and compare
    logits and every step's output with what export recorded."""
    loaded = load(directory, cfg)
    ref = loaded.manifest.get("reference")
    mp = loaded.directory / MANIFEST
    if ref is None:
        loaded.checks.append("no reference inputs stored")
        return loaded
    try:
        x = torch.tensor(ref["inputs"], dtype=torch.int64).reshape(ref["inputs_shape"])
        want_logits = torch.tensor(ref["logits"], dtype=torch.int64)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ImageError(f"{mp}: reference entry is not valid ({e})") from None
    recorded = ref["outputs_sha256"]
    missing = [k for k in recorded if k not in {s.name for s in loaded.network.steps}]
    if missing:
        raise ImageError(f"{mp}: steps {missing} recorded at export are not in the network")
    run = loaded.network.run(x)
    for name, got in run.outputs.items():  # network order: the first difference is named
        if recorded.get(name) != tensor_sha256(got):
            raise ImageError(
                f"{loaded.directory}: step {name!r} output on the reference inputs differs "
                "from the one recorded at export"
            )
    if not torch.equal(run.logits, want_logits):
        raise ImageError(f"{loaded.directory}: logits on the reference inputs differ from export")
    loaded.checks.append(
        f"{x.shape[0]} reference inputs: logits and {len(ref['outputs_sha256'])} step outputs "
        "equal to export"
    )
    return loaded

