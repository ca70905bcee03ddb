"""Drivers, monitors and testbench classes that the cocotb test modules share.

All sampling happens at falling clock edges, where every signal is settled: a value read
there is the one the next rising edge will see, whatever the simulator's ordering of
callbacks around the rising edge. A driver writes at a falling edge; the rising edge
after it samples the write.

Words wider than 64 bits travel as Python integers, packed and unpacked by the interface
(``sqaccel.abi``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqaccel import abi

# -- the host interface as format.json describes it -----------------------------------------


class HostFormat:
    """Packets, commands and result words from the generated ``format.json`` alone, as a
    host driver outside this toolchain would build them: the field offsets and widths are
    read from the file, not from the toolchain's own layouts."""

    def __init__(self, desc: dict):
        self.desc = desc
        self.packet_fields = self._fields(desc["packet"]["fields"])
        self.targets = desc["packet"]["targets"]
        self.command_fields = self._fields(desc["command"]["fields"])
        self.buffers = desc["buffers"]
        rf = desc["result"]["fields"]
        self.result_last_bit = rf["last"]["offset"]
        self.result_lanes = rf["data"]["lanes"]
        self.result_lane_bits = rf["data"]["lane_bits"]

    @staticmethod
    def _fields(desc: dict) -> dict[str, tuple[int, int]]:
        return {name: (f["offset"], f["width"]) for name, f in desc.items()}

    @classmethod
    def load(cls, path) -> HostFormat:
        import json

        with open(path) as f:
            return cls(json.load(f))

    def packet(self, target: str, addr: int, data: int) -> int:
        return abi.pack_record(self.packet_fields, {"target": self.targets[target],
                                                    "addr": addr, "data": data}, "packet")

    def writes(self, buffer: str, words: Sequence[int], base: int = 0) -> list[int]:
        """Write packets that put ``words`` at ``base``, ``base + 1``, ... of ``buffer``."""
        b = self.buffers[buffer]
        if base + len(words) > b["depth"]:
            raise abi.WordError(f"{buffer}: {base + len(words)} words exceed its depth "
                                f"{b['depth']}")
        limit = 1 << b["word_bits"]
        for i, w in enumerate(words):
            if not 0 <= w < limit:
                raise abi.WordError(f"{buffer} word {i}: {w:#x} is wider than "
                                    f"{b['word_bits']} bits")
        return [self.packet(buffer, base + i, w) for i, w in enumerate(words)]

    def command(self, **fields) -> int:
        """The command packet of a command (fields as in format.json's ``command``)."""
        word = abi.pack_record(self.command_fields, fields, "command")
        return self.packet("command", 0, word)


# -- clock, reset, lockstep driving -----------------------------------------------------


def now_ns() -> float:
    from cocotb.utils import get_sim_time

    return float(get_sim_time("ns"))


