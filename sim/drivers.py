"""Drivers, monitors and testbench classes that the cocotb test modules share.

All sampling happens at falling clock edges, where every signal is settled: a value read
there is the one the next rising edge will see, whatever the simulator's ordering of
callbacks around the rising edge. A driver writes at a falling edge; the rising edge
after it samples the write.

Words wider than 64 bits travel as Python integers; ``pack_words`` and ``unpack_words``
turn columns of integers (numpy or torch) into such words and back without a Python loop
per field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# -- packing fields into wide words ------------------------------------------------------


def _as_i64(col) -> np.ndarray:
    if hasattr(col, "numpy"):  # torch tensor
        col = col.detach().cpu().numpy()
    return np.asarray(col, dtype=np.int64)


def pack_words(fields: Sequence, widths: Sequence[int]) -> list[int]:
    """One word per row from equally long columns; column 0 lands in the low bits.

    A negative value is stored as two's complement in its field's width.
    """
    if len(fields) != len(widths):
        raise ValueError(f"{len(fields)} columns for {len(widths)} widths")
    cols = [_as_i64(f) for f in fields]
    n = len(cols[0]) if cols else 0
    total = sum(widths)
    nbytes = max(1, -(-total // 8))
    bits = np.zeros((n, nbytes * 8), dtype=np.uint8)
    pos = 0
    for col, w in zip(cols, widths, strict=True):
        if len(col) != n:
            raise ValueError("columns of different lengths")
        u = col.astype(np.uint64) if w == 64 else (col & ((1 << w) - 1)).astype(np.uint64)
        for b in range(w):
            bits[:, pos + b] = (u >> np.uint64(b)) & np.uint64(1)
        pos += w
    rows = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(r.tobytes(), "little") for r in rows]


def unpack_words(
    words: Sequence[int], widths: Sequence[int], signed: Sequence[bool] | bool = False
) -> list[np.ndarray]:
    """The columns of ``pack_words``: one int64 array per field (each at most 63 bits, or 64
    when signed)."""
    if isinstance(signed, bool):
        signed = [signed] * len(widths)
    total = sum(widths)
    nbytes = max(1, -(-total // 8))
    raw = b"".join(int(w).to_bytes(nbytes, "little") for w in words)
    bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(len(words), nbytes)
    bits = np.unpackbits(bytes_, axis=1, bitorder="little").astype(np.int64)
    out, pos = [], 0
    for w, sgn in zip(widths, signed, strict=True):
        weights = np.left_shift(np.int64(1), np.arange(w, dtype=np.int64))
        if sgn:
            weights[-1] = -weights[-1]  # the top bit weighs -2^(w-1)
        out.append(bits[:, pos : pos + w] @ weights if len(words) else np.zeros(0, np.int64))
        pos += w
    return out


# -- the host interface as format.json describes it -----------------------------------------


class HostFormat:
    """Packets, commands and result words from the generated ``format.json`` alone, as a
    host driver outside this toolchain would build them."""

    def __init__(self, desc: dict):
        self.desc = desc
        self.packet_fields = desc["packet"]["fields"]
        self.targets = desc["packet"]["targets"]
        self.command_fields = desc["command"]["fields"]
        self.buffers = desc["buffers"]
        rf = desc["result"]["fields"]
        self.result_last_bit = rf["last"]["offset"]
        self.result_lanes = rf["data"]["lanes"]
        self.result_lane_bits = rf["data"]["lane_bits"]

    @classmethod
    def load(cls, path) -> HostFormat:
        import json

        with open(path) as f:
            return cls(json.load(f))

    @staticmethod
    def _pack(fields: dict, values: dict, what: str) -> int:
        word = 0
        for name, v in values.items():
            f = fields[name]
            v = int(v)
            if not 0 <= v < 1 << f["width"]:
                raise ValueError(f"{what} field {name}: {v} does not fit {f['width']} bits")
            word |= v << f["offset"]
        return word

    def packet(self, target: str, addr: int, data: int) -> int:
        return self._pack(self.packet_fields,
                          {"target": self.targets[target], "addr": addr, "data": data}, "packet")

    def writes(self, buffer: str, words: Sequence[int], base: int = 0) -> list[int]:
        """Write packets that put ``words`` at ``base``, ``base + 1``, ... of ``buffer``."""
        b = self.buffers[buffer]
        if base + len(words) > b["depth"]:
            raise ValueError(f"{buffer}: {base + len(words)} words exceed its depth {b['depth']}")
        f = self.packet_fields
        head = b["target"] << f["target"]["offset"]
        limit = 1 << b["word_bits"]
        out = []
        for i, w in enumerate(words):
            if not 0 <= w < limit:
                raise ValueError(f"{buffer} word {i}: {w:#x} is wider than {b['word_bits']} bits")
            out.append(head | (base + i) << f["addr"]["offset"] | w << f["data"]["offset"])
        return out

    def command(self, **fields) -> int:
        """The COMMAND packet of a command (fields as in format.json's ``command``)."""
        return self.packet("COMMAND", 0, self._pack(self.command_fields, fields, "command"))


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
