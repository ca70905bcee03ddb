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


# -- clock, reset, lockstep driving -----------------------------------------------------


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
