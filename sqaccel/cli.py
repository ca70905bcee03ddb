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


def _os_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    return f"{where}: {e.strerror}" if where and e.strerror else str(e)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Exit status 0, 1 for a failed check (the command says which),
    2 for bad input (one line ``sqaccel <command>: error: ...``), 130 for Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = next((a for a in argv if a in COMMANDS), "")
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # argparse has printed its usage line and its error
            return e.code if isinstance(e.code, int) else 2
        name = args.command
        return int(args._run(args) or 0)
    except SqaccelError as e:
        # One line ends the output; a longer report (a failed cosimulation's) comes first.
        first, *rest = str(e).splitlines() or [""]
        for line in rest:
            print(line, file=sys.stderr)
        print(f"sqaccel {name}: error: {first}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refused: read-only, busy, not a folder...
        print(f"sqaccel {name}: error: {_os_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sqaccel {name}: interrupted".replace("sqaccel : ", "sqaccel: "),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
