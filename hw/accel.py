"""The accelerator: buffers, controller, PE array, and a host interface of two streams.

Host interface (docs/hardware.md, "Host interface"; ``format.json`` beside the Verilog):

- ``host_in``: a stream of packets ``{data, addr, target}`` (``packet_layout``). A packet
  whose target is a buffer writes ``data`` (low bits) at ``addr`` of that buffer; writes
  are always accepted. A ``COMMAND`` packet carries a command (``command_layout``) in
  ``data``; it is accepted only while the accelerator is idle (``ready`` low otherwise).
- ``result``: a stream of result words ``{data, last}`` (``result_layout``): C lanes of
  acc_bits per word, in the order of docs/arithmetic.md section 7; ``last`` marks the
  command's final word.
- ``busy`` (a command is running or results are waiting), ``done`` (one cycle when a
  command ends) and ``error`` (the last command was refused).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from sqaccel import abi
from sqaccel.config import AccelConfig, ConfigError
from sqaccel.hw.array import PEArray, result_layout
from sqaccel.hw.buffer_ram import BufferRAM
from sqaccel.hw.controller import Controller, command_layout


def _target_enum() -> enum.EnumType:
    # An enum, so that waveforms and the Verilog's attributes name the targets.
    ns = enum.EnumType.__prepare__("Target", (enum.Enum,), shape=abi.TARGET_BITS)
    for name, value in abi.TARGETS.items():
        ns[name.upper()] = value
    return enum.EnumType("Target", (enum.Enum,), ns, shape=abi.TARGET_BITS)


# What a host packet addresses: the buffers and the command (``sqaccel.abi.TARGETS``).
Target = _target_enum()


def packet_layout(cfg: AccelConfig) -> data.StructLayout:
    """A host packet (``sqaccel.abi.packet_fields``): ``data`` (lowest bits), ``addr``,
    ``target`` (highest bits)."""
    return data.StructLayout({**abi.packet_fields(cfg), "target": Target})


class Accelerator(wiring.Component):
    """The top level. ``init`` maps buffer names (``sqaccel.abi.buffers``) to initial
    words."""

    def __init__(self, cfg: AccelConfig, init: dict[str, list[int]] | None = None):
        self.cfg = cfg
        self.init = dict(init or {})
        bufs = abi.buffers(cfg)
        for name, words in self.init.items():
            if name not in bufs:
                raise ConfigError(f"initial contents for {name!r}: this build has no such buffer")
            if len(words) > bufs[name].depth:
                raise ConfigError(
                    f"initial contents for {name!r}: {len(words)} words, the buffer holds "
                    f"{bufs[name].depth}"
                )
        super().__init__({
            "host_in": In(stream.Signature(packet_layout(cfg))),
            "result": Out(stream.Signature(result_layout(cfg))),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        ctrl = m.submodules.controller = Controller(cfg)
        array = m.submodules.array = PEArray(cfg)

        # -- buffers: one host write port, one controller read port each ---------------
        read_of = {"act": ctrl.act_rd, "weights": ctrl.w_rd, "bias": ctrl.bias_rd,
                   "requant": ctrl.rq_rd}
        if cfg.pe == "shift":
            read_of["steps"] = ctrl.step_rd

        # Host writes are registered once before they reach a buffer, with each buffer's
        # write enable decoded before that register: the enable then drives the memory
        # (spread over many distributed-RAM cells for the wide buffers) straight from a
        # flip-flop.
        pkt = self.host_in.payload
        wr = Signal(packet_layout(cfg), reset_less=True)
        is_cmd = pkt.target == Target.COMMAND
        m.d.comb += [
            self.host_in.ready.eq(Mux(is_cmd, ctrl.cmd.ready, 1)),
            ctrl.cmd.valid.eq(self.host_in.valid & is_cmd),
            ctrl.cmd.payload.eq(pkt.data[: command_layout(cfg).size]),
        ]
        m.d.sync += wr.eq(pkt)

        for name, buf in abi.buffers(cfg).items():
            ram = BufferRAM(buf.word_bits, buf.depth, self.init.get(name, []))
            m.submodules[f"{name}_buf"] = ram
            wp = ram.wr
            # `target == 0` would lint as a truncating `!target`.
            is_target = (pkt.target.as_value() == buf.target if buf.target
                         else ~pkt.target.as_value().any())
            # Addresses past a depth that is not a power of two are dropped.
            in_range = (pkt.addr < buf.depth) if buf.depth & (buf.depth - 1) \
                else ~pkt.addr[buf.addr_bits:].any()
            we = Signal(name=f"{name}_we")
            m.d.sync += we.eq(self.host_in.valid & is_target & in_range)
            m.d.comb += [
                wp.en.eq(we),
                wp.addr.eq(wr.addr),
                wp.data.eq(wr.data[: buf.word_bits]),
            ]
            wiring.connect(m, ram.rd, read_of[name])

        # -- controller <-> array ------------------------------------------------------
        wiring.connect(m, ctrl.slot, array.slot)
        wiring.connect(m, ctrl.load, array.load)
        m.d.comb += [
            array.relu.eq(ctrl.relu),
            ctrl.last_ok.eq(array.last_ok),
            ctrl.swap_pending.eq(array.swap_pending),
            ctrl.array_idle.eq(array.idle),
        ]
        wiring.connect(m, array.result, wiring.flipped(self.result))
        m.d.comb += [
            self.busy.eq(ctrl.busy),
            self.done.eq(ctrl.done),
            self.error.eq(ctrl.error),
        ]
        return m
