"""Processing elements: the shift-add PE, the multiplier PE and the SQ multiplier PE of a
hybrid array, with one signature.

Both PEs take an A-bit unsigned activation ``x``, a weight operand ``w``, the flags ``en``
and ``first`` and a bias, and keep a signed ``acc_bits`` accumulator. They are pipelined in
two stages so that no path runs from the PE's inputs through the product into the
accumulator in one cycle:

- stage 1 (the cycle ``x``, ``w``, ``en``, ``first`` are presented): the product, registered;
- stage 2 (the next cycle): ``acc <= (first ? bias : acc) + product`` when ``en`` was set.

``acc`` shows the sum ``LATENCY`` cycles after the operands. ``bias`` is read in stage 2,
i.e. one cycle after the ``first`` operands.

Inside the array the PEs are built with ``in_array=True``, which trades ``first``/``bias``/
``acc`` for ``last``/``sum``: stage 2 computes ``sum = acc + product`` (combinational, the
dot product's total while its last operand is in stage 2) and ``acc <= last ? 0 : sum``.
The clear is the flip-flops' synchronous reset, so the accumulator has no multiplexer in front
of its adder; the array copies ``sum`` into its shadow rows and adds the column's bias once
per column, in the requantiser (docs/hardware.md, "PE operand formats").

Weight operand (docs/hardware.md, "PE operand formats"):

- shift PE: ``shift_operand_layout(cfg)``: bit 0 the sign (1 = subtract), then the step-table
  word of the weight's column (term 0's selector in the low bits); the code -> step-word
  lookup happens once per column, outside the PEs;
- multiplier PE: the b-bit two's-complement weight code, ``signed(b)``;
- SQ multiplier PE (the ``mult_cols`` columns of a hybrid shift-add array):
  ``sq_mult_operand_layout(cfg)``, bit 0 the sign, then the SQ weight's integer magnitude,
  which the column computes from its step-table word when the table is loaded
  (``step_magnitude``). It multiplies ``x`` by the magnitude (a DSP block) and applies the
  sign like the shift-add PE, so the two kinds produce the same products bit for bit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sqaccel.config import AccelConfig

LATENCY = 2  # cycles from the operands to the accumulator showing their product
BIAS_DELAY = 1  # the bias is read in stage 2, one cycle after the `first` operands
# The PE kinds: the config's two (``AccelConfig.pe``) and the hybrid array's multiplier
# columns, which take SQ weights like the shift-add PE.
SQ_MULT = "sq-mult"


def shift_operand_layout(cfg: AccelConfig) -> data.StructLayout:
    """Weight operand of the shift-add PE: sign (bit 0), then the step-table word."""
    return data.StructLayout({"sign": 1, "step": cfg.universal.step_entry_bits})


def sq_mult_operand_layout(cfg: AccelConfig) -> data.StructLayout:
    """Weight operand of the SQ multiplier PE: sign (bit 0), then the integer magnitude."""
    return data.StructLayout({"sign": 1,
                              "mag": cfg.universal.max_int_magnitude.bit_length()})


def weight_operand_shape(cfg: AccelConfig, kind: str | None = None):
    """The weight operand of a PE of ``kind`` (default ``cfg.pe``)."""
    kind = kind or cfg.pe
    if kind == "shift":
        return shift_operand_layout(cfg)
    if kind == SQ_MULT:
        return sq_mult_operand_layout(cfg)
    return signed(cfg.weight_bits)


def column_kind(cfg: AccelConfig, col: int) -> str:
    """The kind of the PEs of array column ``col``: a hybrid's first ``mult_cols`` columns
    multiply."""
    return SQ_MULT if col < cfg.mult_cols else cfg.pe


def magnitude_bits(cfg: AccelConfig) -> int:
    """Width of the shift-add PE's unsigned term sum: x * largest magnitude fits in it."""
    return (cfg.act_max * cfg.universal.max_int_magnitude).bit_length()


def shifted_terms(m: Module, cfg: AccelConfig, step, value, name: str) -> list[Signal]:
    """One term per shift set of a step-table word: ``value << shift`` for the term's
    selector, or 0 for the selector ``len(set)`` (off; larger ones are refused upstream),
    each a (len(set)+1)-way multiplexer."""
    u = cfg.universal
    terms = []
    pos = 0
    for t, (shifts, sel_bits) in enumerate(zip(u.shift_sets, u.selector_bits, strict=True)):
        sel = step[pos : pos + sel_bits]
        pos += sel_bits
        term = Signal(unsigned(len(value) + max(shifts)), name=f"{name}{t}")
        with m.Switch(sel):
            for s_idx, sh in enumerate(shifts):
                with m.Case(s_idx):
                    m.d.comb += term.eq(value << sh)
            with m.Default():
                m.d.comb += term.eq(0)
        terms.append(term)
    return terms


def step_magnitude(m: Module, cfg: AccelConfig, step, name: str) -> Signal:
    """The integer magnitude that a step-table word selects: the sum over the terms of
    ``1 << shift``, as a comb signal."""
    terms = shifted_terms(m, cfg, step, Const(1, 1), f"{name}_term")
    mag = Signal(sq_mult_operand_layout(cfg)["mag"].shape, name=name)
    m.d.comb += mag.eq(sum(terms[1:], terms[0]))
    return mag


