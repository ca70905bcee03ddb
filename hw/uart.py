"""8N1 UART receiver and transmitter with byte streams, and the packet (de)serialisers
that carry wide stream payloads over them, least significant byte first.

The host link of the board top (``sqaccel.hw.board``): the receiver turns the serial line
into a stream of bytes, ``BytesToWords`` packs ``ceil(width / 8)`` bytes into one payload,
``WordsToBytes`` and the transmitter send a payload back the same way. docs/synthesis.md
documents the wire format.
"""

from __future__ import annotations

from amaranth import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from sqaccel.errors import SqaccelError

BYTE = 8


def baud_divisor(clk_hz: int, baud: int) -> int:
    """Clock cycles per bit; refuses a rate the clock cannot sample (< 4 cycles per bit)
    or cannot hit within 2 % (a UART tolerates about 4 % over a 10-bit frame)."""
    if clk_hz <= 0 or baud <= 0:
        raise SqaccelError(f"uart: clock {clk_hz} Hz and baud {baud} must be positive")
    div = round(clk_hz / baud)
    if div < 4:
        raise SqaccelError(f"uart: {baud} baud needs at least 4 clocks per bit at {clk_hz} Hz")
    error = abs(clk_hz / div - baud) / baud
    if error > 0.02:
        raise SqaccelError(
            f"uart: {baud} baud from a {clk_hz} Hz clock is off by {error:.1%} (limit 2%)"
        )
    return div


def payload_width(sig: stream.Signature) -> int:
    """Bit width of a stream signature's payload (a plain shape or a data layout)."""
    return Shape.cast(sig.members["payload"].shape).width


