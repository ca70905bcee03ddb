"""The buffers' RAM: every address written, read and compared in simulation, and on ECP5
only block RAMs, with no logic between them and the read data."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from sqaccel.hw.buffer_ram import BufferRAM
from sqaccel.hw.synth import module_cells


@pytest.mark.parametrize(("word_bits", "depth"), [(20, 2048), (7, 300)])
def test_every_word_reads_back_as_written(word_bits, depth):
    rng = random.Random(depth)
    init = [rng.getrandbits(word_bits) for _ in range(depth // 3)]
    ram = BufferRAM(word_bits, depth, init)
    model = init + [0] * (depth - len(init))
    writes = [(rng.randrange(depth), rng.getrandbits(word_bits)) for _ in range(200)]
    got: list[int] = []

    async def bench(ctx):
        for a in range(depth):  # the initial contents, every address
            ctx.set(ram.rd.addr, a)
            await ctx.tick()
            got.append(ctx.get(ram.rd.data))
        assert got == model
        for a, v in writes:  # a write is read back the cycle after it lands
            ctx.set(ram.wr.addr, a)
            ctx.set(ram.wr.data, v)
            ctx.set(ram.wr.en, 1)
            await ctx.tick()
            ctx.set(ram.wr.en, 0)
            model[a] = v
            ctx.set(ram.rd.addr, a)
            await ctx.tick()
            assert ctx.get(ram.rd.data) == v
        for a in range(depth):
            ctx.set(ram.rd.addr, a)
            await ctx.tick()
            assert ctx.get(ram.rd.data) == model[a], f"address {a}"

    sim = Simulator(ram)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_the_buffer_is_block_rams_with_nothing_after_them(tmp_path):
    """The default activation buffer (4,096 x 64): 16 block RAMs and not one LUT, so the
    read data reaches the array's input flip-flops straight from the RAMs."""
    cells = module_cells(BufferRAM(64, 4096), "ecp5", "act-buffer", out_root=tmp_path)
    total: dict[str, int] = {}
    for by_type in cells.values():
        for kind, n in by_type.items():
            total[kind] = total.get(kind, 0) + n
    assert total.get("DP16KD") == 16
    assert not any(k in total for k in ("LUT4", "PFUMX", "L6MUX21")), total
