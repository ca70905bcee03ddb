"""cocotb tests of the PEs (level 1): every PE of the bench, every cycle, bit-exact.

Stimulus and expected accumulators are computed per chunk with numpy/torch before the chunk
runs; the coroutine then only writes one packed input word and reads one packed output word
per cycle (``LockstepTB.play``). The model decodes weights with ``sqaccel.arith`` and sums
the products in int64; it sees exactly the per-cycle inputs the PE sees. The job
(``sqaccel.sim.job.PEJob``) gives the PE's timing, which the rules below follow:

- slot t's ``x``, ``w``, ``en``, ``first`` enter stage 1 at the rising edge after slot t;
- the bias of a product with ``first`` is read ``bias_delay`` slots later;
- ``acc`` shows slot t after ``latency`` rising edges. ``play`` reads the output one
  falling edge after writing a slot, so read i shows slots up to ``i - (latency - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sqaccel import abi, arith
from sqaccel.config import AccelConfig, ConfigError
from sqaccel.sim import checker
from sqaccel.sim import job as jobs
from sqaccel.sim.drivers import LockstepTB


@dataclass(frozen=True)
class PETiming:
    latency: int
    bias_delay: int

    @property
    def read_lag(self) -> int:
        return self.latency - 1


# -- operands ------------------------------------------------------------------------------


@dataclass
class OperandTable:
    """Every weight operand a PE can be given, and the signed weight arith decodes it to."""

    ops: np.ndarray  # the PE's w input, as an unsigned integer
    wint: np.ndarray  # signed integer weight

    @property
    def strongest(self) -> tuple[int, int]:
        """Indices of the most positive and the most negative weight."""
        return int(np.argmax(self.wint)), int(np.argmin(self.wint))


def valid_step_words(cfg: AccelConfig) -> list[int]:
    out = []
    for word in range(1 << cfg.universal.step_entry_bits):
        try:
            cfg.universal.decode_step_entry(word)
        except ConfigError:
            continue
        out.append(word)
    return out


def operand_table(cfg: AccelConfig, operand: dict) -> OperandTable:
    """``operand``: where the shift PE's operand holds its sign and its step word."""
    if cfg.pe == "mult":
        codes = torch.arange(1 << cfg.weight_bits)
        wint = arith.decode_mult_weights(codes.reshape(1, -1), cfg.weight_bits)[0]
        return OperandTable(codes.numpy().astype(np.int64), wint.numpy().astype(np.int64))
    sign_at, step_at = operand["sign_bit"], operand["step_offset"]
    pairs = [(s, w) for w in valid_step_words(cfg) for s in (0, 1)]
    # Operand n as column n of a GEMM: code (sign, index 0), a table holding its step word.
    codes = torch.tensor([[s << (cfg.weight_bits - 1) for s, _ in pairs]])
    tables = torch.tensor([[w] * cfg.levels for _, w in pairs])
    wint = arith.decode_shift_weights(codes, tables, cfg.weight_bits, cfg.universal)[0]
    ops = np.array([(s << sign_at) | (w << step_at) for s, w in pairs], dtype=np.int64)
    return OperandTable(ops, wint.numpy().astype(np.int64))


# -- per-cycle input streams ---------------------------------------------------------------


@dataclass
class Slots:
    """One PE's inputs, one entry per cycle."""

    x: np.ndarray
    op: np.ndarray  # index into the OperandTable
    en: np.ndarray
    first: np.ndarray
    bias: np.ndarray  # the bias input in that cycle

    def __len__(self) -> int:
        return len(self.x)

    def padded(self, n: int, rng: np.random.Generator, cfg: AccelConfig, nops: int) -> Slots:
        """Extend to ``n`` cycles with idle (en = 0) slots carrying junk operands."""
        extra = n - len(self)
        idle = junk_slots(extra, rng, cfg, nops)
        return Slots(*(np.concatenate([a, b]) for a, b in zip(self.fields(), idle.fields(),
                                                               strict=True)))

    def fields(self) -> tuple[np.ndarray, ...]:
        return (self.x, self.op, self.en, self.first, self.bias)


def junk_slots(n: int, rng: np.random.Generator, cfg: AccelConfig, nops: int) -> Slots:
    """Idle cycles: en = 0, everything else random (the PE must ignore it all)."""
    half = 1 << (cfg.acc_bits - 1)
    return Slots(
        rng.integers(0, cfg.act_max + 1, n),
        rng.integers(0, nops, n),
        np.zeros(n, np.int64),
        rng.integers(0, 2, n),
        rng.integers(-half, half, n),
    )


