"""Accuracy of the residual networks on the MNIST test split, in one run per network.

For resnet20 and mobilenetv2-tiny (committed weights, ``sqaccel.sw.zoo``): full precision;
weights only (activations float) with the uniform, PoT, APoT and SQ quantisers at W4/W3/W2
(first and last layer 8-bit); and the integer golden model with calibration at
W4A8/W3A8/W2A8 (uniform, SQ, SQ per-channel), with the logit error beside the accuracy.
Writes build/bench/accuracy-<network>.json and .md with the date and the machine, and marks
the aims (SQ + calibration within 0.5 / 1.5 / 5 points of full precision at W4A8 / W3A8 /
W2A8; a lower logit error than uniform + calibration at W3A8 and W2A8) met or missed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

from sqaccel import files
from sqaccel.experiments import calibration_table as ct
from sqaccel.sw import weight_sweep as ws
from sqaccel.sw.calibrate import CalibSettings
from sqaccel.sw.data import make_loader
from sqaccel.sw.quantizers import METHODS
from sqaccel.sw.workloads import resolve_data, resolve_model

OUT = Path("build/bench")
NETWORKS = ("resnet20", "mobilenetv2-tiny")
BITS = (4, 3, 2)
# Fewer reconstruction steps per block than the digits table's 1,500: these networks have
# 18-22 blocks and the table nine calibrations each.
ITERS = 300
AIMS = {"W4A8": 0.5, "W3A8": 1.5, "W2A8": 5.0}  # SQ + calibration, points below FP


def aims(table: dict) -> list[str]:
    fp = table["full_precision"]
    sq, uni = table["cells"]["SQ + calibration"], table["cells"]["uniform + calibration"]
    lines = []
    for col, pts in AIMS.items():
        gap = fp - sq[col]["accuracy"]
        lines.append(f"SQ + calibration {col}: {gap:+.2f} points below full precision "
                     f"(aim <= {pts}): {'met' if gap <= pts else 'missed'}")
    for col in ("W3A8", "W2A8"):
        a, b = sq[col]["logit_error"], uni[col]["logit_error"]
        lines.append(f"logit error {col}: SQ {1000 * a:.2f} vs uniform {1000 * b:.2f} "
                     f"(x 1000): {'met' if a < b else 'missed'}")
    return lines


def run(name: str, seed: int, settings: CalibSettings) -> dict:
    t0 = time.perf_counter()
    source = resolve_model(name, seed=seed)
    split = resolve_data(None, source, seed)
    weights_only = ws.sweep(source.model, make_loader(split.test, 250), list(METHODS),
                            list(BITS), progress=False)
    table = ct.accuracy_table(seed=seed, model_name=name, rows=ct.NETWORK_ROWS,
                              columns=ct.NETWORK_COLUMNS, extra_budgets=(), progress=False,
                              settings=settings)
    return {"network": name, "weights_only": weights_only, "integer": table,
            "aims": aims(table), "seconds": time.perf_counter() - t0}


def markdown(r: dict, stamp: str) -> str:
    return "\n".join([
        f"## {r['network']} on the MNIST test split",
        "",
        stamp,
        "",
        "Weights only (activations float; first and last layer 8-bit), top-1 %:",
        "",
        ws.accuracy_table(r["weights_only"], markdown=True),
        "",
        ct.format_markdown(r["integer"]),
        "",
        *[f"- {a}" for a in r["aims"]],
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", choices=NETWORKS, action="append")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=ITERS,
                   help="block-reconstruction steps per block (the digits table uses 1500)")
    args = p.parse_args(argv)
    settings = CalibSettings(iters=args.iters, scale_iters=args.iters // 5, seed=args.seed)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)"
    for name in args.network or NETWORKS:
        r = run(name, args.seed, settings)
        stamp = (f"Measured {now} on {machine} in {r['seconds']:.0f} s by "
                 f"`python bench/bench_accuracy.py --network {name} --iters {args.iters}`.")
        r.update(date=now, machine=machine)
        md = markdown(r, stamp)
        print(md, flush=True)
        files.write_json(OUT / f"accuracy-{name}.json", r)
        files.write_text(OUT / f"accuracy-{name}.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
