"""``sqaccel sweep``: synthesise a grid of design points over seeds, on a process pool or
Ray; a results table, CSV, JSON and Pareto plot; an interrupted sweep resumes."""

from __future__ import annotations

import argparse
import json
import sys

from sqaccel.commands.options import count


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", metavar="GRID.json",
                   help="the grid: target, design points, seeds (docs/commands.md, sweep)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the sweep folder (rerun into it to resume)")
    p.add_argument("--workers", type=count, default=1,
                   help="synthesis runs at once on this machine (default 1); with --ray "
                   "and address local, the CPUs of the local Ray instance")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the jobs as Ray tasks on the cluster at ADDRESS ('auto', "
                   "'ray://host:10001', or 'local' for a fresh local instance); needs "
                   "sqaccel[cluster]")
    p.add_argument("--point", action="append", default=[], metavar="NAME",
                   help="sweep only this point of the grid (repeatable); the folder keeps "
                   "the whole grid, and a later sweep of it reuses this one's jobs")
    p.add_argument("--force", action="store_true",
                   help="sweep into a sweep folder made with another grid")
    p.add_argument("--json", action="store_true",
                   help="print results.json instead of the table (progress on stderr)")


def run(args: argparse.Namespace) -> int:
    from sqaccel.sweep import format_table, load_grid, run_sweep

    stream = sys.stderr if args.json else sys.stdout
    res = run_sweep(load_grid(args.grid), args.out, workers=args.workers,
                    ray_address=args.ray, force=args.force, only=args.point,
                    progress=lambda line: print(line, file=stream, flush=True))
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
    else:
        print(format_table(res))
        print(f"{len(res.ran)} jobs run, {len(res.reused)} finished before, "
              f"{len(res.failed)} failed; {res.wall_s:.0f} s")
        print(f"wrote {res.out}/results.json, results.csv, summary.md, pareto.png")
    return 1 if res.failed else 0
