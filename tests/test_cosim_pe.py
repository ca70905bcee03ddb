"""Level 1 of the cosimulation: every PE kind on Verilator, every cycle against sw/arith.

``make test`` runs a quick slice; ``make sim`` (SQACCEL_SIM_FULL=1) runs 10^6 random cycles.
SQACCEL_SEED repeats a run.
"""

from __future__ import annotations

import numpy as np
import pytest

from sqaccel.config import AccelConfig
from sqaccel.hw.pe import LATENCY
from sqaccel.sim import tb_pe
from sqaccel.sim.builds import full_run, seed_from_env
from sqaccel.sim.pe_level import PE_BENCH_CONFIGS, pe_job, run_pe

QUICK_CYCLES = 20_000
FULL_CYCLES = 1_000_000
# The PE's timing and operand format, as the job hands them to the testbench.
JOB = pe_job(PE_BENCH_CONFIGS, cycles=0, seed=0)
TIMING = tb_pe.PETiming(JOB.latency, JOB.bias_delay)


def table_of(cfg: AccelConfig) -> tb_pe.OperandTable:
    return tb_pe.operand_table(cfg, JOB.operand)


def test_pe_bench_on_verilator():
    seed = seed_from_env()
    cycles = FULL_CYCLES if full_run() else QUICK_CYCLES
    print(f"PE cosim: seed {seed} (repeat with SQACCEL_SEED={seed}), {cycles} random cycles")
    result = run_pe(cycles, seed)
    assert [c.name for c in result.cases] == ["pe_corners", "pe_random"]
    assert not result.failed


@pytest.mark.parametrize("cfg", PE_BENCH_CONFIGS, ids=lambda c: c.name())
def test_random_stimulus_honours_the_contract(cfg):
    """Dot products stay within K_max and the biases within +-bias_max, so the model's
    accumulator never leaves acc_bits; every operand and both activation limits appear."""
    rng = np.random.default_rng(3)
    table = table_of(cfg)
    s = tb_pe.random_slots(cfg, TIMING, len(table.ops), 20_000, 0.3, rng)
    assert not s.en[-LATENCY:].any()
    starts = np.flatnonzero((s.en == 1) & (s.first == 1))
    prods = np.flatnonzero(s.en)
    lengths = np.diff(np.searchsorted(prods, np.append(starts, len(s))))
    assert lengths.max() <= cfg.k_max and starts[0] == prods[0]
    assert set(s.op[prods].tolist()) == set(range(len(table.ops)))
    assert {0, cfg.act_max} <= set(s.x[prods].tolist())
    tb_pe.model_trace(cfg, TIMING, table, s, 0)  # raises on an accumulator overflow


def test_corner_stimulus_reaches_the_accumulator_limits():
    cfg = AccelConfig()
    table = table_of(cfg)
    s = tb_pe.corner_slots(cfg, TIMING, table, np.random.default_rng(0))
    acc = tb_pe.model_trace(cfg, TIMING, table, s, 0)
    extreme = cfg.bias_max + cfg.k_max * cfg.act_max * cfg.max_weight_int
    assert acc.max() == extreme and acc.min() == -extreme
    assert extreme < 1 << (cfg.acc_bits - 1) <= 2 * extreme


def test_operand_tables_cover_every_code():
    shift = table_of(AccelConfig())
    assert len(shift.ops) == 2 * 16 and sorted(set(np.abs(shift.wint).tolist())) == sorted(
        AccelConfig().universal.int_magnitudes)
    mult = table_of(AccelConfig(pe="mult", weight_bits=3))
    assert mult.ops.tolist() == list(range(8)) and sorted(mult.wint.tolist()) == list(
        range(-4, 4))


def test_model_trace_follows_the_pe_timing():
    cfg = AccelConfig(pe="mult", k_max=4)
    table = table_of(cfg)
    one = int(np.flatnonzero(table.wint == 1)[0])
    two = int(np.flatnonzero(table.wint == 2)[0])
    # x*w: 3*1, idle, 5*2 | new dot product from bias 100: 7*1; the bias follows `first`.
    s = tb_pe.Slots(
        x=np.array([3, 9, 5, 7, 0, 0, 0]),
        op=np.array([one, two, two, one, 0, 0, 0]),
        en=np.array([1, 0, 1, 1, 0, 0, 0]),
        first=np.array([1, 1, 0, 1, 0, 0, 0]),
        bias=np.array([99, 10, 99, 99, 100, 99, 99]),
    )
    assert tb_pe.model_trace(cfg, TIMING, table, s, -4).tolist() == [13, 13, 23, 107, 107, 107, 107]
    # A read one falling edge after a slot shows the slots LATENCY - 1 behind.
    want = ([-4] * (LATENCY - 1) + [13, 13, 23])[:3]
    assert tb_pe.expected_reads(np.array([13, 13, 23]), -4, TIMING.read_lag).tolist() == want
