"""The SQ subset search (docs/method.md, section 3), fast and brute force.

For b-bit weights a candidate is a combination of K = 2**(b-1) members of the universal set,
taken in the pool order ``itertools.combinations(range(U.size), K)`` over the members in
generation order (``UniversalSet``). Its levels ``l`` are its magnitudes in increasing order
divided by the largest, so the top level is 1.

The rule both implementations follow, to the bit:

- ``x = |w| / max|W|`` (float64, elementwise); signs are kept apart.
- Assignment at scale ``alpha``: the decision thresholds are ``t_i = alpha * m_i`` with
  ``m_i = (l_i + l_{i+1}) / 2 * (1 + 2**-40)`` (float64, computed once per candidate). A
  magnitude goes to level ``i`` = the number of thresholds strictly below it: the nearest
  level of ``alpha * l``, and a magnitude halfway between two levels goes to the LOWER one.
  "Halfway" includes a relative 2**-40 above the midpoint: weights that sit exactly on a
  midpoint in real arithmetic (common with integer-valued weights) then land on the same
  side whatever the last bits of alpha, which depend on how its sums were rounded.
- Round r (r = 1, 2, ...) starts from ``alpha_{r-1}`` (``alpha_0 = 1``): assign, giving the
  normalised levels ``q``; then ``alpha_r = <q, x> / <q, q>`` and
  ``err_r = ||x - alpha_r q||``. If ``<q, q> = 0`` (every magnitude on a zero level),
  ``alpha_r = alpha_{r-1}`` and ``err_r = ||x||``. (For a tensor with a nonzero weight this
  cannot happen: the magnitude 1 never rounds to zero, since ``alpha * l_min <= 1``.)
- The rounds stop after the first round r with ``|err_r - err_{r-1}| < 1e-5``
  (``err_0 = inf``) or after round 1000. The candidate's result is ``alpha_r``, ``err_r`` and
  the assignment of round r (made at ``alpha_{r-1}``: its thresholds are kept, so that
  ``||x - alpha q||`` of the quantised weights is exactly the reported error).
- The winner has the smallest ``err`` (float64, computed as in ``_direct_round``); exact
  equality is a tie, and the first candidate in pool order wins it.

``search_oracle`` is the rule written plainly: one candidate at a time, every weight compared
with every threshold each round. ``search_tensor`` runs all candidates at once on the sorted
magnitudes: a level's cell is a contiguous run of them, found by ``searchsorted``; sums come
from prefix sums, so a round costs O(K log N) per candidate. Prefix sums round differently
from direct sums, so the fast search recomputes, with ``_direct_round``, the final round of
every candidate whose error is within a generous bound on that rounding of the best, and
picks the winner among those exactly as the oracle does. Candidates whose level vectors are
equal (such as {1/4, 1/2} and {1/2, 1}) have equal results; the fast search runs the first
of each only.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from tqdm import tqdm

from sqaccel.config import SUPPORTED_WEIGHT_BITS, ConfigError, UniversalSet
from sqaccel.errors import SqaccelError

MAX_ROUNDS = 1000
TOLERANCE = 1e-5
HALFWAY_RTOL = 2.0**-40
_EPS = float(np.finfo(np.float64).eps)


# -- the candidate pool --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CandidatePool:
    """All candidate subsets of one bit width, in pool order."""

    bits: int
    universal: UniversalSet
    members: np.ndarray  # [C, K] universal-set positions, increasing magnitude
    levels: np.ndarray  # [C, K] float64 normalised levels, increasing, last = 1
    mids: np.ndarray  # [C, K-1] float64 (l_i + l_{i+1}) / 2 * (1 + HALFWAY_RTOL)
    # Pool positions of the first candidate of each distinct level vector, increasing
    # (e.g. {1/4, 1/2} and {1/2, 1} share the levels {1/2, 1} and so every result).
    distinct: np.ndarray
    copies: np.ndarray  # how many candidates share each of those level vectors

    @property
    def size(self) -> int:
        return int(self.members.shape[0])

    @property
    def k(self) -> int:
        return int(self.members.shape[1])


def check_bits(bits: int, universal: UniversalSet) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_WEIGHT_BITS:
        raise SqaccelError(f"SQ weight bits must be one of {SUPPORTED_WEIGHT_BITS}, got {bits!r}")
    k = 1 << (bits - 1)
    if universal.size < k:
        raise ConfigError(
            f"the universal set has {universal.size} magnitudes, fewer than the {k} levels "
            f"of {bits}-bit weights"
        )
    return k


def candidate_pool(bits: int, universal: UniversalSet | None = None) -> CandidatePool:
    """The pool of ``bits``-bit candidates over ``universal`` (default: the paper's set)."""
    u = universal if universal is not None else UniversalSet()
    check_bits(bits, u)
    return _pool(bits, u)


@lru_cache(maxsize=32)
def _pool(bits: int, u: UniversalSet) -> CandidatePool:
    k = 1 << (bits - 1)
    combos = np.array(list(itertools.combinations(range(u.size), k)), dtype=np.int64)
    ints = np.array(u.int_magnitudes, dtype=np.int64)
    order = np.argsort(ints[combos], axis=1, kind="stable")
    members = np.take_along_axis(combos, order, axis=1)
    mags = ints[members].astype(np.float64)
    levels = mags / mags[:, -1:]
    mids = (levels[:, :-1] + levels[:, 1:]) / 2.0 * (1.0 + HALFWAY_RTOL)
    _, first, copies = np.unique(levels, axis=0, return_index=True, return_counts=True)
    order = np.argsort(first)
    distinct, copies = first[order], copies[order]
    for a in (members, levels, mids, distinct, copies):
        a.setflags(write=False)
    return CandidatePool(bits, u, members, levels, mids, distinct, copies)


# -- results -------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The chosen subset of one tensor (or one output channel) and its fit."""

    bits: int
    candidate: int  # position in the pool
    members: tuple[int, ...]  # universal-set positions, increasing magnitude
    levels: tuple[float, ...]  # normalised levels, increasing, last = 1
    alpha: float
    l2: float  # ||w / max|W| - alpha q||, in units of max|W|
    max_abs: float  # max|W|; 0 for an all-zero channel
    seconds: float
    rounds: int
    thresholds: tuple[float, ...]  # decision thresholds on |w| / max|W| of the final assignment
    candidates: int = 0  # pool size
    pool_rounds: int = 0  # Lloyd rounds of all candidates together (the oracle's work)
    universal: UniversalSet = field(default_factory=UniversalSet)

    @property
    def int_magnitudes(self) -> tuple[int, ...]:
        return tuple(self.universal.int_magnitudes[m] for m in self.members)

    def level_indices(self, w: np.ndarray) -> np.ndarray:
        """Level index (0 = smallest) of each weight of this tensor, as the search assigned it."""
        x = normalise(np.asarray(w, dtype=np.float64).reshape(-1), self.max_abs)
        return np.searchsorted(np.array(self.thresholds), x, side="left")

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "candidate": self.candidate,
            "candidates": self.candidates,
            "members": list(self.members),
            "int_magnitudes": list(self.int_magnitudes),
            "levels": list(self.levels),
            "alpha": self.alpha,
            "l2": self.l2,
            "max_abs": self.max_abs,
            "rounds": self.rounds,
            "pool_rounds": self.pool_rounds,
            "seconds": self.seconds,
        }


