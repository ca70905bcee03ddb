"""Block RAM output registers: a pass over Yosys's JSON netlist, before placement.

An ECP5 DP16KD read without its output register takes 5.8 ns from clock to data (speed 6);
with it (``REGMODE_x = "OUTREG"``) 0.95 ns, one cycle later. Yosys maps every memory with
``NOREG`` and leaves the flip-flop the design puts after the read port in the fabric, so the
block's slow output and the route to that flip-flop share one cycle. The design registers
every buffer's read data straight away (the array's input registers, the loader's step,
bias and requantisation registers), so this pass moves such flip-flops into the block:
for a RAM port whose every used data output drives exactly one plain flip-flop (same clock,
no enable, no reset, initial value 0) and nothing else, it sets the port's ``REGMODE`` to
``OUTREG``, connects each output to that flip-flop's net and removes the flip-flop. The
cycles and words stay the same: the output register samples every cycle what the flip-flop
sampled. A port that does not qualify in full is left as it is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

# Per RAM cell type: its ports (the letter in the pin names) and data outputs per port.
RAM_PORTS = {"DP16KD": (("A", "B"), 18)}
FF_TYPE = "TRELLIS_FF"


@dataclass(frozen=True)
class Absorbed:
    module: str
    ram: str
    port: str
    bits: int


def _param(cell: dict, name: str, default: str) -> str:
    # Yosys writes a string parameter that looks like a bit string with a trailing space.
    return str(cell.get("parameters", {}).get(name, default)).strip()


def _const(cell: dict, port: str, value: str) -> bool:
    """The pin is tied to ``value`` (an unconnected pin counts as 0)."""
    return cell.get("connections", {}).get(port, ["0"]) == [value]


def _sinks(module: dict) -> dict[int, list[tuple[str, str]]]:
    """Every reader of each net bit: (cell, pin), or ("", port name) for a module output."""
    out: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        dirs = cell.get("port_directions", {})
        for pin, bits in cell.get("connections", {}).items():
            if dirs.get(pin) != "output":
                for b in bits:
                    if isinstance(b, int):
                        out[b].append((name, pin))
    for pname, port in module.get("ports", {}).items():
        if port.get("direction") != "input":
            for b in port["bits"]:
                if isinstance(b, int):
                    out[b].append(("", pname))
    return out


def _plain_ff(cell: dict, clk: list) -> bool:
    return (cell.get("type") == FF_TYPE
            and cell["connections"].get("CLK") == clk
            and _param(cell, "CLKMUX", "CLK") == "CLK"
            and (_param(cell, "CEMUX", "CE") == "1" or _const(cell, "CE", "1"))
            and _const(cell, "LSR", "0")
            and _param(cell, "REGSET", "RESET") == "RESET"
            and "M" not in cell["connections"])


def _port_flip_flops(module: dict, ram: dict, port: str, width: int,
                     sinks: dict[int, list[tuple[str, str]]]) -> dict[str, str] | None:
    """Output pin -> the flip-flop it alone feeds, when the whole port qualifies."""
    conns = ram["connections"]
    clk = conns.get(f"CLK{port}")
    if (clk is None or _param(ram, f"REGMODE_{port}", "NOREG") != "NOREG"
            or _param(ram, f"CLK{port}MUX", f"CLK{port}") != f"CLK{port}"
            or not _const(ram, f"OCE{port}", "1") or not _const(ram, f"RST{port}", "0")):
        return None
    found = {}
    for i in range(width):
        bits = conns.get(f"DO{port}{i}", [])
        if not bits or not isinstance(bits[0], int):
            continue
        readers = sinks.get(bits[0], [])
        if not readers:
            continue
        if len(readers) != 1:
            return None
        ff, pin = readers[0]
        if not ff or pin != "DI" or not _plain_ff(module["cells"][ff], clk):
            return None
        found[f"DO{port}{i}"] = ff
    return found or None


def absorb_output_registers(netlist: dict) -> list[Absorbed]:
    """Rewrite ``netlist`` (Yosys JSON, in place); return what moved into which RAM port."""
    done = []
    for mname, module in netlist.get("modules", {}).items():
        cells = module.get("cells", {})
        rams = [(n, c) for n, c in cells.items() if c.get("type") in RAM_PORTS]
        if not rams:
            continue
        sinks = _sinks(module)
        for rname, ram in rams:
            ports, width = RAM_PORTS[ram["type"]]
            for port in ports:
                ffs = _port_flip_flops(module, ram, port, width, sinks)
                if ffs is None:
                    continue
                for pin, ff in ffs.items():
                    ram["connections"][pin] = list(cells[ff]["connections"]["Q"])
                    del cells[ff]
                ram["parameters"][f"REGMODE_{port}"] = "OUTREG"
                done.append(Absorbed(mname, rname, port, len(ffs)))
    return done
