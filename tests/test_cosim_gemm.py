"""Level 2 of the cosimulation: random GEMMs through the top's host interface, on array
shapes, widths, PE kinds and step-table modes; every result word against sw/arith.

``make test`` runs a quick slice (one small config with backpressure, a few GEMMs on the
default 8x8 build, cycle counts checked); ``make sim`` (SQACCEL_SIM_FULL=1) runs over
1,000 GEMMs on every config.
SQACCEL_SEED repeats a run.
"""

from __future__ import annotations

import time

import pytest

from sqaccel.config import AccelConfig
from sqaccel.sim import gemm_level
from sqaccel.sim.builds import full_run, seed_from_env
from sqaccel.sim.gemm_level import GEMM_CONFIGS, random_gemm_cases

FULL_GEMMS = 1000
CONFIGS = GEMM_CONFIGS if full_run() else GEMM_CONFIGS[:1]
PER_CONFIG = -(-FULL_GEMMS // len(GEMM_CONFIGS)) if full_run() else 40
DEFAULT_GEMMS = 24 if full_run() else 6


def _id(cfg: AccelConfig) -> str:
    return f"{cfg.name()}_{cfg.step_tables}"


def _run(cfg: AccelConfig, count: int, ready_prob: float) -> None:
    seed = seed_from_env()
    print(f"GEMM cosim {_id(cfg)}: seed {seed} (repeat with SQACCEL_SEED={seed}), "
          f"{count} GEMMs")
    cases = random_gemm_cases(cfg, count, seed)
    t = time.perf_counter()
    result = gemm_level.run_gemms(cfg, cases, seed, ready_prob=ready_prob)
    print(f"  {count} GEMMs equal to the golden arithmetic in {time.perf_counter() - t:.1f} s")
    assert [c.name for c in result.cases] == ["run_gemms"] and not result.failed


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_random_gemms(cfg):
    # Every other config with random backpressure on the result stream; the others hold
    # it ready, so each command's cycle count is checked against hw.timing too.
    _run(cfg, PER_CONFIG, ready_prob=0.7 if GEMM_CONFIGS.index(cfg) % 2 == 0 else 1.0)


def test_random_gemms_on_the_default_array():
    _run(AccelConfig(), DEFAULT_GEMMS, ready_prob=1.0)


def test_gemm_cases_cover_shapes_flavours_and_fit_the_buffers():
    cfg = GEMM_CONFIGS[0]
    cases = random_gemm_cases(cfg, 200, seed=11)
    names = " ".join(n for n, _ in cases)
    for flavour in ("random", "wide-requant", "extreme", "zero-x", "relu", "raw"):
        assert flavour in names
    ks = {g.shape[2] for _, g in cases}
    assert {1, cfg.k_max} <= ks
    batches = gemm_level.gemm_batches(cfg, cases)
    assert sum(len(b.commands) for b in batches) == 200 and len(batches) > 1
    for b in batches:
        for name, words in b.load.items():
            assert len(words) <= {"act": cfg.act_depth, "weights": cfg.weight_depth}.get(
                name, len(words))
    # The extreme flavour reaches the accumulator's limits on raw GEMMs.
    raw = [g.output(cfg) for n, g in cases if "extreme" in n and "raw" in n]
    top = cfg.bias_max + cfg.k_max * cfg.act_max * cfg.max_weight_int
    assert max(int(y.abs().max()) for y in raw) <= top
    assert any(int(y.abs().max()) > cfg.bias_max for y in raw)
