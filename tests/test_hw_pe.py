"""Both PEs in simulation against the golden weight decoding and GEMM of sw/arith.py."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.sim import Simulator

from sqaccel import arith
from sqaccel.config import AccelConfig, ConfigError, UniversalSet
from sqaccel.hw.pe import LATENCY, SQ_MULT, MultPE, ShiftAddPE, make_pe, step_magnitude

# One slot = (x, weight operand as an integer, en, first, bias).
Slot = tuple[int, int, int, int, int]


def run_pe(cfg: AccelConfig, slots: list[Slot]) -> list[int]:
    """Drive the PE one slot per cycle; return acc as seen after each clock edge."""
    dut = make_pe(cfg)
    trace: list[int] = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        w = dut.w.as_value() if cfg.pe == "shift" else dut.w
        junk = random.Random(5)
        prev_first, prev_bias = 0, 0
        for x, wv, en, first, bias in slots + [(0, 0, 0, 0, 0)] * LATENCY:
            ctx.set(dut.x, x)
            ctx.set(w, wv)
            ctx.set(dut.en, en)
            ctx.set(dut.first, first)
            # The PE reads the bias one cycle after `first`; any other cycle it is ignored.
            ctx.set(dut.bias, prev_bias if prev_first else junk.randrange(-99999, 99999))
            prev_first, prev_bias = first, bias
            await ctx.tick()
            trace.append(ctx.get(dut.acc))

    sim.add_testbench(bench)
    sim.run()
    return trace


def valid_step_words(u: UniversalSet) -> list[int]:
    out = []
    for word in range(1 << u.step_entry_bits):
        try:
            u.decode_step_entry(word)
        except ConfigError:
            continue
        out.append(word)
    return out


def golden_shift_weights(cfg: AccelConfig, ops: list[tuple[int, int]]) -> list[int]:
    """Signed integer weights of (sign, step word) operands via decode_shift_weights: operand n
    becomes column n with code (sign, index 0) and a table whose entries are that word."""
    codes = torch.tensor([[(s << (cfg.weight_bits - 1)) for s, _ in ops]])
    tables = torch.tensor([[w] * cfg.levels for _, w in ops])
    return arith.decode_shift_weights(codes, tables, cfg.weight_bits, cfg.universal)[0].tolist()


def check_dot_products(cfg: AccelConfig, dots: list[tuple[int, list[int], list[int]]],
                       slot_weights: list[list[int]]) -> None:
    """Run dot products back to back (bias, x, operand words) with idle slots sprinkled in;
    compare each final accumulator with arith.gemm on the golden-decoded weights."""
    rng = random.Random(1)
    slots: list[Slot] = []
    ends: list[int] = []
    for bias, xs, ws in dots:
        for k, (x, w) in enumerate(zip(xs, ws, strict=True)):
            if k and rng.random() < 0.1:  # en = 0 must hold the accumulator
                slots.append((rng.randrange(cfg.act_max + 1), w, 0, rng.randrange(2), 0))
            slots.append((x, w, 1, int(k == 0), bias))
        ends.append(len(slots) - 1)
    trace = run_pe(cfg, slots)
    for (bias, xs, _), wints, end in zip(dots, slot_weights, ends, strict=True):
        want = arith.gemm(torch.tensor([xs]), torch.tensor(wints).reshape(-1, 1),
                          torch.tensor([bias]), cfg)
        # The last operand enters at slot `end`; acc shows it after LATENCY edges.
        assert trace[end + LATENCY - 1] == int(want[0, 0])


@pytest.mark.parametrize(
    "cfg",
    [
        AccelConfig(),
        AccelConfig(act_bits=4, k_max=64),
        AccelConfig(k_max=16, universal=UniversalSet(((0, 1, 3), (0, 2, 4), (1, 5)))),
        AccelConfig(k_max=16, universal=UniversalSet(((0, 2), (1, 3, 4, 6, 7)))),
    ],
    ids=["default", "a4", "three-terms", "uneven-sets"],
)
def test_shift_pe_every_step_word_both_signs(cfg):
    u = cfg.universal
    ops = [(s, w) for w in valid_step_words(u) for s in (0, 1)]
    xs_all = [0, 1, cfg.act_max, cfg.act_max - 1] + [random.Random(3).randrange(cfg.act_max + 1)]
    # One dot product per operand: x values over the corner cases, then the operand alone.
    dots, weights = [], []
    wint = golden_shift_weights(cfg, ops)
    for n, (s, w) in enumerate(ops):
        bias = [0, 7, -cfg.bias_max, cfg.bias_max - 1][n % 4]
        dots.append((bias, xs_all, [s | (w << 1)] * len(xs_all)))
        weights.append([wint[n]] * len(xs_all))
    # Mixed operands in one dot product, so terms and signs change every cycle.
    rng = random.Random(2)
    for _ in range(4):
        k = rng.randrange(1, cfg.k_max + 1)
        picks = [rng.randrange(len(ops)) for _ in range(k)]
        xs = [rng.randrange(cfg.act_max + 1) for _ in range(k)]
        dots.append((rng.randrange(-1000, 1000), xs, [ops[p][0] | (ops[p][1] << 1) for p in picks]))
        weights.append([wint[p] for p in picks])
    check_dot_products(cfg, dots, weights)


def test_shift_pe_uses_no_multiplier():
    from amaranth.back import rtlil

    text = rtlil.convert(ShiftAddPE(AccelConfig()))
    assert "$mul" not in text
    assert "$mul" in rtlil.convert(MultPE(AccelConfig(pe="mult")))


def test_hybrid_array_multiplies_only_in_its_multiplier_columns():
    """A 3 x 4 array with mult_cols = 3: 9 multipliers, one per PE of columns 0..2."""
    from amaranth.back import rtlil

    from sqaccel.hw.array import PEArray
    from sqaccel.hw.board import IoShell

    def muls(cfg: AccelConfig) -> int:
        text = rtlil.convert(IoShell(PEArray(cfg)))
        # The PEs' products: the requantisers' multipliers are the same in both builds.
        return text.count("cell $mul ")

    base = muls(AccelConfig(rows=3, cols=4))
    assert muls(AccelConfig(rows=3, cols=4, mult_cols=3)) - base == 9


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_mult_pe_every_code(bits):
    cfg = AccelConfig(pe="mult", weight_bits=bits, k_max=32)
    codes = list(range(1 << bits))
    wint = arith.decode_mult_weights(torch.tensor([codes]), bits)[0].tolist()
    xs_all = [0, 1, cfg.act_max, 77]
    dots, weights = [], []
    for n, code in enumerate(codes):
        dots.append(([0, -5, cfg.bias_max, -cfg.bias_max][n % 4], xs_all, [code] * len(xs_all)))
        weights.append([wint[n]] * len(xs_all))
    rng = random.Random(4)
    for _ in range(4):
        k = rng.randrange(1, cfg.k_max + 1)
        picks = [rng.randrange(len(codes)) for _ in range(k)]
        dots.append((rng.randrange(-99, 99), [rng.randrange(256) for _ in range(k)],
                     [codes[p] for p in picks]))
        weights.append([wint[p] for p in picks])
    check_dot_products(cfg, dots, weights)


@pytest.mark.parametrize("pe", ["shift", "mult"])
def test_accumulator_extremes(pe):
    """K_max products of the largest |weight| on the largest activation, plus +-bias_max:
    the accumulator's full range, both signs, with no wrap."""
    cfg = AccelConfig(pe=pe, k_max=1024)
    u = cfg.universal
    if pe == "shift":
        top = max(range(u.size), key=lambda i: u.int_magnitudes[i])
        word = u.step_entry(top)
        plus, minus = word << 1, (word << 1) | 1
        wp, wm = golden_shift_weights(cfg, [(0, word), (1, word)])
    else:
        # The mult PE's extremes: the most negative code and the most positive one.
        minus, plus = 1 << (cfg.weight_bits - 1), (1 << (cfg.weight_bits - 1)) - 1
        wm, wp = arith.decode_mult_weights(torch.tensor([[minus, plus]]), cfg.weight_bits)[0]
    k = cfg.k_max
    xs = [cfg.act_max] * k
    dots = [(cfg.bias_max, xs, [plus] * k), (-cfg.bias_max, xs, [minus] * k)]
    weights = [[int(wp)] * k, [int(wm)] * k]
    check_dot_products(cfg, dots, weights)
    big = cfg.bias_max + k * cfg.act_max * abs(int(wm if pe == "mult" else wp))
    assert big.bit_length() == cfg.acc_bits - 1  # the extreme really fills the accumulator


