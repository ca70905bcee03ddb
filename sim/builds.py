"""Where cosimulations build and how one runs: Verilog into a build folder, a job file, the
cocotb test module on Verilator.

Builds live in ``build/cosim/<design>`` under the current folder (``SQACCEL_COSIM_BUILD``
moves them) and are incremental: a file is rewritten only when its text changes, so a second
run of the same design skips the C++ compile. Processes that share a build (parallel test
workers, two commands at once) take turns on it (``files.exclusive``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqaccel import files
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sim import job as jobs
from sqaccel.sim.runner import CosimResult, run_cocotb, waves_requested

SEED_ENV = "SQACCEL_SEED"
FULL_ENV = "SQACCEL_SIM_FULL"
BUILD_ENV = "SQACCEL_COSIM_BUILD"
# Amaranth's Verilog trips Verilator's width lints (it extends by concatenation); they are
# style, not errors. cocotb's runner makes every signal public (--public-flat-rw), which
# keeps Verilator from optimising the model (4x the C++, 2-3x slower); the testbenches
# touch only the top's ports, so only depth 1 stays public.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-public-flat-rw",
                  "--public-depth", "1")
# The C++ of the full top takes minutes at Verilator's default -Os and well under one at
# -O0; the simulation's time goes to the Python side anyway.
MAKE_OPT_FLAGS = ("OPT_FAST=-O0", "OPT_GLOBAL=-O0")
TOPLEVEL = "sqaccel_top"


def build_root() -> Path:
    """The cosimulation builds' folder (a container of ``sqaccel.files``: it must be empty,
    absent or one this toolchain made)."""
    return files.check_container(os.environ.get(BUILD_ENV) or Path("build") / "cosim",
                                 "cosimulation builds")


def full_run() -> bool:
    """True under ``make sim``: the full counts of every level instead of the quick slices."""
    return os.environ.get(FULL_ENV, "0") not in ("", "0")


def seed_from_env() -> int:
    """``SQACCEL_SEED`` when set (to repeat a run), else a fresh random seed."""
    v = os.environ.get(SEED_ENV, "").strip()
    if not v:
        return random.SystemRandom().randrange(1 << 31)
    if not v.isdigit() or int(v) >= 1 << 31:
        raise SqaccelError(f"{SEED_ENV}={v!r}: a seed is a whole number in 0..{(1 << 31) - 1}")
    return int(v)


def digest(obj) -> str:
    """A short digest of a JSON-able object (names build folders by their content)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def simulate(
    *,
    verilog_file: Path,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    job: jobs.PEJob | jobs.MultJob | jobs.AccelJob,
    job_name: str,
    seed: int,
    waves: bool | None = None,
    testcase: str | Sequence[str] | None = None,
    models: Sequence[Path] = (),
) -> CosimResult:
    """Write ``job``, build ``verilog_file`` (with the primitive ``models`` it
    instantiates) and run ``test_module`` on it."""
    waves = waves_requested() if waves is None else waves
    build_dir = Path(build_dir).resolve()  # the simulator runs inside it
    if waves:
        # Traced and untraced models differ: each keeps its own incremental build.
        build_dir = Path(build_dir).with_name(Path(build_dir).name + "-waves")
    job_path = jobs.write(job, build_dir / "jobs" / f"{job_name}-{os.getpid()}.json")
    saved_flags = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join([saved_flags or "", *MAKE_OPT_FLAGS]).strip()
    try:
        return run_cocotb(
            sources=[verilog_file, *models],
            toplevel=toplevel,
            test_module=test_module,
            build_dir=build_dir,
            testcase=testcase,
            env={jobs.JOB_ENV: str(job_path)},
            seed=seed,
            waves=waves,
            build_args=VERILATOR_ARGS,
        )
    finally:
        job_path.unlink(missing_ok=True)
        if saved_flags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_flags


def accel_build_dir(cfg: AccelConfig) -> Path:
    return build_root() / f"accel-{cfg.name()}-{digest(cfg.to_dict())}"


def accel_verilog(cfg: AccelConfig, build_dir: Path) -> Path:
    """``hw.verilog.generate`` into ``build_dir/rtl``: the top's Verilog, config.json and
    format.json (the host interface the testbench drives)."""
    from sqaccel.hw import verilog as hw_verilog

    # Verilator skips its whole run when its input is older than its output, so files whose
    # text did not change keep their time stamps.
    rtl = Path(build_dir) / "rtl"
    rtl.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        fresh = hw_verilog.generate(cfg, Path(tmp) / "rtl")
        for f in sorted(fresh.iterdir()):
            files.write_if_changed(rtl / f.name, f.read_text())
    return rtl / hw_verilog.VERILOG_FILE


def run_accel_job(cfg: AccelConfig, job: jobs.AccelJob, testcase: str, job_name: str,
                  waves: bool | None = None) -> CosimResult:
    """Run a job on the top of ``cfg`` (built once per config)."""
    build_dir = accel_build_dir(cfg)
    with files.exclusive(build_dir):  # one process at a time per build
        src = accel_verilog(cfg, build_dir)
        job.format = str(src.with_name("format.json").resolve())
        return simulate(verilog_file=src, toplevel=TOPLEVEL, test_module="sqaccel.sim.tb_accel",
                        build_dir=build_dir, job=job, job_name=job_name, seed=job.seed,
                        waves=waves, testcase=testcase)