# -- input ---------------------------------------------------------------------------------


def as_float64(w, what: str = "weights") -> np.ndarray:
    """A finite, non-empty float64 copy of ``w`` (numpy array or torch tensor)."""
    if isinstance(w, torch.Tensor):
        w = w.detach().to("cpu", torch.float64).numpy()
    try:
        a = np.array(w, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SqaccelError(f"{what}: not a numeric array ({e})") from None
    if a.size == 0:
        raise SqaccelError(f"{what}: the tensor is empty")
    bad = ~np.isfinite(a)
    if bad.any():
        raise SqaccelError(f"{what}: {int(bad.sum())} of {a.size} values are NaN or Inf")
    return a


def normalise(flat: np.ndarray, max_abs: float) -> np.ndarray:
    """|w| / max|W| (an all-zero channel, max|W| = 0, gives zeros)."""
    return np.abs(flat) / (max_abs if max_abs > 0 else 1.0)


# -- one round, written plainly (the oracle's round and the fast search's final check) -----


def _direct_round(
    x: np.ndarray, levels: np.ndarray, mids: np.ndarray, alpha: float
) -> tuple[float, float, np.ndarray]:
    """One Lloyd round at ``alpha``: (new alpha, L2 error, thresholds used)."""
    thr = alpha * mids
    index = np.add.reduce(thr[:, None] < x, axis=0, dtype=np.intp)  # every weight, threshold
    q = levels[index]
    qq = float(np.add.reduce(q * q))
    new_alpha = float(np.add.reduce(q * x)) / qq if qq > 0.0 else alpha
    e = x - new_alpha * q
    return new_alpha, math.sqrt(float(np.add.reduce(e * e))), thr


def _zero_channel_result(pool: CandidatePool, seconds: float) -> SearchResult:
    # Every candidate fits zeros exactly; the first one in pool order with a zero level
    # (every universal set has one: all terms off) codes them exactly and keeps alpha = 1,
    # a positive scale for the requantiser.
    zero = pool.universal.int_magnitudes.index(0)
    c = int(np.flatnonzero((pool.members == zero).any(axis=1))[0])
    return _result(pool, c, 1.0, 0.0, 0.0, seconds, 0, pool.mids[c])


def _result(
    pool, c, alpha, l2, max_abs, seconds, rounds, thresholds, pool_rounds=0
) -> SearchResult:
    return SearchResult(
        bits=pool.bits,
        candidate=int(c),
        members=tuple(int(m) for m in pool.members[c]),
        levels=tuple(float(v) for v in pool.levels[c]),
        alpha=float(alpha),
        l2=float(l2),
        max_abs=float(max_abs),
        seconds=float(seconds),
        rounds=int(rounds),
        thresholds=tuple(float(t) for t in thresholds),
        candidates=pool.size,
        pool_rounds=int(pool_rounds),
        universal=pool.universal,
    )


# -- the oracle ----------------------------------------------------------------------------


def search_oracle(
    w, bits: int, universal: UniversalSet | None = None, candidates=None
) -> SearchResult:
    """Brute-force search of one tensor: each candidate in turn, N x K work per round.

    ``candidates`` (pool positions) restricts the search to part of the pool (for timing).
    """
    t0 = time.perf_counter()
    pool = candidate_pool(bits, universal)
    flat = as_float64(w).reshape(-1)
    max_abs = float(np.max(np.abs(flat)))
    if max_abs == 0.0:
        raise SqaccelError("weights: the tensor is all zero")
    x = normalise(flat, max_abs)
    order = range(pool.size) if candidates is None else [int(c) for c in candidates]
    best, total = None, 0
    for c in order:
        levels, mids = pool.levels[c], pool.mids[c]
        alpha, prev, rounds = 1.0, math.inf, 0
        while rounds < MAX_ROUNDS:
            rounds += 1
            alpha, err, thr = _direct_round(x, levels, mids, alpha)
            if abs(err - prev) < TOLERANCE:
                break
            prev = err
        total += rounds
        if best is None or err < best[2]:
            best = (c, alpha, err, rounds, thr)
    c, alpha, err, rounds, thr = best
    return _result(pool, c, alpha, err, max_abs, time.perf_counter() - t0, rounds, thr, total)


# -- the fast search -----------------------------------------------------------------------


def prefix_sums(xs: np.ndarray) -> np.ndarray:
    """P[i] = xs[0] + ... + xs[i-1] for sorted xs in [0, 1], each within 2 ulp of exact.

    A plain cumulative sum drifts by up to n ulp of the total; here the bits of each x above
    2**-s are summed exactly as integers (s chosen so that the total fits in 62 bits) and
    the few bits below in float64, where their drift is negligible.
    """
    n = xs.size
    s = 62 - n.bit_length()
    hi = np.floor(xs * 2.0**s)  # exact: scaling by a power of two, then dropping bits
    lo = xs - hi * 2.0**-s  # exact: the dropped bits, each below 2**-s
    p = np.zeros(n + 1)
    p[1:] = np.cumsum(hi.astype(np.int64)).astype(np.float64) * 2.0**-s + np.cumsum(lo)
    return p


def _fast(x: np.ndarray, pool: CandidatePool) -> tuple:
    """(candidate, alpha, err, rounds, thresholds, pool rounds) of the winner for ``x``."""
    xs = np.sort(x)
    n = xs.size
    p1 = prefix_sums(xs)
    sx, sxx = float(p1[-1]), float(np.add.reduce(xs * xs))
    levels, mids = pool.levels[pool.distinct], pool.mids[pool.distinct]
    c_all, k = levels.shape
    # With cell boundaries b_j (j = 1..K-1) and the top level 1, the sums telescope:
    # <q, x> = sum x - sum_j P1[b_j] (l_j - l_{j-1}),  <q, q> = n - sum_j b_j (l_j^2 - l_{j-1}^2).
    # <q, q> > 0 always: the magnitude 1 (the max) never lands on a zero level, since
    # alpha <= 1 / (smallest nonzero level).
    #
    # Error bound: err^2 = sum x^2 - alpha (2 <q, x> - alpha <q, q>) here and the oracle's
    # direct sums differ by less than bound(alpha) = c (sum x^2 + 2 alpha sum x + alpha^2 n)
    # (each sum is within (k + log2 n + 16) ulp of its terms' total; c spares a factor 8).
    c_err = 8.0 * (k + n.bit_length() + 24) * _EPS

    def bound(alpha):
        return c_err * (sxx + alpha * (2.0 * sx + alpha * n))

    def slack(alpha, e):
        # |err - oracle err| from bound() on err^2: |sqrt(A) - sqrt(B)| <= min(sqrt(m), m/sqrt(A))
        m = bound(alpha)
        with np.errstate(divide="ignore"):
            return np.minimum(np.sqrt(m), m / e)

    # State of the candidates still iterating; per-level arrays are [K-1, active] so that
    # the sums over levels are row additions.
    dl = np.diff(levels, axis=1).T.copy()
    dl2 = np.diff(levels * levels, axis=1).T.copy()
    m_act = mids.T.copy()
    idx = np.arange(c_all)
    a = np.ones(c_all)  # alpha of this round's assignment
    a_last = np.ones(c_all)  # alpha of the previous round's assignment
    prev = np.full(c_all, np.inf)

    out_alpha = np.empty(c_all)
    out_assign = np.empty(c_all)
    out_e2 = np.empty(c_all)
    out_rounds = np.empty(c_all, dtype=np.int64)
    # candidate -> rounds whose stop decision was too close to call:
    # (round, alpha of its assignment, alpha of the previous one, err, new alpha)
    noted: dict[int, list[tuple[int, float, float, float, float]]] = {}
    for r in range(1, MAX_ROUNDS + 1):
        thr = m_act * a
        if thr.size >= 256:
            # Sorted keys let searchsorted resume where the previous key's search ended.
            flat = thr.ravel()
            order = np.argsort(flat)
            b = np.empty_like(order)
            b[order] = xs.searchsorted(flat[order], side="right")
            b = b.reshape(thr.shape)
        else:
            b = xs.searchsorted(thr, side="right")
        qx = sx - np.add.reduce(p1[b] * dl, axis=0)
        qq = n - np.add.reduce(b * dl2, axis=0)
        new_a = qx / qq
        e = np.sqrt(np.maximum(sxx - new_a * (2.0 * qx - new_a * qq), 0.0))
        step = np.abs(e - prev)
        done = step < TOLERANCE
        if r > 1:
            # A step this close to the tolerance may fall on the other side in the oracle's
            # arithmetic. Such a candidate goes on, and the round is noted: if it ends up a
            # contender, the oracle's arithmetic decides where it stops.
            near = np.abs(step - TOLERANCE)
            worst = 2.0 * float(np.max(slack(float(new_a.max()), min(e.min(), prev.min()))))
            if near.min() <= worst:
                unsure = near <= slack(new_a, e) + slack(a, prev)
                for i in np.flatnonzero(unsure):
                    noted.setdefault(int(idx[i]), []).append(
                        (r, float(a[i]), float(a_last[i]), float(e[i]), float(new_a[i]))
                    )
                done &= ~unsure
        if r == MAX_ROUNDS:
            done[:] = True
        if done.any():
            d = idx[done]
            out_alpha[d], out_assign[d], out_e2[d], out_rounds[d] = new_a[done], a[done], e[done], r
            keep = ~done
            idx, m_act, dl, dl2 = idx[keep], m_act[:, keep], dl[:, keep], dl2[:, keep]
            a, a_last, prev = new_a[keep], a[keep], e[keep]
            if idx.size == 0:
                break
        else:
            a, a_last, prev = new_a, a, e
    out_e2 *= out_e2

    # Every candidate that may be the best within the error bound is recomputed with the
    # oracle's arithmetic, in pool order, and the winner picked among those as it does.
    # A candidate with noted rounds may stop at any of them: its error lies between the
    # final one and the first noted one (the error never grows from round to round).
    upper2, alpha_hi = out_e2.copy(), out_alpha.copy()
    for c, notes in noted.items():
        upper2[c] = max(upper2[c], max(n[3] for n in notes) ** 2)
        alpha_hi[c] = max(alpha_hi[c], max(n[4] for n in notes))
    margin = bound(alpha_hi) + 1e-300
    contenders = np.flatnonzero(out_e2 - margin <= np.min(upper2 + margin))
    best = None
    for c in contenders:
        lv, md = levels[c], mids[c]
        found = None
        for r, a_now, a_before, _, _ in noted.get(int(c), []):
            new_a, e, thr = _direct_round(x, lv, md, a_now)
            if abs(e - _direct_round(x, lv, md, a_before)[1]) < TOLERANCE:
                found = (new_a, e, r, thr)
                break
        if found is None:
            new_a, e, thr = _direct_round(x, lv, md, float(out_assign[c]))
            found = (new_a, e, int(out_rounds[c]), thr)
        if best is None or found[1] < best[2]:
            best = (int(pool.distinct[c]), found[0], found[1], found[2], found[3])
    return best + (int(out_rounds @ pool.copies),)


def search_tensor(w, bits: int, universal: UniversalSet | None = None) -> SearchResult:
    """The SQ search of one tensor (one subset and one alpha for all of it)."""
    t0 = time.perf_counter()
    pool = candidate_pool(bits, universal)
    flat = as_float64(w).reshape(-1)
    max_abs = float(np.max(np.abs(flat)))
    if max_abs == 0.0:
        raise SqaccelError("weights: the tensor is all zero")
    c, alpha, err, rounds, thr, total = _fast(normalise(flat, max_abs), pool)
    return _result(pool, c, alpha, err, max_abs, time.perf_counter() - t0, rounds, thr, total)


def search_channels(
    w, bits: int, universal: UniversalSet | None = None, progress: bool = False
) -> list[SearchResult]:
    """One subset and alpha per output channel (dim 0), each normalised by its own max|W|.

    An all-zero channel (allowed, unless the whole tensor is zero) gets the first candidate
    in pool order with a zero level, alpha = 1 and error 0.
    """
    pool = candidate_pool(bits, universal)
    a = as_float64(w)
    if a.ndim == 0:
        raise SqaccelError("weights: per-channel search needs at least one dimension")
    rows = a.reshape(a.shape[0], -1)
    if not np.any(rows):
        raise SqaccelError("weights: the tensor is all zero")
    out = []
    for row in tqdm(
        rows, desc="SQ search", unit="ch", file=sys.stderr, disable=not progress, leave=False
    ):
        t0 = time.perf_counter()
        max_abs = float(np.max(np.abs(row)))
        if max_abs == 0.0:
            out.append(_zero_channel_result(pool, time.perf_counter() - t0))
            continue
        c, alpha, err, rounds, thr, total = _fast(normalise(row, max_abs), pool)
        seconds = time.perf_counter() - t0
        out.append(_result(pool, c, alpha, err, max_abs, seconds, rounds, thr, total))
    return out
