"""The integer arithmetic of docs/arithmetic.md, as functions.

Everything that the RTL must reproduce bit for bit is computed here, on int64 torch
tensors: weight-code decoding, the GEMM with bias, requantisation and the choice of the
requantisation multiplier (sections 2-5), and the steps that run on the host between GEMMs:
im2col, pooling, flattening, the standalone ReLU (section 6). A step is described by the
same dictionary the manifest carries (``op`` and its parameters); ``host_step`` and
``lower`` run one from that description. The golden model, the hardware unit tests and the
cosimulation testbenches call these functions; none of them re-types a formula.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from sqaccel.config import (
    REQUANT_M_BITS,
    REQUANT_S_MAX,
    REQUANT_S_MIN,
    AccelConfig,
    ConfigError,
    UniversalSet,
)
from sqaccel.errors import SqaccelError


class OperandError(SqaccelError):
    """Operands outside what the contract allows (K > K_max, an activation out of range...)."""


def as_i64(t) -> torch.Tensor:
    return torch.as_tensor(t).to(torch.int64)


# -- weight codes ------------------------------------------------------------------------


def split_code(codes: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, index) of b-bit shift-add codes: the top bit is the sign (1 = subtract)."""
    codes = as_i64(codes)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise OperandError(f"weight code outside 0..{(1 << bits) - 1}")
    return (codes >> (bits - 1)) & 1, codes & ((1 << (bits - 1)) - 1)


def table_magnitudes(tables: torch.Tensor, universal: UniversalSet) -> torch.Tensor:
    """Integer magnitudes selected by step-table words (any shape)."""
    flat = [universal.decode_step_entry(int(w)) for w in as_i64(tables).flatten().tolist()]
    return torch.tensor(flat, dtype=torch.int64).reshape(as_i64(tables).shape)


def decode_shift_weights(
    codes: torch.Tensor, tables: torch.Tensor, bits: int, universal: UniversalSet
) -> torch.Tensor:
    """Signed integer weights of a GEMM operand.

    ``codes`` is [K, N] (column n is output channel n) and ``tables`` is [N, 2**(bits-1)]:
    the step table that column n uses. The result is what the shift-add PE adds or
    subtracts: ``(x << s1) + (x << s2)`` is ``x * magnitude``.
    """
    sign, index = split_code(codes, bits)
    mags = table_magnitudes(tables, universal)
    if mags.shape[-1] != 1 << (bits - 1):
        raise OperandError(
            f"step table has {mags.shape[-1]} entries, {bits}-bit codes need {1 << (bits - 1)}"
        )
    if mags.shape[0] != codes.shape[1]:
        raise OperandError(f"{mags.shape[0]} step tables for {codes.shape[1]} columns")
    mag = torch.gather(mags, 1, index.T.contiguous()).T
    return torch.where(sign.bool(), -mag, mag)


def decode_mult_weights(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed integer weights of the multiplier PE: two's-complement b-bit codes."""
    codes = as_i64(codes)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise OperandError(f"weight code outside 0..{(1 << bits) - 1}")
    return torch.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)


