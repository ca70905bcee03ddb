"""Tops that put a design on a real FPGA package.

``BoardTop``: the accelerator behind a UART (8N1) host link, plus clock, reset button and a
status LED: the design a board is programmed with. Its input stream is fed from received
bytes, its output stream is sent back, each payload as ``ceil(width / 8)`` bytes, least
significant byte first (docs/synthesis.md, "Serial link").

``IoShell``: any component with its inputs loaded through a shift chain from one pin and
its outputs registered and folded into one pin by a pipelined XOR tree. Every port bit is
then register to register and nothing can be optimised away, whatever the port count:
the wrapper the hardware-cost benchmark measures single PEs and arrays in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Const, Module, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from sqaccel.errors import SqaccelError
from sqaccel.hw.uart import (
    BytesToWords,
    UARTRx,
    UARTTx,
    WordsToBytes,
    baud_divisor,
    payload_width,
)


def constraint_file(name: str) -> Path:
    """A board's pin and clock file, shipped as package data (``sqaccel.constraints``)."""
    from importlib.resources import files

    return Path(str(files("sqaccel.constraints").joinpath(name)))



@dataclass(frozen=True)
class Board:
    """A development board: its FPGA, its clock and the file that pins the top's ports."""

    name: str
    clk_hz: int
    constraints: Path
    led_active_low: bool
    btn_active_low: bool

    @property
    def clk_mhz(self) -> float:
        return self.clk_hz / 1e6


ULX3S = Board(
    name="ULX3S v2.0/v3.x (LFE5U-85F-6BG381C)",
    clk_hz=25_000_000,
    constraints=constraint_file("ulx3s.lpf"),
    led_active_low=False,
    btn_active_low=False,
)
ICEBREAKER = Board(
    name="iCEBreaker v1.0 (iCE40UP5K-SG48)",
    clk_hz=12_000_000,
    constraints=constraint_file("icebreaker.pcf"),
    led_active_low=True,
    btn_active_low=True,
)


def _streams(dut: wiring.Component) -> tuple[str, str]:
    """Names of the one input stream and the one output stream of ``dut``."""
    ins, outs = [], []
    for name, member in dut.signature.members.items():
        if not member.is_signature:
            continue
        sig = member.signature
        unflipped = sig.flip() if isinstance(sig, wiring.FlippedSignature) else sig
        if not isinstance(unflipped, stream.Signature):
            continue
        (ins if isinstance(sig, wiring.FlippedSignature) else outs).append(name)
    if len(ins) != 1 or len(outs) != 1:
        raise SqaccelError(
            f"board top: {type(dut).__name__} needs exactly one input and one output stream, "
            f"has inputs {ins} and outputs {outs}"
        )
    return ins[0], outs[0]


