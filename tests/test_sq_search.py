"""The SQ search: the fast search against the brute-force oracle, the pool, the modes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sqaccel.config import UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw import sq_search
from sqaccel.sw.sq_search import (
    HALFWAY_RTOL,
    _direct_round,
    candidate_pool,
    prefix_sums,
    search_channels,
    search_oracle,
    search_tensor,
)


def tensors(bits: int, seed: int) -> list[np.ndarray]:
    """At least 50 tensors of many kinds; small N where the oracle is slow (4 bits)."""
    rng = np.random.default_rng(seed)
    hi = 300 if bits < 4 else 64
    out = [rng.normal(size=n) for n in (1, 2, 3, 4, 5)]  # tiny
    out += [rng.choice([-1.0, 0.0, 2.0], size=n) for n in (2, 3, 5)]  # tiny with ties
    for _ in range(7):
        out.append(rng.normal(size=int(rng.integers(16, hi))))
        out.append(rng.laplace(scale=0.02, size=int(rng.integers(16, hi))))
        out.append(rng.uniform(-1, 1, size=int(rng.integers(16, hi))))
        out.append(rng.standard_t(2, size=int(rng.integers(16, hi))))
        # ties: values from a small set, repeated; integer-valued weights
        out.append(rng.choice(rng.normal(size=6), size=int(rng.integers(16, hi))))
        out.append(rng.integers(-7, 8, size=int(rng.integers(16, hi))).astype(float))
    out.append(np.array([0.5, -1.0, 0.25, 0.0, 0.75] * 8))
    out.append(rng.normal(size=(4, 3, 3)))  # any shape
    return out


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_fast_search_matches_oracle(bits: int) -> None:
    cases = tensors(bits, seed=100 + bits)
    assert len(cases) >= 50
    for w in cases:
        fast, oracle = search_tensor(w, bits), search_oracle(w, bits)
        where = f"{bits}-bit, N={w.size}, w[:4]={w.reshape(-1)[:4]}"
        assert fast.candidate == oracle.candidate, where
        assert fast.members == oracle.members, where
        assert abs(fast.alpha - oracle.alpha) <= 1e-9 * abs(oracle.alpha), where
        assert abs(fast.l2 - oracle.l2) <= 1e-9 * max(oracle.l2, 1e-300), where
        assert fast.rounds == oracle.rounds, where
        assert fast.pool_rounds == oracle.pool_rounds, where  # every candidate's rounds


def test_close_calls_are_decided_as_the_oracle_does(monkeypatch) -> None:
    # A pessimistic rounding bound makes many stop decisions and winners "too close to
    # call": the fast search must then fall back on the oracle's arithmetic and still agree.
    monkeypatch.setattr(sq_search, "_EPS", 1e-7)
    calls = []
    direct = sq_search._direct_round

    def counted(*args):
        calls.append(1)
        return direct(*args)

    rng = np.random.default_rng(8)
    for bits, w in ((2, rng.laplace(size=150)), (2, rng.integers(-7, 8, size=90).astype(float)),
                    (3, rng.laplace(size=60))):
            monkeypatch.setattr(sq_search, "_direct_round", counted)
            fast = search_tensor(w, bits)
            monkeypatch.setattr(sq_search, "_direct_round", direct)
            oracle = search_oracle(w, bits)
            assert (fast.candidate, fast.alpha, fast.l2, fast.rounds) == (
                oracle.candidate, oracle.alpha, oracle.l2, oracle.rounds
            )
    assert len(calls) > 20  # the fallback really ran (a plain search makes one call)


def testprefix_sums_are_nearly_exact() -> None:
    rng = np.random.default_rng(9)
    for n in (1, 7, 1000, 100_000):
        xs = np.sort(np.abs(rng.laplace(size=n)))
        xs /= xs[-1]
        p = prefix_sums(xs)
        assert p[0] == 0.0 and p.size == n + 1
        for i in {1, n // 3, n // 2, n}:
            exact = math.fsum(xs[:i].tolist())
            assert abs(p[i] - exact) <= 2 * math.ulp(exact), (n, i)
    # a plain cumulative sum drifts much further at this size
    drift = abs(np.cumsum(xs)[-1] - math.fsum(xs.tolist())) / math.ulp(p[-1])
    assert drift > 2


def test_oracle_really_differs_between_candidates() -> None:
    # The comparison above is only meaningful if candidates' errors differ.
    w = np.random.default_rng(1).laplace(size=200)
    pool = candidate_pool(3)
    errs = {search_oracle(w, 3, candidates=[c]).l2 for c in range(0, pool.size, 50)}
    assert len(errs) > 20


@pytest.mark.parametrize("bits,count", [(2, 105), (3, 1365), (4, 6435)])
def test_candidate_pool(bits: int, count: int) -> None:
    u = UniversalSet()
    pool = candidate_pool(bits)
    assert pool.size == count and pool.k == 1 << (bits - 1)
    ints = np.array(u.int_magnitudes)
    combos = list(itertools.combinations(range(u.size), pool.k))
    for c in (0, 1, count // 2, count - 1):
        assert sorted(pool.members[c].tolist()) == list(combos[c])  # pool order
        mags = ints[pool.members[c]]
        assert (np.diff(mags) > 0).all()  # increasing magnitude
        np.testing.assert_array_equal(pool.levels[c], mags / mags[-1])
    assert (pool.levels[:, -1] == 1.0).all()
    # distinct level vectors: the first candidate of each, in pool order
    assert pool.distinct[0] == 0 and (np.diff(pool.distinct) > 0).all()
    assert len(np.unique(pool.levels, axis=0)) == pool.distinct.size


def test_threshold_rule_is_nearest_level() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=5000)
    pool = candidate_pool(4)
    for c in (0, 77, 3000, 6434):
        levels, alpha = pool.levels[c], 0.83
        _, _, thr = _direct_round(x, levels, pool.mids[c], alpha)
        by_threshold = np.searchsorted(thr, x, side="left")
        nearest = np.argmin(np.abs(x[:, None] - alpha * levels[None, :]), axis=1)
        assert (by_threshold == nearest).all()


def test_halfway_goes_to_the_lower_level() -> None:
    u = UniversalSet()
    pool = candidate_pool(2)
    pos = {v: i for i, v in enumerate(u.int_magnitudes)}
    # levels {0.5, 1}: midpoint 0.75; levels {0, 1}: midpoint 0.5
    for ints, w in (((16, 32), [1.0, 0.75]), ((0, 32), [1.0, 0.5])):
        pair = {pos[v] for v in ints}
        c = next(i for i in range(pool.size) if set(pool.members[i]) == pair)
        res = search_oracle(np.array(w), 2, candidates=[c])
        assert res.level_indices(np.array(w)).tolist() == [1, 0]
        # just above the tolerance band: the upper level
        above = res.thresholds[0] * (1 + 4 * HALFWAY_RTOL)
        assert res.level_indices(np.array([1.0, above])).tolist() == [1, 1]


def test_ties_between_candidates_go_to_the_first_in_pool_order() -> None:
    # {0.5, 1} x max: every candidate with levels (0.5, 1) fits exactly (error 0).
    w = np.array([1.0, -0.5, 0.5, 1.0])
    pool = candidate_pool(2)
    exact = [c for c in range(pool.size) if pool.levels[c][0] == 0.5]
    assert len(exact) > 3
    for res in (search_tensor(w, 2), search_oracle(w, 2)):
        assert res.candidate == exact[0] and res.l2 == 0.0 and res.alpha == 1.0


def test_result_fields() -> None:
    w = np.random.default_rng(3).laplace(size=(8, 50))
    res = search_tensor(w, 3)
    u = UniversalSet()
    assert list(res.int_magnitudes) == sorted(res.int_magnitudes)
    assert res.levels[-1] == 1.0 and len(res.levels) == 4
    assert res.max_abs == float(np.abs(w).max())
    assert res.seconds > 0 and res.rounds >= 1 and res.candidates == 1365
    assert res.int_magnitudes == tuple(u.int_magnitudes[m] for m in res.members)
    # the reported error is the error of the reported assignment and alpha
    x = np.abs(w.reshape(-1)) / res.max_abs
    q = np.array(res.levels)[res.level_indices(w)]
    assert math.isclose(float(np.linalg.norm(x - res.alpha * q)), res.l2, rel_tol=1e-12)
    d = res.to_dict()
    assert d["members"] == list(res.members) and d["alpha"] == res.alpha


def test_per_channel_matches_per_tensor_on_each_channel() -> None:
    rng = np.random.default_rng(4)
    w = rng.laplace(size=(6, 4, 3, 3)) * rng.uniform(0.1, 3, size=(6, 1, 1, 1))
    for bits in (2, 3):
        per = search_channels(w, bits)
        assert len(per) == 6
        for c, r in enumerate(per):
            alone = search_tensor(w[c], bits)
            assert (r.candidate, r.alpha, r.l2, r.max_abs) == (
                alone.candidate, alone.alpha, alone.l2, alone.max_abs
            )
        assert len({r.members for r in per}) > 1  # channels really differ


def test_all_zero_channel() -> None:
    w = np.random.default_rng(5).normal(size=(3, 20))
    w[1] = 0.0
    res = search_channels(w, 3)[1]
    u = UniversalSet()
    assert res.max_abs == 0.0 and res.l2 == 0.0 and res.alpha == 1.0
    assert u.int_magnitudes[res.members[0]] == 0
    assert (res.level_indices(w[1]) == 0).all()


def test_non_default_universal_set() -> None:
    u = UniversalSet(((0, 1, 2, 3),))  # single term: {1, 1/2, 1/4, 1/8, 0}
    assert u.size == 5
    assert candidate_pool(2, u).size == 10 and candidate_pool(3, u).size == 5
    with pytest.raises(SqaccelError, match="fewer than the 8 levels"):
        candidate_pool(4, u)
    rng = np.random.default_rng(6)
    three = UniversalSet(((0,), (1,), (3,)))  # three terms, each on or off: 8 magnitudes
    for uni in (u, three):
        for bits in (2, 3):
            for _ in range(5):
                w = rng.laplace(size=int(rng.integers(5, 200)))
                fast, oracle = search_tensor(w, bits, uni), search_oracle(w, bits, uni)
                assert fast.candidate == oracle.candidate
                assert abs(fast.alpha - oracle.alpha) <= 1e-9 * oracle.alpha
                assert fast.universal == uni
                ints = [uni.int_magnitudes[m] for m in fast.members]
                assert ints == sorted(ints)


@pytest.mark.parametrize(
    "w,match",
    [
        (np.array([1.0, np.nan]), "NaN or Inf"),
        (np.array([1.0, np.inf]), "NaN or Inf"),
        (np.array([]), "empty"),
        (np.zeros((3, 4)), "all zero"),
    ],
)
def test_bad_weights(w: np.ndarray, match: str) -> None:
    for fn in (search_tensor, search_oracle, search_channels):
        with pytest.raises(SqaccelError, match=match):
            fn(w, 3)


@pytest.mark.parametrize("bits", [0, 1, 5, 8, 2.0, True])
def test_bad_bits(bits) -> None:
    with pytest.raises(SqaccelError, match="bits"):
        search_tensor(np.ones(4), bits)