def encode_mult_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement b-bit codes of signed integer weights."""
    w = as_i64(w)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if w.numel() and (int(w.min()) < lo or int(w.max()) > hi):
        raise OperandError(f"integer weight outside {lo}..{hi}")
    return w & ((1 << bits) - 1)


def widen_shift_codes(codes: torch.Tensor, from_bits: int, to_bits: int) -> torch.Tensor:
    """Re-encode b-bit shift-add codes for a wider array: sign to the new top bit."""
    sign, index = split_code(codes, from_bits)
    return (sign << (to_bits - 1)) | index


def widen_tables(
    tables: torch.Tensor, from_bits: int, to_bits: int, universal: UniversalSet | None = None
) -> torch.Tensor:
    """Pad step tables to 2**(to_bits-1) entries with the all-off word (magnitude 0)."""
    tables = as_i64(tables)
    pad = (1 << (to_bits - 1)) - (1 << (from_bits - 1))
    fill = off_entry(universal if universal is not None else UniversalSet())
    return torch.nn.functional.pad(tables, (0, pad), value=fill) if pad else tables


def off_entry(universal: UniversalSet) -> int:
    """The step-table word with every term off (magnitude 0)."""
    word, pos = 0, 0
    for s, b in zip(universal.shift_sets, universal.selector_bits, strict=True):
        word |= len(s) << pos
        pos += b
    return word


# -- GEMM, requantisation ----------------------------------------------------------------


def check_gemm_operands(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, cfg: AccelConfig
) -> None:
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise OperandError(f"GEMM shapes do not chain: X {tuple(x.shape)}, W {tuple(w.shape)}")
    k = x.shape[1]
    if k > cfg.k_max:
        raise OperandError(f"GEMM with K = {k} exceeds K_max = {cfg.k_max}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > cfg.act_max):
        raise OperandError(f"activation outside 0..{cfg.act_max} ({cfg.act_bits}-bit)")
    if w.numel() and int(w.abs().max()) > cfg.max_weight_int:
        raise OperandError(f"|weight| above {cfg.max_weight_int}")
    if bias.shape != (w.shape[1],):
        raise OperandError(f"bias shape {tuple(bias.shape)} for {w.shape[1]} columns")
    if bias.numel() and int(bias.abs().max()) > cfg.bias_max:
        raise OperandError(f"|bias| above {cfg.bias_max}")


def gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
    """acc[m, n] = bias[n] + sum_k x[m, k] * w[k, n], exact in int64."""
    x, w, bias = as_i64(x), as_i64(w), as_i64(bias)
    check_gemm_operands(x, w, bias, cfg)
    return bias.unsqueeze(0) + x @ w


def grouped_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, cfg: AccelConfig
                 ) -> torch.Tensor:
    """The accumulators [M, N] of G GEMMs side by side: ``x`` [G, M, K] and ``w`` [K, N],
    column n belonging to group ``n // (N/G)``."""
    x, w = as_i64(x), as_i64(w)
    g = x.shape[0]
    if x.dim() != 3 or w.dim() != 2 or w.shape[1] % g:
        raise OperandError(f"grouped GEMM: X {tuple(x.shape)}, W {tuple(w.shape)} do not chain")
    ng = w.shape[1] // g
    return torch.cat([gemm(x[i], w[:, i * ng : (i + 1) * ng], bias[i * ng : (i + 1) * ng],
                           cfg) for i in range(g)], dim=1)


def requant(
    acc: torch.Tensor, m: torch.Tensor, s: torch.Tensor, act_bits: int, relu: bool = True
) -> torch.Tensor:
    """y = clamp((acc * M + 2**(S-1)) >> S, 0, 2**A - 1), M and S per column (last dim).

    Without ReLU the layer's output is the raw accumulator (the logits).
    """
    acc = as_i64(acc)
    if not relu:
        return acc
    m, s = as_i64(m), as_i64(s)
    y = (acc * m + (torch.ones_like(s) << (s - 1))) >> s
    return y.clamp(0, (1 << act_bits) - 1)


def choose_requant(scale: float) -> tuple[int, int]:
    """Integer (M, S) with M / 2**S = scale within 2**-16 relative, M in [2**15, 2**16)."""
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"requantisation scale must be finite and > 0, got {scale!r}")
    mant, exp = math.frexp(scale)  # scale = mant * 2**exp, mant in [0.5, 1)
    s = REQUANT_M_BITS - exp
    m = round(mant * (1 << REQUANT_M_BITS))
    if m == 1 << REQUANT_M_BITS:
        m, s = m >> 1, s - 1
    if not REQUANT_S_MIN <= s <= REQUANT_S_MAX:
        raise ConfigError(
            f"requantisation scale {scale:.3e} needs shift {s}, outside "
            f"{REQUANT_S_MIN}..{REQUANT_S_MAX}"
        )
    return m, s


# -- GEMM lowering and the host steps (section 6) ------------------------------------------

HOST_OPS = ("relu", "maxpool", "avgpool", "flatten", "add", "requant")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def im2col(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """X [M, K] of a convolution: m = (batch, out_y, out_x), k = (in_channel, ky, kx),
    the input padded with ``pad_value`` (the integer zero point). float64 is exact here."""
    b, _, h, w = x.shape
    xf = x.to(torch.float64)
    if padding != (0, 0):
        xf = F.pad(xf, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value))
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise OperandError(f"convolution input {h}x{w} is smaller than its kernel")
    cols = F.unfold(xf, kernel, dilation=dilation, stride=stride)  # [B, K, OH*OW]
    xm = cols.transpose(1, 2).reshape(b * oh * ow, -1).to(torch.int64)
    return xm, (b, oh, ow)


