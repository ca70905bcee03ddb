"""The host/array interface: buffers, commands, packets, result words and how words pack.

docs/arithmetic.md section 7 in code, and the one owner of it. The generator builds its
Amaranth layouts from the field lists here (``sqaccel.hw``), the memory images pack and
unpack through the functions here (``sqaccel.sw.images``, the RTL preload), and so do the
testbench drivers and the checker (``sqaccel.sim``); ``format.json`` is generated from the
same lists for hosts outside this toolchain. Nothing else lays out a word.

A *word* is an unsigned Python integer of any width. A word of ``lanes`` x ``lane_bits``
holds lane ``l`` in bits ``l*lane_bits .. l*lane_bits + lane_bits - 1`` (lane 0 low);
negative lane values are two's complement in ``lane_bits``. Packing and unpacking run on
whole numpy arrays, never a Python loop per lane.

Pure Python and numpy: this module imports only the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError

# Buffer names, in target order. "act" holds activations; the other four are what a layer's
# memory images load.
BUFFERS = ("act", "weights", "steps", "bias", "requant")
IMAGE_KINDS = ("weights", "steps", "bias", "requant")
# Packet targets: a buffer write, or a command.
TARGETS: dict[str, int] = {"act": 0, "weights": 1, "steps": 2, "bias": 3, "requant": 4,
                           "command": 5}
TARGET_BITS = 3
# Config fields that fix how words are laid out: images must agree with a build on these
# (depths, K_max and n_max may differ; a bias word is re-packed for another acc_bits).
LAYOUT_FIELDS = ("rows", "cols", "act_bits", "weight_bits", "pe", "step_tables", "universal")

# How a host addresses each buffer (format.json repeats these for external hosts).
ADDRESSING = {
    "act": "act_base + i*K + k: lane r holds X[i*R + r, k] (rows >= M: 0)",
    "weights": "w_base + j*K + k: lane c holds the code of W[k, j*C + c] (columns >= N: 0)",
    "steps": "step_base + j*L + e: lane c holds entry e of column j*C + c's table "
             "(per layer: step_base + e, one entry per word)",
    "bias": "param_base + j: lane c holds bias[j*C + c], two's complement",
    "requant": "param_base + j: lane c holds S << 16 | M of column j*C + c",
}


class WordError(SqaccelError):
    """Words that do not fit their layout (too wide, too few, a padding lane not empty)."""


# -- tile arithmetic -----------------------------------------------------------------------


def tiles(n: int, size: int) -> int:
    """Tiles of ``size`` that cover ``n`` (the last one padded)."""
    return -(-int(n) // int(size))


def row_tiles(cfg: AccelConfig, m: int) -> int:
    return tiles(m, cfg.rows)


def col_tiles(cfg: AccelConfig, n: int) -> int:
    return tiles(n, cfg.cols)


def col_tiles_max(cfg: AccelConfig) -> int:
    """Column tiles of the widest command (N = n_max)."""
    return col_tiles(cfg, cfg.n_max)


def step_lanes(cfg: AccelConfig) -> int:
    """Entries in one step-buffer word: one per column (per-channel tables) or one (a table
    per layer)."""
    return cfg.cols if cfg.step_tables == "channel" else 1


def requant_fields(cfg: AccelConfig) -> dict[str, int]:
    """One requant lane: ``S << 16 | M`` (M in the low bits)."""
    return {"m": cfg.requant_m_bits, "s": cfg.requant_s_bits}


def requant_lane_bits(cfg: AccelConfig) -> int:
    return sum(requant_fields(cfg).values())


def requant_pad(cfg: AccelConfig) -> tuple[int, int]:
    """(M, S) of padding lanes: M = 2^15, S = 1."""
    return 1 << (cfg.requant_m_bits - 1), 1


# -- buffers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buffer:
    """One buffer: ``depth`` words of ``lanes`` x ``lane_bits``."""

    name: str
    depth: int
    lanes: int
    lane_bits: int
    signed: bool = False

    @property
    def word_bits(self) -> int:
        return self.lanes * self.lane_bits

    @property
    def addr_bits(self) -> int:
        return addr_bits(self.depth)

    @property
    def target(self) -> int:
        return TARGETS[self.name]


def addr_bits(depth: int) -> int:
    """Address width of ``depth`` words (at least 1)."""
    return max(1, (int(depth) - 1).bit_length())


def buffers(cfg: AccelConfig) -> dict[str, Buffer]:
    """The buffers of a build, in target order; ``steps`` only for the shift-add PE. Every
    buffer has at least 2 words: a one-word memory would have a zero-width address."""
    ct = col_tiles_max(cfg)
    out = {
        "act": Buffer("act", cfg.act_depth, cfg.rows, cfg.act_bits),
        "weights": Buffer("weights", cfg.weight_depth, cfg.cols, cfg.weight_bits),
    }
    if cfg.pe == "shift":
        out["steps"] = Buffer("steps", ct * cfg.levels, step_lanes(cfg),
                              cfg.universal.step_entry_bits)
    out["bias"] = Buffer("bias", ct, cfg.cols, cfg.acc_bits, signed=True)
    out["requant"] = Buffer("requant", ct, cfg.cols, requant_lane_bits(cfg))
    return {name: Buffer(b.name, max(2, b.depth), b.lanes, b.lane_bits, b.signed)
            for name, b in out.items()}


# -- commands, packets, results ------------------------------------------------------------


def command_fields(cfg: AccelConfig) -> dict[str, int]:
    """The fields of a command and their widths, lowest bits first."""
    bufs = buffers(cfg)
    return {
        # Wide enough to hold one more than the largest value a command may carry, so the
        # hardware's checks (K > K_max, N > n_max, rows left <= R) never become constants.
        "m": (cfg.act_depth * cfg.rows + 1).bit_length(),
        "n": (cfg.n_max + 1).bit_length(),
        "k": (cfg.k_max + 1).bit_length(),
        "act_base": bufs["act"].addr_bits,
        "w_base": bufs["weights"].addr_bits,
        "step_base": bufs["steps"].addr_bits if "steps" in bufs else 1,
        "param_base": bufs["bias"].addr_bits,
        "relu": 1,
    }


def command_bits(cfg: AccelConfig) -> int:
    return sum(command_fields(cfg).values())


def packet_fields(cfg: AccelConfig) -> dict[str, int]:
    """A host packet: ``data`` (lowest bits), ``addr``, ``target`` (highest bits)."""
    bufs = buffers(cfg)
    return {
        "data": max([b.word_bits for b in bufs.values()] + [command_bits(cfg)]),
        "addr": max(b.addr_bits for b in bufs.values()),
        "target": TARGET_BITS,
    }


def result_lanes(cfg: AccelConfig) -> tuple[int, int]:
    """(lanes, lane bits) of a result word's data: C signed lanes of acc_bits."""
    return cfg.cols, cfg.acc_bits


