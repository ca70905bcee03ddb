"""The host's side of the accelerator in Python, for the Amaranth simulation: GEMM problems
with the buffer words they load and the result words the golden arithmetic says must come
back, their placement in the buffers, and a driver of the Amaranth model.

Used by the Amaranth simulation tests and the array benchmark. Every word layout comes from
the interface (``sqaccel.abi``), every expected value from ``sqaccel.arith``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from sqaccel import abi, arith
from sqaccel.abi import command_packet, write_packets
from sqaccel.config import AccelConfig

__all__ = ["CommandRun", "Gemm", "Placed", "command_packet", "load_packets", "place",
           "random_gemm", "simulate", "write_packets"]


@dataclass
class Gemm:
    """One GEMM with everything the array needs, in integers."""

    x: torch.Tensor  # [M, K] activations
    codes: torch.Tensor  # [K, N] weight codes
    tables: torch.Tensor | None  # [N, L] step words (shift PE)
    bias: torch.Tensor  # [N]
    m: torch.Tensor  # [N] requant multipliers
    s: torch.Tensor  # [N] requant shifts
    relu: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.codes.shape[1], self.x.shape[1]

    def weights(self, cfg: AccelConfig) -> torch.Tensor:
        if cfg.pe == "shift":
            return arith.decode_shift_weights(self.codes, self.tables, cfg.weight_bits,
                                              cfg.universal)
        return arith.decode_mult_weights(self.codes, cfg.weight_bits)

    def output(self, cfg: AccelConfig) -> torch.Tensor:
        """Y [M, N] by the golden arithmetic: requantised, or the accumulators (raw)."""
        acc = arith.gemm(self.x, self.weights(cfg), self.bias, cfg)
        return arith.requant(acc, self.m, self.s, cfg.act_bits, relu=self.relu)

    def expected(self, cfg: AccelConfig) -> list[int]:
        """The result words the golden model gives, in the order the array emits them."""
        return abi.result_words(self.output(cfg), cfg)

    def buffers(self, cfg: AccelConfig) -> dict[str, list[int]]:
        tables = self.tables if cfg.pe == "shift" else None
        return {"act": abi.activation_words(self.x, cfg),
                **abi.layer_words(self.codes, tables, self.bias, self.m, self.s, cfg)}


def random_gemm(cfg: AccelConfig, m: int, n: int, k: int, rng: random.Random,
                relu: bool = True) -> Gemm:
    """Random operands over the whole code space; M and S chosen so outputs spread."""
    g = torch.Generator().manual_seed(rng.randrange(1 << 31))
    x = torch.randint(0, cfg.act_max + 1, (m, k), generator=g)
    codes = torch.randint(0, 1 << cfg.weight_bits, (k, n), generator=g)
    tables = None
    if cfg.pe == "shift":
        u = cfg.universal
        count = 1 if cfg.step_tables == "layer" else n
        rows = [[u.step_entry(rng.randrange(u.size)) for _ in range(cfg.levels)]
                for _ in range(count)]
        tables = torch.tensor(rows * (n if count == 1 else 1), dtype=torch.int64)
    # Typical |acc| ~ sqrt(K) * act_max * |w| / 4: biases of that size (now and then up to
    # +-bias_max) and S such that it lands near 2^(A-1), so outputs spread over 0..2^A-1.
    typical = max(1, int(k ** 0.5 * cfg.act_max * cfg.max_weight_int / 4))
    bias = torch.tensor([rng.randint(-typical, typical) if rng.random() < 0.9
                         else rng.choice((-cfg.bias_max, cfg.bias_max)) for _ in range(n)],
                        dtype=torch.int64)
    base_s = max(1, typical.bit_length() + cfg.requant_m_bits - cfg.act_bits)
    mm = torch.tensor([rng.randrange(1 << 15, 1 << 16) for _ in range(n)], dtype=torch.int64)
    ss = torch.tensor([min(63, max(1, base_s + rng.randint(-2, 2))) for _ in range(n)],
                      dtype=torch.int64)
    return Gemm(x, codes, tables, bias, mm, ss, relu)


@dataclass
class Placed:
    """A GEMM placed in the buffers: its base addresses."""

    gemm: Gemm
    act_base: int
    w_base: int
    step_base: int
    param_base: int

    def bases(self) -> dict[str, int]:
        return {"act_base": self.act_base, "w_base": self.w_base,
                "step_base": self.step_base, "param_base": self.param_base}

    def command_packet(self, cfg: AccelConfig) -> int:
        m, n, k = self.gemm.shape
        return command_packet(cfg, m=m, n=n, k=k, relu=self.gemm.relu, **self.bases())


def place(cfg: AccelConfig, gemms: list[Gemm]) -> tuple[list[Placed], dict[str, list[int]]]:
    """Lay several GEMMs out one after the other in every buffer; the buffers' words."""
    bufs = abi.buffers(cfg)
    contents: dict[str, list[int]] = {name: [] for name in bufs}
    placed = []
    for g in gemms:
        words = g.buffers(cfg)
        bases = {name: len(contents[name]) for name in bufs}
        for name, ws in words.items():
            contents[name].extend(ws)
        placed.append(Placed(g, bases["act"], bases["weights"], bases.get("steps", 0),
                             bases["bias"]))
    for name, ws in contents.items():
        if len(ws) > bufs[name].depth:
            raise abi.WordError(f"{name}: {len(ws)} words do not fit {bufs[name].depth}")
    return placed, contents


