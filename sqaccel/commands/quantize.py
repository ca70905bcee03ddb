"""``sqaccel quantize``: quantise a model's weights with each quantiser and report accuracy.

The default workload is the digits CNN on its test split; ``--model`` names another
built-in network, an ImageNet ResNet (a user's ``--weights`` and image folder ``--data``) or
a user's model (``sqaccel.sw.workloads``).
"""

from __future__ import annotations

import argparse
import json
import sys

from sqaccel.commands.options import add_model_arguments, count, seed, size
from sqaccel.errors import SqaccelError

BITS_CHOICES = (2, 3, 4, 8)
DEFAULT_BITS = (4, 3, 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sqaccel.sw.quantizers import METHODS

    add_model_arguments(p)
    p.add_argument("--method", nargs="+", choices=(*METHODS, "all"), default=["all"],
                   help="quantiser(s); 'all' runs each of " + ", ".join(METHODS))
    p.add_argument("--bits", nargs="+", type=int, choices=BITS_CHOICES, default=list(DEFAULT_BITS),
                   help="weight bit widths (default 4 3 2)")
    p.add_argument("--per-channel", action="store_true",
                   help="one scale (and SQ subset) per output channel")
    p.add_argument("--no-first-last-8bit", dest="first_last_8bit", action="store_false",
                   help="quantise the first and last layers like the others too")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--seed", type=seed, default=0, help="digits split and training seed")
    p.add_argument("--cache-dir", default="build/models", help="cache of retrained models")
    p.add_argument("--batch-size", type=count, default=64)
    p.add_argument("--resize", type=size, default=256, help="image folder: shorter side")
    p.add_argument("--crop", type=size, default=224, help="image folder: centre crop")
    p.add_argument("--num-classes", type=count, help="ResNet outputs (default: from the weights)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sqaccel.sw import weight_sweep as ws
    from sqaccel.sw.quantizers import METHODS, make_quantizer
    from sqaccel.sw.workloads import load_workload

    methods = list(METHODS) if "all" in args.method else list(dict.fromkeys(args.method))
    if args.batch_size < 1:
        raise SqaccelError(f"--batch-size must be >= 1, got {args.batch_size}")
    for method in methods:  # refuse an impossible (method, bits) before any work
        for bits in args.bits:
            make_quantizer(method, bits, per_channel=args.per_channel)
    work = load_workload(args.model, args.weights, args.data, args.seed, args.cache_dir,
                         args.batch_size, args.resize, args.crop, args.num_classes,
                         retrain=args.retrain)
    print(f"{work.name}: quantising {', '.join(methods)} at W{', W'.join(map(str, args.bits))}"
          f" on {work.data}", file=sys.stderr)
    result = ws.sweep(work.model, work.loader, methods, args.bits, args.per_channel,
                      args.first_last_8bit, progress=args.progress)
    result = {"model": work.name, "data": work.data, **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    edge = ("first and last layer 8-bit uniform per tensor" if args.first_last_8bit
            else "every layer at the given width")
    print(f"{work.name} on {work.data}; weights only, {edge}\n")
    print("Layers:")
    print(ws.layer_legend(result) + "\n")
    if len(result["layers"]) <= ws.COMPACT_LAYERS:
        print("Accuracy and per-layer weight MSE:\n")
        print(ws.accuracy_table(result, with_mse=True))
    else:
        print(ws.accuracy_table(result))
        print("\nPer-layer weight MSE (a bit width in brackets where the layer differs):\n")
        print(ws.mse_table(result))
    return 0
