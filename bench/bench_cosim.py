"""Speed of the network-level cosimulation: the quantised digits CNN on the Verilated 8x8
default top, driven through its host interface by cocotb, every step checked against the
golden model.

Reports simulated cycles per second and wall-clock seconds per image (the simulation proper,
from reset to the last logits; and the whole call, with Verilog generation, the Verilator
build check and the simulator's start), per layer the commands, cycles and host words.
Prints a summary and writes build/bench/cosim.json.

    .venv/bin/python bench/bench_cosim.py [--images 50] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from sqaccel import files
from sqaccel.config import AccelConfig
from sqaccel.sim import builds, network_level

OUT = Path("build/bench/cosim.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50, help="digits test images (one batch)")
    ap.add_argument("--seed", type=int, default=None, help="cocotb seed (default: random)")
    args = ap.parse_args(argv)
    cfg = AccelConfig()
    seed = builds.seed_from_env() if args.seed is None else args.seed
    t0 = time.perf_counter()
    images_dir = network_level.network_images("digits", cfg)
    x, labels, _ = network_level.test_inputs(images_dir, args.images)
    prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    run = network_level.run_network(images_dir, x, seed)
    total = time.perf_counter() - t1
    preds = torch.tensor(run.predictions)
    acc = 100.0 * float((preds == labels).double().mean())
    n = x.shape[0]
    result = {
        "config": cfg.name(),
        "images": n,
        "seed": seed,
        "cpus": os.cpu_count(),
        "sim_cycles": run.sim_cycles,
        "sim_seconds": run.wall_s,
        "cycles_per_second": run.sim_cycles / run.wall_s,
        "seconds_per_image": run.wall_s / n,
        "call_seconds": total,
        "call_seconds_per_image": total / n,
        "images_export_seconds": prep,
        "rtl_accuracy": acc,
        "layers": run.layers,
    }
    print(f"network cosim, {cfg.name()}, {n} digits test images (seed {seed}):")
    print(f"  {run.sim_cycles} cycles in {run.wall_s:.1f} s: {result['cycles_per_second']:.0f} "
          f"cycles/s, {result['seconds_per_image']:.2f} s per image")
    print(f"  whole call (generation, build check, simulator start): {total:.1f} s, "
          f"{result['call_seconds_per_image']:.2f} s per image")
    print(f"  {'layer':>6} {'M':>6} {'K':>5} {'N':>4} {'cmds':>5} {'cycles':>8} {'host words':>11}"
          f" {'results':>8}")
    for name, la in run.layers.items():
        print(f"  {name:>6} {la['M']:>6} {la['K']:>5} {la['N']:>4} {la['commands']:>5} "
              f"{la['cycles']:>8} {la['host_words']:>11} {la['result_words']:>8}")
    print(f"  every step equal to the golden model; RTL accuracy {acc:.2f} % on these images")
    files.write_json(OUT, result, indent=2)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
