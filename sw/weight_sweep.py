"""The weight-only sweep: every quantiser at every bit width on one model, with accuracy and
each layer's weight MSE, and its tables for people."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from torch import nn
from torch.utils.data import DataLoader

from sqaccel.config import UniversalSet
from sqaccel.sw.metrics import accuracy
from sqaccel.sw.models import quantizable_layers
from sqaccel.sw.quantize_model import EDGE_BITS, quantize_model
from sqaccel.tables import render_table

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


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
    fp = accuracy(model, loader)
    log(f"full precision: {fp:.2f} %")
    runs = []
    for method in methods:
        for bits in bits_list:
            t = time.perf_counter()
            qm = quantize_model(model, method, bits, per_channel=per_channel,
                                first_last_8bit=first_last_8bit, universal=universal,
                                progress=progress)
            acc = accuracy(qm.model, loader)
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
