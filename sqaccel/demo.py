"""``sqaccel demo``: the main job on the offline default (the digits CNN), end to end.

The demo is a sequence of named steps: data, model, search, accuracy, calibrate, table,
export, verilog, cosim, synth, report. Each takes the shared ``DemoRun`` state, says what it
does and leaves its results on the state or in the run folder (``build/demo``).

Every file a step writes is written atomically (temporary name, then rename), so an
interrupted step leaves its previous result or nothing. Steps whose outputs are files and
take long (the accuracy sweep, the calibration table, the cosimulation, the synthesis) are
recorded in ``progress.json`` with a digest of their inputs when they finish; a later run
with the same inputs reuses them (``--fresh`` runs everything again). The cheap in-memory
steps always run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqaccel.errors import SqaccelError

DEMO_BITS = (4, 3, 2)
PROGRESS_FILE = "progress.json"
# Steps no later step needs; each removes its stale result when skipped.
SKIPPABLE = ("accuracy", "golden", "table", "cosim", "synth")


def digest(obj) -> str:
    """A short digest of a JSON-able object (the inputs that decide a step's result)."""
    from sqaccel.sw.images import sha256

    return sha256(json.dumps(obj, sort_keys=True).encode())[:16]


def file_digest(path: Path) -> str:
    from sqaccel.sw.images import sha256

    return sha256(Path(path).read_bytes())[:16]


@dataclass
class DemoRun:
    seed: int = 0
    out: Path = Path("build/demo")
    cache_dir: Path = Path("build/models")
    report_dir: Path = Path("build/report")
    progress: bool = True
    fresh: bool = False
    cosim_images: int = 8
    skip: frozenset[str] = frozenset()
    state: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        print(f"    {msg}", flush=True)

    def write_json(self, name: str, obj) -> Path:
        from sqaccel.sw.models import write_text_atomic

        return write_text_atomic(self.out / name, json.dumps(obj, indent=1) + "\n")


@dataclass(frozen=True)
class Step:
    name: str
    doing: str
    fn: Callable[[DemoRun], None]
    # Resumable steps: the digest of their inputs, and the files (under the run folder)
    # that hold their result.
    key: Callable[[DemoRun], str] | None = None
    outputs: tuple[str, ...] = ()


# -- the software steps --------------------------------------------------------------------


def step_data(run: DemoRun) -> None:
    from sqaccel.sw.data import load_digits_split, make_loader

    split = load_digits_split(run.seed)
    sizes = split.sizes()
    run.say(f"scikit-learn digits, 8x8 grey images in [0, 1], stratified split seed {run.seed}: "
            + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    run.state["split"] = split
    run.state["test_loader"] = make_loader(split.test)


def step_model(run: DemoRun) -> None:
    from sqaccel.sw.train import cache_paths, load_or_train_digits

    run.state["model"] = load_or_train_digits(run.seed, run.cache_dir, log=run.say)
    # The weights as loaded (a trained model is cached before it is returned).
    run.state["model_digest"] = file_digest(cache_paths(run.seed, run.cache_dir)[0])


def step_search(run: DemoRun) -> None:
    from sqaccel.config import AccelConfig
    from sqaccel.sw.calibrate import search_weights
    from sqaccel.sw.golden import array_layer_bits

    cfg = AccelConfig()
    model = run.state["model"]
    bits = array_layer_bits(model, cfg.weight_bits, cfg)
    run.say(f"array {cfg.name()}: SQ subsets of {2 ** (cfg.weight_bits - 1)} magnitudes out "
            f"of the {cfg.universal.size}-value universal set, one per layer")
    t0 = time.perf_counter()
    qweights = search_weights(model, "sq", bits, cfg)
    scale = cfg.universal.scale
    for name, qw in qweights.items():
        mags = [cfg.universal.int_magnitudes[i] for i in qw.subsets[0]]
        run.say(f"layer {name:>3}: W{qw.bits} {qw.w_int.numel():>6} weights, levels "
                f"+-{{{', '.join(f'{m}/{scale}' for m in mags)}}} x alpha "
                f"{float(qw.scale[0]) * scale:.4f}")
    run.say(f"searched in {time.perf_counter() - t0:.1f} s")
    run.state.update(cfg=cfg, layer_bits=bits, qweights=qweights)


def step_accuracy(run: DemoRun) -> None:
    from sqaccel.sw.quantize_cmd import accuracy_table, layer_legend, sweep
    from sqaccel.sw.quantizers import METHODS

    run.say(f"methods {', '.join(METHODS)} at W{', W'.join(map(str, DEMO_BITS))}, "
            "per tensor, weights only, first and last layer 8-bit uniform")
    result = sweep(run.state["model"], run.state["test_loader"], METHODS, DEMO_BITS,
                   per_channel=False, first_last_8bit=True, progress=run.progress,
                   log=run.say)
    result = {"model": "digits_cnn", "data": f"digits test split (seed {run.seed})",
              "split": run.state["split"].sizes(), "seed": run.seed, **result}
    print("\nLayers (the MSE columns are named by layer):")
    print(layer_legend(result))
    print()
    print(accuracy_table(result, with_mse=True))
    print()
    run.write_json("accuracy.json", result)


def _accuracy_key(run: DemoRun) -> str:
    return digest(["accuracy", run.seed, run.state["model_digest"], DEMO_BITS])


def step_golden(run: DemoRun) -> None:
    from sqaccel.sw.golden import format_accuracy_table, integer_accuracy_table

    run.say("SQ and uniform at W4, W3, W2 with A8 activations (search only, activation "
            "ranges by MSE): the fake-quantised float model against the integer golden model")
    rows = integer_accuracy_table(run.state["model"], run.state["cfg"], seed=run.seed)
    print(format_accuracy_table(rows))
    run.write_json("golden.json", {"seed": run.seed, "rows": rows})


def _golden_key(run: DemoRun) -> str:
    return digest(["golden", run.seed, run.state["model_digest"], run.state["cfg"].to_dict()])


def step_calibrate(run: DemoRun) -> None:
    from sqaccel.sw.actquant import one_thread
    from sqaccel.sw.calibrate import CalibSettings, calibrated_network

    cfg = run.state["cfg"]
    split = run.state["split"]
    x_cal, y_cal = split.calib.tensors
    x_test, y_test = split.test.tensors
    run.say(f"block reconstruction of the searched weights on {len(y_cal)} calibration "
            f"images, activations at A{cfg.act_bits}")
    with one_thread():
        cal, net = calibrated_network(run.state["model"], run.state["qweights"], x_cal, cfg,
                                      CalibSettings(seed=run.seed), run.progress)
        acc = net.accuracy(x_test, y_test)
    run.say(f"integer golden model (SQ W{cfg.weight_bits}A{cfg.act_bits}, calibrated): "
            f"{acc:.2f} % on {len(y_test)} test images (calibration {cal.seconds:.1f} s)")
    run.state.update(net=net, int_accuracy=acc)


def step_table(run: DemoRun) -> None:
    from sqaccel.sw.accuracy_table import accuracy_table, format_markdown
    from sqaccel.sw.calibrate import CalibSettings

    run.say("integer golden model, uniform and SQ (search only, calibrated, per-channel, "
            "mixed bits) at W4A8, W3A8, W2A8, W4A4")
    result = accuracy_table(run.state["model"], run.seed, settings=CalibSettings(seed=run.seed),
                            progress=run.progress, cache_dir=run.cache_dir, log=run.say)
    print(format_markdown(result))
    run.write_json("calibration.json", result)


def _table_key(run: DemoRun) -> str:
    from sqaccel.sw.calibrate import CalibSettings

    return digest(["table", run.seed, run.state["model_digest"],
                   CalibSettings(seed=run.seed).to_dict()])


def step_export(run: DemoRun) -> None:
    from sqaccel.sw import images

    net = run.state["net"]
    x_test = run.state["split"].test.tensors[0]
    out = images.export(net, run.out / "images", reference_inputs=net.quantize_input(x_test[:16]),
                        info={"model": "digits_cnn", "dataset": "digits", "seed": run.seed,
                              "method": "sq", "bits": run.state["cfg"].weight_bits,
                              "calibrated": True})
    loaded = images.verify(out)
    files = sorted(p.name for p in out.iterdir())
    run.say(f"{len(files)} files in {out}: every GEMM layer's weights, step tables, biases and "
            f"requantiser words as $readmemh text and raw binary, and manifest.json; re-read "
            f"and re-run: {len(loaded.network.gemm_layers())} layers agree with the golden model")
    run.state["images_dir"] = out
    run.state["manifest_digest"] = file_digest(out / images.MANIFEST)


# -- the run -------------------------------------------------------------------------------


def _steps() -> list[Step]:
    from sqaccel import demo_hw

    return [
        Step("data", "load the digits data set", step_data),
        Step("model", "get the trained digits CNN", step_model),
        Step("search", "search the SQ subset of every layer for the 8x8 array", step_search),
        Step("accuracy", "quantise the weights with each method and measure accuracy",
             step_accuracy, _accuracy_key, ("accuracy.json",)),
        Step("golden", "check the integer golden model against the fake-quantised model",
             step_golden, _golden_key, ("golden.json",)),
        Step("calibrate", "calibrate the searched network and build the integer golden model",
             step_calibrate),
        Step("table", "the integer accuracy table: calibration, per-channel, mixed bits",
             step_table, _table_key, ("calibration.json",)),
        Step("export", "export the network's memory images", step_export),
        Step("verilog", "generate and lint the accelerator's Verilog", demo_hw.step_verilog),
        Step("cosim", "cosimulate on Verilator against the golden model, four levels",
             demo_hw.step_cosim, demo_hw.cosim_key, ("cosim.json",)),
        Step("synth", "synthesise for the ECP5 (ULX3S) with Yosys and nextpnr",
             demo_hw.step_synth, demo_hw.synth_key, ("synth.json",)),
        Step("report", "write the report", step_report),
    ]


def step_report(run: DemoRun) -> None:
    from sqaccel.report import write_report

    run.write_json("run.json", run_record(run))
    out = write_report(run.out, run.report_dir)
    run.say(f"wrote {out / 'index.html'} and {out / 'index.md'}")


def run_record(run: DemoRun) -> dict:
    return {
        "date": run.state["started"],
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{platform.system()} {platform.release()})",
        "python": platform.python_version(),
        "seed": run.seed,
        "config": run.state["cfg"].to_dict() if "cfg" in run.state else None,
        "cache_dir": str(run.cache_dir),
        "steps": run.state["timings"],
        "headline": headline(run),
    }


def headline(run: DemoRun) -> list[str]:
    lines = []
    acc = _maybe_json(run.out / "accuracy.json")
    if acc is not None and "int_accuracy" in run.state:
        cfg = run.state["cfg"]
        lines.append(f"digits test accuracy: full precision {acc['fp_accuracy']:.2f} %, SQ "
                     f"W{cfg.weight_bits}A{cfg.act_bits} integer (calibrated) "
                     f"{run.state['int_accuracy']:.2f} %")
    cosim = _maybe_json(run.out / "cosim.json")
    if cosim is not None:
        net = cosim["network"]
        lines.append(f"RTL: {net['images']} test images through the {cosim['config']} top, every "
                     f"layer bit-exact, {net['correct']}/{net['images']} correct; "
                     f"{net['seconds_per_image']:.2f} s of simulation per image")
    synth = _maybe_json(run.out / "synth.json")
    if synth is not None:
        by = {s["label"]: s for s in synth}
        pe_s, pe_m = by.get("PE shift-add"), by.get("PE multiplier (LUTs)")
        if pe_s and pe_m:
            lines.append(f"ECP5 PE: shift-add {pe_s['logic_cells']} cells / "
                         f"{pe_s['fmax_mhz']:.1f} MHz, LUT multiplier {pe_m['logic_cells']} "
                         f"cells / {pe_m['fmax_mhz']:.1f} MHz "
                         f"({pe_s['logic_cells'] / pe_m['logic_cells']:.2f} x the cells)")
        top = [s for s in synth if s["design"] == "top"]
        for t in top:
            lines.append(f"{t['label']}: {t['logic_cells']} cells, {t['dsp']} DSP, {t['bram']} "
                         f"block RAM, Fmax {t['fmax_mhz']:.1f} MHz")
    return lines


def _maybe_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _load_progress(run: DemoRun) -> dict:
    p = _maybe_json(run.out / PROGRESS_FILE)
    return p if isinstance(p, dict) else {}


def _reusable(run: DemoRun, step: Step, done: dict) -> bool:
    if run.fresh or step.key is None:
        return False
    rec = done.get(step.name)
    return (isinstance(rec, dict) and rec.get("key") == step.key(run)
            and all((run.out / o).exists() for o in step.outputs))


def add_arguments(p: argparse.ArgumentParser) -> None:
    names = ", ".join(s.name for s in _steps())
    p.add_argument("--seed", type=int, default=0, help="data split and training seed")
    p.add_argument("--out", type=Path, default=Path("build/demo"), help="run folder")
    p.add_argument("--report", type=Path, default=Path("build/report"), help="report folder")
    p.add_argument("--cache-dir", type=Path, default=Path("build/models"),
                   help="trained model cache")
    p.add_argument("--cosim-images", type=int, default=8,
                   help="digits test images through the whole network on the RTL (default 8)")
    p.add_argument("--fresh", action="store_true",
                   help="run every step again, even those a previous run finished")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--until", metavar="STEP", help=f"stop after this step, one of: {names}")
    p.add_argument("--skip", metavar="STEP", action="append", default=[],
                   choices=SKIPPABLE, help="leave out a step (repeatable): "
                   + ", ".join(SKIPPABLE) + "; the report says it was not part of the run")


def run(args: argparse.Namespace) -> int:
    demo = DemoRun(seed=args.seed, out=Path(args.out), cache_dir=Path(args.cache_dir),
                   report_dir=Path(args.report), progress=args.progress, fresh=args.fresh,
                   cosim_images=args.cosim_images, skip=frozenset(args.skip))
    if not 1 <= demo.cosim_images <= 512:
        raise SqaccelError(f"--cosim-images {demo.cosim_images}: choose 1 to 512")
    steps = _steps()
    if args.until is not None:
        names = [s.name for s in steps]
        if args.until not in names:
            raise SqaccelError(f"--until: unknown step {args.until!r} (choose from {names})")
        steps = steps[: names.index(args.until) + 1]
    demo.out.mkdir(parents=True, exist_ok=True)
    demo.state["started"] = datetime.now(UTC).isoformat(timespec="seconds")
    demo.state["timings"] = []
    done = _load_progress(demo)
    t0 = time.perf_counter()
    current = None
    try:
        for i, step in enumerate(steps, 1):
            current = step
            print(f"[{i}/{len(steps)}] {step.name}: {step.doing}", flush=True)
            if step.name in demo.skip:
                for o in step.outputs:  # an older run's result must not enter this report
                    (demo.out / o).unlink(missing_ok=True)
                demo.say("skipped (--skip)")
                demo.state["timings"].append({"name": step.name, "seconds": 0.0,
                                              "skipped": True})
                continue
            if _reusable(demo, step, done):
                rec = done[step.name]
                demo.say(f"finished by an earlier run ({rec['finished']}, {rec['seconds']:.1f} s) "
                         f"with the same inputs: reusing {', '.join(step.outputs)}")
                demo.state["timings"].append({"name": step.name, "seconds": rec["seconds"],
                                              "reused": True})
                continue
            t = time.perf_counter()
            step.fn(demo)
            seconds = time.perf_counter() - t
            demo.state["timings"].append({"name": step.name, "seconds": seconds,
                                          "reused": False})
            if step.key is not None:
                done[step.name] = {"key": step.key(demo), "seconds": seconds,
                                   "finished": datetime.now(UTC).isoformat(timespec="seconds")}
                demo.write_json(PROGRESS_FILE, done)
            print(f"    ({seconds:.1f} s)", flush=True)
    except KeyboardInterrupt:
        name = current.name if current else "start"
        print(f"\ninterrupted in step {name}: finished steps are kept, nothing half-written "
              "is; run `make demo` again to go on", flush=True)
        raise
    print(f"\ndemo done in {time.perf_counter() - t0:.1f} s")
    for line in headline(demo):
        print(f"  {line}")
    if any(s.name == "report" for s in steps):
        print(f"report: {demo.report_dir / 'index.html'} (and index.md)")
    return 0