def random_slots(cfg: AccelConfig, timing: PETiming, nops: int, n: int, p_idle: float,
                 rng: np.random.Generator) -> Slots:
    """``n`` random cycles, ending in ``latency`` idle ones: dot products of random lengths up to
    K_max (short ones, any length, exactly K_max), random operands and activations (the
    extremes often), biases over +-bias_max (the limits often), idle cycles at ``p_idle``."""
    body = n - timing.latency
    s = junk_slots(n, rng, cfg, nops)
    en = np.zeros(n, np.int64)
    en[:body] = rng.random(body) >= p_idle
    en[0] = 1
    prods = np.flatnonzero(en)
    p = len(prods)
    k = cfg.k_max
    kind = rng.choice(3, size=p, p=[0.45, 0.4, 0.15])
    lengths = np.where(kind == 0, rng.integers(1, min(8, k) + 1, p),
                       np.where(kind == 1, rng.integers(1, k + 1, p), k))
    starts = np.cumsum(lengths) - lengths
    starts = starts[starts < p]
    first_p = np.zeros(p, np.int64)
    first_p[starts] = 1
    x = rng.integers(0, cfg.act_max + 1, p)
    pick = rng.random(p)
    x = np.where(pick < 0.1, cfg.act_max, np.where(pick < 0.15, 0, x))
    s.x[prods] = x
    s.op[prods] = rng.integers(0, nops, p)
    s.en = en
    s.first[prods] = first_p
    bm = cfg.bias_max
    nb = len(starts)
    bias = rng.integers(-bm, bm + 1, nb)
    pick = rng.random(nb)
    bias = np.where(pick < 0.1, bm, np.where(pick < 0.2, -bm, bias))
    s.bias[prods[starts] + timing.bias_delay] = bias
    return s


def slots_from_segments(cfg: AccelConfig, timing: PETiming, nops: int, segments,
                        rng: np.random.Generator) -> Slots:
    """Directed cycles: each segment is (bias, [(x, op index), ...], idle_every); an idle,
    junk cycle with first = 1 follows every ``idle_every``-th product (0: none)."""
    cols: list[list[int]] = [[], [], [], [], []]
    half = 1 << (cfg.acc_bits - 1)
    pending_bias = None

    def push(x, op, en, first, bias_for_next):
        nonlocal pending_bias
        bias = pending_bias if pending_bias is not None else int(rng.integers(-half, half))
        pending_bias = bias_for_next
        for col, v in zip(cols, (x, op, en, first, bias), strict=True):
            col.append(int(v))

    for bias, products, idle_every in segments:
        for i, (x, op) in enumerate(products):
            push(x, op, 1, int(i == 0), bias if i == 0 else None)
            if idle_every and i % idle_every == idle_every - 1:
                push(rng.integers(0, cfg.act_max + 1), rng.integers(0, nops), 0, 1, None)
    for _ in range(timing.latency):
        push(0, 0, 0, 0, None)
    return Slots(*(np.array(c, dtype=np.int64) for c in cols))


def corner_slots(cfg: AccelConfig, timing: PETiming, table: OperandTable,
                 rng: np.random.Generator) -> Slots:
    """Every operand on the activation corners; K_max products of the largest activation
    and the largest |weight| of either sign from +-bias_max (the accumulator's extremes),
    once with idle cycles in between; single-product dot products back to back."""
    nops = len(table.ops)
    top, bottom = table.strongest
    a, bm, k = cfg.act_max, cfg.bias_max, cfg.k_max
    xs = [0, 1, a, a - 1, int(rng.integers(0, a + 1))]
    segs = []
    for op in range(nops):
        segs.append(([0, 7, -bm, bm][op % 4], [(x, op) for x in xs], 0))
    segs += [
        (bm, [(a, top)] * k, 0),
        (-bm, [(a, bottom)] * k, 0),
        (bm, [(a, bottom)] * k, 0),
        (-bm, [(a, top)] * k, 3),
    ]
    for bias in (bm, -bm, 0, bm, -bm):
        segs.append((bias, [(a, top if bias < 0 else bottom)], 0))
    return slots_from_segments(cfg, timing, nops, segs, rng)


# -- the model -----------------------------------------------------------------------------


def model_trace(cfg: AccelConfig, timing: PETiming, table: OperandTable, s: Slots, acc0: int,
                label: str = "") -> np.ndarray:
    """The accumulator after each slot, starting from ``acc0``: a product with ``first``
    restarts from the bias read ``bias_delay`` slots later; ``en = 0`` holds."""
    delay = timing.bias_delay
    w = table.wint[s.op]
    prod = np.where(s.en == 1, s.x * w, 0)
    start = (s.en == 1) & (s.first == 1)
    at = np.flatnonzero(start)
    if len(at) and at[-1] + delay >= len(s):
        raise ValueError("a dot product starts too late for its bias")
    seg = np.cumsum(start)
    cs = np.cumsum(prod)
    base = np.concatenate([[acc0], s.bias[at + delay] - cs[at] + prod[at]])
    acc = base[seg] + cs
    lim = 1 << (cfg.acc_bits - 1)
    if len(acc) and (acc.max() >= lim or acc.min() < -lim):
        raise ValueError(f"{label}: stimulus overflows the accumulator contract")
    return acc


