"""A multiplier with registered operands and a registered product (latency 2).

    cycle t      a, b presented
    cycle t + 1  a, b registered
    cycle t + 2  p = a * b registered

For simulation and for any target without a known primitive it is plain logic: two operand
registers, a ``*`` and a product register. When the platform that elaborates it names the
ECP5 multiplier (``mult_primitive == "MULT18X18D"``, ``sqaccel.hw.synth.ECP5``) and both
operands fit 18 signed bits, it is one MULT18X18D with its input and output registers
turned on. Yosys does not move flip-flops into the ECP5 DSP block by itself; with them
outside, the block's 4.45 ns of multiply sat between two fabric flip-flops and the routes to
and from the block, and that path limited the whole array (docs/hardware.md, section 10).
Inside, nextpnr times the block as registered, and the fabric only has to reach its input
registers and leave its output register.

Both forms have the same ports and the same latency; ``tests/test_hw_dsp.py`` runs them side
by side on Verilator, the primitive through a model of its registered 18 x 18 mode
(``sim/models/MULT18X18D.v``), every product compared with Python's.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

LATENCY = 2
MULT18X18D = "MULT18X18D"
OPERAND_BITS = 18  # the block's operands (signed; an unsigned operand takes 17)
PRODUCT_BITS = 36


def product_shape(a: Shape, b: Shape) -> Shape:
    """The exact shape of a * b (Amaranth's rule: a signed result when either is signed)."""
    return (Signal(a) * Signal(b)).shape()


def fits_primitive(shape: Shape) -> bool:
    """Whether an operand of ``shape`` fits the block's 18 signed bits."""
    return shape.width + (0 if shape.signed else 1) <= OPERAND_BITS


def uses_primitive(platform, a: Shape, b: Shape) -> bool:
    return (getattr(platform, "mult_primitive", None) == MULT18X18D
            and fits_primitive(a) and fits_primitive(b))


class RegisteredMultiplier(wiring.Component):
    """``p = a * b``, ``LATENCY`` cycles after ``a`` and ``b``; no enable, no reset (the
    caller's valid bits say which products mean something)."""

    latency = LATENCY

    def __init__(self, a_shape: Shape, b_shape: Shape):
        self.a_shape, self.b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        super().__init__({
            "a": In(self.a_shape),
            "b": In(self.b_shape),
            "p": Out(product_shape(self.a_shape, self.b_shape)),
        })

    def elaborate(self, platform):
        m = Module()
        if uses_primitive(platform, self.a_shape, self.b_shape):
            self._primitive(m)
            return m
        a = Signal(self.a_shape, name="a_reg", reset_less=True)
        b = Signal(self.b_shape, name="b_reg", reset_less=True)
        p = Signal(self.p.shape(), name="p_reg", reset_less=True)
        m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
        m.d.comb += self.p.eq(p)
        return m

    def _primitive(self, m: Module) -> None:
        # Both operands extended to 18 signed bits (an unsigned one with a zero), so the
        # block always multiplies signed; the product's low bits are the exact a * b.
        a = Signal(signed(OPERAND_BITS), name="a_ext")
        b = Signal(signed(OPERAND_BITS), name="b_ext")
        p = Signal(signed(PRODUCT_BITS), name="p_blk")
        m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(p)]
        ports = {f"i_A{n}": a[n] for n in range(OPERAND_BITS)}
        ports |= {f"i_B{n}": b[n] for n in range(OPERAND_BITS)}
        ports |= {f"o_P{n}": p[n] for n in range(PRODUCT_BITS)}
        one, zero = Const(1, 1), Const(0, 1)
        regs = ("INPUTA", "INPUTB", "OUTPUT")
        params = {f"p_REG_{r}_{k}": v for r in regs
                  for k, v in (("CLK", "CLK0"), ("CE", "CE0"), ("RST", "RST0"))}
        m.submodules.block = Instance(
            MULT18X18D,
            **params,
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            p_GSR="DISABLED", p_RESETMODE="SYNC",
            p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            i_SIGNEDA=one, i_SIGNEDB=one, i_SOURCEA=zero, i_SOURCEB=zero,
            i_CLK0=ClockSignal("sync"), i_CE0=one, i_RST0=zero,
            **ports,
        )
