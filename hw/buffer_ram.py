"""A buffer's RAM: one write port, one synchronous read port, whose ports are unordered for
the same word in the same cycle.

The host writes a buffer while the controller reads it. Amaranth's memory returns the old
word when both touch the same word in one cycle; the ECP5 block RAM (DP16KD) does not order
its two ports, so Yosys keeps that promise with logic of its own: the write delayed by a
cycle, an address comparator and a multiplexer after the RAM's 5.8 ns clock-to-out, which
was the board top's critical path. The project's rule is that a host never writes a word a
running command reads (docs/hardware.md, "host_in packets"), so the buffers' memories carry
``UNORDERED_PORTS`` and the synthesis script (hw/synth.py) tells Yosys that such a read is
undefined. The 4,096 x 64 activation buffer then maps to 16 DP16KD of 4,096 x 4 whose read
data goes straight to the array's input flip-flops, which the synthesis flow moves into the
blocks' own output registers (hw/bram_outreg.py). Same words and cycles in simulation.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

# A memory attribute: a read of the word being written in the same cycle may return anything.
UNORDERED_PORTS = "sqaccel_unordered_ports"


class BufferRAM(wiring.Component):
    """``word_bits`` x ``depth`` words, ``init`` the first words. ``wr`` and ``rd`` have the
    signatures of ``amaranth.lib.memory``'s write and read ports."""

    def __init__(self, word_bits: int, depth: int, init: Sequence[int] = ()):
        self.word_bits, self.depth = word_bits, depth
        self.init = [int(w) for w in init]
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "wr": Out(WritePort.Signature(addr_width=addr_width, shape=word_bits)),
            "rd": Out(ReadPort.Signature(addr_width=addr_width, shape=word_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        mem = m.submodules.mem = Memory(shape=self.word_bits, depth=self.depth, init=self.init,
                                        attrs={UNORDERED_PORTS: 1})
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [
            wp.en.eq(self.wr.en),
            wp.addr.eq(self.wr.addr),
            wp.data.eq(self.wr.data),
            rp.en.eq(self.rd.en),
            rp.addr.eq(self.rd.addr),
            self.rd.data.eq(rp.data),
        ]
        return m