def expected_reads(model: np.ndarray, acc0: int, lag: int) -> np.ndarray:
    """What ``play`` reads after each slot: the model ``lag`` slots behind."""
    return np.concatenate([np.full(lag, acc0, np.int64), model[: len(model) - lag]])


# -- the bench -----------------------------------------------------------------------------


class PEBenchTB(LockstepTB):
    """The PE bench: clock, reset, the lockstep driver/monitor, and per-PE model state."""

    def __init__(self, dut, job: jobs.PEJob):
        super().__init__(dut, inp="stim", out="acc")
        self.job = job
        self.cfgs = [AccelConfig.from_dict(d) for d in job.configs]
        self.timing = PETiming(job.latency, job.bias_delay)
        self.tables = [operand_table(c, job.operand) for c in self.cfgs]
        off = job.model_offset
        if off:  # a deliberately wrong model (tests of the checker)
            self.tables[off["pe"]].wint[off["operand"]] += off["delta"]
        # Model accumulator at the end of the last chunk; None after a reset: the PE's
        # accumulator has no reset (hw/pe.py), so it is undefined until a product with
        # `first` loads it, and the reads before that are not compared.
        self.acc: list[int | None] = [None] * len(self.cfgs)
        self.checked = 0

    async def start(self) -> None:
        self.inp.value = 0
        await self.reset()
        self.acc = [None] * len(self.cfgs)

    async def run_chunk(self, per_pe: list[Slots], what: str) -> None:
        n = max(len(s) for s in per_pe)
        cols, widths = [], []
        for widths_i, table, s in zip(self.job.stim_widths, self.tables, per_pe, strict=True):
            cols += [s.x, table.ops[s.op], s.en, s.first, s.bias]
            widths += widths_i
        reads = await self.play(abi.pack_columns(cols, widths))
        got = abi.unpack_columns(reads, [c.acc_bits for c in self.cfgs], signed=True)
        lag = self.timing.read_lag
        for i, (cfg, table, s) in enumerate(zip(self.cfgs, self.tables, per_pe, strict=True)):
            acc0, known = self.acc[i], 0
            loads = np.flatnonzero((s.en == 1) & (s.first == 1))
            if acc0 is None:  # compared from the first load on
                acc0, known = 0, (int(loads[0]) if len(loads) else len(s)) + lag
            label = self.job.labels[i]
            model = model_trace(cfg, self.timing, table, s, acc0, label)
            want = expected_reads(model, acc0, lag)
            mism = checker.trace_mismatches(want, got[i], start=known)
            checker.fail_if(f"PE {i} ({label}), {what}", mism, n, unit="accumulators")
            if self.acc[i] is not None or len(loads):
                self.acc[i] = int(model[-1])
        self.checked += n


def _padded(cfgs, tables, slots, rng):
    n = max(len(s) for s in slots)
    return [s.padded(n, rng, c, len(t.ops)) for c, t, s in zip(cfgs, tables, slots, strict=True)]


try:
    import cocotb
except ImportError:  # the model above is usable without cocotb
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def pe_corners(dut):
        """Every operand, accumulator extremes, idle cycles inside a dot product."""
        job = jobs.read_pe_job()
        tb = PEBenchTB(dut, job)
        cfgs = tb.cfgs
        rng = np.random.default_rng(job.seed)
        dut._log.info("seed %d", job.seed)
        await tb.start()
        slots = [corner_slots(c, tb.timing, t, rng) for c, t in zip(cfgs, tb.tables, strict=True)]
        await tb.run_chunk(_padded(cfgs, tb.tables, slots, rng), "corner cases")
        dut._log.info("corner cases: %d cycles on %d PEs, all equal", tb.checked, len(cfgs))

    @cocotb.test()
    async def pe_random(dut):
        """``cycles`` random cycles in chunks, idle rates varying from chunk to chunk."""
        job = jobs.read_pe_job()
        tb = PEBenchTB(dut, job)
        cfgs = tb.cfgs
        rng = np.random.default_rng(job.seed + 1)
        await tb.start()
        left, chunk_no = job.cycles, 0
        rates = (0.0, 0.05, 0.3, 0.7)
        while left > 0:
            n = max(min(job.chunk, left), 2 * tb.timing.latency + 1)
            p_idle = rates[chunk_no % len(rates)]
            slots = [random_slots(c, tb.timing, len(t.ops), n, p_idle, rng)
                     for c, t in zip(cfgs, tb.tables, strict=True)]
            await tb.run_chunk(slots, f"random chunk {chunk_no} (idle rate {p_idle})")
            left -= n
            chunk_no += 1
        dut._log.info("random: %d cycles on %d PEs, all equal", tb.checked, len(cfgs))
