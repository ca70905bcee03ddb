"""``sqaccel synth``: synthesise, place and route one design for an FPGA target."""

from __future__ import annotations

import argparse

from sqaccel.commands.options import add_config_arguments, config_from_args, count, positive, seed


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sqaccel.hw.designs import DESIGNS
    from sqaccel.hw.synth import DEFAULT_OUT, TARGETS

    p.add_argument("--target", choices=sorted(TARGETS), default="ecp5",
                   help="ecp5: ULX3S 85F; ice40: iCEBreaker UP5K (default: ecp5)")
    p.add_argument("--design", choices=DESIGNS, default="top",
                   help="top: board top with UART; pe / array: inside a register shell")
    add_config_arguments(p, ("rows", "cols", "pe", "mult_cols", "act_bits", "weight_bits", "k_max"))
    p.add_argument("--dsp", action=argparse.BooleanOptionalAction, default=True,
                   help="map multipliers to DSP blocks (--no-dsp: LUTs only)")
    p.add_argument("--freq", type=positive, default=None,
                   help="nextpnr target frequency in MHz (default: per target, above reach)")
    p.add_argument("--seed", type=seed, default=1, help="nextpnr placement seed")
    p.add_argument("--baud", type=count, default=115_200, help="UART rate of the board top")
    p.add_argument("--timeout", type=positive, default=None, help="seconds per tool run")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"report root (default {DEFAULT_OUT})")
    p.add_argument("--name", default=None, help="run folder name (default from the design)")


def run(args: argparse.Namespace) -> int:
    from sqaccel.hw.designs import board_defaults, synth_design

    cfg = config_from_args(args, board_defaults(args.design, args.target))
    res = synth_design(
        args.design, cfg, args.target, dsp=args.dsp, out_root=args.out, name=args.name,
        baud=args.baud, freq_mhz=args.freq, seed=args.seed, timeout_s=args.timeout,
    )
    print(res.path.joinpath("summary.md").read_text(), end="")
    print(f"report: {res.path / 'report.json'}")
    return 0
