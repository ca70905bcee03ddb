"""``sqaccel quantize``: quantise a model's weights with each quantiser and report accuracy.

The default workload is the digits CNN (trained and cached on first use) on its test split.
A ResNet takes a user's weights file (``--weights``, torchvision keys) and an image folder
(``--data``, one sub-folder per class).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from sqaccel.config import UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw.data import image_folder_loader, load_digits_split, make_loader
from sqaccel.sw.models import digits_cnn, load_weights, quantizable_layers
from sqaccel.sw.quantize_model import EDGE_BITS, evaluate, quantize_model
from sqaccel.sw.quantizers import METHODS, make_quantizer
from sqaccel.sw.resnet import ARCHS, load_resnet
from sqaccel.sw.train import load_or_train_digits

MODELS = ("digits", *ARCHS)
BITS_CHOICES = (2, 3, 4, 8)
DEFAULT_BITS = (4, 3, 2)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class Workload:
    name: str
    model: nn.Module
    loader: DataLoader
    data: str  # what the accuracy is measured on


def load_workload(
    model_name: str = "digits",
    weights: str | Path | None = None,
    data: str | Path | None = None,
    seed: int = 0,
    cache_dir: str | Path = "build/models",
    batch_size: int = 64,
    resize: int = 256,
    crop: int = 224,
    num_classes: int | None = None,
    log: Log = _stderr,
) -> Workload:
    """The model and the evaluation loader that ``sqaccel quantize`` works on."""
    if model_name == "digits":
        if data is not None:
            raise SqaccelError("--data: the digits model uses the built-in digits test split")
        split = load_digits_split(seed)
        if weights is None:
            model = load_or_train_digits(seed, cache_dir, log=log)
        else:
            model = load_weights(digits_cnn(), weights).eval()
        loader = make_loader(split.test, batch_size)
        return Workload("digits", model, loader, f"digits test split (seed {seed}, "
                        f"{len(split.test)} images)")
    if model_name not in ARCHS:
        raise SqaccelError(f"unknown model {model_name!r} (choose from {', '.join(MODELS)})")
    if weights is None:
        raise SqaccelError(f"{model_name} needs --weights FILE (torchvision state dict keys)")
    if data is None:
        raise SqaccelError(f"{model_name} needs --data DIR (an image folder, one folder per class)")
    loader = image_folder_loader(data, batch_size=batch_size, resize=resize, crop=crop)
    model = load_resnet(model_name, weights, num_classes)
    n_classes = len(loader.dataset.classes)
    if model.fc.out_features < n_classes:
        raise SqaccelError(
            f"{data}: {n_classes} class folders, but the model has {model.fc.out_features} "
            "outputs"
        )
    if model.fc.out_features != n_classes:
        log(f"note: {n_classes} class folders for {model.fc.out_features} outputs; label i is "
            "the i-th folder in sorted order, so the folders must follow the model's classes")
    return Workload(model_name, model, loader, f"{data} ({len(loader.dataset)} images)")


def layer_table(model: nn.Module) -> list[dict]:
    return [
        {"name": name, "type": type(m).__name__, "shape": list(m.weight.shape)}
        for name, m in quantizable_layers(model)
    ]


def sweep(
    model: nn.Module,
    loader: DataLoader,
    methods: Sequence[str],
    bits_list: Sequence[int],
    per_channel: bool = False,
    first_last_8bit: bool = True,
    universal: UniversalSet | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> dict:
    """Accuracy and per-layer weight MSE of every (method, bits), after full precision."""
    t0 = time.perf_counter()
    fp = evaluate(model, loader)
    log(f"full precision: {fp:.2f} %")
    runs = []
    for method in methods:
        for bits in bits_list:
            t = time.perf_counter()
            qm = quantize_model(model, method, bits, per_channel=per_channel,
                                first_last_8bit=first_last_8bit, universal=universal,
                                progress=progress)
            acc = evaluate(qm.model, loader)
            secs = time.perf_counter() - t
            log(f"{method} W{bits}{' per-channel' if per_channel else ''}: {acc:.2f} % "
                f"({secs:.1f} s)")
            runs.append({
                "method": method,
                "bits": bits,
                "per_channel": per_channel,
                "accuracy": acc,
                "layer_bits": qm.layer_bits(),
                "mse": qm.mse,
                "seconds": secs,
            })
    return {
        "fp_accuracy": fp,
        "first_last_8bit": first_last_8bit,
        "edge_bits": EDGE_BITS if first_last_8bit else None,
        "layers": layer_table(model),
        "runs": runs,
        "seconds": time.perf_counter() - t0,
    }


# -- tables ----------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False,
                 text_cols: int = 1) -> str:
    """Plain text (aligned columns) or a Markdown table; the first ``text_cols`` columns are
    left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def cell(s: str, i: int) -> str:
        return s.ljust(widths[i]) if i < text_cols else s.rjust(widths[i])

    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" if i < text_cols else "---:"
                                for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    lines = ["  ".join(cell(h, i) for i, h in enumerate(headers)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell(c, i) for i, c in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines)


def run_label(run: dict) -> str:
    return f"{run['method']} W{run['bits']}" + (" pc" if run["per_channel"] else "")


# Up to this many layers, the per-layer MSE fits as columns of the accuracy table.
COMPACT_LAYERS = 8


def layer_legend(result: dict) -> str:
    """One line per layer: name, type, weight shape, and the bits where all runs agree."""
    lines = []
    for layer in result["layers"]:
        bits = {r["layer_bits"][layer["name"]] for r in result["runs"]}
        odd = bits - {r["bits"] for r in result["runs"]}
        note = f"  ({', '.join(map(str, sorted(odd)))}-bit in every run)" if odd else ""
        lines.append(f"  {layer['name']:<6} {layer['type']:<7} "
                     f"{'x'.join(str(d) for d in layer['shape'])}{note}")
    return "\n".join(lines)


def accuracy_table(result: dict, markdown: bool = False, with_mse: bool = False) -> str:
    """One row per run after full precision; ``with_mse`` adds a column per layer."""
    fp = result["fp_accuracy"]
    names = [layer["name"] for layer in result["layers"]] if with_mse else []
    rows = [["full precision", "32", f"{fp:.2f}", "0.00", *["-" for _ in names]]]
    for r in result["runs"]:
        name = r["method"] + (" per-channel" if r["per_channel"] else "")
        rows.append([name, str(r["bits"]), f"{r['accuracy']:.2f}", f"{r['accuracy'] - fp:+.2f}",
                     *[f"{r['mse'][n]:.2e}" for n in names]])
    headers = ["method", "W bits", "accuracy %", "vs FP", *[f"MSE {n}" for n in names]]
    return render_table(headers, rows, markdown)


def mse_table(result: dict, markdown: bool = False) -> str:
    """Per-layer weight MSE: one row per layer, one column per run (bits used in the row)."""
    runs = result["runs"]
    headers = ["layer", "type", "shape", *[run_label(r) for r in runs]]
    rows = []
    for layer in result["layers"]:
        name = layer["name"]
        row = [name, layer["type"], "x".join(str(d) for d in layer["shape"])]
        for r in runs:
            mark = "" if r["layer_bits"][name] == r["bits"] else f" ({r['layer_bits'][name]}b)"
            row.append(f"{r['mse'][name]:.2e}{mark}")
        rows.append(row)
    return render_table(headers, rows, markdown, text_cols=3)


# -- command ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, default="digits",
                   help="digits (built in, trained on first use) or a ResNet (needs --weights "
                        "and --data)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights file: .safetensors, or a .pt/.pth state dict (weights only)")
    p.add_argument("--data", metavar="DIR", help="image folder, one sub-folder per class")
    p.add_argument("--method", nargs="+", choices=(*METHODS, "all"), default=["all"],
                   help="quantiser(s); 'all' runs each of " + ", ".join(METHODS))
    p.add_argument("--bits", nargs="+", type=int, choices=BITS_CHOICES, default=list(DEFAULT_BITS),
                   help="weight bit widths (default 4 3 2)")
    p.add_argument("--per-channel", action="store_true",
                   help="one scale (and SQ subset) per output channel")
    p.add_argument("--no-first-last-8bit", dest="first_last_8bit", action="store_false",
                   help="quantise the first and last layers like the others too")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--seed", type=int, default=0, help="digits split and training seed")
    p.add_argument("--cache-dir", default="build/models", help="trained digits model cache")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resize", type=int, default=256, help="image folder: shorter side")
    p.add_argument("--crop", type=int, default=224, help="image folder: centre crop")
    p.add_argument("--num-classes", type=int, help="ResNet outputs (default: from the weights)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")


