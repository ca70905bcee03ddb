"""``sqaccel demo``: the main job on the offline default (the digits CNN).

The demo is a sequence of named steps; each takes the shared ``DemoRun`` state, says what
it does, and leaves its results on the state for the steps after it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqaccel.errors import SqaccelError

DEMO_BITS = (4, 3, 2)


@dataclass
class DemoRun:
    seed: int = 0
    out: Path = Path("build/demo")
    cache_dir: Path = Path("build/models")
    progress: bool = True
    state: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        print(f"    {msg}", flush=True)


@dataclass(frozen=True)
class Step:
    name: str
    doing: str
    fn: Callable[[DemoRun], None]


def step_data(run: DemoRun) -> None:
    from sqaccel.sw.data import load_digits_split, make_loader

    split = load_digits_split(run.seed)
    sizes = split.sizes()
    run.say(f"scikit-learn digits, 8x8 grey images in [0, 1], stratified split seed {run.seed}: "
            + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    run.state["split"] = split
    run.state["test_loader"] = make_loader(split.test)


def step_model(run: DemoRun) -> None:
    from sqaccel.sw.train import load_or_train_digits

    run.state["model"] = load_or_train_digits(run.seed, run.cache_dir, log=run.say)


def step_accuracy(run: DemoRun) -> None:
    from sqaccel.sw.quantize_cmd import sweep
    from sqaccel.sw.quantizers import METHODS

    run.say(f"methods {', '.join(METHODS)} at W{', W'.join(map(str, DEMO_BITS))}, "
            "per tensor, weights only, first and last layer 8-bit uniform")
    result = sweep(run.state["model"], run.state["test_loader"], METHODS, DEMO_BITS,
                   per_channel=False, first_last_8bit=True, progress=run.progress,
                   log=run.say)
    split = run.state["split"]
    run.state["accuracy"] = {
        "model": "digits_cnn",
        "data": f"digits test split (seed {run.seed})",
        "split": split.sizes(),
        "seed": run.seed,
        **result,
    }


def step_tables(run: DemoRun) -> None:
    from sqaccel.sw.quantize_cmd import accuracy_table, layer_legend

    result = run.state["accuracy"]
    run.say("accuracy on the digits test split, with each quantised layer's weight MSE")
    print("\nLayers (MSE columns are named by layer):")
    print(layer_legend(result))
    print()
    print(accuracy_table(result, with_mse=True))
    print()
    md = "\n".join([
        "### Accuracy on the digits test split",
        "",
        "Weights only (activations in floating point), per-tensor quantisers, first and last "
        "layer 8-bit uniform; `MSE n` is the mean squared weight error of layer n.",
        "",
        accuracy_table(result, markdown=True, with_mse=True),
        "",
    ])
    print(md)
    run.state["accuracy_md"] = md


def step_write(run: DemoRun) -> None:
    from sqaccel.sw.models import write_text_atomic

    path = write_text_atomic(run.out / "accuracy.json",
                             json.dumps(run.state["accuracy"], indent=2) + "\n")
    md = write_text_atomic(run.out / "accuracy.md", run.state["accuracy_md"])
    run.say(f"wrote {path} and {md}")


STEPS: list[Step] = [
    Step("data", "load the digits data set", step_data),
    Step("model", "get the trained digits CNN", step_model),
    Step("accuracy", "quantise the weights with each method and measure accuracy", step_accuracy),
    Step("tables", "print the accuracy and weight-error tables", step_tables),
    Step("write", "write the accuracy table", step_write),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="data split and training seed")
    p.add_argument("--out", default="build/demo", help="output folder")
    p.add_argument("--cache-dir", default="build/models", help="trained model cache")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--until", metavar="STEP",
                   help="stop after this step, one of: " + ", ".join(s.name for s in STEPS))


def run(args: argparse.Namespace) -> int:
    demo = DemoRun(seed=args.seed, out=Path(args.out), cache_dir=Path(args.cache_dir),
                   progress=args.progress)
    steps = STEPS
    if args.until is not None:
        names = [s.name for s in STEPS]
        if args.until not in names:
            raise SqaccelError(f"--until: unknown step {args.until!r} (choose from {names})")
        steps = STEPS[: names.index(args.until) + 1]
    t0 = time.perf_counter()
    for i, step in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {step.name}: {step.doing}", flush=True)
        t = time.perf_counter()
        step.fn(demo)
        print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"demo done in {time.perf_counter() - t0:.1f} s")
    return 0
