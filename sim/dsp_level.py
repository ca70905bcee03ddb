"""The multiplier bench: ``hw.dsp.RegisteredMultiplier`` as synthesis builds it for ECP5 (the
MULT18X18D primitive, simulated through ``models/MULT18X18D.v``), several shapes side by
side, every product compared with Python's every cycle (``sqaccel.sim.tb_dsp``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sqaccel import files
from sqaccel.hw import dsp
from sqaccel.sim import job as jobs
from sqaccel.sim.builds import build_root, digest, simulate
from sqaccel.sim.runner import CosimResult

MODELS = Path(__file__).parent / "models"
MULT18X18D_MODEL = MODELS / "MULT18X18D.v"

# The requantiser's two slices (unsigned 17 and signed 8 bits, times the unsigned 16-bit M),
# the block's widest operands, and one too wide for it, which stays in logic.
BENCH_SHAPES: tuple[tuple[Shape, Shape], ...] = (
    (unsigned(17), unsigned(16)),
    (signed(8), unsigned(16)),
    (signed(18), signed(18)),
    (unsigned(17), signed(18)),
    (signed(20), unsigned(16)),
)


class PrimitivePlatform:
    """What the generator sees of the ECP5 target when the bench is elaborated."""

    mult_primitive = dsp.MULT18X18D


class MultBench(wiring.Component):
    """Multipliers side by side: operands packed into ``stim`` (a0, b0, a1, b1, ...; low bits
    first), products into ``prod``."""

    def __init__(self, shapes: Sequence[tuple[Shape, Shape]]):
        self.shapes = tuple(shapes)
        self.muls = [dsp.RegisteredMultiplier(a, b) for a, b in self.shapes]
        super().__init__({
            "stim": In(sum(a.width + b.width for a, b in self.shapes)),
            "prod": Out(sum(mul.p.shape().width for mul in self.muls)),
        })

    def elaborate(self, platform):
        m = Module()
        pos = 0
        for i, mul in enumerate(self.muls):
            m.submodules[f"mul{i}"] = mul
            operands = Cat(mul.a, mul.b)
            m.d.comb += operands.eq(self.stim[pos : pos + len(operands)])
            pos += len(operands)
        m.d.comb += self.prod.eq(Cat(*(mul.p for mul in self.muls)))
        return m


def bench_verilog(shapes: Sequence[tuple[Shape, Shape]], out_dir: Path) -> Path:
    text = verilog.convert(MultBench(shapes), name="mult_bench", platform=PrimitivePlatform())
    return files.write_if_changed(Path(out_dir) / "mult_bench.v", text)


def run_mult_bench(cycles: int, seed: int,
                   shapes: Sequence[tuple[Shape, Shape]] = BENCH_SHAPES,
                   model_offset: int = 0, waves: bool | None = None) -> CosimResult:
    """Corner operands, then ``cycles`` random cycles, through every multiplier of ``shapes``;
    ``model_offset`` makes the model's products of multiplier 0 wrong (checker tests)."""
    spec = [[w for s in (a, b, dsp.product_shape(a, b)) for w in (s.width, int(s.signed))]
            for a, b in shapes]
    job = jobs.MultJob(shapes=spec, latency=dsp.LATENCY, cycles=int(cycles), seed=int(seed),
                       model_offset=int(model_offset))
    build_dir = build_root() / f"mult_bench-{digest(spec)}"
    with files.exclusive(build_dir):
        src = bench_verilog(shapes, build_dir)
        return simulate(verilog_file=src, toplevel="mult_bench",
                        test_module="sqaccel.sim.tb_dsp", build_dir=build_dir, job=job,
                        job_name="mult", seed=seed, waves=waves, models=[MULT18X18D_MODEL])
