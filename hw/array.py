"""The R x C PE array: output-stationary, operands broadcast along rows and columns.

Each accepted *slot* carries one activation word (``R`` lanes: ``X[i*R + r, k]``) and one
weight word (``C`` lanes of b-bit codes: ``W[k, j*C + c]``). Row r's activation is broadcast
to the C PEs of the row; column c's code is decoded once, through column c's step table
(shift PE), and broadcast to the R PEs of the column. A hybrid shift-add array's first
``mult_cols`` columns decode the code to the SQ weight's sign and integer magnitude instead
(their tables hold the magnitudes of the step words, computed as the words are loaded) and
multiply (``SQMultPE``, a DSP block each). PE (r, c) accumulates
``Y[i*R + r, j*C + c]`` over the K slots of a tile. The flags of a slot say where it sits:
``first`` (k = 0), ``last`` (k = K-1: the tile is complete),
``new_j`` (first slot of a new column tile: swap in that tile's step tables, biases and
requantisation words, loaded beforehand into the *next* registers through ``load``).

Pipeline, counted from the cycle a slot is presented on ``slot`` (S1; the controller issued
its memory addresses in S0):

    S1  slot in: activation and weight words straight from the buffers, registered (on
        ECP5 in the block RAMs' own output registers, hw/bram_outreg.py)
    S2  the words registered again, in the fabric beside the decoders and the PEs: the
        route from the block RAMs meets no logic
    S3  column decode: code -> (sign, step word) through the active step table, registered
    S4  PE stage 1 (product)
    S5  PE stage 2: sum = acc + product; a last slot copies the R x C sums (the tile's dot
        products, without the bias) into the shadow rows and clears the accumulators

The step tables swap at the end of S2 of a ``new_j`` slot, the biases and requantisation
words at the end of S4, so every tile in flight sees its own; a capture copies the column
biases and requantisation words beside the shadow rows. The shadow rows (one per PE row)
drain one row per cycle through the C column requantisers (which add the bias) into the
result FIFO while the next tile computes: tiles run back to back as long as K >= R + 6.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.hw.pe import LATENCY as PE_LATENCY
from sqaccel.hw.pe import SQ_MULT, column_kind, make_pe, step_magnitude, weight_operand_shape
from sqaccel.hw.requant import LATENCY as RQ_LATENCY
from sqaccel.hw.requant import Requantiser, requant_word_layout

# Slot stages before the PEs (S1 input register, S2 fabric register, S3 decode register).
PRE_PE_STAGES = 3
# Stage (counting S1 = 1) in which the PEs' sums hold a slot's total: a last slot's sums are
# captured at its end.
CAPTURE_STAGE = PRE_PE_STAGES + PE_LATENCY
# The last stage that reads the next registers (the biases and requantisation words swap at
# its end): a new_j slot holds them until it leaves this stage.
SWAP_STAGE = PRE_PE_STAGES + 1
# Result FIFO entries; the drain only starts a row it has room for. A read returns its credit a
# cycle late (registered, so that the reader's `ready` reaches no further than a flip-flop):
# one entry more keeps the drain from waiting with `ready` high.
RESULT_FIFO_DEPTH = RQ_LATENCY + 5


def step_table_bits(cfg: AccelConfig) -> int:
    """Width of one step-buffer word: C lanes (per channel) or one entry (per layer)."""
    return abi.step_lanes(cfg) * cfg.universal.step_entry_bits


def slot_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({
        "x": data.ArrayLayout(unsigned(cfg.act_bits), cfg.rows),
        "w": data.ArrayLayout(unsigned(cfg.weight_bits), cfg.cols),
        "first": 1,
        "last": 1,
        "new_j": 1,
        # The tile's rows m < M and columns n < N (carried by every slot of the tile: the
        # row enables read them) and, on a last slot, whether it is the command's final tile.
        "rows": range(cfg.rows + 1),
        "cols": range(cfg.cols + 1),
        "final": 1,
    })


def result_layout(cfg: AccelConfig) -> data.StructLayout:
    """A result word (``sqaccel.abi.result_fields``: C lanes of acc_bits, lane 0 low) and
    the command's end marker."""
    lanes, bits = abi.result_lanes(cfg)
    return data.StructLayout({"data": data.ArrayLayout(signed(bits), lanes), "last": 1})


