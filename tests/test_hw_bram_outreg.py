"""The block RAM output-register pass (``sqaccel.hw.bram_outreg``): what it moves, what it
leaves, and what nextpnr makes of the result."""

from __future__ import annotations

import copy
import json

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sqaccel.hw.bram_outreg import absorb_output_registers
from sqaccel.hw.buffer_ram import BufferRAM
from sqaccel.hw.synth import SynthOptions, synthesize

CLK, OTHER_CLK = 2, 3


def _ff(d: int, q: int, **params) -> dict:
    # As Yosys writes a plain flip-flop: string parameters that look like bits get a space.
    return {
        "type": "TRELLIS_FF",
        "parameters": {"GSR": "AUTO", "CEMUX": "1 ", "CLKMUX": "CLK", "LSRMUX": "LSR",
                       "REGSET": "RESET", **params},
        "port_directions": {"CLK": "input", "LSR": "input", "DI": "input", "Q": "output"},
        "connections": {"CLK": [CLK], "LSR": ["0"], "DI": [d], "Q": [q]},
    }


def _netlist() -> dict:
    """One DP16KD read on port B (two data bits, 10 and 11), each into a plain flip-flop."""
    ram = {
        "type": "DP16KD",
        "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG"},
        "port_directions": {"CLKB": "input", "OCEB": "input", "RSTB": "input",
                            "DOB0": "output", "DOB1": "output", "DOB2": "output"},
        "connections": {"CLKB": [CLK], "OCEB": ["1"], "RSTB": ["0"], "DOB0": [10],
                        "DOB1": [11], "DOB2": [12]},
    }
    return {"modules": {"top": {
        "ports": {"clk": {"direction": "input", "bits": [CLK]},
                  "q": {"direction": "output", "bits": [20, 21]}},
        "cells": {"ram": ram, "ff0": _ff(10, 20), "ff1": _ff(11, 21)},
        "netnames": {},
    }}}


def test_plain_flip_flops_move_into_the_port():
    nl = _netlist()
    done = absorb_output_registers(nl)
    top = nl["modules"]["top"]
    assert [(a.ram, a.port, a.bits) for a in done] == [("ram", "B", 2)]
    assert sorted(top["cells"]) == ["ram"]
    ram = top["cells"]["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"
    assert (ram["connections"]["DOB0"], ram["connections"]["DOB1"]) == ([20], [21])


def _enable(nl):
    ff = nl["modules"]["top"]["cells"]["ff1"]
    ff["parameters"]["CEMUX"] = "CE"
    ff["connections"]["CE"] = [5]


def _second_reader(nl):
    nl["modules"]["top"]["cells"]["lut"] = {
        "type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
        "connections": {"A": [10], "Z": [30]}}


def _output_port(nl):
    nl["modules"]["top"]["ports"]["peek"] = {"direction": "output", "bits": [11]}


def _other_clock(nl):
    nl["modules"]["top"]["cells"]["ff0"]["connections"]["CLK"] = [OTHER_CLK]


def _reset(nl):
    nl["modules"]["top"]["cells"]["ff0"]["connections"]["LSR"] = [6]


def _init_one(nl):
    nl["modules"]["top"]["cells"]["ff1"]["parameters"]["REGSET"] = "SET"


def _ram_reset(nl):
    nl["modules"]["top"]["cells"]["ram"]["connections"]["RSTB"] = [6]


def _already_registered(nl):
    nl["modules"]["top"]["cells"]["ram"]["parameters"]["REGMODE_B"] = "OUTREG"


@pytest.mark.parametrize("change", [_enable, _second_reader, _output_port, _other_clock,
                                    _reset, _init_one, _ram_reset, _already_registered])
def test_a_port_that_does_not_qualify_in_full_is_left_alone(change):
    nl = _netlist()
    change(nl)
    before = copy.deepcopy(nl)
    assert absorb_output_registers(nl) == []
    assert nl == before


class RegisteredRead(wiring.Component):
    """A 4096 x 16 buffer whose read data goes into a flip-flop (with an enable or not)."""

    def __init__(self, enable: bool):
        self.enable = enable
        super().__init__({"wa": In(12), "wd": In(16), "we": In(1), "ra": In(12),
                          "ce": In(1), "q": Out(16)})

    def elaborate(self, platform):
        m = Module()
        ram = m.submodules.ram = BufferRAM(16, 4096)
        m.d.comb += [ram.wr.addr.eq(self.wa), ram.wr.data.eq(self.wd), ram.wr.en.eq(self.we),
                     ram.rd.addr.eq(self.ra)]
        word = Signal(16, reset_less=True)
        with m.If(self.ce if self.enable else 1):
            m.d.sync += word.eq(ram.rd.data)
        m.d.sync += self.q.eq(word + 1)
        return m


def test_ecp5_run_uses_the_output_registers(tmp_path):
    """Yosys maps the buffer to four 4096 x 4 DP16KD; the pass moves the 16 flip-flops into
    their read ports, and nextpnr times the registered output (0.95 ns from the clock
    rather than 5.8 ns). With an enable on the flip-flop nothing moves."""
    opts = SynthOptions(freq_mhz=200, keep_netlist=True)
    fast = synthesize(RegisteredRead(False), "ecp5", "plain", options=opts, out_root=tmp_path)
    slow = synthesize(RegisteredRead(True), "ecp5", "enable", options=opts, out_root=tmp_path)
    assert fast.report["bram_output_registers"] == {"ports": 4, "flip_flops": 16}
    assert slow.report["bram_output_registers"] == {"ports": 0, "flip_flops": 0}
    assert fast.report["resources"]["bram"] == slow.report["resources"]["bram"] == 4
    assert (fast.report["resources"]["ffs"], slow.report["resources"]["ffs"]) == (16, 32)
    modes = [c["parameters"]["REGMODE_A"] + "/" + c["parameters"]["REGMODE_B"]
             for mod in json.loads((fast.path / "netlist.json").read_text())["modules"].values()
             for c in mod["cells"].values() if c["type"] == "DP16KD"]
    assert len(modes) == 4 and all(m.count("OUTREG") == 1 for m in modes)
    # The slow design's worst path starts at the RAM's unregistered output.
    assert slow.report["critical_path"]["delay_ns"] > 5.8
    assert fast.report["critical_path"]["delay_ns"] < 5.0
    assert "Block RAM output registers: 16 flip-flops" in (fast.path / "summary.md").read_text()
