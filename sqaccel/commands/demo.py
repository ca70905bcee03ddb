"""``sqaccel demo``: the main job on the offline default (the digits CNN), end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqaccel.commands.options import add_config_arguments, config_from_args, count, seed


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sqaccel.demo.run import SKIPPABLE, STEP_NAMES

    p.add_argument("--seed", type=seed, default=0, help="data split and training seed")
    add_config_arguments(p, fields=())
    p.add_argument("--out", type=Path, default=Path("build/demo"), help="run folder")
    p.add_argument("--report", type=Path, default=Path("build/report"), help="report folder")
    p.add_argument("--cache-dir", type=Path, default=Path("build/models"),
                   help="trained model cache")
    p.add_argument("--cosim-images", type=count, default=8,
                   help="digits test images through the whole network on the RTL (default 8)")
    p.add_argument("--force", action="store_true",
                   help="write into --out and --report even if they are folders sqaccel did "
                   "not make")
    p.add_argument("--fresh", action="store_true",
                   help="run every step again, even those a previous run finished")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--until", metavar="STEP",
                   help=f"stop after this step, one of: {', '.join(STEP_NAMES)}")
    p.add_argument("--skip", metavar="STEP", action="append", default=[],
                   choices=SKIPPABLE, help="leave out a step (repeatable): "
                   + ", ".join(SKIPPABLE) + "; the report says it was not part of the run")


def run(args: argparse.Namespace) -> int:
    from sqaccel.demo.run import run_demo
    from sqaccel.demo.state import DemoRun

    demo = DemoRun(seed=args.seed, out=args.out, cache_dir=args.cache_dir,
                   report_dir=args.report, progress=args.progress, fresh=args.fresh,
                   cosim_images=args.cosim_images, skip=frozenset(args.skip),
                   force=args.force,
                   cfg=config_from_args(args))
    run_demo(demo, args.until)
    return 0