class ClockedTB:
    """Owns the clock and the synchronous reset of a design (Amaranth's ``clk``/``rst``)."""

    def __init__(self, dut, period_ns: int = 10, clk: str = "clk", rst: str = "rst"):
        from cocotb.triggers import FallingEdge

        self.dut = dut
        self.clk = getattr(dut, clk)
        self.rst = getattr(dut, rst)
        self.period_ns = period_ns
        self.falling = FallingEdge(self.clk)
        self.cycles = 0  # falling edges awaited through ``tick``
        self._clock = None

    def start_clock(self) -> None:
        from cocotb.clock import Clock

        if self._clock is None:
            self._clock = Clock(self.clk, self.period_ns, unit="ns")
            self._clock.start()

    def sim_cycles(self) -> int:
        """Clock periods simulated so far."""
        return int(now_ns() // self.period_ns)

    async def tick(self, n: int = 1) -> None:
        for _ in range(n):
            await self.falling
        self.cycles += n

    async def reset(self, cycles: int = 2) -> None:
        """Start the clock if needed and hold reset for ``cycles`` rising edges."""
        self.start_clock()
        await self.falling
        self.rst.value = 1
        await self.tick(cycles)
        self.rst.value = 0
        await self.tick()


class LockstepTB(ClockedTB):
    """A design with one packed input word and one packed output word per cycle (the PE
    bench): the driver writes word i at falling edge i, the monitor reads the output at
    falling edge i+1, in one loop so that a cycle costs one simulator callback."""

    def __init__(self, dut, inp: str = "stim", out: str = "acc", **kw):
        super().__init__(dut, **kw)
        self.inp = getattr(dut, inp)
        self.out = getattr(dut, out)

    async def play(self, words: Sequence[int]) -> list[int]:
        """Drive ``words``, one per cycle; return the output after each of them."""
        inp, out, falling = self.inp, self.out, self.falling
        seen: list[int] = []
        append = seen.append
        for w in words:
            inp.value = w
            await falling
            append(out.value.to_unsigned())
        self.cycles += len(words)
        return seen


# -- amaranth.lib.stream interfaces --------------------------------------------------------


class StreamSource:
    """Drives an input stream (``<name>__valid``, ``__ready``, ``__payload``) word by word.

    ``ready`` may depend on the payload (the top's ``host_in`` is ready for buffer writes
    always, for a command only while idle), so after presenting a word the driver reads
    ``ready`` in the ReadOnly phase of the same time step; a word with ready high transfers
    at the next rising edge. While a word waits, ``ready`` is re-read at each falling edge.
    """

    def __init__(self, tb: ClockedTB, name: str):
        from cocotb.triggers import ReadOnly

        self.tb = tb
        self.valid = getattr(tb.dut, f"{name}__valid")
        self.ready = getattr(tb.dut, f"{name}__ready")
        self.payload = getattr(tb.dut, f"{name}__payload")
        self.read_only = ReadOnly()
        self.sent = 0
        self.stalls = 0  # cycles a presented word waited
        self.last_accept_ns = 0.0  # sim time of the rising edge that took the last word

    def idle(self) -> None:
        self.valid.value = 0

    async def send(self, words: Sequence[int]) -> None:
        """Transfer ``words`` in order; returns at the falling edge after the last transfer."""
        if not words:
            return
        valid, ready, payload = self.valid, self.ready, self.payload
        falling, read_only = self.tb.falling, self.read_only
        valid.value = 1
        for w in words:
            payload.value = w
            await read_only
            if not ready.value:
                await falling
                self.stalls += 1
                while not ready.value:
                    await falling
                    self.stalls += 1
            await falling  # the rising edge in between took the word
        valid.value = 0
        self.sent += len(words)
        self.last_accept_ns = now_ns() - self.tb.period_ns / 2


class StreamSink:
    """Receives an output stream into ``words``; sleeps while ``valid`` is low.

    At each falling edge it sets ``ready`` (always, or at random with ``ready_prob`` to
    exercise backpressure) and reads ``valid`` and ``payload``, which must not depend on
    ``ready``: a word with both high transfers at the next rising edge. With ``end_bit``,
    ``packet()`` returns the words up to and including the next one with that bit set.
    """

    def __init__(self, tb: ClockedTB, name: str, ready_prob: float = 1.0, seed: int = 0,
                 end_bit: int | None = None):
        import random

        from cocotb.queue import Queue

        self.tb = tb
        self.end_bit = end_bit  # a word with this bit set ends a packet (e.g. ``last``)
        # (words, sim time of the rising edge that took the last one)
        self.packets: Queue[tuple[list[int], float]] = Queue()
        self._open: list[int] = []
        self.valid = getattr(tb.dut, f"{name}__valid")
        self.ready = getattr(tb.dut, f"{name}__ready")
        self.payload = getattr(tb.dut, f"{name}__payload")
        self.ready_prob = ready_prob
        self.rng = random.Random(seed)
        self.words: list[int] = []
        self._task = None

    def start(self) -> None:
        import cocotb

        self.ready.value = 1 if self.ready_prob >= 1 else 0
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def packet(self) -> tuple[list[int], float]:
        return await self.packets.get()

    def _take(self, word: int) -> None:
        self.words.append(word)
        if self.end_bit is not None:
            self._open.append(word)
            if word >> self.end_bit & 1:  # taken at the coming rising edge
                self.packets.put_nowait((self._open, now_ns() + self.tb.period_ns / 2))
                self._open = []

    async def _run(self) -> None:
        from cocotb.triggers import RisingEdge

        valid, ready, payload = self.valid, self.ready, self.payload
        falling, rising_valid = self.tb.falling, RisingEdge(self.valid)
        always = self.ready_prob >= 1
        take = self._take
        while True:
            if not valid.value:
                await rising_valid
            await falling
            while valid.value:
                if always:
                    take(payload.value.to_unsigned())
                else:
                    r = self.rng.random() < self.ready_prob
                    ready.value = int(r)
                    if r:
                        take(payload.value.to_unsigned())
                await falling


class AccelTB(ClockedTB):
    """The accelerator top: clock, reset, the ``host_in`` driver and the ``result`` monitor.

    ``result_last_bit`` is the position of the ``last`` flag in a result payload (the data
    lanes sit below it); the monitor cuts the stream into one packet per command there.
    """

    def __init__(self, dut, result_last_bit: int, ready_prob: float = 1.0, seed: int = 0):
        super().__init__(dut)
        self.host = StreamSource(self, "host_in")
        self.results = StreamSink(self, "result", ready_prob, seed, end_bit=result_last_bit)
        self.last_bit = result_last_bit
        self.last_cycles = 0
        self.command_cycles = 0  # summed over commands

    async def start(self) -> None:
        self.host.idle()
        self.results.start()
        await self.reset()

    async def send(self, packets: Sequence[int]) -> None:
        await self.host.send(packets)

    async def command(self, packet: int, timeout_cycles: int) -> list[int]:
        """Send one command packet and return its result words (data lanes only), up to
        and including the one flagged ``last``; ``last_cycles`` is then the count from the
        command's acceptance to the last word's, inclusive. Raises if ``error`` rises or if
        the last word does not come within ``timeout_cycles``."""
        from cocotb.triggers import SimTimeoutError, with_timeout

        await self.host.send([packet])
        accepted = self.host.last_accept_ns
        if int(self.dut.error.value):
            raise AssertionError("the accelerator refused the command (error is high)")
        try:
            words, taken = await with_timeout(self.results.packet(),
                                              timeout_cycles * self.period_ns, "ns")
        except SimTimeoutError:
            raise AssertionError(
                f"no last result word within {timeout_cycles} cycles of the command "
                f"({len(self.results.words)} words so far)"
            ) from None
        self.last_cycles = round((taken - accepted) / self.period_ns) + 1
        self.command_cycles += self.last_cycles
        mask = (1 << self.last_bit) - 1
        return [w & mask for w in words]