def test_comparison_can_fail():
    """A wrong golden weight is caught: the check is not vacuous."""
    cfg = AccelConfig(k_max=8)
    word = cfg.universal.step_entry(0)
    (w,) = golden_shift_weights(cfg, [(0, word)])
    with pytest.raises(AssertionError):
        check_dot_products(cfg, [(0, [3, 4], [word << 1] * 2)], [[w - 1, w]])


UNIVERSAL_CASES = [
    AccelConfig(),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 1, 3), (0, 2, 4), (1, 5)))),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 2), (1, 3, 4, 6, 7)))),
]


@pytest.mark.parametrize("cfg", UNIVERSAL_CASES, ids=["default", "three-terms", "uneven-sets"])
def test_step_magnitude_every_step_word(cfg):
    """The hybrid's load-time decode: every valid step word's magnitude is the golden
    |weight| of that word."""
    from amaranth.hdl import Module, Signal

    m = Module()
    step = Signal(cfg.universal.step_entry_bits)
    mag = step_magnitude(m, cfg, step, "mag")
    words = valid_step_words(cfg.universal)
    want = [abs(w) for w in golden_shift_weights(cfg, [(0, w) for w in words])]
    got = []

    async def bench(ctx):
        for w in words:
            ctx.set(step, w)
            got.append(ctx.get(mag))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == want
    assert max(want) == cfg.universal.max_int_magnitude