class BoardTop(wiring.Component):
    """``accel`` behind a UART; every other port of ``accel`` keeps its initial value
    (inputs) or is left unconnected (outputs).

    Reset: a power-on reset of 16 cycles, and the button ``btn``. ``led``
    lights (sticky until reset) when the link lost a byte: a bad stop bit, a byte that
    found the receive FIFO full, or a packet discarded after a pause of ``resync_s``.
    """

    def __init__(
        self,
        accel: wiring.Component,
        board: Board,
        *,
        baud: int = 115_200,
        rx_fifo_depth: int = 512,
        resync_s: float = 0.05,
    ) -> None:
        self.accel = accel
        self.board = board
        self.divisor = baud_divisor(board.clk_hz, baud)
        self.baud = baud
        self.rx_fifo_depth = rx_fifo_depth
        self.resync_cycles = max(1, round(resync_s * board.clk_hz))
        self.in_name, self.out_name = _streams(accel)
        self.in_width = payload_width(accel.signature.members[self.in_name].signature)
        self.out_width = payload_width(accel.signature.members[self.out_name].signature)
        super().__init__(
            {
                "clk": In(1),
                "btn": In(1, init=int(board.btn_active_low)),
                "uart_rx": In(1, init=1),
                "uart_tx": Out(1, init=1),
                "led": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        # The clock comes from a pin; reset from a power-on counter and the button, so the
        # top has no reset port of its own.
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += [ClockSignal("sync").eq(self.clk), ClockSignal("por").eq(self.clk)]
        por = Signal(4, init=15)
        with m.If(por != 0):
            m.d.por += por.eq(por - 1)
        btn = Signal(init=int(self.board.btn_active_low))
        m.submodules.sync_btn = FFSynchronizer(self.btn, btn, init=btn.init, o_domain="por")
        pressed = ~btn if self.board.btn_active_low else btn
        # Registered: the reset net reaches every flip-flop of the design, so it should
        # start at a flip-flop (which nextpnr may also put on a global network).
        rst = Signal(init=1)
        m.d.por += rst.eq((por != 0) | pressed)
        m.d.comb += ResetSignal("sync").eq(rst)

        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.submodules.unpack = unpack = BytesToWords(self.in_width, timeout=self.resync_cycles)
        m.submodules.pack = pack = WordsToBytes(self.out_width)
        m.submodules.accel = accel = self.accel

        m.d.comb += [
            rx.rx.eq(self.uart_rx),
            self.uart_tx.eq(tx.tx),
            fifo.w_data.eq(rx.bytes.payload),
            fifo.w_en.eq(rx.bytes.valid),
            rx.bytes.ready.eq(fifo.w_rdy),
            unpack.bytes.payload.eq(fifo.r_data),
            unpack.bytes.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(unpack.bytes.ready),
        ]
        acc_in = getattr(accel, self.in_name)
        acc_out = getattr(accel, self.out_name)
        m.d.comb += [
            acc_in.payload.eq(unpack.words.payload),
            acc_in.valid.eq(unpack.words.valid),
            unpack.words.ready.eq(acc_in.ready),
            pack.words.payload.eq(acc_out.payload),
            pack.words.valid.eq(acc_out.valid),
            acc_out.ready.eq(pack.words.ready),
        ]
        wiring.connect(m, pack.bytes, tx.bytes)

        error = Signal()
        with m.If(rx.frame_error | rx.overrun | unpack.dropped):
            m.d.sync += error.eq(1)
        m.d.comb += self.led.eq(~error if self.board.led_active_low else error)
        return m


def _xor_tree(m: Module, bits: Signal, fan_in: int = 4) -> Signal:
    """XOR of all ``bits``, one LUT level per register stage."""
    level = 0
    while len(bits) > 1:
        groups = [bits[i : i + fan_in] for i in range(0, len(bits), fan_in)]
        nxt = Signal(len(groups), name=f"xor_l{level}", reset_less=True)
        m.d.sync += [nxt[i].eq(g.xor()) for i, g in enumerate(groups)]
        bits, level = nxt, level + 1
    return bits


class IoShell(wiring.Component):
    """``dut`` with three pins: ``sin`` shifts into a chain that drives every input bit,
    ``sout`` is the registered XOR of every output bit. The chain and the output register
    are reset-less flip-flops (no LUTs); the XOR tree costs about one LUT per three output
    bits. The ``sync`` domain (and so the ``clk``/``rst`` ports) comes from the caller."""

    def __init__(self, dut: wiring.Component) -> None:
        self.dut = dut
        self.inputs, self.outputs = [], []
        for path, member, value in dut.signature.flatten(dut):
            if isinstance(value, Const):
                continue  # an always-valid / always-ready strobe: nothing to drive or read
            (self.inputs if member.flow == wiring.In else self.outputs).append((path, value))
        if not self.outputs:
            raise SqaccelError(f"io shell: {type(dut).__name__} has no output port")
        self.in_bits = sum(len(Value.cast(v)) for _, v in self.inputs)
        self.out_bits = sum(len(Value.cast(v)) for _, v in self.outputs)
        super().__init__({"sin": In(1), "sout": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.dut = self.dut
        if self.in_bits:
            chain = Signal(self.in_bits, reset_less=True)
            m.d.sync += chain.eq((chain << 1) | self.sin)
            pos = 0
            for _, value in self.inputs:
                width = len(Value.cast(value))
                m.d.comb += value.eq(chain[pos : pos + width])
                pos += width
        captured = Signal(self.out_bits, reset_less=True)
        pos = 0
        for _, value in self.outputs:
            width = len(Value.cast(value))
            m.d.sync += captured[pos : pos + width].eq(value)
            pos += width
        folded = _xor_tree(m, captured)
        out = Signal(reset_less=True)
        m.d.sync += out.eq(folded)
        m.d.comb += self.sout.eq(out)
        return m
