"""The ``sqaccel`` command: one subcommand per step of the flow.

Each subcommand lives in the module that does the work; the module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sqaccel.errors import SqaccelError

# name -> (module, one-line help), in the order of the flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("sqaccel.sw.search_cmd", "SQ subset search on one weight tensor"),
    "quantize": ("sqaccel.sw.quantize_cmd", "quantize a model's weights and report accuracy"),
    "export": ("sqaccel.sw.images_cmd", "export the memory images of a quantised network"),
    "verify-images": ("sqaccel.sw.images_cmd", "re-read images and re-run the golden model"),
    "verilog": ("sqaccel.hw.verilog_cmd", "generate the accelerator's Verilog"),
    "cosim": ("sqaccel.sim.cosim_cmd", "run an exported network on the RTL, bit for bit"),
    "synth": ("sqaccel.hw.synth_cmd", "synthesise and place-and-route for an FPGA"),
    "demo": ("sqaccel.demo", "run the main job on the offline default"),
    "report": ("sqaccel.report", "write the report of the last run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqaccel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # a step of the flow this build does not have
        p = sub.add_parser(name, help=help_, description=help_)
        adder = getattr(mod, f"add_{name.replace('-', '_')}_arguments", None) or mod.add_arguments
        adder(p)
        p.set_defaults(_run=getattr(mod, f"run_{name.replace('-', '_')}", None) or mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SqaccelError as e:
        print(f"sqaccel {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sqaccel {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
