"""``sqaccel cosim``: run an exported network on the accelerator's RTL (Verilator, through
the host interface) and compare every result word with the golden model.

``--layer`` runs GEMM layers alone on the reference inputs stored at export; ``--network``
runs the whole network, the steps between GEMMs in the contract's integer code.
Exit status: 0 bit-exact; 1 the cosimulation failed (its report on stderr names the layer,
the output index, the expected and the actual value); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqaccel.commands.options import count, seed
from sqaccel.errors import SqaccelError

TRACEBACK = "\nTraceback (most recent call last):"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images_dir", metavar="IMAGES_DIR",
                   help="images folder written by sqaccel export")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--layer", action="append", metavar="NAME",
                      help="GEMM layer to run on the reference inputs stored at export "
                      "(repeatable; default: every GEMM layer)")
    what.add_argument("--network", type=count, metavar="N",
                      help="run the whole network on N test images of the built-in data set the "
                      "images were exported from, evenly spaced over its test split (other "
                      "data: on the first N reference inputs stored at export)")
    p.add_argument("--seed", type=seed, default=None,
                   help="testbench seed (default: $SQACCEL_SEED, else random; printed)")
    p.add_argument("--waves", action="store_true",
                   help="write a waveform, FST or VCD (a separate, traced Verilator build; "
                   "its path is printed; also WAVES=1)")
    p.add_argument("--log-dir", default=None,
                   help="folder for the Verilator build and simulator output "
                   "(default: build/cosim/logs)")


def layer_line(name: str, s: dict) -> str:
    plural = "" if s["commands"] == 1 else "s"
    return (f"layer {name!r}: GEMM M={s['M']} K={s['K']} N={s['N']}, {s['commands']} "
            f"command{plural}, {s['cycles']} cycles, {s['result_words']} result words "
            "compared: bit-exact")


def run_layers(loaded, names: list[str], seed: int, waves: bool) -> None:
    from sqaccel.sim import network_level as nl
    from sqaccel.sw.images import reference_inputs

    count = reference_inputs(loaded).shape[0]
    print(f"{len(names)} GEMM layer{'' if len(names) == 1 else 's'} on the {count} "
          "reference inputs stored at export", flush=True)
    runs = nl.layer_runs(loaded, names)
    nl.run_layer_runs(runs, seed, waves)
    for lr in runs:
        print(layer_line(lr.name, lr.summary()))


def run_network(loaded, inputs, seed: int, waves: bool) -> None:
    from sqaccel.sim import network_level as nl

    x, labels, what = inputs
    print(f"whole network on {what}", flush=True)
    run = nl.run_network(loaded, x, seed, waves)
    for name, s in run.layers.items():
        print(layer_line(name, s))
    print("every step's output equal to the golden model's")
    print(f"predicted classes: {run.predictions}")
    if labels is not None:
        right = sum(int(p == y) for p, y in zip(run.predictions, labels.tolist(), strict=True))
        print(f"labels:            {labels.tolist()}")
        print(f"RTL accuracy: {100.0 * right / len(run.predictions):.2f} % ({right} of "
              f"{len(run.predictions)})")
    print(f"{run.sim_cycles} simulated cycles, {run.wall_s:.1f} s in the simulator")


def run(args: argparse.Namespace) -> int:
    from sqaccel.sim import network_level as nl
    from sqaccel.sim.builds import build_root, seed_from_env
    from sqaccel.sim.runner import CosimFailure, logs_to, waves_requested
    from sqaccel.sw import images

    if args.network is not None and args.network < 1:
        raise SqaccelError(f"--network must be >= 1, got {args.network}")
    loaded = images.load(args.images_dir)
    cfg = loaded.network.cfg
    # Every input is checked before the simulator starts.
    if args.network is not None:
        inputs = nl.test_inputs(loaded, args.network)
    else:
        names = nl.chosen_layers(loaded, args.layer)
    waves = args.waves or waves_requested()
    seed = seed_from_env() if args.seed is None else args.seed
    info = loaded.manifest.get("info") or {}
    model = " ".join(str(info[k]) for k in ("model", "method") if k in info)
    print(f"images {loaded.directory} ({model + ', ' if model else ''}config {cfg.name()}); "
          f"seed {seed} (repeat with --seed {seed})")
    log_dir = Path(args.log_dir) if args.log_dir else build_root() / "logs"
    try:
        with logs_to(log_dir) as logs:
            print(f"Verilator and simulator output: {logs}", flush=True)
            if args.network is not None:
                run_network(loaded, inputs, seed, waves)
            else:
                run_layers(loaded, names, seed, waves)
        return 0
    except CosimFailure as e:
        # The testbench's traceback stays in the simulator log; the report ends before it.
        report = str(e).split(TRACEBACK, 1)[0].rstrip()
        print(f"sqaccel cosim: the cosimulation failed (seed {seed}; repeat with --seed "
              f"{seed})\n{report}", file=sys.stderr)
        return 1
