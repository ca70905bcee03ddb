"""``sqaccel synth``: synthesise, place and route one design for an FPGA target.

Designs: ``top`` (the accelerator behind the UART link on the target's board, with its
pins and a bitstream), ``pe`` (one PE) and ``array`` (the PE array), the last two inside
the register shell of ``sqaccel.hw.board.IoShell`` with their pins placed freely. The
report lands in ``<out>/<target>/<design>-<config name>[-nodsp]/``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from amaranth.lib import wiring

from sqaccel.config import PE_KINDS, SUPPORTED_ACT_BITS, SUPPORTED_WEIGHT_BITS, AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw.board import BoardTop, IoShell
from sqaccel.hw.synth import (
    DEFAULT_OUT,
    TARGETS,
    SynthOptions,
    SynthResult,
    Target,
    get_target,
    synthesize,
)

DESIGNS = ("top", "pe", "array")
SHELL_DUT = "top.dut"  # the shell's design-under-test module, counted on its own
PE_MODULES = "*.pe_*"  # the array's PE instances (pe_<row>_<col>), as a Yosys pattern

# The iCEBreaker's UP5K holds a 2x2 array with small buffers, not the default 8x8 build:
# without a config of its own the iCE40 board top gets this one.
ICE40_TOP_DEFAULTS = {"rows": 2, "cols": 2, "act_depth": 256, "weight_depth": 256, "n_max": 16}


def build_design(kind: str, cfg: AccelConfig, target: Target, *, baud: int) -> wiring.Component:
    """The Amaranth component that ``sqaccel synth --design kind`` synthesises."""
    if kind == "pe":
        from sqaccel.hw.pe import make_pe

        return IoShell(make_pe(cfg))
    if kind == "array":
        from sqaccel.hw.array import PEArray

        return IoShell(PEArray(cfg))
    if kind == "top":
        from sqaccel.hw.accel import Accelerator

        return BoardTop(Accelerator(cfg), target.board, baud=baud)
    raise SqaccelError(f"synth: unknown design {kind!r}; choose one of {DESIGNS}")


def design_options(kind: str, target: Target, *, dsp: bool, **kw) -> SynthOptions:
    """Synthesis options of a design: the board's pins for the top, the shell's module
    kept apart otherwise.

    ``dsp`` False keeps the PE multipliers in LUTs: for a lone PE by leaving DSP blocks
    out of the mapping; for the array and the top by mapping just the PEs' multipliers to
    LUTs, so that the requantisers' wide multipliers still go to DSP blocks.
    """
    soft = () if dsp or kind == "pe" else (PE_MODULES,)
    dsp = dsp or kind != "pe"
    if kind == "top":
        return SynthOptions(dsp=dsp, soft_mul=soft, constraints=target.board.constraints,
                            bitstream=True, **kw)
    return SynthOptions(dsp=dsp, soft_mul=soft, keep=(SHELL_DUT,), **kw)


def run_name(kind: str, cfg: AccelConfig, *, dsp: bool) -> str:
    return f"{kind}-{cfg.name()}" + ("" if dsp else "-nodsp")


def synth_design(
    kind: str,
    cfg: AccelConfig,
    target: Target | str,
    *,
    dsp: bool = True,
    out_root: Path | str = DEFAULT_OUT,
    name: str | None = None,
    baud: int = 115_200,
    freq_mhz: float | None = None,
    seed: int = 1,
    timeout_s: float | None = None,
) -> SynthResult:
    """Builds design ``kind`` of ``cfg`` and synthesises it for ``target``."""
    target = get_target(target) if isinstance(target, str) else target
    design = build_design(kind, cfg, target, baud=baud)
    opts = design_options(kind, target, dsp=dsp, freq_mhz=freq_mhz, seed=seed,
                          timeout_s=timeout_s)
    meta = {"design": kind, "config": cfg.to_dict()}
    if kind == "top":
        meta["link"] = {
            "baud": baud,
            "in_bytes": -(-design.in_width // 8),
            "out_bytes": -(-design.out_width // 8),
        }
    return synthesize(
        design, target, name or run_name(kind, cfg, dsp=dsp), options=opts,
        out_root=out_root, meta=meta,
    )


def resolve_config(args: argparse.Namespace) -> AccelConfig:
    """The config file (or the default), with the command line's overrides applied."""
    cfg = AccelConfig.load(args.config) if args.config else AccelConfig()
    changes = {
        k: v
        for k, v in {
            "rows": args.rows,
            "cols": args.cols,
            "pe": args.pe,
            "act_bits": args.act_bits,
            "weight_bits": args.weight_bits,
            "k_max": args.k_max,
        }.items()
        if v is not None
    }
    if args.target == "ice40" and args.design == "top" and not args.config:
        changes = {**ICE40_TOP_DEFAULTS, **changes}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=sorted(TARGETS), default="ecp5",
                   help="ecp5: ULX3S 85F; ice40: iCEBreaker UP5K (default: ecp5)")
    p.add_argument("--config", default=None, help="accelerator config JSON (default: built-in)")
    p.add_argument("--design", choices=DESIGNS, default="top",
                   help="top: board top with UART; pe / array: inside a register shell")
    p.add_argument("--rows", type=int, default=None, help="override the config's rows")
    p.add_argument("--cols", type=int, default=None, help="override the config's cols")
    p.add_argument("--pe", choices=PE_KINDS, default=None, help="override the PE kind")
    p.add_argument("--act-bits", type=int, choices=SUPPORTED_ACT_BITS, default=None)
    p.add_argument("--weight-bits", type=int, choices=SUPPORTED_WEIGHT_BITS, default=None)
    p.add_argument("--k-max", type=int, default=None, help="override the longest dot product")
    p.add_argument("--dsp", action=argparse.BooleanOptionalAction, default=True,
                   help="map multipliers to DSP blocks (--no-dsp: LUTs only)")
    p.add_argument("--freq", type=float, default=None,
                   help="nextpnr target frequency in MHz (default: per target, above reach)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    p.add_argument("--baud", type=int, default=115_200, help="UART rate of the board top")
    p.add_argument("--timeout", type=float, default=None, help="seconds per tool run")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report root (default build/synth)")
    p.add_argument("--name", default=None, help="run folder name (default from the design)")


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    res = synth_design(
        args.design, cfg, args.target, dsp=args.dsp, out_root=args.out, name=args.name,
        baud=args.baud, freq_mhz=args.freq, seed=args.seed, timeout_s=args.timeout,
    )
    print(res.path.joinpath("summary.md").read_text(), end="")
    print(f"report: {res.path / 'report.json'}")
    return 0