@pytest.mark.parametrize("pe", ["shift", "mult", SQ_MULT])
def test_array_variant_sums_and_clears(pe):
    """The array's PE (``in_array``): ``sum`` is the dot product (no bias) while its last
    operand is in stage 2, the accumulator is zero again for the next one, idle slots
    (en = 0) hold it, and the extremes of the contract fit."""
    cfg = AccelConfig(pe="mult" if pe == "mult" else "shift", k_max=1024)
    rng = random.Random(6)
    if pe != "mult":
        u = cfg.universal
        ops = [(s, w) for w in valid_step_words(u) for s in (0, 1)]
        wints = golden_shift_weights(cfg, ops)
        # The SQ multiplier PE takes the sign and the magnitude its column decoded.
        words = [s | ((abs(wi) if pe == SQ_MULT else w) << 1)
                 for (s, w), wi in zip(ops, wints, strict=True)]
    else:
        words = list(range(1 << cfg.weight_bits))
        wints = arith.decode_mult_weights(torch.tensor([words]), cfg.weight_bits)[0].tolist()
    big = max(range(len(words)), key=lambda i: abs(wints[i]))
    dots = [[(cfg.act_max, big)] * cfg.k_max]
    for _ in range(6):
        k = rng.choice([1, 2, rng.randrange(1, 60)])
        dots.append([(rng.randrange(cfg.act_max + 1), rng.randrange(len(words)))
                     for _ in range(k)])
    slots, ends = [], []  # (x, w, en, last)
    for dot in dots:
        for n, (x, i) in enumerate(dot):
            if n and rng.random() < 0.1:
                slots.append((rng.randrange(cfg.act_max + 1), words[i], 0, rng.randrange(2)))
            slots.append((x, words[i], 1, int(n == len(dot) - 1)))
        ends.append(len(slots) - 1)
    dut = make_pe(cfg, in_array=True, kind=pe)
    trace: list[int] = []

    async def bench(ctx):
        w = dut.w.as_value() if pe != "mult" else dut.w
        for x, wv, en, last in slots + [(0, 0, 0, 0)] * LATENCY:
            ctx.set(dut.x, x)
            ctx.set(w, wv)
            ctx.set(dut.en, en)
            ctx.set(dut.last, last)
            await ctx.tick()
            trace.append(ctx.get(dut.sum))  # the sum of the slot now in stage 2

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for dot, end in zip(dots, ends, strict=True):
        want = sum(x * wints[i] for x, i in dot)
        # Operands enter at the edge after their slot; the last one is in stage 2 one edge
        # after that, where `sum` shows the total.
        assert trace[end + LATENCY - 2] == want
    assert abs(sum(x * wints[i] for x, i in dots[0])) == cfg.k_max * cfg.act_max * abs(
        wints[big])
