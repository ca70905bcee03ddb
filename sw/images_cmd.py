"""``sqaccel export`` and ``sqaccel verify-images``: memory images of the digits network.

export: load (or train) the digits CNN, quantise its weights for the array, calibrate the
activations, build the integer network and write its images with a manifest that records
the test-split predictions and a few reference inputs. verify-images: re-read the images,
rebuild the network from them alone and re-run it, showing the same outputs and accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from sqaccel.config import SUPPORTED_ACT_BITS, SUPPORTED_WEIGHT_BITS, AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw import images
from sqaccel.sw.actquant import CALIBRATION_METHODS, one_thread
from sqaccel.sw.qweight import PE_OF_METHOD

METHOD_OF_PE = {pe: method for method, pe in PE_OF_METHOD.items()}
REFERENCE_SAMPLES = 16


def resolve_config(
    config: str | None, method: str | None, act_bits: int | None
) -> tuple[AccelConfig, str]:
    """The array config and the weight method. A config file fixes the PE kind and the
    activation width: ``method`` and ``act_bits`` must then agree with it."""
    if config is not None:
        cfg = AccelConfig.load(config)
        if method is not None and PE_OF_METHOD[method] != cfg.pe:
            raise SqaccelError(
                f"{config}: pe = {cfg.pe!r} runs {METHOD_OF_PE[cfg.pe]} weights, not {method}"
            )
        if act_bits is not None and act_bits != cfg.act_bits:
            raise SqaccelError(f"{config}: act_bits = {cfg.act_bits}, not {act_bits}")
        return cfg, method or METHOD_OF_PE[cfg.pe]
    method = method or "sq"
    changes = {"pe": PE_OF_METHOD[method]}
    if act_bits is not None:
        changes["act_bits"] = act_bits
    return dataclasses.replace(AccelConfig(), **changes), method


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="images folder to write (replaced if it holds "
                   "earlier images)")
    p.add_argument("--method", choices=sorted(PE_OF_METHOD), default=None,
                   help="weight quantiser (default: the config's PE kind, else sq)")
    p.add_argument("--bits", type=int, choices=SUPPORTED_WEIGHT_BITS, default=4,
                   help="weight bits of the inner layers (first and last: the array's width)")
    p.add_argument("--act-bits", type=int, choices=SUPPORTED_ACT_BITS, default=None,
                   help="activation bits (default: the config's)")
    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale (and SQ subset) per output channel")
    p.add_argument("--seed", type=int, default=0, help="training and data split seed")
    p.add_argument("--config", default=None, help="accelerator config JSON")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default="mse",
                   help="activation range search")
    p.add_argument("--calib-samples", type=int, default=512,
                   help="calibration-split samples used to calibrate the activations")
    p.add_argument("--cache-dir", default="build/models", help="trained-model cache")


def run_export(args: argparse.Namespace) -> int:
    from sqaccel.sw.golden import build_pipeline, digits_eval_data, float_accuracy
    from sqaccel.sw.train import load_or_train_digits

    cfg, method = resolve_config(args.config, args.method, args.act_bits)
    if args.bits > cfg.weight_bits:
        raise SqaccelError(f"--bits {args.bits} exceeds the array's {cfg.weight_bits}-bit weights")
    if args.calib_samples < 1:
        raise SqaccelError(f"--calib-samples must be >= 1, got {args.calib_samples}")
    model = load_or_train_digits(seed=args.seed, cache_dir=args.cache_dir, log=print)
    x_cal, (x_test, y_test) = digits_eval_data(args.calib_samples, args.seed)
    with one_thread():
        p = build_pipeline(model, method, args.bits, x_cal, cfg, args.per_channel,
                           args.calibration)
        net = p.network
        x_int = net.quantize_input(x_test)
        preds = net.predict(x_int)
        fq_acc = float_accuracy(p.fake_quant, x_test, y_test)
    int_acc = 100.0 * float((preds == y_test).double().mean())
    info = {
        "model": "digits_cnn",
        "dataset": "digits",
        "seed": args.seed,
        "method": method,
        "bits": args.bits,
        "layer_bits": {name: qw.bits for name, qw in p.qweights.items()},
        "act_bits": cfg.act_bits,
        "per_channel": bool(args.per_channel),
        "calibration": args.calibration,
        "calib_samples": int(x_cal.shape[0]),
        "activation_scales": p.scales.to_dict(),
        "test": {
            "count": int(y_test.numel()),
            "integer_accuracy": int_acc,
            "fake_quant_accuracy": fq_acc,
            "predictions": preds.tolist(),
        },
    }
    out = images.export(net, args.out, reference_inputs=x_int[:REFERENCE_SAMPLES], info=info)
    for line in net.reports:
        print(f"note: {line}")
    layers = net.gemm_layers()
    print(f"config {cfg.name()} ({cfg.step_tables} step tables), {method} "
          f"W{args.bits}A{cfg.act_bits}: {len(layers)} GEMM layers, layer bits "
          f"{[la.bits for la in layers]}")
    print(f"digits test accuracy: integer {int_acc:.2f} %, fake-quantised float {fq_acc:.2f} % "
          f"({y_test.numel()} images)")
    print(f"wrote {len(list(out.iterdir()))} files to {out}")
    return 0


def add_verify_images_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="images folder written by sqaccel export")
    p.add_argument("--samples", type=int, default=None,
                   help="digits test images to re-run (default: all)")
    p.add_argument("--config", default=None,
                   help="accelerator config JSON the images must have been built for")


def run_verify_images(args: argparse.Namespace) -> int:
    cfg = AccelConfig.load(args.config) if args.config else None
    loaded = images.verify(args.dir, cfg)
    net = loaded.network
    for line in loaded.checks:
        print(f"ok: {line}")
    ref = loaded.manifest.get("reference")
    if ref is not None and ref["logits"]:
        print(f"reference input 0 logits: {ref['logits'][0]}")
    info = loaded.manifest.get("info") or {}
    test = info.get("test")
    if info.get("dataset") != "digits" or not test:
        print("no digits test record in the manifest: accuracy not re-run")
        return 0
    from sqaccel.sw.golden import digits_eval_data

    _, (x_test, y_test) = digits_eval_data(seed=int(info.get("seed", 0)))
    n = y_test.numel() if args.samples is None else args.samples
    if not 1 <= n <= y_test.numel():
        raise SqaccelError(f"--samples must be in 1..{y_test.numel()}, got {n}")
    with one_thread():
        preds = net.predict(net.quantize_input(x_test[:n]))
    want = torch.tensor(test["predictions"][:n], dtype=torch.int64)
    if not torch.equal(preds, want):
        bad = int((preds != want).sum())
        raise images.ImageError(
            f"{loaded.directory}: {bad} of {n} test predictions differ from export"
        )
    acc = 100.0 * float((preds == y_test[:n]).double().mean())
    print(f"ok: {n} digits test predictions equal to export; integer accuracy {acc:.2f} %"
          + (f" (export: {test['integer_accuracy']:.2f} %, fake-quantised float "
             f"{test['fake_quant_accuracy']:.2f} %)" if n == test["count"] else ""))
    return 0
