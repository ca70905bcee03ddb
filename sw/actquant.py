"""Activation quantisation: unsigned A-bit per-tensor scales from calibration.

docs/arithmetic.md, section 3: a real activation is ``s_x * (x_int - zp)`` with ``x_int`` in
``0 .. 2^A - 1``. Scales are needed where the integer network creates a new tensor: the
network input and the output of every Conv2d/Linear + ReLU. Pooling and flattening keep
their input's scale. This module also builds the fake-quantised float model (dequantised
weights, activations rounded to the same grids as the integer network), walking the model's
plan (``sqaccel.sw.plan``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from sqaccel.config import SUPPORTED_ACT_BITS
from sqaccel.errors import SqaccelError
from sqaccel.sw.plan import INPUT, PlanModule, plan, quant_points, run

CALIBRATION_METHODS = ("mse", "percentile")
# Clip candidates of the MSE search, as fractions of the observed range.
MSE_GRID = 100
# Values the range search looks at, at most (a strided sample of larger tensors).
MAX_SEARCH_VALUES = 1 << 16


# -- one tensor's quantisation -----------------------------------------------------------


@dataclass(frozen=True)
class ActQuant:
    """``x_real = scale * (x_int - zero_point)``, ``x_int`` unsigned ``bits`` wide."""

    scale: float
    zero_point: int
    bits: int

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_ACT_BITS:
            raise SqaccelError(
                f"activation bits must be one of {SUPPORTED_ACT_BITS}, got {self.bits}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise SqaccelError(f"activation scale must be finite and > 0, got {self.scale!r}")
        if not 0 <= self.zero_point <= self.qmax:
            raise SqaccelError(f"zero point {self.zero_point} outside 0..{self.qmax}")

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes: ``clamp(floor(x / s + 1/2) + zp, 0, 2^A - 1)`` in float64."""
        x = torch.as_tensor(x).to(torch.float64)
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise SqaccelError("activation tensor holds NaN or Inf")
        q = torch.floor(x / self.scale + 0.5) + self.zero_point
        return q.clamp(0, self.qmax).to(torch.int64)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(q).to(torch.float64) - self.zero_point) * self.scale

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        """The real value of ``quantize(x)``, in x's dtype."""
        return self.dequantize(self.quantize(x)).to(x.dtype)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "bits": self.bits}

    @classmethod
    def from_dict(cls, d: dict) -> ActQuant:
        return cls(float(d["scale"]), int(d["zero_point"]), int(d["bits"]))


@dataclass
class ActScales:
    """The network input's quantisation and that of every other tensor that becomes an
    A-bit activation (``plan.quant_points``: GEMM + activation outputs, adds, requants)."""

    input: ActQuant
    outputs: dict[str, ActQuant] = field(default_factory=dict)  # step name -> quant
    method: str = "mse"

    def __post_init__(self) -> None:
        for name, q in self.outputs.items():
            if q.bits != self.input.bits:
                raise SqaccelError(
                    f"layer {name!r}: {q.bits}-bit output, {self.input.bits}-bit input"
                )

    def quants(self) -> dict[str, ActQuant]:
        """Step name (``"input"`` for the input) -> its quantisation, for ``plan.run``."""
        return {INPUT: self.input, **self.outputs}

    @property
    def bits(self) -> int:
        return self.input.bits

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "input": self.input.to_dict(),
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> ActScales:
        return cls(
            ActQuant.from_dict(d["input"]),
            {k: ActQuant.from_dict(v) for k, v in d["outputs"].items()},
            d.get("method", "mse"),
        )


# -- calibration -------------------------------------------------------------------------