class PESignature(wiring.Signature):
    """``x``, ``w`` (of the PE ``kind``), ``en`` and, standalone, ``first``, ``bias``,
    ``acc``; in the array (``in_array``) ``last`` and ``sum`` instead."""

    def __init__(self, cfg: AccelConfig, in_array: bool = False, kind: str | None = None):
        members = {
            "x": In(unsigned(cfg.act_bits)),
            "w": In(weight_operand_shape(cfg, kind)),
            "en": In(1),
        }
        if in_array:
            members |= {"last": In(1), "sum": Out(signed(cfg.acc_bits))}
        else:
            members |= {"first": In(1), "bias": In(signed(cfg.acc_bits)),
                        "acc": Out(signed(cfg.acc_bits))}
        super().__init__(members)


class _PEBase(wiring.Component):
    latency = LATENCY
    kind: str

    def __init__(self, cfg: AccelConfig, in_array: bool = False):
        self.cfg = cfg
        self.in_array = in_array
        super().__init__(PESignature(cfg, in_array, self.kind))

    def _accumulate(self, m: Module, addend) -> None:
        """Stage 2, shared by both kinds: ``acc <= (first ? bias : acc) + addend``, or in
        the array ``sum = acc + addend``, ``acc <= last ? 0 : sum``."""
        if self.in_array:
            self._accumulate_in_array(m, addend)
            return
        en1, first1 = Signal(), Signal()
        m.d.sync += [en1.eq(self.en), first1.eq(self.first)]
        # Datapath registers skip the reset: a first operand loads the accumulator, and the
        # reset net stays small (it limited Fmax when it reached every datapath flip-flop).
        acc = Signal(signed(self.cfg.acc_bits), reset_less=True)
        m.d.comb += self.acc.eq(acc)
        base = Mux(first1, self.bias, acc)
        with m.If(en1):
            m.d.sync += acc.eq(base + addend)

    def _accumulate_in_array(self, m: Module, addend) -> None:
        # `clear` (a last operand, or the reset: a command cut short leaves nothing behind)
        # is the accumulator's synchronous reset, free in the flip-flops.
        en1 = Signal()
        clear = Signal(reset_less=True)
        m.d.sync += [en1.eq(self.en), clear.eq((self.en & self.last) | ResetSignal())]
        acc = Signal(signed(self.cfg.acc_bits), reset_less=True)
        total = Signal(signed(self.cfg.acc_bits))
        m.d.comb += [total.eq(acc + addend), self.sum.eq(total)]
        with m.If(clear):
            m.d.sync += acc.eq(0)
        with m.Elif(en1):
            m.d.sync += acc.eq(total)

    def _accumulate_signed(self, m: Module, mag, mag_bits: int, neg) -> None:
        """Stage 2 of the SQ kinds: the registered magnitude ``mag`` added, or subtracted
        when ``neg``, as invert + carry-in: acc + (mag ^ s) + s."""
        acc_bits = self.cfg.acc_bits
        mag_ext = Cat(mag, Const(0, acc_bits - mag_bits))
        flipped = (mag_ext ^ neg.replicate(acc_bits)).as_signed()
        self._accumulate(m, flipped + neg)


class ShiftAddPE(_PEBase):
    """x * (sum of per-term shifts of x), added or subtracted; no multiplier."""

    kind = "shift"

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg

        # Stage 1: one (len(set)+1)-way shift per term, the terms added.
        terms = shifted_terms(m, cfg, self.w.step, self.x, "term")
        mag_bits = magnitude_bits(cfg)
        mag = Signal(unsigned(mag_bits), reset_less=True)
        neg = Signal(reset_less=True)
        m.d.sync += [mag.eq(sum(terms[1:], terms[0])), neg.eq(self.w.sign)]
        self._accumulate_signed(m, mag, mag_bits, neg)
        return m


class SQMultPE(_PEBase):
    """x * (the SQ weight's magnitude) in a multiplier, added or subtracted: the hybrid
    array's multiplier columns, the same products as the shift-add PE."""

    kind = SQ_MULT

    def elaborate(self, platform):
        m = Module()
        mag_bits = magnitude_bits(self.cfg)
        mag = Signal(unsigned(mag_bits), reset_less=True)
        neg = Signal(reset_less=True)
        m.d.sync += [mag.eq(self.x * self.w.mag), neg.eq(self.w.sign)]
        self._accumulate_signed(m, mag, mag_bits, neg)
        return m


class MultPE(_PEBase):
    """x * w with a genuine multiplier: A-bit unsigned times b-bit two's complement."""

    kind = "mult"

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        prod = Signal(signed(cfg.act_bits + cfg.weight_bits + 1), reset_less=True)
        m.d.sync += prod.eq(self.x * self.w)
        self._accumulate(m, prod)
        return m


PE_CLASSES = {c.kind: c for c in (ShiftAddPE, MultPE, SQMultPE)}


def make_pe(cfg: AccelConfig, in_array: bool = False, kind: str | None = None) -> _PEBase:
    """The PE of ``kind`` (default ``cfg.pe``; ``in_array``: the array's variant,
    ``last``/``sum``)."""
    return PE_CLASSES[kind or cfg.pe](cfg, in_array)

