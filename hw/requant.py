"""The requantiser of one output column (docs/arithmetic.md, section 5).

    acc = sum + bias                                       (the column's bias added here)
    y = clamp((acc * M + 2^(S-1)) >> S, 0, 2^A - 1)       (ReLU layer)
    y = acc                                                (layer without ReLU: raw)

Raw mode runs through the same datapath with M = 1, S = 0 and no rounding or clamp, so the
accumulator needs no delay line of its own. The pipeline has ``LATENCY`` stages and never
stalls (both streams are always-ready): whoever feeds it keeps room for what is in flight.

    stage 1  acc = sum + bias and the operands registered (M = 1, S = 0 in raw mode)
    stage 2  each 17-bit slice of acc and M registered again, with nothing in between
    stage 3  partial products: each slice times M (``hw/dsp.py``: one DSP block each, these
             two stages its input and output registers)
    stage 4  product = acc * M, the partial products added
    stage 5  rounded = product + 2^(S-1)
    stage 6  shifted = rounded >> S           (arithmetic: flooring)
    stage 7  y = clamp(shifted, 0, 2^A - 1)   (ReLU) or shifted (raw)

The multiplier is split by hand so that neither the DSP blocks nor the adder that joins their
outputs shares a cycle with anything else (on ECP5 the unsplit product, with the raw-mode
multiplexer in front, limited the whole design to 78 MHz). The DSP block's own delay is
about half a cycle at 125 MHz, so on ECP5 its operand and product registers are the block's
own (``RegisteredMultiplier``): only routes to its inputs and from its output remain.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.hw.dsp import RegisteredMultiplier

LATENCY = 7
# Width of the unsigned low slices of acc: a slice times the 16-bit M fits an 18 x 18 DSP.
SLICE_BITS = 17


def requant_word_layout(cfg: AccelConfig) -> data.StructLayout:
    """One lane of a requant word: ``S << 16 | M`` (M in the low bits; ``sqaccel.abi``)."""
    return data.StructLayout(abi.requant_fields(cfg))


def requant_in_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({
        "acc": signed(cfg.acc_bits),  # the PEs' sum of products
        "bias": signed(cfg.acc_bits),
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

        # Only the valid bits take the reset; the datapath registers need none.
        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # Stage 1: the bias added (the sum fits acc_bits by the contract), the operands;
        # raw mode multiplies by 1 and shifts by 0.
        acc1 = reg(signed(acc_bits), "acc1")
        m1 = reg(unsigned(cfg.requant_m_bits), "m1")
        s1 = reg(unsigned(cfg.requant_s_bits), "s1")
        relu1 = reg(1, "relu1")
        m.d.sync += [
            acc1.eq(p.acc + p.bias),
            m1.eq(Mux(p.relu, p.rq.m, 1)),
            s1.eq(Mux(p.relu, p.rq.s, 0)),
            relu1.eq(p.relu),
        ]

        # Stages 2 and 3: partial products of acc's slices (low slices unsigned, the top one
        # signed), each a registered multiplier: operands registered, then the product.
        slices = []
        for lo in range(0, acc_bits, SLICE_BITS):
            hi = min(lo + SLICE_BITS, acc_bits)
            part = acc1[lo:hi] if hi < acc_bits else acc1[lo:hi].as_signed()
            mul = RegisteredMultiplier(part.shape(), m1.shape())
            m.submodules[f"mul{lo}"] = mul
            m.d.comb += [mul.a.eq(part), mul.b.eq(m1)]
            slices.append((lo, mul.p))
        s_d, relu_d = reg(unsigned(cfg.requant_s_bits), "s_dsp"), reg(1, "relu_dsp")
        s2, relu2 = reg(unsigned(cfg.requant_s_bits), "s2"), reg(1, "relu2")
        m.d.sync += [s_d.eq(s1), relu_d.eq(relu1), s2.eq(s_d), relu2.eq(relu_d)]

        # Stage 4: the product, the partial products added.
        prod = reg(signed(prod_bits), "prod")
        total = slices[0][1]
        for lo, pp in slices[1:]:
            total = total + (pp << lo)
        s3, relu3 = reg(unsigned(cfg.requant_s_bits), "s3"), reg(1, "relu3")
        m.d.sync += [prod.eq(total), s3.eq(s2), relu3.eq(relu2)]

        # Stage 5: + 2^(S-1) (half-up rounding); nothing when S = 0 (raw mode).
        # Bit S-1 of a one-hot (none for S = 0). A bit above the product's width only meets
        # S so large that the clamp gives 0 with or without it, so it may be dropped.
        rounded = reg(signed(wide), "rounded")
        s4, relu4 = reg(unsigned(cfg.requant_s_bits), "s4"), reg(1, "relu4")
        half = (Const(1, 1) << s3)[1:]
        m.d.sync += [rounded.eq(prod + half[: min(wide - 1, len(half))]), s4.eq(s3),
                     relu4.eq(relu3)]

        # Stage 6: arithmetic shift right by S (floors).
        shifted = reg(signed(wide), "shifted")
        relu5 = reg(1, "relu5")
        m.d.sync += [shifted.eq(rounded >> s4), relu5.eq(relu4)]

        # Stage 7: clamp to 0 .. 2^A-1 (ReLU) or pass the accumulator (raw).
        negative = shifted[-1]
        over = shifted[act_bits:-1].any()
        clamped = Mux(negative, 0, Mux(over, cfg.act_max, shifted[:act_bits]))
        y = reg(signed(acc_bits), "y")
        m.d.sync += y.eq(Mux(relu5, clamped, shifted[:acc_bits]))
        m.d.comb += self.o.payload.eq(y)
        return m
