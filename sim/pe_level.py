"""Cosimulation level 1: the PE bench. Several PEs side by side in one Verilated design,
every accumulator compared with the model every cycle (``sqaccel.sim.tb_pe``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sqaccel import files
from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.hw import pe as hw_pe
from sqaccel.sim import job as jobs
from sqaccel.sim.builds import build_root, digest, simulate
from sqaccel.sim.runner import CosimResult

# One build holds a PE of every kind and shape worth testing; all run in parallel, each on
# its own random stream. Shift PEs differ by activation width and universal set (the weight
# width never reaches the PE: codes become step words outside it); multiplier PEs by both.
PE_BENCH_CONFIGS: tuple[AccelConfig, ...] = (
    AccelConfig(),
    AccelConfig(act_bits=4, k_max=64),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 1, 3), (0, 2, 4), (1, 5)))),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 2), (1, 3, 4, 6, 7)))),
    AccelConfig(pe="mult"),
    AccelConfig(pe="mult", weight_bits=3, k_max=64),
    AccelConfig(pe="mult", weight_bits=2, act_bits=4, k_max=64),
    AccelConfig(pe="mult", weight_bits=4, act_bits=4, k_max=1024),
)


def pe_label(cfg: AccelConfig) -> str:
    if cfg.pe == "shift":
        sets = "/".join("".join(map(str, e)) for e in cfg.universal.exponents)
        return f"shift a{cfg.act_bits} U={sets} k{cfg.k_max}"
    return f"mult b{cfg.weight_bits} a{cfg.act_bits} k{cfg.k_max}"


def pe_stim_widths(cfg: AccelConfig) -> list[int]:
    """Fields of one PE in the bench's input word, low bits first: x, w, en, first, bias."""
    w = hw_pe.weight_operand_shape(cfg)
    wbits = w.size if hasattr(w, "size") else w.width
    return [cfg.act_bits, wbits, 1, 1, cfg.acc_bits]


class PEBench(wiring.Component):
    """Several PEs side by side, their inputs packed into ``stim`` and their accumulators
    into ``acc`` (PE 0 in the low bits), so that one write and one read serve a cycle."""

    def __init__(self, cfgs: Sequence[AccelConfig]):
        self.cfgs = tuple(cfgs)
        super().__init__({
            "stim": In(sum(sum(pe_stim_widths(c)) for c in self.cfgs)),
            "acc": Out(sum(c.acc_bits for c in self.cfgs)),
        })

    def elaborate(self, platform):
        m = Module()
        pos, accs = 0, []
        for i, cfg in enumerate(self.cfgs):
            pe = hw_pe.make_pe(cfg)
            m.submodules[f"pe{i}"] = pe
            w = pe.w.as_value() if cfg.pe == "shift" else pe.w
            fields = Cat(pe.x, w, pe.en, pe.first, pe.bias)
            assert len(fields) == sum(pe_stim_widths(cfg))
            m.d.comb += fields.eq(self.stim[pos : pos + len(fields)])
            pos += len(fields)
            accs.append(pe.acc)
        m.d.comb += self.acc.eq(Cat(*accs))
        return m


def pe_bench_verilog(cfgs: Sequence[AccelConfig], out_dir: Path) -> Path:
    text = verilog.convert(PEBench(cfgs), name="pe_bench")
    return files.write_if_changed(Path(out_dir) / "pe_bench.v", text)


def pe_job(cfgs: Sequence[AccelConfig], cycles: int, seed: int, chunk: int = 50_000,
           model_offset: dict | None = None) -> jobs.PEJob:
    layout = hw_pe.shift_operand_layout(cfgs[0])
    return jobs.PEJob(
        configs=[c.to_dict() for c in cfgs],
        stim_widths=[pe_stim_widths(c) for c in cfgs],
        labels=[pe_label(c) for c in cfgs],
        latency=hw_pe.LATENCY,
        bias_delay=hw_pe.BIAS_DELAY,
        operand={"sign_bit": layout["sign"].offset, "step_offset": layout["step"].offset},
        cycles=int(cycles), chunk=int(chunk), seed=int(seed), model_offset=model_offset)


def run_pe(
    cycles: int,
    seed: int,
    cfgs: Sequence[AccelConfig] = PE_BENCH_CONFIGS,
    chunk: int = 50_000,
    build_dir: Path | None = None,
    waves: bool | None = None,
    model_offset: dict | None = None,
) -> CosimResult:
    """Directed corner cases, then ``cycles`` random cycles, on every PE of ``cfgs`` at once;
    every PE's accumulator is compared with the model every cycle. ``model_offset``
    ({"pe", "operand", "delta"}) gives the model a wrong weight for one operand, to show
    that a wrong model fails."""
    job = pe_job(cfgs, cycles, seed, chunk, model_offset)
    build_dir = Path(build_dir or build_root() / f"pe_bench-{digest(job.configs)}")
    with files.exclusive(build_dir):
        src = pe_bench_verilog(cfgs, build_dir)
        return simulate(verilog_file=src, toplevel="pe_bench", test_module="sqaccel.sim.tb_pe",
                        build_dir=build_dir, job=job, job_name="pe", seed=seed, waves=waves)