def _lane_flags(m: Module, cond, count, n: int, name: str) -> list[Signal]:
    """Flip-flops ``cond & (count > i)`` for i < n, a cycle after ``cond`` and ``count``:
    one control per row or column, each reaching only that lane's registers. Lane i's is
    set only when the tile has lane i, which keeps synthesis from merging the copies back
    into one net across the array (such a net, or a comparison in front of it, was the
    critical path each time)."""
    flags = [Signal(name=f"{name}{i}") for i in range(n)]
    for i, flag in enumerate(flags):
        m.d.sync += flag.eq(cond & (count > i))
    return flags


def load_signature(cfg: AccelConfig) -> wiring.Signature:
    """Writes into the *next* step tables, biases and requantisation words (as the writer
    sees them; the array takes the flipped signature)."""
    return wiring.Signature({
        "tbl_we": Out(1),
        "tbl_addr": Out(range(cfg.levels)),
        "tbl_data": Out(step_table_bits(cfg)),
        "bias_we": Out(1),
        "bias_data": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)),
        "rq_we": Out(1),
        "rq_data": Out(data.ArrayLayout(requant_word_layout(cfg), cfg.cols)),
    })


class PEArray(wiring.Component):
    """R x C PEs, column decoders, bias and requantisation registers, shadow drain, FIFO.

    Members: ``slot`` (always-ready stream of slots), ``load`` (next-register writes),
    ``relu`` (the command's layer has a ReLU), ``result`` (stream of result words), and the
    status of the slots inside the array (S2 on; the slot on ``slot`` is the issuer's to
    count): ``last_ok`` (a last slot may be issued now, unless one is on ``slot``: its
    capture will find the shadow rows free), ``swap_pending`` (a new_j slot is in S2 to
    S4: the next registers are not to be written), ``idle`` (nothing in flight, every
    result read).
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__({
            "slot": In(stream.Signature(slot_layout(cfg), always_ready=True)),
            "load": In(load_signature(cfg)),
            "relu": In(1),
            "result": Out(stream.Signature(result_layout(cfg))),
            "last_ok": Out(1),
            "swap_pending": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C, L = cfg.rows, cfg.cols, cfg.levels
        entry_bits = cfg.universal.step_entry_bits
        acc_t = signed(cfg.acc_bits)
        rq_t = requant_word_layout(cfg)
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "new_j": 1,
                                   "rows": range(R + 1), "cols": range(C + 1), "final": 1})

        # -- slot flags through S2..S5 -------------------------------------------------
        s = {n: Signal(flags, name=f"s{n}") for n in range(2, CAPTURE_STAGE + 1)}
        p = self.slot.payload
        m.d.sync += [
            s[2].valid.eq(self.slot.valid), s[2].first.eq(p.first), s[2].last.eq(p.last),
            s[2].new_j.eq(p.new_j), s[2].rows.eq(p.rows), s[2].cols.eq(p.cols),
            s[2].final.eq(p.final),
        ]
        for n in range(3, CAPTURE_STAGE + 1):
            m.d.sync += s[n].eq(s[n - 1])

        # -- S1: input registers -------------------------------------------------------
        # Datapath registers skip the reset (only valid bits and state take it), which keeps
        # the reset net off the thousands of operand and accumulator flip-flops.
        x_in = Signal(data.ArrayLayout(unsigned(cfg.act_bits), R), reset_less=True)
        w_in = Signal(data.ArrayLayout(unsigned(cfg.weight_bits), C), reset_less=True)
        m.d.sync += [x_in.eq(p.x), w_in.eq(p.w)]

        # -- S2: the words again, in flip-flops the placer puts beside their loads -----
        # (The route from a block RAM across the array to the decoders, with the decode
        # behind it, was the board top's critical path.)
        x_mid = Signal.like(x_in, reset_less=True)
        w_mid = Signal.like(w_in, reset_less=True)
        m.d.sync += [x_mid.eq(x_in), w_mid.eq(w_in)]

        # -- step tables: next (loaded) and active (used), swapped at the end of S2 ----
        kinds = [column_kind(cfg, c) for c in range(C)]
        x_op = Signal(data.ArrayLayout(unsigned(cfg.act_bits), R), reset_less=True)
        w_op = [Signal(weight_operand_shape(cfg, kinds[c]), name=f"w_op{c}", reset_less=True)
                for c in range(C)]
        m.d.sync += x_op.eq(x_mid)
        if cfg.pe == "shift":
            tables = abi.step_lanes(cfg)
            table_t = data.ArrayLayout(data.ArrayLayout(unsigned(entry_bits), L), tables)
            tbl_next = Signal(table_t, reset_less=True)
            tbl_active = Signal(table_t, reset_less=True)
            # The step words straight from the block RAM into flip-flops, then into the
            # tables: the RAM's slow output meets no logic (the controller counts the cycle).
            tbl_we = Signal()
            tbl_addr = Signal.like(self.load.tbl_addr, reset_less=True)
            tbl_data = Signal.like(self.load.tbl_data, reset_less=True)
            m.d.sync += [tbl_we.eq(self.load.tbl_we), tbl_addr.eq(self.load.tbl_addr),
                         tbl_data.eq(self.load.tbl_data)]
            with m.If(tbl_we):
                for t in range(tables):
                    lane = tbl_data[t * entry_bits : (t + 1) * entry_bits]
                    m.d.sync += tbl_next[t][tbl_addr].eq(lane)
            # The swap enables, a flip-flop per column, high in the new_j slot's S2. A
            # column a tile lacks decodes stale words into lanes the result mask clears,
            # and the next tile that has it swaps its table in again.
            swap = _lane_flags(m, self.slot.valid & p.new_j, p.cols, C, "tbl_swap")
            for t in range(tables):
                with m.If(swap[t]):
                    m.d.sync += tbl_active[t].eq(tbl_next[t])
            # The multiplier columns' tables: the magnitude of each loaded step word, computed
            # between the load register and the table (off the slot path).
            mag_tables = sorted({c if tables > 1 else 0 for c in range(C) if kinds[c] == SQ_MULT})
            mag_t = data.ArrayLayout(weight_operand_shape(cfg, SQ_MULT)["mag"].shape, L)
            mag_next = {t: Signal(mag_t, name=f"mag_next{t}", reset_less=True)
                        for t in mag_tables}
            mag_active = {t: Signal(mag_t, name=f"mag_active{t}", reset_less=True)
                          for t in mag_tables}
            for t in mag_tables:
                lane = tbl_data[t * entry_bits : (t + 1) * entry_bits]
                mag = step_magnitude(m, cfg, lane, f"load_mag{t}")
                with m.If(tbl_we):
                    m.d.sync += mag_next[t][tbl_addr].eq(mag)
                with m.If(swap[t]):
                    m.d.sync += mag_active[t].eq(mag_next[t])
            # -- S3: decode once per column, broadcast down the column -----------------
            ib = cfg.index_bits
            for c in range(C):
                code = w_mid[c]
                t = c if tables > 1 else 0
                table, field = ((mag_active[t], w_op[c].mag) if kinds[c] == SQ_MULT
                                else (tbl_active[t], w_op[c].step))
                m.d.sync += w_op[c].sign.eq(code[ib])
                # An L-way case rather than a variable shift: the same mux, lint-clean.
                with m.Switch(code[:ib]):
                    for e in range(L):
                        with m.Case(e):
                            m.d.sync += field.eq(table[e])
        else:
            for c in range(C):
                m.d.sync += w_op[c].eq(w_mid[c])

        # -- biases and requantisation words: next and current ------------------------
        bias_next = Signal(data.ArrayLayout(acc_t, C), reset_less=True)
        bias_cur = Signal(data.ArrayLayout(acc_t, C), reset_less=True)
        rq_next = Signal(data.ArrayLayout(rq_t, C), reset_less=True)
        rq_cur = Signal(data.ArrayLayout(rq_t, C), reset_less=True)
        # Likewise the biases and requantisation words: registered as they leave the block
        # RAMs, written a cycle later (still long before their swap).
        bias_we, rq_we = Signal(), Signal()
        bias_in = Signal.like(bias_next, reset_less=True)
        rq_in = Signal.like(rq_next, reset_less=True)
        m.d.sync += [bias_we.eq(self.load.bias_we), rq_we.eq(self.load.rq_we),
                     bias_in.eq(self.load.bias_data), rq_in.eq(self.load.rq_data)]
        with m.If(bias_we):
            m.d.sync += bias_next.eq(bias_in)
        with m.If(rq_we):
            m.d.sync += rq_next.eq(rq_in)
        # Swapped by a flip-flop per column (as the step tables), high in SWAP_STAGE.
        ahead_swap = s[SWAP_STAGE - 1]
        param_swap = _lane_flags(m, ahead_swap.valid & ahead_swap.new_j, ahead_swap.cols, C,
                                "param_swap")
        for c in range(C):
            with m.If(param_swap[c]):
                m.d.sync += [bias_cur[c].eq(bias_next[c]), rq_cur[c].eq(rq_next[c])]

        # -- the PEs (S4, S5) ----------------------------------------------------------
        # The array's PE variant: no bias, cleared by a last slot (pe.py); its `sum` is the
        # dot product while the slot is in S5.
        # A row's PEs accumulate only for tiles that have that row (`rows > r`): the rows' enables
        # then differ, so that synthesis keeps one enable (and one clear) per row instead of
        # merging them into one net across all R x C PEs. A row left out keeps the zero its
        # last clear left in it. (Flip-flop copies of the enable and of `last` per row, one
        # cycle ahead, cost about 15 more LUT4 per PE on ECP5 once Yosys flattens the array,
        # with no path through them critical: they are not used.)
        acc = [[None] * C for _ in range(R)]
        # Flip-flops computed in S3: the comparison in front of a row's enable, reaching the
        # C PEs' enables and accumulator clears, was the 16 x 16 array's critical path.
        pre = s[PRE_PE_STAGES]
        row_en = _lane_flags(m, pre.valid, pre.rows, R, "row_en")
        for r in range(R):
            for c in range(C):
                pe = make_pe(cfg, in_array=True, kind=kinds[c])
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.x.eq(x_op[r]),
                    pe.w.eq(w_op[c]),
                    pe.en.eq(row_en[r]),
                    pe.last.eq(s[PRE_PE_STAGES + 1].last),
                ]
                acc[r][c] = pe.sum

        # -- end of S5: capture into the shadow rows; drain one row per cycle ----------
        # `capture`, `drain` and the shadow rows' enable are flip-flops, each computed a
        # cycle ahead: they fan out to all R x C x acc_bits shadow bits, and a gate between
        # them and that fan-out was the array's critical path. The capture and the enable are
        # one flip-flop per row, each driving C x acc_bits bits: row r captures only for a
        # tile that has row r (rows past the tile's are never drained), which keeps synthesis
        # from merging them back into one net.
        cap = s[CAPTURE_STAGE]
        shadow = [Signal(data.ArrayLayout(acc_t, C), name=f"shadow{r}", reset_less=True)
                  for r in range(R)]
        rq_tile = Signal(data.ArrayLayout(rq_t, C), reset_less=True)
        bias_tile = Signal(data.ArrayLayout(acc_t, C), reset_less=True)
        col_mask = Signal(C, reset_less=True)
        final = Signal(reset_less=True)
        rows_left = Signal(range(R + 1), reset_less=True)
        full = Signal()  # the shadow rows hold rows not yet drained
        credits = Signal(range(RESULT_FIFO_DEPTH + 1), init=RESULT_FIFO_DEPTH)
        capture = Signal()  # = cap.valid & cap.last
        drain = Signal()  # = full & (credits != 0)
        cap_row = [Signal(name=f"capture{r}") for r in range(R)]  # capture & (rows > r)
        shadow_en = [Signal(name=f"shadow_en{r}") for r in range(R)]  # cap_row[r] | drain
        popped = Signal()

        prev = s[CAPTURE_STAGE - 1]
        capture_next = prev.valid & prev.last
        full_next = Signal()
        credits_next = Signal.like(credits)
        popped_r = Signal()  # a word was read last cycle: its credit returns now
        m.d.sync += popped_r.eq(popped)
        m.d.comb += [
            full_next.eq(capture | (full & ~(drain & (rows_left == 1)))),
            credits_next.eq(credits - drain + popped_r),
        ]
        drain_next = full_next & credits_next.any()
        m.d.sync += [
            capture.eq(capture_next),
            full.eq(full_next),
            credits.eq(credits_next),
            drain.eq(drain_next),
        ]
        # Row r's part of the capture (`capture_next & (prev.rows > r)`), itself a flip-flop
        # computed a stage earlier: the row comparisons behind the stage register, in front
        # of these flip-flops, were the 16 x 16 array's critical path.
        before = s[CAPTURE_STAGE - 2]
        cap_next = _lane_flags(m, before.valid & before.last, before.rows, R, "capture_next")
        for r in range(R):
            m.d.sync += [cap_row[r].eq(cap_next[r]), shadow_en[r].eq(cap_next[r] | drain_next)]
        with m.If(capture):
            m.d.sync += [
                rows_left.eq(cap.rows),
                rq_tile.eq(rq_cur),
                bias_tile.eq(bias_cur),
                final.eq(cap.final),
                col_mask.eq(Cat(cap.cols > c for c in range(C))),
            ]
        with m.Elif(drain):
            m.d.sync += rows_left.eq(rows_left - 1)
        for r in range(R):
            below = shadow[r + 1] if r + 1 < R else shadow[r]
            with m.If(shadow_en[r]):
                m.d.sync += shadow[r].eq(Mux(cap_row[r], Cat(*acc[r]), below))

        # Requantisers, one per column, and the mask / end marker beside them.
        ys = []
        for c in range(C):
            rq = Requantiser(cfg)
            m.submodules[f"requant_{c}"] = rq
            m.d.comb += [
                rq.i.valid.eq(drain),
                rq.i.payload.acc.eq(shadow[0][c]),
                rq.i.payload.bias.eq(bias_tile[c]),
                rq.i.payload.rq.eq(rq_tile[c]),
                rq.i.payload.relu.eq(self.relu),
            ]
            ys.append(rq.o)
        side_t = data.StructLayout({"mask": C, "last": 1})
        side = [Signal(side_t, name=f"side{n}", reset_less=True) for n in range(RQ_LATENCY)]
        m.d.sync += [side[0].mask.eq(col_mask), side[0].last.eq(final & (rows_left == 1))]
        for a, b in zip(side, side[1:], strict=False):
            m.d.sync += b.eq(a)

        fifo = m.submodules.fifo = SyncFIFOBuffered(
            width=result_layout(cfg).size, depth=RESULT_FIFO_DEPTH)
        word = Signal(result_layout(cfg))
        for c in range(C):
            m.d.comb += word.data[c].eq(ys[c].payload & side[-1].mask[c].replicate(cfg.acc_bits))
        m.d.comb += [
            word.last.eq(side[-1].last),
            fifo.w_data.eq(word),
            fifo.w_en.eq(ys[0].valid),
        ]
        m.d.comb += [
            self.result.valid.eq(fifo.r_rdy),
            self.result.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.result.ready),
        ]
        m.d.comb += popped.eq(fifo.r_rdy & fifo.r_en)

        # -- status --------------------------------------------------------------------
        # Slots from S2 on only: none of these depends on the slot being presented, so no
        # path runs from `slot` through the array back out (the issuer, which holds that
        # slot in its own register, adds it). Each is a flip-flop, computed a cycle ahead
        # from the slot on `slot` and the stages before the ones it describes: the issuer's
        # decisions start from registers.
        ahead = [(self.slot.valid, p.last, p.new_j)]
        ahead += [(s[n].valid, s[n].last, s[n].new_j) for n in range(2, CAPTURE_STAGE)]
        last_ok = Signal(init=1)
        swap_pending = Signal()
        idle = Signal(init=1)
        m.d.sync += [
            last_ok.eq(~full_next & ~Cat(v & last for v, last, _ in ahead).any()),
            swap_pending.eq(Cat(v & new_j for v, _, new_j in ahead[:SWAP_STAGE - 1]).any()),
            idle.eq(~Cat(v for v, _, _ in ahead).any() & ~full_next
                    & (credits_next == RESULT_FIFO_DEPTH)),
        ]
        m.d.comb += [
            self.last_ok.eq(last_ok),
            self.swap_pending.eq(swap_pending),
            self.idle.eq(idle),
        ]
        return m
