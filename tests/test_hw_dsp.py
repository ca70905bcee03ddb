"""hw/dsp.py: the registered multiplier in logic (Amaranth simulation) and as the ECP5
MULT18X18D (Verilator, through sim/models/MULT18X18D.v), against Python's products."""

from __future__ import annotations

import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from sqaccel.config import AccelConfig
from sqaccel.hw.dsp import LATENCY, RegisteredMultiplier
from sqaccel.hw.requant import Requantiser
from sqaccel.hw.synth import ECP5, ICE40
from sqaccel.sim.dsp_level import BENCH_SHAPES, MultBench, PrimitivePlatform, run_mult_bench
from sqaccel.sim.runner import CosimFailure


def test_the_logic_form_gives_each_product_two_cycles_later():
    dut = RegisteredMultiplier(signed(8), unsigned(16))
    rng = random.Random(3)
    pairs = [(rng.randint(-128, 127), rng.randint(0, 65535)) for _ in range(200)]
    pairs += [(-128, 65535), (127, 65535), (-1, 1), (0, 0)]
    got = []

    async def bench(ctx):
        for a, b in pairs + [(0, 0)] * LATENCY:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # Read after tick t: the operands of tick t - (LATENCY - 1).
    assert got[LATENCY - 1 : LATENCY - 1 + len(pairs)] == [a * b for a, b in pairs]


def _instances(text: str, cell: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip().startswith(f"cell \\{cell} "))


def test_the_ecp5_target_gets_registered_blocks_and_others_plain_logic():
    bench = MultBench(BENCH_SHAPES)
    fitting = sum(1 for a, b in BENCH_SHAPES
                  if a.width + (not a.signed) <= 18 and b.width + (not b.signed) <= 18)
    assert fitting == len(BENCH_SHAPES) - 1  # the bench holds one too wide for the block
    text = rtlil.convert(bench, platform=PrimitivePlatform())
    assert _instances(text, "MULT18X18D") == fitting
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        assert f'parameter \\REG_{reg}_CLK "CLK0"' in text
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in text
    assert _instances(rtlil.convert(MultBench(BENCH_SHAPES)), "MULT18X18D") == 0
    assert _instances(rtlil.convert(MultBench(BENCH_SHAPES), platform=ICE40), "MULT18X18D") == 0


def test_the_requantiser_for_ecp5_multiplies_in_registered_blocks():
    cfg = AccelConfig()
    dut = Requantiser(cfg)
    # The streams are always ready: their constant ready bits are no ports.
    ports = [dut.i.payload.as_value(), dut.i.valid, dut.o.payload, dut.o.valid]
    text = rtlil.convert(dut, platform=ECP5, ports=ports)
    slices = -(-cfg.acc_bits // 17)
    assert _instances(text, "MULT18X18D") == slices


def test_the_primitive_and_the_logic_give_the_same_products_on_verilator():
    r = run_mult_bench(cycles=20_000, seed=random.SystemRandom().randrange(1 << 31))
    assert [c.name for c in r.cases] == ["mult_products"] and not r.failed


def test_a_wrong_product_fails_the_bench():
    with pytest.raises(CosimFailure, match=r"multiplier 0 \(u17xu16\)"):
        run_mult_bench(cycles=100, seed=5, model_offset=1)