def run(args: argparse.Namespace) -> int:
    methods = list(METHODS) if "all" in args.method else list(dict.fromkeys(args.method))
    if args.batch_size < 1:
        raise SqaccelError(f"--batch-size must be >= 1, got {args.batch_size}")
    for method in methods:  # refuse an impossible (method, bits) before any work
        for bits in args.bits:
            make_quantizer(method, bits, per_channel=args.per_channel)
    work = load_workload(args.model, args.weights, args.data, args.seed, args.cache_dir,
                         args.batch_size, args.resize, args.crop, args.num_classes)
    _stderr(f"{work.name}: quantising {', '.join(methods)} at W{', W'.join(map(str, args.bits))}"
            f" on {work.data}")
    result = sweep(work.model, work.loader, methods, args.bits, args.per_channel,
                   args.first_last_8bit, progress=args.progress)
    result = {"model": work.name, "data": work.data, **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    edge = ("first and last layer 8-bit uniform per tensor" if args.first_last_8bit
            else "every layer at the given width")
    print(f"{work.name} on {work.data}; weights only, {edge}\n")
    print("Layers:")
    print(layer_legend(result) + "\n")
    if len(result["layers"]) <= COMPACT_LAYERS:
        print("Accuracy and per-layer weight MSE:\n")
        print(accuracy_table(result, with_mse=True))
    else:
        print(accuracy_table(result))
        print("\nPer-layer weight MSE (a bit width in brackets where the layer differs):\n")
        print(mse_table(result))
    return 0