def collect_activations(
    model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The input and every tensor of ``model`` on ``x`` that becomes an A-bit activation
    (``plan.quant_points``), in floating point."""
    p = plan(model)
    with torch.no_grad():
        _, t = run(p, x, record=True)
    return x, {name: t[name] for name in quant_points(p) if name != INPUT}


def _fq_error(x: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, ActQuant]:
    """Mean squared fake-quantisation error of finite float64 ``x`` (ActQuant's rounding)."""
    q = quant_for_range(lo, hi, bits)
    codes = torch.floor(x / q.scale + 0.5).clamp_(-q.zero_point, q.qmax - q.zero_point)
    err = float(torch.dist(codes.mul_(q.scale), x) ** 2) / x.numel()
    return err, q


def quant_for_range(lo: float, hi: float, bits: int) -> ActQuant:
    """The quantisation covering ``[min(lo, 0), max(hi, 0)]``: zero point 0 when lo >= 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmax = (1 << bits) - 1
    if hi - lo <= 0:
        return ActQuant(1.0 / qmax, 0, bits)  # an all-zero tensor: any scale is exact
    scale = (hi - lo) / qmax
    zp = min(max(math.floor(-lo / scale + 0.5), 0), qmax)
    return ActQuant(scale, zp, bits)


def choose_quant(
    x: torch.Tensor, bits: int, method: str = "mse", percentile: float = 99.99
) -> ActQuant:
    """Per-tensor quantisation of the observed values ``x``.

    ``mse``: the clip range ``f * [min, max]`` (f on a grid of 1/100 steps) that gives the
    smallest mean squared error after fake quantisation; the first (smallest) f on a tie.
    ``percentile``: the range of the given percentiles (``100 - p`` and ``p``).
    """
    x = torch.as_tensor(x).detach().to(torch.float64).flatten()
    if x.numel() == 0:
        raise SqaccelError("calibration: no activation values")
    if not bool(torch.isfinite(x).all()):
        raise SqaccelError("calibration: activation values hold NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if x.numel() > MAX_SEARCH_VALUES:
        x = x[:: -(-x.numel() // MAX_SEARCH_VALUES)]  # a fixed stride keeps runs repeatable
    if method == "percentile":
        if not 0 < percentile <= 100:
            raise SqaccelError(f"calibration: percentile must be in (0, 100], got {percentile}")
        xs = x.sort().values
        n = xs.numel() - 1
        hi_p = float(xs[round(n * percentile / 100)])
        lo_p = float(xs[round(n * (1 - percentile / 100))]) if lo < 0 else 0.0
        return quant_for_range(lo_p, hi_p, bits)
    if method != "mse":
        raise SqaccelError(
            f"calibration: method must be one of {CALIBRATION_METHODS}, got {method!r}"
        )
    if lo >= 0 and bool((x > 0).any()):
        x = x[x > 0]  # exact zeros (most ReLU outputs) cost nothing at any clip
    best: tuple[float, ActQuant] | None = None
    for i in range(1, MSE_GRID + 1):
        f = i / MSE_GRID
        err, q = _fq_error(x, lo * f, hi * f, bits)
        if best is None or err < best[0]:
            best = (err, q)
    assert best is not None
    return best[1]


def calibrate(
    model: nn.Sequential,
    x_calib: torch.Tensor,
    act_bits: int,
    method: str = "mse",
    percentile: float = 99.99,
) -> ActScales:
    """Activation scales of ``model`` (weights as the integer network will have them, i.e.
    the dequantised weights) from the calibration inputs ``x_calib``."""
    if x_calib.shape[0] == 0:
        raise SqaccelError("calibration: no calibration samples")
    # One thread: float sums then add up in one order, so the same inputs give the same
    # scales on any machine (and small searches run faster than with shared threads).
    with one_thread():
        x, outs = collect_activations(model, x_calib)
        return ActScales(
            choose_quant(x, act_bits, method, percentile),
            {name: choose_quant(h, act_bits, method, percentile) for name, h in outs.items()},
            method,
        )


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread (restored afterwards): repeatable float sums, and no
    thread contention on the small tensors of the digits flow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- the fake-quantised float model -------------------------------------------------------


def fake_quant_model(
    model: nn.Module, scales: ActScales, qweights: dict | None = None
) -> nn.Module:
    """The float model the integer network approximates: dequantised weights (when
    ``qweights`` is given), and every tensor the integer network holds as an A-bit
    activation rounded to its calibrated grid (``plan.run``)."""
    p = plan(model)
    weights = {}
    for name, qw in (qweights or {}).items():
        w = qw.dequantize()
        mod = p.step(name).module
        if tuple(w.shape) != tuple(mod.weight.shape):
            raise SqaccelError(
                f"layer {name!r}: quantised weight shape {tuple(w.shape)}, layer expects "
                f"{tuple(mod.weight.shape)}"
            )
        weights[name] = w.to(mod.weight.dtype)
    missing = [n for n in quant_points(p) if n != INPUT and n not in scales.outputs]
    if missing:
        raise SqaccelError(f"layer {missing[0]!r}: no activation scale")
    return PlanModule(p, weights, scales.quants()).eval()
