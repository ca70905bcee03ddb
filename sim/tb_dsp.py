"""cocotb test of the multiplier bench (``sqaccel.sim.dsp_level``): every product of every
multiplier, every cycle, against Python's integers.

An operand word written at falling edge i is registered at the next rising edge and its
product at the one after, so the read at falling edge i + 1 (``LockstepTB.play``'s read i+1)
shows it: read i shows the word written ``latency - 1`` reads earlier.
"""

from __future__ import annotations

import random

import cocotb

from sqaccel import abi
from sqaccel.sim import checker
from sqaccel.sim import job as jobs
from sqaccel.sim.drivers import LockstepTB


def operand_range(width: int, signed: int) -> tuple[int, int]:
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


def corners(width: int, signed: int) -> list[int]:
    lo, hi = operand_range(width, signed)
    return sorted({lo, hi, 0, 1, min(hi, max(lo, -1)), lo + 1, hi - 1})


def operands(job: jobs.MultJob, n: int, rng: random.Random, p_corner: float) -> list[list[int]]:
    """Per multiplier, a and b for ``n`` cycles: a corner value with probability p_corner."""
    cols = []
    for aw, asg, bw, bsg, _, _ in job.shapes:
        for w, sg in ((aw, asg), (bw, bsg)):
            lo, hi = operand_range(w, sg)
            cs = corners(w, sg)
            cols.append([rng.choice(cs) if rng.random() < p_corner else rng.randint(lo, hi)
                         for _ in range(n)])
    return cols


class MultBenchTB(LockstepTB):
    def __init__(self, dut, job: jobs.MultJob):
        super().__init__(dut, inp="stim", out="prod")
        self.job = job
        self.checked = 0

    async def run(self, cols: list[list[int]], what: str) -> None:
        job = self.job
        widths = [w for aw, _, bw, _, _, _ in job.shapes for w in (aw, bw)]
        signed = [s for _, asg, _, bsg, _, _ in job.shapes for s in (asg, bsg)]
        reads = await self.play(abi.pack_columns(cols, widths))
        got = abi.unpack_columns(reads, [s[4] for s in job.shapes],
                                 signed=[bool(s[5]) for s in job.shapes])
        lag = job.latency - 1
        n = len(reads)
        for i, shape in enumerate(job.shapes):
            a, b = cols[2 * i], cols[2 * i + 1]
            offset = job.model_offset if i == 0 else 0
            want = [a[t] * b[t] + offset for t in range(n - lag)]
            mism = checker.trace_mismatches(want, list(got[i][lag:]), start=0)
            label = "x".join(f"{'s' if s else 'u'}{w}" for w, s in
                             ((shape[0], signed[2 * i]), (shape[2], signed[2 * i + 1])))
            checker.fail_if(f"multiplier {i} ({label}), {what}", mism, n - lag,
                            unit="products")
        self.checked += n - lag


@cocotb.test()
async def mult_products(dut):
    """Corner operands (extremes, 0, +-1), then random ones; every product compared."""
    job = jobs.read_mult_job()
    tb = MultBenchTB(dut, job)
    rng = random.Random(job.seed)
    dut._log.info("seed %d", job.seed)
    tb.inp.value = 0
    await tb.reset()
    await tb.run(operands(job, 2000, rng, p_corner=1.0), "corner operands")
    await tb.run(operands(job, job.cycles, rng, p_corner=0.1), "random operands")
    dut._log.info("%d cycles on %d multipliers, all equal", tb.checked, len(job.shapes))
