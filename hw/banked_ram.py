"""A buffer's RAM: one write port, one synchronous read port, built from banks that are each
one ECP5 block RAM wide at the buffer's depth.

A block RAM (DP16KD, 16 Kbit) is 4,096 words of 4 bits, 2,048 of 9, 1,024 of 18 or 512 of
36 (PDPW16KD). Left to itself, Yosys builds a 4,096 x 64 buffer from 1,024-word RAMs stacked
in depth and selects among them with a multiplexer after their outputs; that multiplexer,
behind the RAM's 5.8 ns clock-to-out, was the board top's critical path. Banks as wide as a
RAM holds at the full depth need no such multiplexer: each bank is one RAM whose read data
goes straight to the reader's flip-flops. Same words, same cycles; only the mapping differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

# A memory attribute: a read of the word being written in the same cycle may return anything
# (docs/hardware.md, "host_in packets"). Synthesis then needs no logic to order the two
# ports, which the block RAM does not do itself (hw/synth.py).
UNORDERED_PORTS = "sqaccel_unordered_ports"
# (word bits, most words) of one block RAM, widest first.
BLOCK_RAM_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def bank_bits(depth: int) -> int:
    """The widest bank that one block RAM holds at ``depth`` words (1 bit past 16,384
    words, where the RAMs must be stacked in depth anyway)."""
    return next((bits for bits, most in BLOCK_RAM_SHAPES if depth <= most), 1)


def bank_widths(word_bits: int, depth: int) -> list[int]:
    """The banks' widths, lowest bits first; the last one takes what is left."""
    bits = bank_bits(depth)
    return [min(bits, word_bits - lo) for lo in range(0, word_bits, bits)]


class BankedRAM(wiring.Component):
    """``word_bits`` x ``depth`` words, ``init`` the first words. ``wr`` and ``rd`` have the
    signatures of ``amaranth.lib.memory``'s write and read ports."""

    def __init__(self, word_bits: int, depth: int, init: Sequence[int] = ()):
        self.word_bits, self.depth = word_bits, depth
        self.init = [int(w) for w in init]
        self.widths = bank_widths(word_bits, depth)
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "wr": Out(WritePort.Signature(addr_width=addr_width, shape=word_bits)),
            "rd": Out(ReadPort.Signature(addr_width=addr_width, shape=word_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        lo = 0
        for i, width in enumerate(self.widths):
            mask = (1 << width) - 1
            mem = Memory(shape=width, depth=self.depth,
                         init=[(w >> lo) & mask for w in self.init],
                         attrs={UNORDERED_PORTS: 1})
            m.submodules[f"bank{i}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [
                wp.en.eq(self.wr.en),
                wp.addr.eq(self.wr.addr),
                wp.data.eq(self.wr.data[lo : lo + width]),
                rp.en.eq(self.rd.en),
                rp.addr.eq(self.rd.addr),
                self.rd.data[lo : lo + width].eq(rp.data),
            ]
            lo += width
        return m
