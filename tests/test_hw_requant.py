"""The column requantiser in simulation against arith.requant."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.sim import Simulator

from sqaccel import arith
from sqaccel.config import REQUANT_S_MAX, REQUANT_S_MIN, AccelConfig
from sqaccel.hw.requant import Requantiser

Case = tuple[int, int, int, bool]  # acc, M, S, relu


def run_requant(cfg: AccelConfig, cases: list[Case], gaps: bool = True) -> list[int]:
    dut = Requantiser(cfg)
    out: list[int] = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    rng = random.Random(9)

    async def drive(ctx):
        for acc, mm, s, relu in cases:
            while gaps and rng.random() < 0.2:  # bubbles must not disturb the pipeline
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, {"acc": acc, "rq": {"m": mm, "s": s}, "relu": int(relu)})
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def collect(ctx):
        async for _, _, valid, y in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                out.append(y)
            if len(out) == len(cases):
                return

    sim.add_testbench(drive)
    sim.add_testbench(collect)
    sim.run()
    return out


def golden(cfg: AccelConfig, cases: list[Case]) -> list[int]:
    out = []
    for acc, mm, s, relu in cases:
        y = arith.requant(torch.tensor([acc]), torch.tensor([mm]), torch.tensor([s]),
                          cfg.act_bits, relu=relu)
        out.append(int(y[0]))
    return out


def corner_cases(cfg: AccelConfig, rng: random.Random) -> list[Case]:
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    m_lo, m_hi = 1 << (cfg.requant_m_bits - 1), (1 << cfg.requant_m_bits) - 1
    cases: list[Case] = []
    # Ties: acc * M exactly half-way between two outputs, and one either side of it.
    for s in (1, 2, 5, 16, 17, 30):
        for mm in (m_lo, m_lo + 2, m_hi - 1):
            for acc in range(-7, 8):
                prod = acc * mm
                if prod % (1 << s) == 1 << (s - 1):
                    cases += [(acc, mm, s, True), (acc - 1, mm, s, True), (acc + 1, mm, s, True)]
    # Clamping at both ends, the extremes of the accumulator, every shift.
    for s in range(REQUANT_S_MIN, REQUANT_S_MAX + 1):
        for acc in (lo, hi, 0, -1, 1, rng.randrange(lo, hi)):
            cases.append((acc, rng.choice((m_lo, m_hi, rng.randrange(m_lo, m_hi))), s, True))
    # Just below and above 2^A - 1 after the shift: M = 2^15, S = 15 gives y = acc.
    for acc in (cfg.act_max - 1, cfg.act_max, cfg.act_max + 1, cfg.act_max + 2):
        cases.append((acc, m_lo, 15, True))
    # Raw mode: the accumulator, whatever M and S say.
    for acc in (lo, hi, 0, -1, 1, 12345, -12345):
        cases.append((acc, rng.randrange(m_lo, m_hi), rng.randrange(1, 64), False))
    # Random mix.
    for _ in range(200):
        cases.append((rng.randrange(lo, hi + 1), rng.randrange(m_lo, m_hi + 1),
                      rng.randrange(REQUANT_S_MIN, REQUANT_S_MAX + 1), rng.random() < 0.8))
    return cases


@pytest.mark.parametrize("cfg", [AccelConfig(), AccelConfig(act_bits=4, k_max=64)],
                         ids=["a8", "a4-k64"])
def test_requant_matches_golden(cfg):
    cases = corner_cases(cfg, random.Random(cfg.act_bits))
    want = golden(cfg, cases)
    assert run_requant(cfg, cases) == want
    # The corner cases do reach both clamps, a tie and raw negatives.
    assert 0 in want and cfg.act_max in want and min(want) < 0
    tie = [c for c in cases if c[0] * c[1] % (1 << c[2]) == 1 << (c[2] - 1) and c[0] > 0]
    assert tie


def test_requant_rounds_half_up_and_comparison_can_fail():
    cfg = AccelConfig()
    # 3 * 2^15 / 2^16 = 1.5 -> 2; 5 -> 2.5 -> 3 (half-up, not to even).
    cases = [(3, 1 << 15, 16, True), (5, 1 << 15, 16, True), (1, 1 << 15, 16, True)]
    got = run_requant(cfg, cases, gaps=False)
    assert got == golden(cfg, cases) == [2, 3, 1]
