"""The demo's sequence of steps, and running it with resumption after an interruption.

Steps whose outputs are files and take long (the accuracy sweep, the golden check, the
calibration table, the cosimulation, the synthesis) are recorded in ``progress.json`` with a
digest of their inputs when they finish; a later run with the same inputs reuses them
(``fresh`` runs everything again). The cheap in-memory steps always run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqaccel.demo import hardware, networks, software
from sqaccel.demo.state import Background, DemoRun
from sqaccel.errors import SqaccelError

PROGRESS_FILE = "progress.json"
# Steps no later step needs; each removes its stale result when skipped.
SKIPPABLE = ("accuracy", "golden", "table", "cosim", "resnet20", "synth")


@dataclass(frozen=True)
class Step:
    name: str
    doing: str
    fn: Callable[[DemoRun], None]
    # Resumable steps: the digest of their inputs, and the files (under the run folder)
    # that hold their result.
    key: Callable[[DemoRun], str] | None = None
    outputs: tuple[str, ...] = ()
    # A step whose work may start early, in a process of its own, once step ``early`` is
    # done (``start`` launches it); its place in the sequence is where it is collected.
    early: str | None = None
    start: Callable[[DemoRun], Background] | None = None


def step_report(run: DemoRun) -> None:
    from sqaccel.report import write_report

    run.write_json("run.json", run_record(run))
    out = write_report(run.out, run.report_dir, run.force)
    run.say(f"wrote {out / 'index.html'} and {out / 'index.md'}")


STEPS: tuple[Step, ...] = (
    Step("data", "load the digits data set", software.step_data),
    Step("model", "get the trained digits CNN", software.step_model),
    Step("verilog", "generate and lint the accelerator's Verilog", hardware.step_verilog),
    Step("search", "search the SQ subset of every layer for the array", software.step_search),
    Step("accuracy", "quantise the weights with each method and measure accuracy",
         software.step_accuracy, software.accuracy_key, ("accuracy.json",)),
    Step("golden", "check the integer golden model against the fake-quantised model",
         software.step_golden, software.golden_key, ("golden.json",)),
    Step("calibrate", "calibrate the searched network and build the integer golden model",
         software.step_calibrate),
    Step("table", "the integer accuracy table: calibration, per-channel, mixed bits",
         software.step_table, software.table_key, ("calibration.json",)),
    Step("export", "export the network's memory images", software.step_export),
    Step("cosim", "cosimulate on Verilator against the golden model, four levels",
         hardware.step_cosim, hardware.cosim_key, ("cosim.json",)),
    Step("resnet20", "resnet20 on MNIST: export, cycle model, whole-network cosimulation",
         networks.step_resnet20, networks.resnet_key, ("resnet20.json",)),
    Step("synth", "synthesise for the ECP5 (ULX3S) with Yosys and nextpnr",
         hardware.step_synth, hardware.synth_key, ("synth.json",), early="verilog",
         start=hardware.start_synth),
    Step("report", "write the report", step_report),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def run_record(run: DemoRun) -> dict:
    return {
        "date": run.state.started,
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{platform.system()} {platform.release()})",
        "python": platform.python_version(),
        "seed": run.seed,
        "config": run.cfg.to_dict(),
        "cache_dir": str(run.cache_dir),
        "steps": run.state.timings,
        "headline": headline(run),
    }


def _maybe_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def headline(run: DemoRun) -> list[str]:
    lines = []
    cfg = run.cfg
    acc = _maybe_json(run.out / "accuracy.json")
    if acc is not None and run.state.int_accuracy is not None:
        lines.append(f"digits test accuracy: full precision {acc['fp_accuracy']:.2f} %, SQ "
                     f"W{cfg.weight_bits}A{cfg.act_bits} integer (calibrated) "
                     f"{run.state.int_accuracy:.2f} %")
    cosim = _maybe_json(run.out / "cosim.json")
    if cosim is not None:
        net = cosim["network"]
        lines.append(f"RTL: {net['images']} test images through the {cosim['config']} top, every "
                     f"layer bit-exact, {net['correct']}/{net['images']} correct; "
                     f"{net['seconds_per_image']:.2f} s of simulation per image")
    res = _maybe_json(run.out / "resnet20.json")
    if res is not None:
        c, tot = res["cosim"], res["perf"]["totals"]
        lines.append(f"resnet20 on MNIST, SQ W{res['bits']}A{res['act_bits']} integer "
                     f"{res['integer_accuracy']:.2f} %; RTL: {c['images']} test images, every "
                     f"step bit-exact, {c['correct']}/{c['images']} correct; "
                     f"{tot['cycles']:,} array cycles per image")
    synth = _maybe_json(run.out / "synth.json")
    if synth is not None:
        by = {s["label"]: s for s in synth}
        pe_s, pe_m = by.get("PE shift-add"), by.get("PE multiplier (LUTs)")
        if pe_s and pe_m:
            lines.append(f"ECP5 PE: shift-add {pe_s['logic_cells']} cells / "
                         f"{pe_s['fmax_mhz']:.1f} MHz, LUT multiplier {pe_m['logic_cells']} "
                         f"cells / {pe_m['fmax_mhz']:.1f} MHz "
                         f"({pe_s['logic_cells'] / pe_m['logic_cells']:.2f} x the cells)")
        for t in (s for s in synth if s["design"] == "top"):
            lines.append(f"{t['label']}: {t['logic_cells']} cells, {t['dsp']} DSP, {t['bram']} "
                         f"block RAM, Fmax {t['fmax_mhz']:.1f} MHz")
    return lines


def _load_progress(run: DemoRun) -> dict:
    """The records of the steps earlier runs finished; a damaged record stops the run (its
    records would be lost), unless --fresh starts over anyway."""
    path = run.out / PROGRESS_FILE
    if run.fresh or not path.exists():
        return {}
    try:
        p = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        p, why = None, str(e)
    else:
        why = "not a record of steps"
    if not isinstance(p, dict) or not all(isinstance(v, dict) for v in p.values()):
        raise SqaccelError(f"{path}: not a readable progress record ({why}); move it away, "
                           "or run with --fresh to start over")
    return p


def _reusable(run: DemoRun, step: Step, done: dict) -> bool:
    if run.fresh or step.key is None:
        return False
    rec = done.get(step.name)
    return (isinstance(rec, dict) and rec.get("key") == step.key(run)
            and all((run.out / o).exists() for o in step.outputs))


def _start_early(run: DemoRun, done_step: Step, steps: list[Step], done: dict) -> None:
    """Starts the work of the later steps that wait only for ``done_step`` (unless skipped
    or reusable)."""
    for later in steps:
        if (later.early == done_step.name and later.start is not None
                and later.name not in run.skip and not _reusable(run, later, done)):
            run.state.background[later.name] = later.start(run)


def run_demo(run: DemoRun, until: str | None = None) -> list[str]:
    """Run the steps (up to ``until``); returns the headline lines."""
    if not 1 <= run.cosim_images <= 512:
        raise SqaccelError(f"--cosim-images {run.cosim_images}: choose 1 to 512")
    steps = list(STEPS)
    if until is not None:
        if until not in STEP_NAMES:
            raise SqaccelError(f"--until: unknown step {until!r} (choose from "
                               f"{list(STEP_NAMES)})")
        steps = steps[: STEP_NAMES.index(until) + 1]
    # Every output place is checked before the first step (sqaccel.files).
    from sqaccel import files
    from sqaccel.report import KIND as REPORT_KIND

    files.check_outside(run.report_dir, {"--out": run.out})
    files.check_replaceable(run.report_dir, REPORT_KIND, run.force)
    for create in (False, True):  # all checked, and the progress read, before any is made
        files.check_container(run.out, "demo run", run.force, create)
        files.check_container(run.cache_dir, "model cache", create=create)
        if not create:
            done = _load_progress(run)
    run.state.started = datetime.now(UTC).isoformat(timespec="seconds")
    run.state.timings = []
    t0 = time.perf_counter()
    current = None
    try:
        for i, step in enumerate(steps, 1):
            current = step
            print(f"[{i}/{len(steps)}] {step.name}: {step.doing}", flush=True)
            if step.name in run.skip:
                for o in step.outputs:  # an older run's result must not enter this report
                    (run.out / o).unlink(missing_ok=True)
                run.say("skipped (--skip)")
                run.state.timings.append({"name": step.name, "seconds": 0.0, "skipped": True})
                continue
            if _reusable(run, step, done):
                rec = done[step.name]
                run.say(f"finished by an earlier run ({rec['finished']}, {rec['seconds']:.1f} s) "
                        f"with the same inputs: reusing {', '.join(step.outputs)}")
                run.state.timings.append({"name": step.name, "seconds": rec["seconds"],
                                          "reused": True})
                _start_early(run, step, steps, done)
                continue
            t = time.perf_counter()
            step.fn(run)
            seconds = time.perf_counter() - t
            run.state.timings.append({"name": step.name, "seconds": seconds, "reused": False})
            if step.key is not None:
                done[step.name] = {"key": step.key(run), "seconds": seconds,
                                   "finished": datetime.now(UTC).isoformat(timespec="seconds")}
                run.write_json(PROGRESS_FILE, done)
            print(f"    ({seconds:.1f} s)", flush=True)
            _start_early(run, step, steps, done)
    except KeyboardInterrupt:
        name = current.name if current else "start"
        print(f"\ninterrupted in step {name}: finished steps are kept, nothing half-written "
              "is; run `make demo` again to go on", flush=True)
        raise
    finally:
        for bg in run.state.background.values():  # an error or --until before collecting
            bg.stop()
        run.state.background.clear()
    print(f"\ndemo done in {time.perf_counter() - t0:.1f} s")
    lines = headline(run)
    for line in lines:
        print(f"  {line}")
    if any(s.name == "report" for s in steps):
        print(f"report: {run.report_dir / 'index.html'} (and index.md)")
    return lines
