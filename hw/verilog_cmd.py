"""``sqaccel verilog``: generate the accelerator's Verilog, config.json and format.json."""

from __future__ import annotations

import argparse
import dataclasses

from sqaccel.config import PE_KINDS, STEP_TABLE_MODES, AccelConfig, ConfigError

# Command-line option -> AccelConfig field.
OVERRIDES = {
    "rows": "rows",
    "cols": "cols",
    "act_bits": "act_bits",
    "weight_bits": "weight_bits",
    "pe": "pe",
    "k_max": "k_max",
    "step_tables": "step_tables",
    "act_depth": "act_depth",
    "weight_depth": "weight_depth",
    "n_max": "n_max",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="AccelConfig JSON file (default: the built-in config)")
    p.add_argument("--rows", type=int, help="PE rows R")
    p.add_argument("--cols", type=int, help="PE columns C")
    p.add_argument("--act-bits", type=int, help="activation bits A")
    p.add_argument("--weight-bits", type=int, help="weight bits b")
    p.add_argument("--pe", choices=PE_KINDS, help="PE kind")
    p.add_argument("--k-max", type=int, help="longest dot product K_max")
    p.add_argument("--step-tables", choices=STEP_TABLE_MODES, help="step tables per layer or "
                   "per output channel")
    p.add_argument("--act-depth", type=int, help="activation buffer words")
    p.add_argument("--weight-depth", type=int, help="weight buffer words")
    p.add_argument("--n-max", type=int, help="most output channels of one command")
    p.add_argument("--images", help="memory images folder whose words initialise the buffers")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall")
    p.add_argument("--out", required=True, help="output folder")


def config_from_args(args: argparse.Namespace) -> AccelConfig:
    cfg = AccelConfig.load(args.config) if args.config else AccelConfig()
    changes = {field: getattr(args, opt) for opt, field in OVERRIDES.items()
               if getattr(args, opt, None) is not None}
    if not changes:
        return cfg
    try:
        return dataclasses.replace(cfg, **changes)
    except TypeError as e:
        raise ConfigError(f"config: {e}") from None


def run(args: argparse.Namespace) -> int:
    from sqaccel.hw.verilog import VERILOG_FILE, generate, lint

    cfg = config_from_args(args)
    out = generate(cfg, args.out, images=args.images)
    print(f"{out / VERILOG_FILE}: {cfg.name()} ({cfg.rows}x{cfg.cols} {cfg.pe} PEs, "
          f"acc {cfg.acc_bits} bits), with config.json and format.json")
    if args.lint:
        rc, msg = lint(out / VERILOG_FILE)
        findings = [line for line in msg.splitlines() if line.startswith("%")]
        print(f"verilator --lint-only -Wall: exit {rc}, {len(findings)} findings")
        for line in findings:
            print(line)
        return 0 if rc == 0 and not findings else 1
    return 0
