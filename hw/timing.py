"""Cycle counts of a GEMM command, as the controller and the array schedule it.

``cycles`` counts from the cycle the command packet is accepted to the cycle the last
result word is accepted, inclusive, with ``result.ready`` held high. docs/hardware.md
derives the numbers; the simulation tests and bench/bench_array.py check them.
"""

from __future__ import annotations

from sqaccel.config import AccelConfig
from sqaccel.hw.array import CAPTURE_STAGE, SWAP_STAGE
from sqaccel.hw.requant import LATENCY as REQUANT_LATENCY

# From a last slot's issue (S0) to its capture into the shadow rows: S1..S5.
CAPTURE_AFTER = CAPTURE_STAGE
# The result FIFO (SyncFIFOBuffered): a word written in one cycle is readable two later.
FIFO_LATENCY = 2
# From a drain cycle to the word's acceptance: requantiser + result FIFO.
DRAIN_TO_OUT = REQUANT_LATENCY + FIFO_LATENCY
# A new_j slot holds the next registers until it leaves S4.
SWAP_CYCLES = SWAP_STAGE + 1


def load_cycles(cfg: AccelConfig) -> int:
    """Cycles from the loader's start to the next column tile's words being ready."""
    # Shift PE: one step-table entry per cycle, and one more for the array's register
    # between the block RAM and the tables.
    return cfg.levels + 1 if cfg.pe == "shift" else 2


def tile_rows(cfg: AccelConfig, m: int) -> list[int]:
    tiles = -(-m // cfg.rows)
    return [min(cfg.rows, m - i * cfg.rows) for i in range(tiles)]


def cycles(cfg: AccelConfig, m: int, n: int, k: int) -> int:
    """Exact cycle count (any M, N, K >= 1): the issue schedule, slot by slot."""
    rows = tile_rows(cfg, m)
    col_tiles = -(-n // cfg.cols)
    ld = load_cycles(cfg)
    t = 0  # next free issue cycle
    ready_j = 1 + ld  # the loader starts the cycle after acceptance
    shadow_free = 0  # earliest issue of the next last slot
    last_issue, last_rows = 0, 0
    for _ in range(col_tiles):
        for i, r in enumerate(rows):
            # The first slot of a column tile waits for its words, a last slot for the
            # shadow rows; every other slot follows the one before.
            first = max(t + 1, ready_j) if i == 0 else t + 1
            last = max(first + k - 1, shadow_free)
            if i == 0:
                ready_j = (first if k > 1 else last) + SWAP_CYCLES + ld
            shadow_free = last + CAPTURE_AFTER + 1 + r
            t = last
            last_issue, last_rows = last, r
    return last_issue + CAPTURE_AFTER + DRAIN_TO_OUT + last_rows + 1


def steady_state(cfg: AccelConfig, m: int, n: int, k: int) -> bool:
    """Whether the slots issue back to back: the closed form below then holds."""
    row_tiles = len(tile_rows(cfg, m))
    return k >= cfg.rows + CAPTURE_AFTER + 1 and row_tiles * k >= SWAP_CYCLES + load_cycles(cfg)


def cycles_closed_form(cfg: AccelConfig, m: int, n: int, k: int) -> int:
    """T*K + load + r_last + 14: T tiles, r_last rows in the last row tile."""
    rows = tile_rows(cfg, m)
    tiles = len(rows) * -(-n // cfg.cols)
    return tiles * k + load_cycles(cfg) + rows[-1] + 1 + CAPTURE_AFTER + DRAIN_TO_OUT


def utilisation(cfg: AccelConfig, m: int, n: int, k: int, measured_cycles: int) -> float:
    """Useful PE-cycles (products of a real row and a real column) over R*C*cycles."""
    return m * n * k / (cfg.rows * cfg.cols * measured_cycles)
