"""The ``sqaccel`` command: one subcommand per step of the flow (``sqaccel.commands``)."""

from __future__ import annotations

import argparse
import importlib
import sys

from sqaccel.commands import COMMANDS
from sqaccel.errors import SqaccelError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqaccel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
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
