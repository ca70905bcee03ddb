"""The buffers' RAM: banks one block RAM wide at the buffer's depth, the same words as one
memory (every address written, read and compared in simulation), and on ECP5 one block RAM
per bank with no logic between the RAMs and the read data."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from sqaccel.hw.banked_ram import BankedRAM, bank_widths
from sqaccel.hw.synth import module_cells


def test_bank_widths_follow_the_block_ram_shapes():
    assert bank_widths(64, 4096) == [4] * 16
    assert bank_widths(32, 3000) == [4] * 8  # a depth between shapes takes the deeper one
    assert bank_widths(200, 1024) == [18] * 11 + [2]
    assert bank_widths(8, 2) == [8]
    assert bank_widths(3, 20000) == [1, 1, 1]
    assert sum(bank_widths(25, 2048)) == 25


@pytest.mark.parametrize(("word_bits", "depth"), [(20, 2048), (7, 300)])
def test_every_word_reads_back_as_written(word_bits, depth):
    rng = random.Random(depth)
    init = [rng.getrandbits(word_bits) for _ in range(depth // 3)]
    ram = BankedRAM(word_bits, depth, init)
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


def test_each_bank_is_one_block_ram_with_nothing_after_it(tmp_path):
    """The default activation buffer (4,096 x 64): 16 block RAMs and not one LUT, so the
    read data reaches the array's input flip-flops straight from the RAMs."""
    cells = module_cells(BankedRAM(64, 4096), "ecp5", "act-buffer", out_root=tmp_path)
    total: dict[str, int] = {}
    for by_type in cells.values():
        for kind, n in by_type.items():
            total[kind] = total.get(kind, 0) + n
    assert total.get("DP16KD") == 16
    assert not any(k in total for k in ("LUT4", "PFUMX", "L6MUX21")), total