def result_fields(cfg: AccelConfig) -> dict[str, int]:
    """A result word: ``data`` (C lanes), then ``last`` (the command's final word)."""
    lanes, bits = result_lanes(cfg)
    return {"data": lanes * bits, "last": 1}


def offsets(fields: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """(offset, width) of each field, packed lowest first."""
    out, pos = {}, 0
    for name, width in fields.items():
        out[name] = (pos, int(width))
        pos += int(width)
    return out


def pack_record(fields: Mapping[str, tuple[int, int]], values: Mapping[str, int],
                what: str = "word") -> int:
    """One word from named values at ``fields`` = {name: (offset, width)}; a missing field is
    0, an unknown or oversized one is refused."""
    word = 0
    for name, v in values.items():
        if name not in fields:
            raise WordError(f"{what}: no field {name!r} (fields: {', '.join(fields)})")
        offset, width = fields[name]
        v = int(v)
        if not 0 <= v < 1 << width:
            raise WordError(f"{what} field {name}: {v} does not fit {width} bits")
        word |= v << offset
    return word


def unpack_record(fields: Mapping[str, tuple[int, int]], word: int) -> dict[str, int]:
    return {name: (int(word) >> off) & ((1 << w) - 1) for name, (off, w) in fields.items()}


def command(cfg: AccelConfig, *, m: int, n: int, k: int, act_base: int = 0, w_base: int = 0,
            step_base: int = 0, param_base: int = 0, relu: bool = True) -> int:
    """A command word."""
    return pack_record(offsets(command_fields(cfg)), {
        "m": m, "n": n, "k": k, "act_base": act_base, "w_base": w_base,
        "step_base": step_base, "param_base": param_base, "relu": int(relu)}, "command")


def packet(cfg: AccelConfig, target: str, addr: int, data: int) -> int:
    """A host packet to ``target`` (a buffer name or "command")."""
    if target not in TARGETS:
        raise WordError(f"packet: unknown target {target!r} (targets: {', '.join(TARGETS)})")
    return pack_record(offsets(packet_fields(cfg)),
                       {"target": TARGETS[target], "addr": addr, "data": data}, "packet")


def command_packet(cfg: AccelConfig, **fields) -> int:
    return packet(cfg, "command", 0, command(cfg, **fields))


def write_packets(cfg: AccelConfig, contents: Mapping[str, Sequence[int]]) -> list[int]:
    """Host packets that write ``contents`` (buffer name -> words from address 0)."""
    bufs = buffers(cfg)
    off = offsets(packet_fields(cfg))
    out = []
    for name, words in contents.items():
        if name not in bufs:
            raise WordError(f"a {name} write, but this build has no {name} buffer")
        b = bufs[name]
        if len(words) > b.depth:
            raise WordError(f"{name}: {len(words)} words do not fit its {b.depth}")
        head = b.target << off["target"][0]
        for addr, w in enumerate(words):
            if not 0 <= int(w) < 1 << b.word_bits:
                raise WordError(f"{name} word {addr}: wider than {b.word_bits} bits")
            out.append(head | addr << off["addr"][0] | int(w) << off["data"][0])
    return out


# -- packing lanes -------------------------------------------------------------------------


def pack_columns(columns: Sequence, widths: Sequence[int]) -> list[int]:
    """One word per row from equally long integer columns; column 0 in the low bits, each
    in its width (negative values as two's complement)."""
    if len(columns) != len(widths):
        raise WordError(f"{len(columns)} columns for {len(widths)} widths")
    cols = [np.asarray(c, dtype=np.int64).reshape(-1) for c in columns]
    n = len(cols[0]) if cols else 0
    if any(len(c) != n for c in cols):
        raise WordError("columns of different lengths")
    total = sum(int(w) for w in widths)
    nbytes = max(1, -(-total // 8))
    bits = np.zeros((n, nbytes * 8), dtype=np.uint8)
    pos = 0
    for i, (col, w) in enumerate(zip(cols, widths, strict=True)):
        # A lane holds 0 .. 2^w - 1, or a negative value down to -2^(w-1).
        if n and (int(col.min()) < -(1 << (int(w) - 1)) or int(col.max()) >= 1 << int(w)):
            raise WordError(f"lane {i}: a value outside the {w}-bit lane")
        u = col.view(np.uint64)
        shifts = np.arange(int(w), dtype=np.uint64)
        bits[:, pos : pos + int(w)] = (u[:, None] >> shifts[None, :]) & np.uint64(1)
        pos += int(w)
    rows = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(r.tobytes(), "little") for r in rows]


def unpack_columns(words: Sequence[int], widths: Sequence[int],
                   signed: Sequence[bool] | bool = False) -> list[np.ndarray]:
    """The columns of ``pack_columns``: one int64 array per field (at most 63 bits
    unsigned, 64 signed). A word wider than the fields together is refused."""
    if isinstance(signed, bool):
        signed = [signed] * len(widths)
    total = sum(int(w) for w in widths)
    nbytes = max(1, -(-total // 8))
    try:
        raw = b"".join(int(w).to_bytes(nbytes, "little") for w in words)
    except OverflowError:
        raise WordError(f"a word is wider than {total} bits") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8).reshape(len(words), nbytes),
                         axis=1, bitorder="little").astype(np.int64)
    if bits[:, total:].any():
        raise WordError(f"a word is wider than {total} bits")
    out, pos = [], 0
    for w, sgn in zip(widths, signed, strict=True):
        weights = np.left_shift(np.int64(1), np.arange(int(w), dtype=np.int64))
        if sgn:
            weights[-1] = -weights[-1]  # the top bit weighs -2^(w-1)
        out.append(bits[:, pos : pos + int(w)] @ weights if len(words) else
                   np.zeros(0, np.int64))
        pos += int(w)
    return out


def pack(lanes: np.ndarray, lane_bits: int) -> list[int]:
    """Words from a [words, lanes] integer array."""
    a = np.asarray(lanes, dtype=np.int64)
    if a.ndim != 2:
        raise WordError(f"lanes must be a [words, lanes] array, got shape {a.shape}")
    return pack_columns(list(a.T), [lane_bits] * a.shape[1]) if a.shape[0] else []


def unpack(words: Sequence[int], lanes: int, lane_bits: int, signed: bool = False
           ) -> np.ndarray:
    """[words, lanes] int64 lanes of ``words``."""
    if not len(words):
        return np.zeros((0, lanes), dtype=np.int64)
    return np.stack(unpack_columns(words, [lane_bits] * lanes, signed), axis=1)


# -- buffer layouts (docs/arithmetic.md section 7) -------------------------------------------


def _padded(a, rows: int, cols: int, fill: int = 0) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    out = np.full((rows, cols), fill, dtype=np.int64)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def activation_words(x, cfg: AccelConfig) -> list[int]:
    """Activation buffer: word ``i*K + k`` holds ``X[i*R + r, k]`` (rows >= M: 0)."""
    x = np.asarray(x, dtype=np.int64)
    m, k = x.shape
    r = cfg.rows
    p = _padded(x, row_tiles(cfg, m) * r, k)  # [tiles*R, K]
    lanes = p.reshape(-1, r, k).transpose(0, 2, 1).reshape(-1, r)  # (i, k) rows, r lanes
    return pack(lanes, cfg.act_bits)


def weight_words(codes, cfg: AccelConfig) -> list[int]:
    """Weights: word ``j*K + k`` holds the codes of ``W[k, j*C + c]`` (padding code 0)."""
    codes = np.asarray(codes, dtype=np.int64)
    k, n = codes.shape
    c = cfg.cols
    p = _padded(codes, k, col_tiles(cfg, n) * c)  # [K, tiles*C]
    lanes = p.reshape(k, -1, c).transpose(1, 0, 2).reshape(-1, c)  # (j, k) rows, c lanes
    return pack(lanes, cfg.weight_bits)


def step_words(tables, cfg: AccelConfig) -> list[int]:
    """Steps: per channel, word ``j*L + e`` holds entry e of columns ``j*C + c`` (padding
    all-off); per layer, word ``e`` is entry e of the one table."""
    from sqaccel.arith import off_entry

    t = np.asarray(tables, dtype=np.int64)
    n, levels = t.shape
    bits = cfg.universal.step_entry_bits
    if cfg.step_tables == "layer":
        if n and not (t == t[0]).all():
            raise WordError("per-layer step image of a layer with per-channel tables")
        return pack(t[:1].T, bits)  # one entry per word
    c = cfg.cols
    p = _padded(t, col_tiles(cfg, n) * c, levels, off_entry(cfg.universal))  # [tiles*C, L]
    lanes = p.reshape(-1, c, levels).transpose(0, 2, 1).reshape(-1, c)  # (j, e) rows
    return pack(lanes, bits)


def bias_words(bias, cfg: AccelConfig) -> list[int]:
    """Bias: word j holds ``bias[j*C + c]``, two's complement ``acc_bits`` (padding 0)."""
    b = np.asarray(bias, dtype=np.int64).reshape(1, -1)
    c = cfg.cols
    return pack(_padded(b, 1, col_tiles(cfg, b.shape[1]) * c).reshape(-1, c), cfg.acc_bits)


def requant_words(m, s, cfg: AccelConfig) -> list[int]:
    """Requant: word j holds ``S << 16 | M`` of column ``j*C + c`` (padding M = 2^15,
    S = 1)."""
    m = np.asarray(m, dtype=np.int64).reshape(1, -1)
    s = np.asarray(s, dtype=np.int64).reshape(1, -1)
    mb = cfg.requant_m_bits
    pm, ps = requant_pad(cfg)
    c = cfg.cols
    lane = _padded((s << mb) | m, 1, col_tiles(cfg, m.shape[1]) * c, (ps << mb) | pm)
    return pack(lane.reshape(-1, c), requant_lane_bits(cfg))


def result_words(y, cfg: AccelConfig) -> list[int]:
    """Results as they leave the array: column tile j outer, row m inner (row tile i, then
    row r), rows m < M only; C lanes of acc_bits, columns n >= N are 0."""
    y = np.asarray(y, dtype=np.int64)
    m, n = y.shape
    c = cfg.cols
    p = _padded(y, m, col_tiles(cfg, n) * c)  # [M, tiles*C]
    lanes = p.reshape(m, -1, c).transpose(1, 0, 2).reshape(-1, c)  # (j, m) rows
    return pack(lanes, cfg.acc_bits)


def layer_words(codes, tables, bias, m, s, cfg: AccelConfig, groups: int = 1
                ) -> dict[str, list[int]]:
    """The image words of one GEMM layer (``tables`` None on the multiplier PE): codes
    [K, N], tables [N, L], bias, M and S [N]. A grouped layer's groups (N/G columns each)
    follow one another in every image; a per-layer step table is written once."""
    codes = np.asarray(codes, dtype=np.int64)
    ng = codes.shape[1] // groups
    cols = [slice(g * ng, (g + 1) * ng) for g in range(groups)]
    out = {"weights": [w for c in cols for w in weight_words(codes[:, c], cfg)]}
    if tables is not None:
        t = np.asarray(tables, dtype=np.int64)
        out["steps"] = (step_words(t, cfg) if cfg.step_tables == "layer" else
                        [w for c in cols for w in step_words(t[c], cfg)])
    b = np.asarray(bias, dtype=np.int64)
    mm, ss = np.asarray(m, dtype=np.int64), np.asarray(s, dtype=np.int64)
    out["bias"] = [w for c in cols for w in bias_words(b[c], cfg)]
    out["requant"] = [w for c in cols for w in requant_words(mm[c], ss[c], cfg)]
    return out


def image_format(kind: str, k: int, n: int, cfg: AccelConfig, groups: int = 1
                 ) -> tuple[int, int, int]:
    """(words, lanes, lane bits) of one image of a layer of ``groups`` GEMMs of [K, N]
    each on ``cfg``."""
    if groups > 1 and not (kind == "steps" and cfg.step_tables == "layer"):
        words, lanes, bits = image_format(kind, k, n, cfg)
        return groups * words, lanes, bits
    ct = col_tiles(cfg, n)
    if kind == "weights":
        return ct * k, cfg.cols, cfg.weight_bits
    if kind == "steps":
        if cfg.step_tables == "layer":
            return cfg.levels, 1, cfg.universal.step_entry_bits
        return ct * cfg.levels, cfg.cols, cfg.universal.step_entry_bits
    if kind == "bias":
        return ct, cfg.cols, cfg.acc_bits
    if kind == "requant":
        return ct, cfg.cols, requant_lane_bits(cfg)
    raise WordError(f"unknown image kind {kind!r} (kinds: {', '.join(IMAGE_KINDS)})")


# -- the inverses: words back to the tensors they hold, padding returned beside ---------------


def _check_count(words: Sequence[int], want: int, what: str) -> None:
    if len(words) != want:
        raise WordError(f"{what}: {len(words)} words, the layout needs {want}")


def activations_from_words(words: Sequence[int], m: int, k: int, cfg: AccelConfig
                           ) -> np.ndarray:
    """X [M, K] from activation words (the inverse of ``activation_words``)."""
    r = cfg.rows
    _check_count(words, row_tiles(cfg, m) * k, "activations")
    lanes = unpack(words, r, cfg.act_bits).reshape(-1, k, r).transpose(0, 2, 1)
    return lanes.reshape(-1, k)[:m]


def weights_from_words(words: Sequence[int], k: int, n: int, cfg: AccelConfig
                       ) -> np.ndarray:
    """Codes [K, tiles*C] (columns >= N are padding) from weight words."""
    c = cfg.cols
    _check_count(words, col_tiles(cfg, n) * k, "weights")
    lanes = unpack(words, c, cfg.weight_bits).reshape(-1, k, c).transpose(1, 0, 2)
    return lanes.reshape(k, -1)


def tables_from_words(words: Sequence[int], n: int, cfg: AccelConfig) -> np.ndarray:
    """Step tables [N, L] (per layer: the one table repeated) or, per channel,
    [tiles*C, L] with the padding columns, from step words."""
    bits, levels = cfg.universal.step_entry_bits, cfg.levels
    if cfg.step_tables == "layer":
        _check_count(words, levels, "steps")
        return np.repeat(unpack(words, 1, bits).T, n, axis=0)
    c = cfg.cols
    _check_count(words, col_tiles(cfg, n) * levels, "steps")
    lanes = unpack(words, c, bits).reshape(-1, levels, c).transpose(0, 2, 1)
    return lanes.reshape(-1, levels)


def bias_from_words(words: Sequence[int], n: int, cfg: AccelConfig,
                    acc_bits: int | None = None) -> np.ndarray:
    """Biases [tiles*C] (padding after N) from bias words packed at ``acc_bits`` (default:
    the config's)."""
    _check_count(words, col_tiles(cfg, n), "bias")
    return unpack(words, cfg.cols, acc_bits or cfg.acc_bits, signed=True).reshape(-1)


def requant_from_words(words: Sequence[int], n: int, cfg: AccelConfig
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(M, S) [tiles*C] each (padding after N) from requant words."""
    _check_count(words, col_tiles(cfg, n), "requant")
    lanes = unpack(words, cfg.cols, requant_lane_bits(cfg)).reshape(-1)
    mb = cfg.requant_m_bits
    return lanes & ((1 << mb) - 1), lanes >> mb


def results_from_words(words: Sequence[int], m: int, n: int, cfg: AccelConfig
                       ) -> np.ndarray:
    """Y [M, tiles*C] (columns >= N are padding) from result words."""
    c = cfg.cols
    _check_count(words, col_tiles(cfg, n) * m, "results")
    lanes = unpack(words, c, cfg.acc_bits, signed=True).reshape(-1, m, c).transpose(1, 0, 2)
    return lanes.reshape(m, -1)


def repack_bias(words: Sequence[int], from_bits: int, cfg: AccelConfig) -> list[int]:
    """Bias words packed at another acc_bits (images for another K_max), re-packed for
    ``cfg``; a bias outside this build's ±bias_max is refused."""
    b = unpack(words, cfg.cols, from_bits, signed=True)
    if np.abs(b).max(initial=0) > cfg.bias_max:
        raise WordError(f"a bias is outside ±{cfg.bias_max} of this build")
    return pack(b.reshape(-1, cfg.cols), cfg.acc_bits)


def capacity_problems(cfg: AccelConfig, k: int, n: int) -> list[str]:
    """What keeps a GEMM of [K, N] (per group) from running on ``cfg`` (empty: it fits).
    Its column tiles and rows may be run a part at a time (``gemm_commands``), so one
    column tile's weights and one row tile's activations must fit their buffers."""
    out = []
    if k > cfg.k_max:
        out.append(f"K = {k} exceeds K_max = {cfg.k_max}")
    if k > cfg.weight_depth:
        out.append(f"one column tile needs {k} weight words, the weight buffer holds "
                   f"{cfg.weight_depth}")
    if k > cfg.act_depth:
        out.append(f"one row tile needs {k} activation words, the activation buffer holds "
                   f"{cfg.act_depth}")
    if cfg.n_max < cfg.cols and n > cfg.n_max:
        out.append(f"N = {n} exceeds n_max = {cfg.n_max}, which is less than a column tile")
    return out


@dataclass(frozen=True)
class GemmCommand:
    """One command of a GEMM layer as a host runs it: group ``group``'s rows ``rows`` and
    columns ``cols`` (within the group), with K ``k``. Before it, the host loads at address
    0 of each buffer the layer's image words ``load`` names (kind -> word range; empty: the
    words of the command before stay), and the activation words of its rows; every base
    address of the command is 0."""

    group: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    k: int
    load: dict[str, tuple[int, int]]

    @property
    def m(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def n(self) -> int:
        return self.cols[1] - self.cols[0]


def gemm_commands(cfg: AccelConfig, m: int, k: int, n: int, groups: int = 1
                  ) -> list[GemmCommand]:
    """The commands that run a layer of ``groups`` GEMMs of [M, K] x [K, N] (N per group) on
    ``cfg``: per group, runs of column tiles whose words fit the weight, step and parameter
    buffers, and within each, runs of rows whose activation words fit the activation
    buffer (docs/arithmetic.md, section 7)."""
    problems = capacity_problems(cfg, k, n)
    if problems:
        raise WordError(f"a [{m}, {k}] x [{k}, {n}] GEMM does not fit: {'; '.join(problems)}")
    t = col_tiles(cfg, n)
    per = max(1, min(cfg.weight_depth // k, cfg.n_max // cfg.cols))
    levels = cfg.levels
    out = []
    for g in range(groups):
        for j0 in range(0, t, per):
            j1 = min(t, j0 + per)
            a, b = g * t + j0, g * t + j1
            load = {"weights": (a * k, b * k), "bias": (a, b), "requant": (a, b)}
            if cfg.pe == "shift":
                load["steps"] = ((0, levels) if cfg.step_tables == "layer"
                                 else (a * levels, b * levels))
            cols = (j0 * cfg.cols, min(n, j1 * cfg.cols))
            for i, rows in enumerate(row_chunks(cfg, m, k)):
                out.append(GemmCommand(g, rows, cols, k, load if i == 0 else {}))
    return out


def row_chunks(cfg: AccelConfig, m: int, k: int) -> list[tuple[int, int]]:
    """Row ranges of an [M, K] GEMM input whose activation words fit the activation buffer
    one range at a time (the layer's weights stay loaded: one command per range)."""
    fit = cfg.act_depth // int(k)
    if fit < 1:
        raise WordError(f"K = {k}: one row tile needs {k} activation words, the buffer holds "
                        f"{cfg.act_depth}")
    step = fit * cfg.rows
    return [(r, min(int(m), r + step)) for r in range(0, int(m), step)]
