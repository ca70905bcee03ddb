"""GEMMs through the controller and the PE array, against the golden model.

The buffers start with several GEMMs laid out one after the other (section 7 layouts at
different base addresses); one command per GEMM runs it and its result words are compared
with ``arith.gemm`` + ``arith.requant`` packed by ``images.result_words``.
"""

from __future__ import annotations

import random

import pytest

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.hw import timing
from sqaccel.sim import hostmodel as hm


def shapes(cfg: AccelConfig, rng: random.Random, count: int) -> list[tuple[int, int, int]]:
    """Random (M, N, K): partial and whole tiles, K = 1, K below and above R + 5."""
    fixed = [(1, 1, 1), (cfg.rows, cfg.cols, 1), (cfg.rows + 1, 2 * cfg.cols + 1, 2),
             (2 * cfg.rows, 2 * cfg.cols, cfg.rows + 7)]
    rand = [(rng.randint(1, 3 * cfg.rows), rng.randint(1, 3 * cfg.cols), rng.randint(1, 24))
            for _ in range(count - len(fixed))]
    return fixed + rand


def run_and_check(cfg: AccelConfig, seed: int, count: int, ready_prob: float = 1.0) -> None:
    rng = random.Random(seed)
    gemms = [hm.random_gemm(cfg, m, n, k, rng, relu=rng.random() < 0.75)
             for m, n, k in shapes(cfg, rng, count)]
    placed, contents = hm.place(cfg, gemms)
    runs = hm.simulate(cfg, [p.command_packet(cfg) for p in placed], init=contents,
                       ready_prob=ready_prob, seed=seed)
    for p, run in zip(placed, runs, strict=True):
        want = p.gemm.expected(cfg)
        assert run.error == 0
        assert run.words == want, f"GEMM {p.gemm.shape} relu={p.gemm.relu}"
        assert run.lasts == [0] * (len(want) - 1) + [1]
        assert run.done_cycle >= run.last_cycle
        if ready_prob == 1.0:  # the documented cycle count, stalls included
            assert run.cycles == timing.cycles(cfg, *p.gemm.shape)


CONFIGS = {
    "shift-channel": AccelConfig(rows=2, cols=2),
    "shift-layer": AccelConfig(rows=2, cols=2, step_tables="layer"),
    "mult": AccelConfig(rows=2, cols=2, pe="mult"),
    # Hybrids: multiplier columns (SQ magnitudes in a multiplier) beside shift-add ones.
    "hybrid-channel": AccelConfig(rows=2, cols=3, mult_cols=2),
    "hybrid-layer": AccelConfig(rows=3, cols=2, mult_cols=1, step_tables="layer",
                                weight_bits=3),
    "hybrid-all": AccelConfig(rows=2, cols=2, mult_cols=2),
    "shift-3x2-b3-a4": AccelConfig(rows=3, cols=2, weight_bits=3, act_bits=4, k_max=64),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gemm_matches_golden(name):
    run_and_check(CONFIGS[name], seed=len(name), count=12)


def test_gemm_with_result_backpressure():
    run_and_check(AccelConfig(rows=2, cols=2, weight_bits=2), seed=7, count=6, ready_prob=0.4)


def test_a_wrong_word_is_caught():
    """The comparison is not vacuous: a GEMM checked against another GEMM's words fails."""
    cfg = CONFIGS["shift-channel"]
    rng = random.Random(3)
    a, b = hm.random_gemm(cfg, 3, 3, 4, rng), hm.random_gemm(cfg, 3, 3, 4, rng)
    placed, contents = hm.place(cfg, [a])
    (run,) = hm.simulate(cfg, [placed[0].command_packet(cfg)], init=contents)
    assert run.words == a.expected(cfg)
    assert run.words != b.expected(cfg)


def test_refused_and_empty_commands():
    cfg = AccelConfig(rows=2, cols=2, k_max=16, n_max=8)
    rng = random.Random(5)
    good = hm.random_gemm(cfg, 3, 3, 4, rng)
    placed, contents = hm.place(cfg, [good])
    cmds = [
        hm.command_packet(cfg, m=3, n=3, k=0),  # K = 0
        hm.command_packet(cfg, m=3, n=3, k=cfg.k_max + 1),  # K > K_max
        hm.command_packet(cfg, m=3, n=cfg.n_max + 1, k=4),  # N > n_max
        hm.command_packet(cfg, m=0, n=3, k=4),  # nothing to do
        placed[0].command_packet(cfg),  # and the accelerator still works
    ]
    runs = hm.simulate(cfg, cmds, init=contents)
    assert [r.error for r in runs] == [1, 1, 1, 0, 0]
    assert [len(r.words) for r in runs[:4]] == [0, 0, 0, 0]
    assert runs[4].words == good.expected(cfg)
    assert abi.buffers(cfg)["bias"].depth == 4
