"""The requantiser of one output column (docs/arithmetic.md, section 5).

    y = clamp((acc * M + 2^(S-1)) >> S, 0, 2^A - 1)       (ReLU layer)
    y = acc                                                (layer without ReLU: raw)

Raw mode runs through the same datapath with M = 1, S = 0 and no rounding or clamp, so the
accumulator needs no delay line of its own. The pipeline has ``LATENCY`` stages and never
stalls (both streams are always-ready): whoever feeds it keeps room for what is in flight.

    stage 1  product = acc * M                (the one multiplier of the column)
    stage 2  rounded = product + 2^(S-1)
    stage 3  shifted = rounded >> S           (arithmetic: flooring)
    stage 4  y = clamp(shifted, 0, 2^A - 1)   (ReLU) or shifted (raw)
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sqaccel.config import AccelConfig

LATENCY = 4


def requant_word_layout(cfg: AccelConfig) -> data.StructLayout:
    """One lane of a requant word: ``S << 16 | M`` (M in the low bits)."""
    return data.StructLayout({"m": cfg.requant_m_bits, "s": cfg.requant_s_bits})


def requant_in_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({
        "acc": signed(cfg.acc_bits),
        "rq": requant_word_layout(cfg),
        "relu": 1,
    })


class Requantiser(wiring.Component):
    """One column's requantiser; ``o.payload`` is the result lane (``acc_bits`` wide, two's
    complement: ``0 .. 2^A-1`` after ReLU, the accumulator in raw mode)."""

    latency = LATENCY

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(requant_in_layout(cfg), always_ready=True)),
            "o": Out(stream.Signature(signed(cfg.acc_bits), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        acc_bits, act_bits = cfg.acc_bits, cfg.act_bits
        prod_bits = acc_bits + cfg.requant_m_bits + 1  # signed acc x unsigned M
        wide = prod_bits + 1  # room for the rounding constant

        p = self.i.payload
        valid = [Signal(name=f"valid{n}") for n in range(1, LATENCY + 1)]
        m.d.sync += valid[0].eq(self.i.valid)
        for a, b in zip(valid, valid[1:], strict=False):
            m.d.sync += b.eq(a)
        m.d.comb += self.o.valid.eq(valid[-1])

        # Stage 1: the product; raw mode multiplies by 1.
        prod = Signal(signed(prod_bits))
        s1 = Signal(unsigned(cfg.requant_s_bits))
        relu1 = Signal()
        m_eff = Mux(p.relu, p.rq.m, 1)
        m.d.sync += [
            prod.eq(p.acc * m_eff),
            s1.eq(Mux(p.relu, p.rq.s, 0)),
            relu1.eq(p.relu),
        ]

        # Stage 2: + 2^(S-1) (half-up rounding); nothing when S = 0 (raw mode).
        rounded = Signal(signed(wide))
        s2 = Signal.like(s1)
        relu2 = Signal()
        # Bit S-1 of a one-hot (none for S = 0). A bit above the product's width only meets
        # S so large that the clamp gives 0 with or without it, so it may be dropped.
        half = (Const(1, 1) << s1)[1:]
        m.d.sync += [rounded.eq(prod + half[: min(wide - 1, len(half))]), s2.eq(s1),
                     relu2.eq(relu1)]

        # Stage 3: arithmetic shift right by S (floors).
        shifted = Signal(signed(wide))
        relu3 = Signal()
        m.d.sync += [shifted.eq(rounded >> s2), relu3.eq(relu2)]

        # Stage 4: clamp to 0 .. 2^A-1 (ReLU) or pass the accumulator (raw).
        negative = shifted[-1]
        over = shifted[act_bits:-1].any()
        clamped = Mux(negative, 0, Mux(over, cfg.act_max, shifted[:act_bits]))
        y = Signal(signed(acc_bits))
        m.d.sync += y.eq(Mux(relu3, clamped, shifted[:acc_bits]))
        m.d.comb += self.o.payload.eq(y)
        return m
