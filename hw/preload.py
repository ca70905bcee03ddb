"""Initial buffer contents from ``$readmemh`` memory images, refused unless the hardware can
run them.

Two kinds of folder are read:

- an images folder written by ``sqaccel export`` (it has ``manifest.json``): every GEMM
  layer's weights, step tables, biases and requantisation words are placed one layer after
  the other in the buffers; ``layers`` says where each one starts, so a host builds its
  commands from it;
- a folder of plain section 7 images ``weights.hex``, ``steps.hex``, ``bias.hex``,
  ``requant.hex`` (any of them), loaded at address 0 as they are.

Refused with one ConfigError, before anything is generated: a word wider than its buffer,
more words than the buffer holds, a step-table entry outside the shift sets, a layer with
K > K_max or N > n_max, a layer for the other PE kind, images built for another array.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqaccel.config import AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.hw.controller import buffer_depths, buffer_layouts, buffer_word_bits

PLAIN_FILES = {"weights": "weights.hex", "steps": "steps.hex", "bias": "bias.hex",
               "requant": "requant.hex"}
MANIFEST = "manifest.json"
# Config fields that fix the word layouts: images must agree with the hardware on these.
LAYOUT_FIELDS = ("rows", "cols", "act_bits", "weight_bits", "pe", "step_tables", "universal")


@dataclass
class PlacedLayer:
    """Where a preloaded layer sits: the command fields a host needs besides M and the
    activations."""

    name: str
    k: int
    n: int
    relu: bool
    w_base: int
    step_base: int
    param_base: int


@dataclass
class Preload:
    words: dict[str, list[int]] = field(default_factory=dict)
    layers: list[PlacedLayer] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "words": {name: len(ws) for name, ws in self.words.items()},
            "layers": [asdict(layer) for layer in self.layers],
        }


def _parse_hex(path: Path, width: int) -> list[int]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"{path}: image file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a $readmemh text file") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            raise ConfigError(f"{path}: line {n}: address records are not supported")
        try:
            v = int(line, 16)
        except ValueError:
            raise ConfigError(f"{path}: line {n} is not a hexadecimal word: {line[:40]!r}")\
                from None
        if v >> width:
            raise ConfigError(f"{path}: line {n}: word {line} is wider than the {width}-bit "
                              "buffer word")
        out.append(v)
    return out


def check_step_words(cfg: AccelConfig, words: list[int], where: str) -> None:
    lanes = buffer_layouts(cfg)["steps"].length
    bits = cfg.universal.step_entry_bits
    for n, word in enumerate(words):
        for lane in range(lanes):
            entry = (word >> (lane * bits)) & ((1 << bits) - 1)
            try:
                cfg.universal.decode_step_entry(entry)
            except ConfigError as e:
                raise ConfigError(f"{where}: word {n} lane {lane}: {e}") from None


def _check_fits(cfg: AccelConfig, words: dict[str, list[int]], where: str) -> None:
    depths = buffer_depths(cfg)
    for name, ws in words.items():
        if name not in depths:
            raise ConfigError(f"{where}: a {name} image, but a {cfg.pe} array has no {name} "
                              "buffer")
        if len(ws) > depths[name]:
            raise ConfigError(f"{where}: {len(ws)} {name} words, the buffer holds "
                              f"{depths[name]}")


def _check_layer(cfg: AccelConfig, name: str, k: int, n: int, where: str) -> None:
    if k > cfg.k_max:
        raise ConfigError(f"{where}: layer {name!r} has K = {k}, more than K_max = {cfg.k_max}")
    if n > cfg.n_max:
        raise ConfigError(f"{where}: layer {name!r} has N = {n}, more than n_max = {cfg.n_max}")


def read_plain(cfg: AccelConfig, directory: Path) -> Preload:
    widths = buffer_word_bits(cfg)
    words = {}
    for name, fname in PLAIN_FILES.items():
        p = directory / fname
        if p.is_file():
            if name not in widths:
                raise ConfigError(f"{p}: a {cfg.pe} array has no {name} buffer")
            words[name] = _parse_hex(p, widths[name])
    if not words:
        raise ConfigError(f"{directory}: no {MANIFEST} and none of "
                          f"{', '.join(PLAIN_FILES.values())}")
    _check_fits(cfg, words, str(directory))
    if "steps" in words:
        check_step_words(cfg, words["steps"], str(directory / PLAIN_FILES["steps"]))
    layers = []
    if "weights" in words and "bias" in words and words["bias"]:
        tiles = len(words["bias"])
        k, rest = divmod(len(words["weights"]), tiles)
        if rest or not k:
            raise ConfigError(f"{directory}: {len(words['weights'])} weight words are not K "
                              f"words for each of the {tiles} column tiles of bias.hex")
        _check_layer(cfg, "weights.hex", k, tiles * cfg.cols, str(directory))
        layers.append(PlacedLayer("weights.hex", k, tiles * cfg.cols, True, 0, 0, 0))
    return Preload(words, layers, str(directory))


def read_manifest(cfg: AccelConfig, directory: Path) -> Preload:
    mp = directory / MANIFEST
    try:
        man = json.loads(mp.read_text())
        built = AccelConfig.from_dict(man["config"])
        steps, files = man["steps"], man["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{mp}: not a readable images manifest ({e})") from None
    except SqaccelError as e:
        raise ConfigError(f"{mp}: {e}") from None
    for f in LAYOUT_FIELDS:
        if getattr(built, f) != getattr(cfg, f):
            raise ConfigError(f"{mp}: images built for {f} = {getattr(built, f)!r}, the "
                              f"hardware has {getattr(cfg, f)!r}")
    bias_bits_in = built.acc_bits
    words: dict[str, list[int]] = {name: [] for name in buffer_depths(cfg)}
    layers = []
    for meta in steps:
        if meta.get("op") != "gemm":
            continue
        try:
            name, k, n, pe = meta["name"], int(meta["K"]), int(meta["N"]), meta["pe"]
            relu, images = bool(meta["relu"]), meta["images"]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{mp}: a GEMM step lacks {e}") from None
        _check_layer(cfg, name, k, n, str(mp))
        if pe != cfg.pe:
            raise ConfigError(f"{mp}: layer {name!r} is for the {pe} PE, the array has {cfg.pe}")
        bases = {b: len(ws) for b, ws in words.items()}
        for kind in buffer_depths(cfg):
            if kind == "act":
                continue
            try:
                fname = images[kind]["hex"]
                width = int(files[fname]["word_bits"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{mp}: layer {name!r} has no {kind} hex image") from None
            ws = _parse_hex(directory / fname, width)
            if kind == "bias" and bias_bits_in != cfg.acc_bits:
                ws = _rewiden_bias(cfg, ws, bias_bits_in, str(directory / fname))
            elif width != buffer_word_bits(cfg)[kind]:
                raise ConfigError(f"{directory / fname}: {width}-bit words, the {kind} buffer "
                                  f"holds {buffer_word_bits(cfg)[kind]}")
            if kind == "steps":
                check_step_words(cfg, ws, str(directory / fname))
            words[kind].extend(ws)
        layers.append(PlacedLayer(name, k, n, relu, bases["weights"], bases.get("steps", 0),
                                  bases["bias"]))
    if not layers:
        raise ConfigError(f"{mp}: no GEMM layer")
    del words["act"]
    _check_fits(cfg, words, str(mp))
    return Preload(words, layers, str(directory))


def _rewiden_bias(cfg: AccelConfig, words: list[int], bits_in: int, where: str) -> list[int]:
    """Bias words packed for another acc_bits (another K_max): the same integers, re-packed,
    each within this build's bias_max."""
    out = []
    c = cfg.cols
    for n, w in enumerate(words):
        lanes = []
        for lane in range(c):
            v = (w >> (lane * bits_in)) & ((1 << bits_in) - 1)
            if v >> (bits_in - 1):
                v -= 1 << bits_in
            if abs(v) > cfg.bias_max:
                raise ConfigError(f"{where}: word {n} lane {lane}: bias {v} is outside "
                                  f"+-{cfg.bias_max} of this build")
            lanes.append(v & ((1 << cfg.acc_bits) - 1))
        out.append(sum(v << (lane * cfg.acc_bits) for lane, v in enumerate(lanes)))
    return out


def read_images(cfg: AccelConfig, directory: str | Path) -> Preload:
    """The buffers' initial words from an images folder (see the module docstring)."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: images folder not found")
    if (d / MANIFEST).is_file():
        return read_manifest(cfg, d)
    return read_plain(cfg, d)
