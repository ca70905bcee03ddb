"""Cosimulation level 2: GEMMs through the top's host interface (``sqaccel.sim.tb_accel``).

Random GEMMs over many configs: shapes across tile edges, requant parameters across their
whole range, every operand at its extreme, zero activations. Each GEMM's buffer words and
its command go to the testbench with the output the golden arithmetic gives; every result
word is compared, and every command's cycle count against ``hw.timing``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from sqaccel import abi, arith
from sqaccel.config import AccelConfig
from sqaccel.hw import timing
from sqaccel.sim import job as jobs
from sqaccel.sim.builds import run_accel_job
from sqaccel.sim.hostmodel import Gemm, place, random_gemm
from sqaccel.sim.runner import CosimResult

# Array shapes, widths, PE kinds and step-table modes for the GEMM level: every value of
# every parameter appears, most pairs of values too. Small K_max and buffers keep builds and
# runs short; the default 8x8 build (shared with the layer and network levels) runs too.
GEMM_CONFIGS: tuple[AccelConfig, ...] = tuple(
    AccelConfig(rows=r, cols=c, weight_bits=b, act_bits=a, pe=pe, mult_cols=mc,
                step_tables=st, k_max=64, act_depth=512, weight_depth=512, n_max=64)
    # The first one (make test's slice) is a hybrid: multiplier and shift-add columns.
    for r, c, b, a, pe, mc, st in [
        (2, 4, 3, 8, "shift", 2, "channel"),
        (4, 2, 4, 4, "mult", 0, "channel"),
        (2, 2, 2, 4, "shift", 0, "layer"),
        (4, 4, 2, 8, "mult", 0, "channel"),
        (4, 8, 3, 4, "shift", 3, "layer"),
        (8, 4, 4, 8, "shift", 0, "channel"),
        (8, 2, 3, 8, "mult", 0, "channel"),
        (2, 8, 4, 4, "shift", 0, "channel"),
        (8, 8, 2, 8, "shift", 0, "layer"),
        (4, 4, 4, 8, "shift", 4, "channel"),
    ]
)


def command_timeout(cfg: AccelConfig, m: int, n: int, k: int, ready_prob: float = 1.0) -> int:
    """Generous cycle bound for one command: every slot, the drain, backpressure."""
    tiles = abi.row_tiles(cfg, m) * abi.col_tiles(cfg, n)
    return int((tiles * (k + 4 * (cfg.rows + cfg.cols) + 32) + 1000) * 4 / ready_prob)


def command(cfg: AccelConfig, name: str, m: int, n: int, k: int, relu: bool, *,
            expected: torch.Tensor | None = None, bases: dict[str, int] | None = None,
            row_offset: int = 0, **where) -> jobs.Command:
    """One command of a job: its fields, the cycle count hw.timing gives it, a timeout, and
    the output it must produce ([M, N]) when given (``where``: col_offset, group, load)."""
    return jobs.Command(
        name=name,
        fields={"m": m, "n": n, "k": k, "relu": int(relu), **(bases or {})},
        cycles=timing.cycles(cfg, m, n, k),
        timeout=command_timeout(cfg, m, n, k),
        row_offset=row_offset,
        expected=None if expected is None else jobs.tensor_to_json(expected),
        **where,
    )


def gemm_batches(cfg: AccelConfig, cases: Sequence[tuple[str, Gemm]],
                 expected: Sequence[torch.Tensor] | None = None) -> list[jobs.Batch]:
    """Pack named GEMMs into batches that fit the buffers together: each batch loads its
    GEMMs' words one after another, then runs their commands back to back."""
    batches: list[jobs.Batch] = []
    group: list[int] = []

    def flush():
        if not group:
            return
        placed, contents = place(cfg, [cases[i][1] for i in group])
        cmds = []
        for i, p in zip(group, placed, strict=True):
            want = expected[i] if expected is not None else p.gemm.output(cfg)
            m, n, k = p.gemm.shape
            cmds.append(command(cfg, cases[i][0], m, n, k, p.gemm.relu, expected=want,
                                bases=p.bases()))
        batches.append(jobs.Batch(contents, cmds))
        group.clear()

    for i in range(len(cases)):
        try:
            place(cfg, [cases[j][1] for j in group + [i]])
        except abi.WordError:
            if not group:
                raise
            flush()
        group.append(i)
    flush()
    return batches


