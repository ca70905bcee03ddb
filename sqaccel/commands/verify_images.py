"""``sqaccel verify-images``: re-read an images folder, rebuild the network from it alone and
re-run it. Exit status 1 when the images fail a check, 2 on bad input (no such folder, no
manifest in it, a bad option)."""

from __future__ import annotations

import argparse
import sys

from sqaccel.commands.options import add_config_arguments, config_from_args, count


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="images folder written by sqaccel export")
    p.add_argument("--samples", type=count, default=None,
                   help="digits test images to re-run (default: all)")
    add_config_arguments(p, fields=())  # --config: the build the images must be for
    p.add_argument("--structural", action="store_true",
                   help="check the files, words and config only: do not re-run the reference "
                   "inputs or the test predictions (a manifest without them then passes)")


def run(args: argparse.Namespace) -> int:
    from sqaccel.imagecodec import ImageError, NotAnImagesFolder
    from sqaccel.sw.deploy import verify_export

    cfg = config_from_args(args) if args.config else None
    try:
        lines = verify_export(args.dir, cfg, args.samples, args.structural)
    except NotAnImagesFolder:
        raise
    except ImageError as e:
        print(f"sqaccel verify-images: error: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0
