"""Python-side entry points of the cosimulation: generate Verilog for a design into a build
folder, describe the work in a JSON job file, run the cocotb test module on Verilator.

The cocotb test modules (``tb_pe``, ``tb_accel``) read the job named by ``SQACCEL_COSIM_JOB``.
Builds live in ``build/cosim/<design>`` (``SQACCEL_COSIM_BUILD`` moves them) and are
incremental: the Verilog file is rewritten only when its text changes, so a second run of
the same design skips the C++ compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.hw.pe import make_pe, weight_operand_shape
from sqaccel.sim.runner import CosimFailure, CosimResult, run_cocotb, waves_requested

JOB_ENV = "SQACCEL_COSIM_JOB"
SEED_ENV = "SQACCEL_SEED"
FULL_ENV = "SQACCEL_SIM_FULL"
BUILD_ENV = "SQACCEL_COSIM_BUILD"
REPO = Path(__file__).resolve().parents[1]
# Amaranth's Verilog trips Verilator's width lints (it extends by concatenation); they are
# style, not errors.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")


def build_root() -> Path:
    return Path(os.environ.get(BUILD_ENV, REPO / "build" / "cosim"))


def full_run() -> bool:
    """True under ``make sim``: the full counts of every level instead of the quick slices."""
    return os.environ.get(FULL_ENV, "0") not in ("", "0")


def seed_from_env() -> int:
    """``SQACCEL_SEED`` when set (to repeat a run), else a fresh random seed."""
    v = os.environ.get(SEED_ENV, "")
    return int(v) if v.strip() else random.SystemRandom().randrange(1 << 31)


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` unless the file already holds it (keeps Verilator's build incremental)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_job(build_dir: Path, name: str, job: dict) -> Path:
    """The job file the cocotb module reads (written whole, then renamed into place)."""
    path = Path(build_dir) / "jobs" / f"{name}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(job, f)
    os.replace(tmp, path)
    return path


def check_fst_support() -> None:
    """Verilator's FST writer compiles against lz4; say so before a long build fails."""
    dirs = [p for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    dirs += ["/usr/include", "/usr/local/include"]
    if not any((Path(d) / "lz4.h").is_file() for d in dirs):
        raise CosimFailure(
            "WAVES=1: Verilator's FST trace writer needs the lz4 development header (lz4.h; "
            "Debian/Ubuntu package liblz4-dev), which this machine lacks"
        )


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def simulate(
    *,
    verilog_file: Path,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    job: dict,
    job_name: str,
    seed: int,
    waves: bool | None = None,
    testcase: str | Sequence[str] | None = None,
) -> CosimResult:
    waves = waves_requested() if waves is None else waves
    if waves:
        check_fst_support()
        # Traced and untraced models differ: each keeps its own incremental build.
        build_dir = Path(build_dir).with_name(Path(build_dir).name + "-waves")
    job_path = write_job(build_dir, job_name, job)
    try:
        return run_cocotb(
            sources=[verilog_file],
            toplevel=toplevel,
            test_module=test_module,
            build_dir=build_dir,
            testcase=testcase,
            env={JOB_ENV: str(job_path)},
            seed=seed,
            waves=waves,
            build_args=VERILATOR_ARGS,
        )
    finally:
        job_path.unlink(missing_ok=True)


# -- level 1: the PE bench -----------------------------------------------------------------

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
    w = weight_operand_shape(cfg)
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
            pe = make_pe(cfg)
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
    bench = PEBench(cfgs)
    text = verilog.convert(bench, name="pe_bench")
    return write_if_changed(Path(out_dir) / "pe_bench.v", text)


def run_pe(
    cycles: int,
    seed: int,
    cfgs: Sequence[AccelConfig] = PE_BENCH_CONFIGS,
    chunk: int = 50_000,
    build_dir: Path | None = None,
    waves: bool | None = None,
) -> CosimResult:
    """Directed corner cases, then ``cycles`` random cycles, on every PE of ``cfgs`` at once;
    every PE's accumulator is compared with the model every cycle."""
    dicts = [c.to_dict() for c in cfgs]
    build_dir = Path(build_dir or build_root() / f"pe_bench-{_digest(dicts)}")
    src = pe_bench_verilog(cfgs, build_dir)
    job = {"configs": dicts, "cycles": int(cycles), "chunk": int(chunk), "seed": int(seed)}
    return simulate(verilog_file=src, toplevel="pe_bench", test_module="sqaccel.sim.tb_pe",
                    build_dir=build_dir, job=job, job_name="pe", seed=seed, waves=waves)