def run_gemms(cfg: AccelConfig, cases: Sequence[tuple[str, Gemm]], seed: int,
              ready_prob: float = 1.0, expected: Sequence[torch.Tensor] | None = None,
              waves: bool | None = None) -> CosimResult:
    """Run named GEMMs through the top's host interface and compare every result word with
    ``expected`` (default: the golden arithmetic's output of each GEMM)."""
    job = jobs.AccelJob(config=cfg.to_dict(), seed=int(seed), format="",
                        ready_prob=ready_prob, batches=gemm_batches(cfg, cases, expected))
    return run_accel_job(cfg, job, "run_gemms", "gemms", waves)


def _strongest_code(cfg: AccelConfig, tables: torch.Tensor | None, col: int, negative: bool):
    """The code of the largest |weight| of one sign in column ``col``."""
    if cfg.pe == "mult":
        return (1 << (cfg.weight_bits - 1)) if negative else (1 << (cfg.weight_bits - 1)) - 1
    mags = arith.table_magnitudes(tables[col], cfg.universal)
    return (int(negative) << (cfg.weight_bits - 1)) | int(torch.argmax(mags))


def random_gemm_case(cfg: AccelConfig, index: int, rng: random.Random) -> tuple[str, Gemm]:
    """One named random GEMM: shapes across tile edges (M up to 3R+1, N up to 3C+1, K from
    1 to K_max), ReLU or raw, and one of four flavours: random operands with requant
    parameters that spread the outputs, random requant over the whole S range, every
    operand at its extreme (saturation, accumulator limits, +-bias_max), zero activations."""
    m = rng.choice([1, cfg.rows, rng.randint(1, 3 * cfg.rows + 1)])
    n = rng.choice([1, cfg.cols, rng.randint(1, min(cfg.n_max, 3 * cfg.cols + 1))])
    k = rng.choice([1, cfg.k_max, rng.randint(1, cfg.k_max), rng.randint(1, cfg.k_max)])
    relu = rng.random() < 0.75
    g = random_gemm(cfg, m, n, k, rng, relu=relu)
    flavour = rng.choices(["random", "wide-requant", "extreme", "zero-x"], [6, 2, 2, 1])[0]
    if flavour == "wide-requant":
        g.m = torch.tensor([rng.randrange(1 << 15, 1 << 16) for _ in range(n)])
        g.s = torch.tensor([rng.randint(1, 63) for _ in range(n)])
    elif flavour == "extreme":
        g.x = torch.full((m, k), cfg.act_max, dtype=torch.int64)
        if g.tables is not None:  # one entry of every table: the universal set's largest
            u = cfg.universal
            g.tables = g.tables.clone()
            g.tables[:, rng.randrange(cfg.levels)] = u.step_entry(
                u.int_magnitudes.index(u.max_int_magnitude))
        neg = [rng.random() < 0.5 for _ in range(n)]
        g.codes = torch.tensor([[_strongest_code(cfg, g.tables, j, neg[j]) for j in range(n)]]
                               ).expand(k, n).contiguous()
        g.bias = torch.tensor([cfg.bias_max * (-1 if ng else 1) for ng in neg])
    elif flavour == "zero-x":
        g.x = torch.zeros((m, k), dtype=torch.int64)
    kind = "relu" if relu else "raw"
    return f"GEMM {index} ({flavour}, M={m}, N={n}, K={k}, {kind})", g


def random_gemm_cases(cfg: AccelConfig, count: int, seed: int) -> list[tuple[str, Gemm]]:
    rng = random.Random(seed)
    return [random_gemm_case(cfg, i, rng) for i in range(count)]
