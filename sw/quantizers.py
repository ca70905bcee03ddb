"""Weight quantisers behind one interface: SQ and its peers (docs/method.md, sections 3, 6).

``make_quantizer(method, bits, per_channel, universal)`` returns an object with ``.name`` and
``.quantize(w) -> QuantizedWeight``; the real weight is ``scale[c] * w_int`` (c = output
channel, dim 0). Per tensor, every channel carries the same scale.

- ``sq``: the subset search of ``sqaccel.sw.sq_search``; ``w_int`` is the signed integer
  magnitude of the chosen universal-set member (docs/arithmetic.md, section 2) and
  ``scale = max|W| * alpha / max(integer magnitudes of the subset)``. The codes are the
  search's final assignment, so ``||w / max|W| - dequantised / max|W|||`` is the search's
  reported error.
- The peers share one grid quantiser: a fixed set of non-negative integer magnitudes ``M``
  (always with 0), a sign, and a clipping value ``r * max|W|`` that the top magnitude maps
  to, with ``r`` searched over ``1/100, 2/100, ..., 1`` for the least squared error
  (first ``r`` on a tie; all 100 errors come from one sort and prefix sums). Scaled by
  ``max|W|``, a magnitude ``x`` goes to the nearest ``M`` at step ``s = r / max(M)``,
  halfway to the lower one (``x <= s * (M_i + M_{i+1}) / 2`` gives ``M_i``; so uniform
  rounds half toward zero).

  - ``uniform``: ``M = 0..2**(b-1)-1``, i.e. the symmetric range; 2, 3, 4 or 8 bits.
  - ``pot`` (LogQuant): ``M = {0} | {2**j : j = 0..2**(b-1)-2}``: a sign and a (b-1)-bit
    index over zero and 2**(b-1)-1 consecutive powers of two, the largest at the clipping
    value; ``w_int = 2**(e - e_min)``.
  - ``apot`` (Li et al. 2020): magnitudes are sums of one value from each of disjoint
    power-of-two term sets, then normalised to max 1. 4-bit: {0, 2^-1, 2^-2, 2^-4} +
    {0, 2^-3}, i.e. {0, .1, .2, .3, .4, .6, .8, 1} x alpha (integers 0,1,2,3,4,6,8,10);
    3-bit (two magnitude bits, one term): {0, 2^-1, 2^-2, 2^-3}, i.e. {0, .25, .5, 1}
    (it coincides with 3-bit pot); 2-bit (one magnitude bit): {0, 2^-1}, i.e. {0, 1}.

An all-zero output channel (allowed when the tensor is not all zero) quantises to zeros
with a positive placeholder scale (the one it would get with max|W| = 1), so that the
requantiser never meets a zero scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sqaccel.config import SUPPORTED_WEIGHT_BITS, UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw.qweight import QuantizedWeight
from sqaccel.sw.sq_search import (
    SearchResult,
    as_float64,
    candidate_pool,
    prefix_sums,
    search_channels,
    search_tensor,
)

METHODS = ("uniform", "pot", "apot", "sq")
UNIFORM_BITS = SUPPORTED_WEIGHT_BITS + (8,)
CLIP_RATIOS = tuple(i / 100 for i in range(1, 101))

# APoT term sets per bit width, as exponents (each term also has "0").
APOT_TERMS: dict[int, tuple[tuple[int, ...], ...]] = {
    2: ((1,),),
    3: ((1, 2, 3),),
    4: ((1, 2, 4), (3,)),
}


def uniform_magnitudes(bits: int) -> tuple[int, ...]:
    return tuple(range(1 << (bits - 1)))


def pot_magnitudes(bits: int) -> tuple[int, ...]:
    return (0,) + tuple(1 << j for j in range((1 << (bits - 1)) - 1))


def apot_magnitudes(bits: int) -> tuple[int, ...]:
    terms = APOT_TERMS[bits]
    top = max(max(t) for t in terms)
    sums = {0}
    for t in terms:
        sums = {s + v for s in sums for v in (0,) + tuple(1 << (top - e) for e in t)}
    return tuple(sorted(sums))


def _check_input(w) -> np.ndarray:
    a = as_float64(w)
    if a.ndim == 0:
        raise SqaccelError("weights: a scalar has no output-channel dimension (dim 0)")
    if not np.any(a):
        raise SqaccelError("weights: the tensor is all zero")
    return a


def _signs(a: np.ndarray) -> np.ndarray:
    # A zero weight keeps a + sign: its level may be a nonzero magnitude (SQ without 0).
    return np.where(a < 0, -1, 1).astype(np.int64)


# -- the peers: one grid quantiser ---------------------------------------------------------


def grid_quantize(
    rows: np.ndarray, mags: tuple[int, ...], ratios: tuple[float, ...] = CLIP_RATIOS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w_int, scale, ratio) per row of ``rows`` [R, n] on magnitudes ``mags``.

    The squared error of every clipping ratio comes at once from the sorted magnitudes and
    their prefix sums: the cell of each magnitude is a contiguous run of them.
    """
    m = np.array(mags, dtype=np.float64)
    mids = (m[:-1] + m[1:]) / 2.0
    top = m[-1]
    steps = np.array(ratios, dtype=np.float64) / top  # in units of max|W|
    ints = np.zeros(rows.shape, dtype=np.int64)
    scale = np.empty(rows.shape[0])
    best_r = np.ones(rows.shape[0])
    for c, row in enumerate(rows):
        a = np.abs(row)
        max_abs = float(a.max())
        if max_abs == 0.0:
            scale[c] = 1.0 / top  # placeholder: zeros code exactly at any scale
            continue
        x = a / max_abs
        xs = np.sort(x)
        p1 = prefix_sums(xs)
        bounds = np.empty((steps.size, m.size + 1), dtype=np.int64)
        bounds[:, 0], bounds[:, -1] = 0, xs.size
        bounds[:, 1:-1] = xs.searchsorted(steps[:, None] * mids, side="right")
        s1 = np.diff(p1[bounds], axis=1)
        cnt = np.diff(bounds, axis=1)
        sse = (
            float(np.add.reduce(xs * xs))
            - 2.0 * steps * (s1 @ m)
            + steps * steps * (cnt @ (m * m))
        )
        g = int(np.argmin(sse))  # first ratio on a tie
        ints[c] = m[np.searchsorted(steps[g] * mids, x, side="left")].astype(np.int64)
        scale[c] = steps[g] * max_abs
        best_r[c] = ratios[g]
    return ints * _signs(rows), scale, best_r


