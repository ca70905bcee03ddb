"""Accuracy of the integer golden model with and without calibration, on a built-in network
(the digits CNN by default).

Rows: uniform + calibration; SQ search only; SQ + calibration; SQ per-channel subsets +
calibration; SQ mixed bits per layer + calibration. Columns: W4A8, W3A8, W2A8, W4A4. Every
cell is the integer golden model's top-1 accuracy on the digits test split (``build_int_
network`` on the weights and activation scales), calibrated on the calibration split only;
the first and last GEMM layers run at the array's 4 bits (the golden model's rule). The
mixed row's budget is the column's W times the weights of the other layers ("the W3
budget" in the W3 column); a second table shows the allocation at other budgets. Everything
is seeded: the same seed gives the same table. ``sqaccel demo`` runs it (its step
``table``) and writes ``calibration.json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.calibrate import CalibSettings, calibrated_network, search_weights
from sqaccel.sw.intnet import IntLayer
from sqaccel.sw.lowering import array_cfg, array_layer_bits
from sqaccel.sw.metrics import accuracy, logit_error, top1
from sqaccel.sw.mixed_bits import layer_sensitivity, mixed_bits

COLUMNS: tuple[tuple[int, int], ...] = ((4, 8), (3, 8), (2, 8), (4, 4))  # (W, A)
EXTRA_BUDGETS: tuple[float, ...] = (2.5, 3.0, 3.5)  # mixed-bits table, at A8


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    per_channel: bool = False
    calibrate: bool = True
    mixed: bool = False


ROWS: tuple[Row, ...] = (
    Row("uniform + calibration", "uniform"),
    Row("SQ search only", "sq", calibrate=False),
    Row("SQ + calibration", "sq"),
    Row("SQ per-channel + calibration", "sq", per_channel=True),
    Row("SQ mixed bits + calibration (budget W x weights)", "sq", mixed=True),
)


def evaluate_network(net, x: torch.Tensor, labels: torch.Tensor,
                     reference: torch.Tensor) -> tuple[float, float]:
    """(top-1 %, logit error) of the integer network on float inputs ``x``: the logit error
    is the mean squared error of its real logits (accumulator x input scale x weight scale)
    against the full-precision ``reference`` logits, relative to their mean square."""
    last = net.steps[-1]
    if not isinstance(last, IntLayer) or last.relu:
        raise SqaccelError("logit error: the network does not end in a raw logits layer")
    acc = net.run(net.quantize_input(x), record=False).logits
    real = acc.to(torch.float64) * last.in_scale * last.weight_scale
    return top1(net.classify(acc), labels), logit_error(real, reference)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Runner:
    """Runs settings once each: equal settings (a mixed allocation that is uniform) share
    one result."""

    def __init__(self, model, data, cfg, settings, progress, log) -> None:
        self.model, self.cfg, self.settings = model, cfg, settings
        self.x_cal, self.y_cal, self.x_test, self.y_test = data
        self.progress, self.log = progress, log
        with torch.no_grad():
            self.reference = model(self.x_test)
        self.done: dict[tuple, dict] = {}

    def run(self, method: str, layer_bits: dict[str, int], per_channel: bool, calibrate: bool,
            act_bits: int) -> dict:
        key = (method, tuple(layer_bits.items()), per_channel, calibrate, act_bits)
        if key in self.done:
            return self.done[key]
        cfg = array_cfg(self.cfg, method, act_bits)
        t0 = time.perf_counter()
        qw = search_weights(self.model, method, layer_bits, cfg, per_channel)
        t_search = time.perf_counter() - t0
        settings = self.settings if calibrate else replace(self.settings, iters=0)
        cal, net = calibrated_network(self.model, qw, self.x_cal, cfg, settings, self.progress)
        acc, err = evaluate_network(net, self.x_test, self.y_test, self.reference)
        res = {
            "method": method,
            "per_channel": per_channel,
            "calibrated": calibrate,
            "act_bits": act_bits,
            "layer_bits": dict(layer_bits),
            "accuracy": acc,
            "calibration_accuracy": accuracy(net, (self.x_cal, self.y_cal)),
            "logit_error": err,
            "search_seconds": t_search,
            "calibration_seconds": cal.seconds,
            "blocks": [b.to_dict() for b in cal.blocks],
            "reports": list(net.reports),
        }
        if self.log:
            self.log(f"  {method}{' per-channel' if per_channel else ''} "
                     f"{'calibrated' if calibrate else 'search only'} bits "
                     f"{list(layer_bits.values())} A{act_bits}: {acc:.2f} % "
                     f"(search {t_search:.1f} s, calibration {cal.seconds:.1f} s)")
        self.done[key] = res
        return res


# The rows and columns of the residual networks' table (no mixed bits, no A4).
NETWORK_ROWS: tuple[Row, ...] = (ROWS[0], ROWS[2], ROWS[3])
NETWORK_COLUMNS: tuple[tuple[int, int], ...] = COLUMNS[:3]


def accuracy_table(
    model: nn.Module | None = None,
    seed: int = 0,
    cfg: AccelConfig | None = None,
    settings: CalibSettings | None = None,
    progress: bool = True,
    cache_dir: str | Path = "build/models",
    extra_budgets: tuple[float, ...] = EXTRA_BUDGETS,
    log: Callable[[str], None] | None = _stderr,
    model_name: str = "digits",
    rows: tuple[Row, ...] = ROWS,
    columns: tuple[tuple[int, int], ...] = COLUMNS,
) -> dict:
    """The table's numbers (JSON-ready): full-precision accuracy, every row x column cell,
    the mixed-bits allocations and the time each calibration took. ``model_name`` is a
    built-in network (``sqaccel.sw.zoo``), measured on its own data set; ``model`` (its
    weights) defaults to the committed ones."""
    # One thread: the tensors are small, and the machine's cores may be shared.
    with one_thread():
        return _accuracy_table(model, seed, cfg, settings, progress, cache_dir, extra_budgets,
                               log, model_name, rows, columns)


def _accuracy_table(model, seed, cfg, settings, progress, cache_dir, extra_budgets, log,
                    model_name, rows, columns):
    from sqaccel.sw.workloads import resolve_data, resolve_model

    t_start = time.perf_counter()
    cfg = cfg or AccelConfig()
    settings = settings or CalibSettings(seed=seed)
    source = resolve_model(model_name, seed=seed, cache_dir=cache_dir,
                           **({"log": log} if log else {}))
    split = resolve_data(None, source, seed)
    model = (model if model is not None else source.model).eval()
    x_cal, y_cal = split.calib.tensors
    x_test, y_test = split.test.tensors
    runner = _Runner(model, (x_cal, y_cal, x_test, y_test), cfg, settings, progress, log)
    fp = accuracy(model, (x_test, y_test))
    if log:
        log(f"full precision: {fp:.2f} % on {len(y_test)} test images; calibration on "
            f"{len(y_cal)} calibration images")

    sens: dict = {}
    if any(r.mixed for r in rows) or extra_budgets:
        if log:
            log("measuring layer sensitivities (each layer alone at 2, 3, 4 bits, search "
                "weights)")
        with torch.no_grad():
            sens = layer_sensitivity(model, "sq", cfg, x_cal)

    def allocation(w: float):
        return mixed_bits(model, "sq", cfg, x_cal, w, sensitivity=sens)

    cells: dict[str, dict[str, dict]] = {}
    for row in rows:
        cells[row.label] = {}
        for w, a in columns:
            alloc = allocation(float(w)) if row.mixed else None
            bits = alloc.bits if alloc else array_layer_bits(model, w, cfg)
            res = runner.run(row.method, bits, row.per_channel, row.calibrate, a)
            cell = dict(res)
            if alloc is not None:
                cell["allocation"] = alloc.to_dict()
            cells[row.label][f"W{w}A{a}"] = cell

    mixed = []
    for w in extra_budgets:
        alloc = allocation(w)
        res = runner.run("sq", alloc.bits, False, True, 8)
        mixed.append({"average_bits_budget": w, "allocation": alloc.to_dict(),
                      "accuracy": res["accuracy"], "logit_error": res["logit_error"],
                      "act_bits": 8})

    cal_times = [r["calibration_seconds"] for r in runner.done.values() if r["calibrated"]]
    return {
        "model": model_name,
        "data": f"{split.name} test split (seed {seed})",
        "split": split.sizes(),
        "seed": seed,
        "full_precision": fp,
        "layers": list(array_layer_bits(model, cfg.weight_bits, cfg)),
        "columns": [f"W{w}A{a}" for w, a in columns],
        "rows": [r.label for r in rows],
        "cells": cells,
        "mixed_budgets": mixed,
        "sensitivity": {k: {str(b): v for b, v in d.items()} for k, d in sens.items()},
        "settings": settings.to_dict(),
        "config": cfg.name(),
        "calibrations": len(cal_times),
        "calibration_seconds_mean": sum(cal_times) / len(cal_times) if cal_times else 0.0,
        "calibration_seconds_max": max(cal_times, default=0.0),
        "seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
    }


def format_markdown(result: dict) -> str:
    """The table as Markdown, the full-precision line first, then the mixed-bits table."""
    cols = result["columns"]
    fp = result["full_precision"]
    n_test = result["split"]["test"]
    lines = [
        f"Integer golden model, top-1 % on the {result['data']} "
        f"({result['split']['test']} images); full precision: **{fp:.2f} %**. "
        f"Calibration on the {result['split']['calib']} calibration images; first and last "
        "layer at 4 bits.",
        "",
        "| | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for label in result["rows"]:
        cells = result["cells"][label]
        lines.append(f"| {label} | " + " | ".join(
            f"{cells[c]['accuracy']:.2f}" for c in cols) + " |")
    lines.append("| full precision | " + " | ".join(f"{fp:.2f}" for _ in cols) + " |")
    lines += [
        "",
        "Logit error on the same test images: mean squared error of the integer model's real "
        "logits against the full-precision logits, relative to their mean square, x 1000 "
        f"(lower is better; finer than the accuracy, which {n_test} images resolve to "
        f"{100 / n_test:.2f} points):",
        "",
        "| | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for label in result["rows"]:
        cells = result["cells"][label]
        lines.append(f"| {label} | " + " | ".join(
            f"{1000 * cells[c]['logit_error']:.2f}" for c in cols) + " |")
    if result.get("mixed_budgets"):
        layers = result["layers"]
        lines += [
            "",
            "Mixed bits per layer (SQ + calibration, A8); budget = bits x weights of the "
            "layers between the first and the last:",
            "",
            "| budget | " + " | ".join(f"layer {n}" for n in layers)
            + " | weight bits used / budget | top-1 % | logit error x 1000 |",
            "|---|" + "---:|" * (len(layers) + 3),
        ]
        for m in result["mixed_budgets"]:
            a = m["allocation"]
            lines.append(
                f"| W{m['average_bits_budget']:g} | "
                + " | ".join(str(a["bits"][n]) for n in layers)
                + f" | {a['used_bits']} / {a['budget_bits']} | {m['accuracy']:.2f} | "
                f"{1000 * m['logit_error']:.2f} |"
            )
    lines += [
        "",
        f"{result['calibrations']} calibrations, {result['calibration_seconds_mean']:.1f} s "
        f"each on average (at most {result['calibration_seconds_max']:.1f} s); whole table "
        f"{result['seconds']:.0f} s.",
    ]
    return "\n".join(lines)