def load_packets(cfg: AccelConfig, contents: dict[str, list[int]]) -> list[int]:
    """Host packets that write ``contents`` into the buffers."""
    return write_packets(cfg, contents)



# -- driving the Amaranth model in simulation ------------------------------------------------


@dataclass
class CommandRun:
    """What one command produced in simulation."""

    words: list[int]  # result data words, in order
    lasts: list[int]  # the `last` flag of each word
    accept_cycle: int  # cycle the command packet was accepted
    last_cycle: int  # cycle the last result word was accepted (accept_cycle if none)
    done_cycle: int  # cycle `done` was seen high
    error: int

    @property
    def cycles(self) -> int:
        """Cycles from the command's acceptance to its last result word, inclusive."""
        return self.last_cycle - self.accept_cycle + 1


def simulate(cfg: AccelConfig, commands: list[int], *, init: dict[str, list[int]] | None = None,
             preload_packets: list[int] = (),
             ready_prob: float = 1.0, seed: int = 0, timeout: int = 1_000_000,
             vcd: str | None = None) -> list[CommandRun]:
    """Build the accelerator (buffers from ``init``), send ``preload_packets`` then each
    command in turn, read every result until ``done``, and return what each command produced.
    ``ready_prob`` < 1 holds ``result.ready`` low at random (backpressure).
    """
    from amaranth.sim import Simulator

    from sqaccel.hw.accel import Accelerator
    from sqaccel.hw.array import result_layout

    dut = Accelerator(cfg, init=init)
    rl = result_layout(cfg)
    data_bits = rl["data"].width
    rng = random.Random(seed)
    runs: list[CommandRun] = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    async def bench(ctx):
        cycle = 0  # the cycle in progress; a sample at the next edge belongs to it

        async def edge(*exprs):
            nonlocal cycle
            _, _, *vals = await ctx.tick().sample(*exprs)
            cycle += 1
            return cycle - 1, vals

        async def send(word: int) -> int:
            ctx.set(dut.host_in.payload.as_value(), word)
            ctx.set(dut.host_in.valid, 1)
            while True:
                at, (ready,) = await edge(dut.host_in.ready)
                if ready:
                    break
            ctx.set(dut.host_in.valid, 0)
            return at

        for w in preload_packets:
            await send(w)
        for n_cmd, word in enumerate(commands):
            accepted = await send(word)
            words, lasts = [], []
            last_cycle = accepted
            done_cycle = None
            for _ in range(timeout):
                if done_cycle is not None:
                    break
                ctx.set(dut.result.ready, int(rng.random() < ready_prob))
                at, (valid, ready, payload, done) = await edge(
                    dut.result.valid, dut.result.ready, dut.result.payload.as_value(), dut.done)
                if valid and ready:
                    words.append(payload & ((1 << data_bits) - 1))
                    lasts.append(payload >> data_bits)
                    last_cycle = at
                if done and done_cycle is None:
                    done_cycle = at
            else:
                raise TimeoutError(f"command {n_cmd}: no end after {timeout} cycles")
            ctx.set(dut.result.ready, 0)
            runs.append(CommandRun(words, lasts, accepted, last_cycle, done_cycle,
                                   ctx.get(dut.error)))

    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return runs
