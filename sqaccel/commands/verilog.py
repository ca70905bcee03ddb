"""``sqaccel verilog``: generate the accelerator's Verilog, config.json and format.json."""

from __future__ import annotations

import argparse

from sqaccel.commands.options import add_config_arguments, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--images", help="images folder (sqaccel export) whose words initialise "
                   "the buffers")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is not a Verilog folder sqaccel wrote")


def run(args: argparse.Namespace) -> int:
    from sqaccel.hw.verilog import VERILOG_FILE, generate, lint_findings

    cfg = config_from_args(args)
    out = generate(cfg, args.out, images=args.images, force=args.force)
    hybrid = f", {cfg.mult_cols} multiplier columns" if cfg.mult_cols else ""
    print(f"{out / VERILOG_FILE}: {cfg.name()} ({cfg.rows}x{cfg.cols} {cfg.pe} PEs{hybrid}, "
          f"acc {cfg.acc_bits} bits), with config.json and format.json")
    if args.lint:
        rc, findings = lint_findings(out / VERILOG_FILE)
        print(f"verilator --lint-only -Wall: exit {rc}, {len(findings)} findings")
        for line in findings:
            print(line)
        return 0 if rc == 0 and not findings else 1
    return 0
