"""``sqaccel perf``: cycles, latency, images per second and GOPS of a network on the array."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqaccel.commands.options import (
    add_config_arguments,
    config_from_args,
    count,
    overrides,
    positive,
)
from sqaccel.errors import SqaccelError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images_dir", metavar="IMAGES_DIR", nargs="?",
                   help="images folder written by sqaccel export (its network and config)")
    p.add_argument("--model", metavar="NAME|FILE.py:FUNCTION", default=None,
                   help="instead of an images folder: a network (as in sqaccel export; "
                   "with --weights and --data for a user's model) on the config of "
                   "--config and the overrides")
    p.add_argument("--weights", metavar="FILE", help="with --model: its weights file")
    p.add_argument("--data", metavar="digits|mnist5k|FOLDER",
                   help="with --model: the calibration data (default: its own data set)")
    add_config_arguments(p)
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
    if (args.images_dir is None) == (args.model is None):
        raise SqaccelError("give an images folder or --model NAME, one of the two")
    if args.model is None:
        if (args.config is not None or overrides(args) or args.weights is not None
                or args.data is not None):
            raise SqaccelError(f"{args.images_dir}: an images folder carries its own network "
                               "and config; --config, the overrides, --weights and --data "
                               "go with --model")
        net = images.load(args.images_dir).network
    else:
        from sqaccel.sw.deploy import network_for

        net = network_for(args.model, config_from_args(args), weights=args.weights,
                          data=args.data)
    p = network_perf(net, args.batch, args.fmax or fmax, cells)
    if args.json:
        print(json.dumps(p.to_dict(), indent=1))
    else:
        print(format_table(p))
    return 0
