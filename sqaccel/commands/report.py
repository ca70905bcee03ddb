"""``sqaccel report``: the last demo run's results as Markdown and HTML pages with plots."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=Path("build/demo"),
                   help="folder of the demo run to report on (default build/demo)")
    p.add_argument("--out", type=Path, default=Path("build/report"),
                   help="report folder (default build/report)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is not a report sqaccel wrote")


def run(args: argparse.Namespace) -> int:
    from sqaccel.report import write_report

    out = write_report(args.run, args.out, force=args.force)
    print(f"report: {out / 'index.html'} (and index.md)")
    return 0