@dataclass(frozen=True)
class GridQuantizer:
    """Uniform, power-of-two or APoT weights with an MSE-searched clipping value."""

    method: str
    bits: int
    per_channel: bool = False

    @property
    def name(self) -> str:
        return f"{self.method}-w{self.bits}-{'channel' if self.per_channel else 'tensor'}"

    @property
    def magnitudes(self) -> tuple[int, ...]:
        return {"uniform": uniform_magnitudes, "pot": pot_magnitudes, "apot": apot_magnitudes}[
            self.method
        ](self.bits)

    def quantize(self, w) -> QuantizedWeight:
        t0 = time.perf_counter()
        a = _check_input(w)
        out = a.shape[0]
        rows = a.reshape(out, -1) if self.per_channel else a.reshape(1, -1)
        ints, scale, ratio = grid_quantize(rows, self.magnitudes)
        if not self.per_channel:
            scale = np.repeat(scale, out)
        info = {
            "magnitudes": list(self.magnitudes),
            "clip_ratio": ratio.tolist() if self.per_channel else float(ratio[0]),
            "seconds": time.perf_counter() - t0,
        }
        return QuantizedWeight(
            method=self.method,
            bits=self.bits,
            w_int=torch.from_numpy(ints.reshape(a.shape)),
            scale=torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float64)),
            per_channel=self.per_channel,
            info=info,
        )


# -- SQ ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SQQuantizer:
    """Subset Quantization: one searched subset per tensor or per output channel."""

    bits: int
    per_channel: bool = False
    universal: UniversalSet = field(default_factory=UniversalSet)
    progress: bool = False

    method = "sq"

    @property
    def name(self) -> str:
        return f"sq-w{self.bits}-{'channel' if self.per_channel else 'tensor'}"

    def _codes(self, row: np.ndarray, res: SearchResult) -> tuple[np.ndarray, float]:
        ints = np.array(res.int_magnitudes, dtype=np.int64)
        w_int = ints[res.level_indices(row)] * _signs(row.reshape(-1))
        top = float(ints[-1])
        scale = (res.max_abs if res.max_abs > 0 else 1.0) * res.alpha / top
        return w_int, scale

    def quantize(self, w) -> QuantizedWeight:
        a = _check_input(w)
        out = a.shape[0]
        if self.per_channel:
            results = search_channels(a, self.bits, self.universal, progress=self.progress)
            rows = a.reshape(out, -1)
            pairs = [self._codes(rows[c], r) for c, r in enumerate(results)]
            w_int = np.stack([p[0] for p in pairs]).reshape(a.shape)
            scale = np.array([p[1] for p in pairs], dtype=np.float64)
        else:
            results = [search_tensor(a, self.bits, self.universal)]
            flat, s = self._codes(a.reshape(-1), results[0])
            w_int, scale = flat.reshape(a.shape), np.full(out, s, dtype=np.float64)

        def pick(key):
            vals = [getattr(r, key) for r in results]
            return vals if self.per_channel else vals[0]

        info = {
            "alpha": pick("alpha"),
            "l2": pick("l2"),
            "max_abs": pick("max_abs"),
            "levels": [list(r.levels) for r in results] if self.per_channel
            else list(results[0].levels),
            "candidate": pick("candidate"),
            "rounds": pick("rounds"),
            "candidates": results[0].candidates,
            "seconds": float(sum(r.seconds for r in results)),
        }
        return QuantizedWeight(
            method="sq",
            bits=self.bits,
            w_int=torch.from_numpy(w_int),
            scale=torch.from_numpy(scale),
            per_channel=self.per_channel,
            subsets=[r.members for r in results],
            universal=self.universal,
            info=info,
        )


def make_quantizer(
    method: str,
    bits: int,
    per_channel: bool = False,
    universal: UniversalSet | None = None,
    progress: bool = False,
) -> GridQuantizer | SQQuantizer:
    """The quantiser of ``method`` (one of METHODS) at ``bits`` bits."""
    if method not in METHODS:
        raise SqaccelError(f"unknown quantisation method {method!r}; choose one of {METHODS}")
    allowed = UNIFORM_BITS if method == "uniform" else SUPPORTED_WEIGHT_BITS
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise SqaccelError(f"{method} weights: bits must be one of {allowed}, got {bits!r}")
    if method == "sq":
        u = universal if universal is not None else UniversalSet()
        candidate_pool(bits, u)  # refuses a universal set too small for the bit width
        return SQQuantizer(bits, per_channel, u, progress)
    return GridQuantizer(method, bits, per_channel)
