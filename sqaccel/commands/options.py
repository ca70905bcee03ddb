"""Command-line options every command shares: the accelerator config (``--config FILE`` and
an override per field) and its reading.

One helper serves every command that takes a config, so the options are spelled the same
everywhere and a config file plus overrides always mean the same thing: the file (or the
built-in default), then the command's own defaults for fields the file does not set, then
the options given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqaccel.config import PE_KINDS, STEP_TABLE_MODES, AccelConfig

# Field -> (type or choices, help). The option is --field-with-dashes.
CONFIG_OPTIONS: dict[str, tuple[object, str]] = {
    "rows": (int, "PE rows R"),
    "cols": (int, "PE columns C"),
    "act_bits": (int, "activation bits A"),
    "weight_bits": (int, "weight bits b"),
    "pe": (PE_KINDS, "PE kind"),
    "mult_cols": (int, "shift-add array: columns 0..N-1 multiply in a DSP block (a hybrid)"),
    "k_max": (int, "longest dot product K_max"),
    "step_tables": (STEP_TABLE_MODES, "step tables per layer or per output channel"),
    "act_depth": (int, "activation buffer words"),
    "weight_depth": (int, "weight buffer words"),
    "n_max": (int, "most output channels of one command"),
}


def add_config_arguments(p: argparse.ArgumentParser,
                         fields: Sequence[str] = tuple(CONFIG_OPTIONS)) -> None:
    """``--config FILE`` and one override option per field of ``fields``."""
    p.add_argument("--config", type=Path, default=None,
                   help="accelerator config JSON (default: the built-in 8x8 config)")
    for name in fields:
        kind, help_ = CONFIG_OPTIONS[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(kind, tuple):
            p.add_argument(flag, dest=name, choices=kind, default=None, help=help_)
        else:
            p.add_argument(flag, dest=name, type=kind, default=None, help=help_)


def overrides(args: argparse.Namespace) -> dict:
    """The config fields set on the command line."""
    return {name: getattr(args, name) for name in CONFIG_OPTIONS
            if getattr(args, name, None) is not None}


def config_from_args(args: argparse.Namespace, defaults: Mapping | None = None
                     ) -> AccelConfig:
    """The config of ``--config`` (or the built-in one), then ``defaults`` where no file was
    given, then the overrides on the command line."""
    path = getattr(args, "config", None)
    base = AccelConfig.load(path) if path else AccelConfig()
    changes = {**(dict(defaults or {}) if not path else {}), **overrides(args)}
    return base.with_changes(**changes)


def _number(kind, low: float, what: str):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if not (v >= low) or v != v or v in (float("inf"),):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return v

    parse.__name__ = what  # argparse names the type in some messages
    return parse


# Option types that refuse what no command can use (a negative seed, a zero size).
seed = _number(int, 0, "a seed is a whole number >= 0")
count = _number(int, 1, "a count is a whole number >= 1")
size = _number(int, 1, "a size is a whole number >= 1")
positive = _number(float, 1e-300, "a number > 0")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--data`` and ``--retrain`` (``sqaccel.sw.workloads``)."""
    from sqaccel.sw.workloads import DATA_HELP, MODEL_HELP

    p.add_argument("--model", default="digits", metavar="NAME|FILE.py:FUNCTION",
                   help=MODEL_HELP + " (default: digits)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights file: .safetensors, or a .pt/.pth state dict (weights only)")
    p.add_argument("--data", metavar="digits|mnist5k|FOLDER", help=DATA_HELP)
    p.add_argument("--retrain", action="store_true",
                   help="train the built-in network again (cached under --cache-dir) instead "
                   "of loading its committed weights")
