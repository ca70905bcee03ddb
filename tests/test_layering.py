"""The layering of docs/layering.md, enforced: every import of every module of the package,
function-level imports included, parsed from the source and checked against the layer
rules. A tree with a deliberately wrong import (tests/fixtures/layering) shows that a
violation fails."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "layering"
# Source folder -> the package it installs as (pyproject.toml's package-dir).
FOLDERS = {"sqaccel": "sqaccel", "hw": "sqaccel.hw", "sw": "sqaccel.sw", "sim": "sqaccel.sim",
           "constraints": "sqaccel.constraints"}

BASE = ("sqaccel.config", "sqaccel.errors", "sqaccel.files", "sqaccel.tables")
CONTRACT = ("sqaccel.arith", "sqaccel.abi", "sqaccel.imagecodec")
# What the cocotb test modules may import besides the base and the contract.
TESTBENCH_SIDE = ("sqaccel.sim.job", "sqaccel.sim.checker", "sqaccel.sim.drivers")
LIBRARY = ("sqaccel.hw", "sqaccel.sw", "sqaccel.sim")
FLOW = ("sqaccel.demo", "sqaccel.report", "sqaccel.experiments", "sqaccel.perf",
        "sqaccel.sweep")
COMMANDS = ("sqaccel.commands", "sqaccel.cli", "sqaccel.__main__")


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> str:
    if _in(module, BASE) or module in ("sqaccel", "sqaccel.constraints"):
        return "base"
    if _in(module, CONTRACT):
        return "contract"
    if module.startswith("sqaccel.sim.tb_"):
        return "cocotb"
    if _in(module, TESTBENCH_SIDE):
        return "testbench side"
    for name in ("hw", "sw", "sim"):
        if _in(module, (f"sqaccel.{name}",)):
            return name
    if _in(module, FLOW):
        return "flow"
    if _in(module, COMMANDS):
        return "commands"
    raise AssertionError(f"{module}: in no layer of docs/layering.md")


# Layer -> the layers it may import (its own included).
ALLOWED = {
    "base": {"base"},
    "contract": {"base", "contract"},
    "testbench side": {"base", "contract", "testbench side"},
    "cocotb": {"base", "contract", "testbench side"},
    "hw": {"base", "contract", "hw"},
    "sw": {"base", "contract", "sw"},
    "sim": {"base", "contract", "hw", "sw", "sim", "testbench side"},
    "flow": {"base", "contract", "hw", "sw", "sim", "testbench side", "flow"},
    "commands": {"base", "contract", "hw", "sw", "sim", "testbench side", "flow", "commands"},
}


def modules(root: Path) -> dict[str, Path]:
    """Module name -> source file, for every .py file of the package's folders."""
    out = {}
    for folder, package in FOLDERS.items():
        for f in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            parts = list(f.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = f
    return out


def imports(module: str, source: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) of every import of the package in ``source``; ``known``
    are the package's modules."""
    tree = ast.parse(source.read_text(), str(source))
    is_package = source.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from sqaccel.sw import images` imports the module sqaccel.sw.images;
            # `from sqaccel.sw.images import load` the module sqaccel.sw.images.
            names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            names = names or [base]
        else:
            continue
        out += [(node.lineno, n) for n in names if n in known]
    return out


def violations(root: Path) -> list[str]:
    mods = modules(root)
    found = []
    for module, source in mods.items():
        own = layer(module)
        for line, target in imports(module, source, set(mods)):
            theirs = layer(target)
            if theirs not in ALLOWED[own]:
                found.append(f"{source.relative_to(root)}:{line}: {module} ({own}) imports "
                             f"{target} ({theirs})")
    return sorted(set(found))


def test_the_package_keeps_its_layers():
    assert violations(ROOT) == []


def test_every_module_is_in_a_layer():
    for module in modules(ROOT):
        layer(module)  # raises for a module no rule covers


def test_a_wrong_import_is_caught():
    """The fixture tree holds one wrong import per rule: hw importing sw, a cocotb module
    importing the golden model, a library module importing a command."""
    found = violations(FIXTURE)
    print("\n".join(found))
    assert found == [
        "hw/oops.py:9: sqaccel.hw.oops (hw) imports sqaccel.sw.images (sw)",
        "sim/tb_oops.py:4: sqaccel.sim.tb_oops (cocotb) imports sqaccel.sw.intnet (sw)",
        "sw/oops.py:5: sqaccel.sw.oops (sw) imports sqaccel.commands.export (commands)",
    ]
