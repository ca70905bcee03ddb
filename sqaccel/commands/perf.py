"""``sqaccel perf``: cycles, latency, images per second and GOPS of a network on the array."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqaccel.commands.options import count, positive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images_dir", metavar="IMAGES_DIR",
                   help="images folder written by sqaccel export (its network and config)")
    p.add_argument("--batch", type=count, default=1,
                   help="images run together (they share each layer's commands; default 1)")
    p.add_argument("--fmax", type=positive, default=None, metavar="MHZ",
                   help="clock frequency for latency, images/s and GOPS")
    p.add_argument("--synth", type=Path, default=None, metavar="REPORT",
                   help="a synthesis report.json (sqaccel synth) of this config: its Fmax "
                   "and logic cells (--fmax wins over its Fmax)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from sqaccel.perf import format_table, network_perf, synth_figures
    from sqaccel.sw import images

    fmax, cells = synth_figures(args.synth) if args.synth else (None, None)
    loaded = images.load(args.images_dir)
    p = network_perf(loaded.network, args.batch, args.fmax or fmax, cells)
    if args.json:
        print(json.dumps(p.to_dict(), indent=1))
    else:
        print(format_table(p))
    return 0