class UARTRx(wiring.Component):
    """8N1 receiver: samples each bit in its middle, emits one byte per valid frame.

    A frame whose stop bit is 0 is dropped and pulses ``frame_error``; a byte that
    arrives while the previous one still waits on ``bytes`` is dropped and pulses
    ``overrun``.
    """

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise SqaccelError(f"uart rx: divisor {divisor} is below 4 clocks per bit")
        self.divisor = divisor
        super().__init__(
            {
                "rx": In(1, init=1),
                "bytes": Out(stream.Signature(BYTE)),
                "frame_error": Out(1),
                "overrun": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(BYTE))
        shreg = Signal(BYTE)
        # A good frame's byte goes out a cycle after its stop bit, from this flip-flop: the
        # stop bit's checks (timer, line, overrun) in front of the byte register's enable,
        # which the placer puts beside the reader's block RAM, were the board top's
        # critical path. The overrun check stays valid for that cycle: a byte waiting then
        # can only leave, and `shreg` holds until the next frame's data bits.
        deliver = Signal()
        m.d.sync += deliver.eq(0)

        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)
        with m.If(deliver):
            m.d.sync += [self.bytes.payload.eq(shreg), self.bytes.valid.eq(1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    # A start bit still low in its middle; a glitch otherwise.
                    with m.If(~rx):
                        m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [
                        shreg.eq((shreg >> 1) | (rx << (BYTE - 1))),
                        timer.eq(self.divisor - 1),
                        bit.eq(bit + 1),
                    ]
                    with m.If(bit == BYTE - 1):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.bytes.valid & ~self.bytes.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += deliver.eq(1)
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                # Wait for the line to go idle before looking for the next start bit.
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: takes one byte from ``bytes`` per frame; ``tx`` idles high."""

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise SqaccelError(f"uart tx: divisor {divisor} is below 4 clocks per bit")
        self.divisor = divisor
        super().__init__({"bytes": In(stream.Signature(BYTE)), "tx": Out(1, init=1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        timer = Signal(range(self.divisor))
        # Start bit, 8 data bits, stop bit; shifted out LSB first.
        frame = Signal(BYTE + 2, init=(1 << (BYTE + 2)) - 1)
        left = Signal(range(BYTE + 3))

        m.d.comb += self.tx.eq(frame[0])
        with m.If(left == 0):
            m.d.comb += self.bytes.ready.eq(1)
            with m.If(self.bytes.valid):
                m.d.sync += [
                    frame.eq((self.bytes.payload << 1) | (1 << (BYTE + 1))),
                    left.eq(BYTE + 2),
                    timer.eq(self.divisor - 1),
                ]
        with m.Elif(timer == 0):
            m.d.sync += [
                frame.eq((frame >> 1) | (1 << (BYTE + 1))),
                left.eq(left - 1),
                timer.eq(self.divisor - 1),
            ]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class BytesToWords(wiring.Component):
    """Packs ``ceil(width / 8)`` bytes, least significant first, into one ``width``-bit word.

    With ``timeout`` > 0, a gap of more than ``timeout`` clock cycles between two bytes of
    one word discards the bytes received so far, so that a host can always resynchronise
    by pausing. Surplus bits of the last byte are ignored.
    """

    def __init__(self, width: int, *, timeout: int = 0) -> None:
        if width < 1:
            raise SqaccelError(f"bytes-to-words: width must be >= 1, got {width}")
        self.width = width
        self.n_bytes = -(-width // BYTE)
        self.timeout = timeout
        super().__init__(
            {
                "bytes": In(stream.Signature(BYTE)),
                "words": Out(stream.Signature(width)),
                "dropped": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.n_bytes
        shreg = Signal(n * BYTE)
        count = Signal(range(n + 1))
        # = (count == n), a flip-flop beside the count: the reader's `ready` comes back
        # through its packet decoding, and the comparison in front of it made that loop the
        # board top's critical path.
        full = Signal()

        m.d.comb += [self.words.payload.eq(shreg[: self.width]), self.words.valid.eq(full)]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += [count.eq(0), full.eq(0)]
        m.d.comb += self.bytes.ready.eq(~full)
        with m.If(self.bytes.valid & self.bytes.ready):
            # New bytes enter at the top: after n of them the first sits in the low bits.
            m.d.sync += [
                shreg.eq((shreg >> BYTE) | (self.bytes.payload << ((n - 1) * BYTE))),
                count.eq(count + 1),
                full.eq(count == n - 1),
            ]

        if self.timeout > 0 and n > 1:
            idle = Signal(range(self.timeout + 1))
            with m.If((count == 0) | full | self.bytes.valid):
                m.d.sync += idle.eq(0)
            with m.Elif(idle == self.timeout):
                m.d.sync += [count.eq(0), idle.eq(0)]
                m.d.comb += self.dropped.eq(1)
            with m.Else():
                m.d.sync += idle.eq(idle + 1)
        return m


class WordsToBytes(wiring.Component):
    """Sends each ``width``-bit word as ``ceil(width / 8)`` bytes, least significant first;
    bits past ``width`` in the last byte are 0 (the word is zero-extended)."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise SqaccelError(f"words-to-bytes: width must be >= 1, got {width}")
        self.width = width
        self.n_bytes = -(-width // BYTE)
        super().__init__(
            {"words": In(stream.Signature(width)), "bytes": Out(stream.Signature(BYTE))}
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.n_bytes
        # The word is held while a byte index picks the byte after the one being sent into
        # `following`, a register of its own, from which `byte` takes it: a word-wide shift
        # register put its load-or-shift choice, behind a count comparison, on every bit of
        # the word (the board top's critical path), and the index's multiplexer between
        # the handshake and `byte` was the next one. `following` is a cycle behind the index,
        # so a byte is offered only once it has caught up (`settled`): a cycle per byte,
        # against a transmitter that takes ten bit times for each.
        word = Signal(n * BYTE, reset_less=True)
        byte = Signal(BYTE, reset_less=True)
        following = Signal(BYTE, reset_less=True)  # byte index + 1 of the word
        index = Signal(range(n))  # the byte in `byte`
        full = Signal()  # a word is held: its bytes from `index` on are still to send
        settled = Signal()  # `following` matches `index` and `word`

        with m.Switch(index):
            # An n-way case rather than a variable part select: the same multiplexer,
            # lint-clean. After the last byte, `following` is not used.
            for i in range(n - 1):
                with m.Case(i):
                    m.d.sync += following.eq(word[(i + 1) * BYTE : (i + 2) * BYTE])

        m.d.comb += [
            self.bytes.valid.eq(full & settled),
            self.bytes.payload.eq(byte),
            self.words.ready.eq(~full),
        ]
        m.d.sync += settled.eq(1)
        with m.If(self.words.valid & ~full):
            m.d.sync += [word.eq(self.words.payload), byte.eq(self.words.payload[:BYTE]),
                         index.eq(0), full.eq(1), settled.eq(0)]
        with m.Elif(self.bytes.valid & self.bytes.ready):
            m.d.sync += [index.eq(index + 1), byte.eq(following), settled.eq(0)]
            with m.If(index == n - 1):
                m.d.sync += full.eq(0)
        return m