def lower(layer: Mapping, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The GEMM operands X [G, M, K] of a GEMM step's input, one per group (``layer``: the
    manifest's record: kind, in_channels, groups, kernel, stride, padding, dilation,
    in_zero_point), and the output's leading shape for ``gemm_output``. Group ``i`` takes
    input channels ``i*Cin/G ..``: its K columns are a contiguous run of im2col's."""
    x = as_i64(x)
    name, cin = layer.get("name"), int(layer["in_channels"])
    g = int(layer.get("groups", 1))
    kernel = _pair(layer["kernel"])
    k = cin * kernel[0] * kernel[1]
    if layer["kind"] == "linear":
        if x.dim() != 2 or x.shape[1] != k:
            raise OperandError(
                f"layer {name!r}: Linear expects input [batch, {k}], got {tuple(x.shape)}")
        return x.unsqueeze(0), (x.shape[0],)
    if x.dim() != 4 or x.shape[1] != cin:
        raise OperandError(f"layer {name!r}: Conv2d expects input [batch, {cin}, H, W], got "
                           f"{tuple(x.shape)}")
    xm, lead = im2col(x, kernel, _pair(layer["stride"]), _pair(layer["padding"]),
                      _pair(layer["dilation"]), int(layer["in_zero_point"]))
    return xm.reshape(xm.shape[0], g, k // g).permute(1, 0, 2).contiguous(), lead


def gemm_output(layer: Mapping, y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """A GEMM step's output tensor from its result Y [M, N] (``lead`` from ``lower``)."""
    if layer["kind"] == "conv":
        b, oh, ow = lead
        return y.reshape(b, oh, ow, y.shape[1]).permute(0, 3, 1, 2).contiguous()
    return y


def rescale(step: Mapping, xs) -> torch.Tensor:
    """``add`` / ``requant``: ``clamp(((sum_i (t_i - z_i) * M_i[c] + 2^(S[c]-1)) >> S[c])
    + z_y, 0, 2^A - 1)`` per channel c (dim 1), from the step's record: ``m`` (per input, per
    channel), ``s`` (per channel), ``in_zero_points``, ``zero_point``, ``act_max``."""
    xs = [as_i64(t) for t in (xs if isinstance(xs, list | tuple) else [xs])]
    name, ms = step.get("name"), step["m"]
    if len(xs) != len(ms) or any(t.shape != xs[0].shape for t in xs):
        raise OperandError(f"step {name!r}: {len(xs)} inputs of shapes "
                           f"{[tuple(t.shape) for t in xs]} for {len(ms)} factors")
    shape = [1, -1] + [1] * (xs[0].dim() - 2)
    s = as_i64(step["s"]).reshape(shape)
    total = sum((t - int(z)) * as_i64(m).reshape(shape)
                for t, z, m in zip(xs, step["in_zero_points"], ms, strict=True))
    y = ((total + (torch.ones_like(s) << (s - 1))) >> s) + int(step["zero_point"])
    return y.clamp(0, int(step["act_max"]))


def host_step(step: Mapping, x) -> torch.Tensor:
    """One step between GEMMs, from its manifest record: ``add`` / ``requant`` (``rescale``,
    on a list of inputs), ``relu`` (clamp at the zero point),
    ``maxpool`` (the integer maximum: quantisation is monotone), ``avgpool`` (kernel None:
    global; ``(sum + n // 2) // n``, half-up), ``flatten`` (PyTorch's (C, H, W) order)."""
    op, name = step.get("op"), step.get("name")
    if op in ("add", "requant"):
        return rescale(step, x)
    x = as_i64(x)
    if op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op == "relu":
        return x.clamp_min(int(step.get("zero_point", 0)))
    if op not in ("maxpool", "avgpool"):
        raise OperandError(f"step {name!r}: unknown operation {op!r} (host steps: "
                           f"{', '.join(HOST_OPS)})")
    if x.dim() != 4:
        raise OperandError(f"step {name!r}: pooling expects [batch, C, H, W]")
    xf = x.to(torch.float64)
    padding = _pair(step.get("padding") or 0)
    if op == "maxpool":
        y = F.max_pool2d(xf, _pair(step["kernel"]), _pair(step["stride"]), padding,
                         _pair(step.get("dilation") or 1), ceil_mode=bool(step.get("ceil_mode")))
        return y.to(torch.int64)
    kernel = _pair(step["kernel"]) if step.get("kernel") is not None else (x.shape[2],
                                                                           x.shape[3])
    stride = _pair(step["stride"]) if step.get("stride") is not None else kernel
    n = int(step["divisor"]) if step.get("divisor") is not None else kernel[0] * kernel[1]
    sums = F.avg_pool2d(xf, kernel, stride, padding, divisor_override=1)
    return (sums.to(torch.int64) + n // 2) // n  # half-up
