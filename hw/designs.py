"""The designs ``sqaccel synth`` synthesises, and how each is synthesised.

Designs: ``top`` (the accelerator behind the UART link on the target's board, with its
pins and a bitstream), ``pe`` (one PE) and ``array`` (the PE array), the last two inside
the register shell of ``sqaccel.hw.board.IoShell`` with their pins placed freely. The
report lands in ``<out>/<target>/<design>-<config name>[-nodsp]/``.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.lib import wiring

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw.board import BoardTop, IoShell
from sqaccel.hw.synth import (
    DEFAULT_OUT,
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


def board_defaults(kind: str, target: str) -> dict:
    """Config fields a design gets unless a config file or an option says otherwise: the
    iCE40 board top gets the small array that fits the UP5K."""
    return dict(ICE40_TOP_DEFAULTS) if target == "ice40" and kind == "top" else {}
