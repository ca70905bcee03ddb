"""Initial buffer contents from an images folder, refused unless the hardware can run them.

The folder is one written by ``sqaccel export``. It is read through the image codec
(``sqaccel.imagecodec.read_verified``): manifest, sizes, word counts, digit counts, word
widths, SHA-256 and hex = binary are checked before any word is used, with the same
messages ``sqaccel verify-images`` gives. Every GEMM layer's weights, step tables, biases and
requantisation words are then placed one layer after the other in the buffers; ``layers``
says where each one starts, so a host builds its commands from it.

Refused with one error, before anything is generated: images laid out for another array
(``sqaccel.abi.LAYOUT_FIELDS``), a layer with K > K_max or N > n_max, a layer for the other
PE kind, a step-table entry outside the shift sets, a bias outside this build's range, more
words than a buffer holds. Images built for another K_max are accepted: their bias words
are re-packed for this build's accumulator width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqaccel import abi, imagecodec
from sqaccel.config import AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.imagecodec import MANIFEST, ImageError


@dataclass
class PlacedLayer:
    """Where a preloaded layer sits: the command fields a host needs besides M and the
    activations. A grouped layer runs one command per group: group g's bases are these plus
    ``g`` times the per-group strides (``sqaccel.abi.image_format`` of one group)."""

    name: str
    k: int
    n: int  # per group
    relu: bool
    w_base: int
    step_base: int
    param_base: int
    groups: int = 1


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


def check_step_words(cfg: AccelConfig, words: list[int], where: str) -> None:
    bits = cfg.universal.step_entry_bits
    lanes = abi.unpack(words, abi.step_lanes(cfg), bits)
    for n, row in enumerate(lanes.tolist()):
        for lane, entry in enumerate(row):
            try:
                cfg.universal.decode_step_entry(entry)
            except ConfigError as e:
                raise ImageError(f"{where}: word {n} lane {lane}: {e}") from None


def _built_config(manifest: dict, mp: Path, cfg: AccelConfig) -> AccelConfig:
    try:
        built = AccelConfig.from_dict(manifest["config"])
    except (SqaccelError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"{mp}: config is not valid ({e})") from None
    for f in abi.LAYOUT_FIELDS:
        if getattr(built, f) != getattr(cfg, f):
            raise ConfigError(f"{mp}: images built for {f} = {getattr(built, f)!r}, the "
                              f"hardware has {getattr(cfg, f)!r}")
    return built


def _gemm_fields(meta: dict, mp: Path) -> tuple[str, int, int, str, bool, int]:
    """(name, K per group, N per group, PE kind, ReLU, groups) of a GEMM step."""
    try:
        g = int(meta.get("groups", 1))
        name, k, n = str(meta["name"]), int(meta["K"]), int(meta["N"])
        if g < 1 or n % g:
            raise ValueError(f"{g} groups for N = {n}")
        return name, k, n // g, str(meta["pe"]), bool(meta["relu"]), g
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{mp}: a GEMM step lacks {e}") from None


def read_images(cfg: AccelConfig, directory: str | Path) -> Preload:
    """The buffers' initial words from an images folder (see the module docstring)."""
    d = Path(directory)
    mp = d / MANIFEST
    manifest, files = imagecodec.read_verified(d)
    built = _built_config(manifest, mp, cfg)
    bufs = abi.buffers(cfg)
    kinds = [k for k in abi.IMAGE_KINDS if k in bufs]
    words: dict[str, list[int]] = {kind: [] for kind in kinds}
    layers = []
    for meta in manifest["steps"]:
        if not isinstance(meta, dict) or meta.get("op") != "gemm":
            continue
        name, k, n, pe, relu, groups = _gemm_fields(meta, mp)
        if k > cfg.k_max:
            raise ConfigError(f"{mp}: layer {name!r} has K = {k}, more than K_max = "
                              f"{cfg.k_max}")
        if n > cfg.n_max:
            raise ConfigError(f"{mp}: layer {name!r} has N = {n}, more than n_max = "
                              f"{cfg.n_max}")
        if pe != cfg.pe:
            raise ConfigError(f"{mp}: layer {name!r} is for the {pe} PE, the array has "
                              f"{cfg.pe}")
        fnames = imagecodec.layer_images(manifest, meta, kinds, mp)
        bases = {kind: len(ws) for kind, ws in words.items()}
        for kind in kinds:
            fname = fnames[kind]
            got = (int(manifest["files"][fname]["words"]), int(manifest["files"][fname]["lanes"]),
                   int(manifest["files"][fname]["lane_bits"]))
            want = abi.image_format(kind, k, n, built, groups)
            if got != want:
                raise ImageError(f"{d / fname}: {kind} image of {got[0]} words x {got[1]} "
                                 f"lanes x {got[2]} bits, layer {name!r} needs {want}")
            ws = files[fname]
            if kind == "bias" and built.acc_bits != cfg.acc_bits:
                try:
                    ws = abi.repack_bias(ws, built.acc_bits, cfg)
                except abi.WordError as e:
                    raise ImageError(f"{d / fname}: {e}") from None
            if kind == "steps":
                check_step_words(cfg, ws, str(d / fname))
            words[kind].extend(ws)
        layers.append(PlacedLayer(name, k, n, relu, bases["weights"], bases.get("steps", 0),
                                  bases["bias"], groups))
    if not layers:
        raise ImageError(f"{mp}: no GEMM layer")
    for kind, ws in words.items():
        if len(ws) > bufs[kind].depth:
            raise ConfigError(f"{mp}: {len(ws)} {kind} words, the buffer holds "
                              f"{bufs[kind].depth}")
    return Preload(words, layers, str(d))

