"""``sqaccel export``: a network quantised for the array, as memory images."""

from __future__ import annotations

import argparse

from sqaccel.commands.options import (
    add_config_arguments,
    add_model_arguments,
    config_from_args,
    count,
    seed,
)
from sqaccel.config import SUPPORTED_WEIGHT_BITS


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sqaccel.sw.actquant import CALIBRATION_METHODS
    from sqaccel.sw.qweight import PE_OF_METHOD

    p.add_argument("--out", required=True, help="images folder to write (replaced if it holds "
                   "earlier images)")
    p.add_argument("--method", choices=sorted(PE_OF_METHOD), default=None,
                   help="weight quantiser (default: the config's PE kind, else sq)")
    p.add_argument("--bits", type=int, choices=SUPPORTED_WEIGHT_BITS, default=4,
                   help="weight bits of the inner layers (first and last: the array's width)")
    add_model_arguments(p)
    add_config_arguments(p)
    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale (and SQ subset) per output channel")
    p.add_argument("--seed", type=seed, default=0, help="training and data split seed")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default="mse",
                   help="activation range search")
    p.add_argument("--calib-samples", type=count, default=512,
                   help="calibration-split samples used to calibrate the activations")
    p.add_argument("--cache-dir", default="build/models", help="cache of retrained models")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is not an images folder sqaccel wrote")


def run(args: argparse.Namespace) -> int:
    from sqaccel.sw.deploy import array_config, export_model

    cfg, method = array_config(config_from_args(args), args.method, args.config is not None
                               or args.pe is not None)
    r = export_model(args.out, cfg, method, args.bits, model=args.model, weights=args.weights,
                     data=args.data, retrain=args.retrain, per_channel=args.per_channel,
                     seed=args.seed, calibration=args.calibration,
                     calib_samples=args.calib_samples, cache_dir=args.cache_dir,
                     force=args.force, log=print)
    for line in r.reports:
        print(f"note: {line}")
    print(f"config {cfg.name()} ({cfg.step_tables} step tables), {method} "
          f"W{args.bits}A{cfg.act_bits}: {len(r.layer_bits)} GEMM layers, layer bits "
          f"{r.layer_bits}")
    print(f"{args.model} on the {r.dataset} test split: integer {r.integer_accuracy:.2f} %, "
          "fake-quantised float "
          f"{r.fake_quant_accuracy:.2f} % ({r.test_images} images)")
    print(f"wrote {r.files} files to {r.directory}")
    return 0
