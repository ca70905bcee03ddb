"""The GEMM controller: runs one command, tile by tile, from the buffers into the array.

A command (``command_layout``, from ``sqaccel.abi``) asks for ``Y[M, N] = X[M, K] W[K, N]``
(+ bias, then requantisation or raw) with the buffer layouts of docs/arithmetic.md
section 7:

    activations  act_base   + i*K + k          (R lanes x A bits)
    weights      w_base     + j*K + k          (C lanes x b bits)
    steps        step_base  + j*L + e          (per channel; per layer: step_base + e)
    bias         param_base + j                (C lanes x acc_bits)
    requant      param_base + j                (C lanes x (S << 16 | M))

Loop order: column tile j outer, row tile i, then k; one slot (one activation word and one
weight word) per cycle. The controller issues a slot's two read addresses in S0; the words
arrive one cycle later, when the slot's flags (registered here) go to the array with them.

Beside the slots, a loader reads the next column tile's step table, biases and
requantisation words into the array's *next* registers while the current column tile runs.
A slot waits (the PEs idle, nothing is lost) only when

- it is a ``new_j`` slot and the loader has not finished that column tile's words, or
- it is a ``last`` slot and the array's shadow rows would still be draining at its capture.

A command with K = 0, K > K_max or N > n_max is refused: ``error`` rises and nothing runs.
M = 0 or N = 0 runs nothing and produces no result.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.hw.array import load_signature, slot_layout
from sqaccel.hw.requant import requant_word_layout


def _lane_shape(cfg: AccelConfig, name: str):
    if name == "requant":
        return requant_word_layout(cfg)
    b = abi.buffers(cfg)[name]
    return signed(b.lane_bits) if b.signed else unsigned(b.lane_bits)


def buffer_layouts(cfg: AccelConfig) -> dict[str, data.ArrayLayout]:
    """The lanes of one word of each buffer (``sqaccel.abi.buffers``), as Amaranth layouts."""
    return {name: data.ArrayLayout(_lane_shape(cfg, name), b.lanes)
            for name, b in abi.buffers(cfg).items()}


def command_layout(cfg: AccelConfig) -> data.StructLayout:
    """The fields of a command (``sqaccel.abi.command_fields``), lowest bits first."""
    return data.StructLayout(abi.command_fields(cfg))


def read_signature(cfg: AccelConfig, buffer: str) -> wiring.Signature:
    """A synchronous read port of ``buffer``, as seen by its user."""
    b = abi.buffers(cfg)[buffer]
    return ReadPort.Signature(addr_width=b.addr_bits, shape=b.word_bits).flip()


class Controller(wiring.Component):
    """Command sequencing, buffer addressing and the next-tile loader.

    Members: ``cmd`` (stream of commands; ready while idle), one read port per buffer
    (``act_rd``, ``w_rd``, ``step_rd`` for the shift PE, ``bias_rd``, ``rq_rd``), the
    array side (``slot``, ``load``, ``relu`` out; ``last_ok``, ``swap_pending``,
    ``array_idle`` in) and the status ``busy``, ``done`` (one cycle when a command ends)
    and ``error`` (the last command was refused).
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        members = {
            "cmd": In(stream.Signature(command_layout(cfg))),
            "act_rd": Out(read_signature(cfg, "act")),
            "w_rd": Out(read_signature(cfg, "weights")),
            "bias_rd": Out(read_signature(cfg, "bias")),
            "rq_rd": Out(read_signature(cfg, "requant")),
            "slot": Out(stream.Signature(slot_layout(cfg), always_ready=True)),
            "load": Out(load_signature(cfg)),
            "relu": Out(1),
            "last_ok": In(1),
            "swap_pending": In(1),
            "array_idle": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        }
        if cfg.pe == "shift":
            members["step_rd"] = Out(read_signature(cfg, "steps"))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C, L = cfg.rows, cfg.cols, cfg.levels
        cl = command_layout(cfg)
        cmd = Signal(cl)  # the command being run

        running = Signal()  # slots still to issue or results still to come
        issuing = Signal()  # slots still to issue
        m.d.comb += [self.busy.eq(running), self.relu.eq(cmd.relu)]

        # -- issue counters ------------------------------------------------------------
        k = Signal.like(cmd.k)
        m_left = Signal.like(cmd.m)  # rows from this row tile on
        n_left = Signal.like(cmd.n)  # columns from this column tile on
        act_addr = Signal.like(cmd.act_base)
        w_addr = Signal.like(cmd.w_base)
        w_tile = Signal.like(cmd.w_base)  # w_base + j*K
        next_loaded = Signal()  # the array's next registers hold column tile j's words

        # The slot's position flags are flip-flops, updated beside the counters they describe
        # (each from a comparison made a cycle ahead), so `issue` and everything it enables
        # start from registers: k == 0, k == K - 1, m_left == M (first row tile),
        # m_left <= R (last row tile), n_left <= C (last column tile).
        k_last2 = Signal.like(cmd.k)  # K - 2 (wraps for K = 1, where k never reaches it)
        k_one = Signal()  # K == 1
        m_one = Signal()  # M <= R: one row tile
        is_first, is_last, top_row = Signal(), Signal(), Signal()
        last_row_tile, last_col_tile = Signal(), Signal()
        is_new_j = is_first & top_row
        issue = Signal()
        s1_last, s1_new_j = Signal(), Signal()  # the slot in S1 (the array counts from S2)
        m.d.comb += issue.eq(issuing & (~is_new_j | next_loaded)
                             & (~is_last | (self.last_ok & ~s1_last)))

        m.d.comb += [
            self.act_rd.addr.eq(act_addr),
            self.w_rd.addr.eq(w_addr),
        ]
        # S1: the slot's flags, beside the words the buffers return now.
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "new_j": 1,
                                       "rows": range(R + 1), "cols": range(C + 1),
                                       "final": 1}))
        m.d.sync += [
            s1.valid.eq(issue),
            s1.first.eq(is_first),
            s1.last.eq(is_last),
            s1.new_j.eq(is_new_j),
            s1.rows.eq(Mux(last_row_tile, m_left, R)),
            s1.cols.eq(Mux(last_col_tile, n_left, C)),
            s1.final.eq(last_row_tile & last_col_tile),
        ]
        m.d.comb += [s1_last.eq(s1.valid & s1.last), s1_new_j.eq(s1.valid & s1.new_j)]
        p = self.slot.payload
        m.d.comb += [
            self.slot.valid.eq(s1.valid),
            p.x.eq(self.act_rd.data),
            p.w.eq(self.w_rd.data),
            p.first.eq(s1.first), p.last.eq(s1.last), p.new_j.eq(s1.new_j),
            p.rows.eq(s1.rows), p.cols.eq(s1.cols), p.final.eq(s1.final),
        ]

        with m.If(issue):
            m.d.sync += [k.eq(k + 1), act_addr.eq(act_addr + 1), w_addr.eq(w_addr + 1),
                         is_first.eq(0), is_last.eq(k == k_last2)]
            with m.If(is_new_j):
                m.d.sync += next_loaded.eq(0)
            with m.If(is_last):
                m.d.sync += [k.eq(0), is_first.eq(1), is_last.eq(k_one)]
                with m.If(~last_row_tile):
                    m.d.sync += [m_left.eq(m_left - R), w_addr.eq(w_tile), top_row.eq(0),
                                 last_row_tile.eq(m_left <= 2 * R)]
                with m.Else():
                    m.d.sync += [
                        m_left.eq(cmd.m),
                        act_addr.eq(cmd.act_base),
                        w_tile.eq(w_addr + 1),
                        n_left.eq(n_left - C),
                        top_row.eq(1),
                        last_row_tile.eq(m_one),
                        last_col_tile.eq(n_left <= 2 * C),
                    ]
                    with m.If(last_col_tile):
                        m.d.sync += issuing.eq(0)

        # -- loader: column tile words into the array's next registers -----------------
        loading = Signal()
        load_n_left = Signal.like(cmd.n)  # columns from the tile to load next on
        load_more = Signal()  # = load_n_left != 0, a flip-flop beside it
        param_addr = Signal.like(cmd.param_base)
        entry = Signal(range(L))
        bias_we = Signal()
        m.d.comb += [
            self.bias_rd.addr.eq(param_addr),
            self.rq_rd.addr.eq(param_addr),
            self.load.bias_data.eq(self.bias_rd.data),
            self.load.rq_data.eq(self.rq_rd.data),
            self.load.bias_we.eq(bias_we),
            self.load.rq_we.eq(bias_we),
        ]
        start_load = Signal()
        # The array registers the step words before writing its tables (the block RAM's
        # output then meets only a flip-flop): the tables are complete one cycle after the
        # last entry's read, `loaded_soon`.
        loaded_soon = Signal()
        # Nothing here waits on `issue` (and so on the array's `last_ok`): a new_j slot
        # issues only with next_loaded set, which holds a load back already.
        m.d.comb += start_load.eq(issuing & ~loading & ~next_loaded & ~loaded_soon
                                  & load_more & ~self.swap_pending & ~s1_new_j)
        m.d.sync += bias_we.eq(start_load)
        if cfg.pe == "shift":
            step_addr = Signal.like(cmd.step_base)
            tbl_we = Signal()
            tbl_addr = Signal(range(L))
            m.d.comb += [
                self.step_rd.addr.eq(step_addr),
                self.load.tbl_we.eq(tbl_we),
                self.load.tbl_addr.eq(tbl_addr),
                self.load.tbl_data.eq(self.step_rd.data),
            ]
            m.d.sync += [tbl_we.eq(0), tbl_addr.eq(entry)]
            with m.If(start_load):
                m.d.sync += loading.eq(1)
            with m.If(loading | start_load):
                m.d.sync += [tbl_we.eq(1), entry.eq(entry + 1), step_addr.eq(step_addr + 1)]
                with m.If(entry == L - 1):
                    m.d.sync += [
                        entry.eq(0),
                        loading.eq(0),
                        loaded_soon.eq(1),
                        param_addr.eq(param_addr + 1),
                        load_n_left.eq(Mux(load_n_left <= C, 0, load_n_left - C)),
                        load_more.eq(load_n_left > C),
                    ]
                    if cfg.step_tables == "layer":
                        m.d.sync += step_addr.eq(cmd.step_base)
            with m.If(loaded_soon):
                m.d.sync += [loaded_soon.eq(0), next_loaded.eq(1)]
        else:
            # The words arrive one cycle after the read: next_loaded then.
            with m.If(start_load):
                m.d.sync += loading.eq(1)
            with m.If(loading):
                m.d.sync += [
                    loading.eq(0),
                    next_loaded.eq(1),
                    param_addr.eq(param_addr + 1),
                    load_n_left.eq(Mux(load_n_left <= C, 0, load_n_left - C)),
                    load_more.eq(load_n_left > C),
                ]

        # -- command acceptance --------------------------------------------------------
        refused = Signal()
        nothing = Signal()
        c_in = self.cmd.payload
        m.d.comb += [
            self.cmd.ready.eq(~running),
            refused.eq(~c_in.k.any() | (c_in.k > cfg.k_max) | (c_in.n > cfg.n_max)),
            nothing.eq(~c_in.m.any() | ~c_in.n.any()),
        ]
        m.d.sync += self.done.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += self.error.eq(refused)
            with m.If(refused | nothing):
                m.d.sync += self.done.eq(1)
            with m.Else():
                m.d.sync += [running.eq(1), issuing.eq(1)]
            # The counters and addresses load for every accepted command, refused or not
            # (nothing reads them until `issuing` rises): the checks on the command then
            # reach only the flags above, not the wide registers' enables.
            m.d.sync += [
                cmd.eq(c_in),
                k.eq(0),
                k_last2.eq(c_in.k - 2),
                k_one.eq(c_in.k == 1),
                m_one.eq(c_in.m <= R),
                is_first.eq(1),
                is_last.eq(c_in.k == 1),
                top_row.eq(1),
                last_row_tile.eq(c_in.m <= R),
                last_col_tile.eq(c_in.n <= C),
                m_left.eq(c_in.m),
                n_left.eq(c_in.n),
                act_addr.eq(c_in.act_base),
                w_addr.eq(c_in.w_base),
                w_tile.eq(c_in.w_base),
                next_loaded.eq(0),
                load_n_left.eq(c_in.n),
                load_more.eq(1),  # n >= 1 for a command that runs
                param_addr.eq(c_in.param_base),
                entry.eq(0),
            ]
            if cfg.pe == "shift":
                m.d.sync += step_addr.eq(c_in.step_base)
        with m.Elif(running & ~issuing & ~loading & ~loaded_soon & self.array_idle
                    & ~s1.valid):
            m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

