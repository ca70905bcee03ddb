"""Word-by-word comparison of what the RTL produced with what the golden model expects.

Every check compares every word it is given, padding lanes included, and on a difference
raises ``CheckFailure`` (an AssertionError, so cocotb records it as the test's failure)
whose message names the layer (or unit), the output index, the expected and the actual
value of the first differences, and how many differ in all. ``run_cocotb`` carries that
message into the ``CosimFailure`` it raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sqaccel.config import AccelConfig
from sqaccel.sw import images

REPORT_LIMIT = 8  # differences listed in a report; the count covers all of them


class CheckFailure(AssertionError):
    """The RTL disagreed with the model."""


@dataclass(frozen=True)
class Mismatch:
    index: str  # e.g. "m=3, n=17" or "cycle 1234"
    expected: int
    actual: int
    where: str = ""  # e.g. "word 12, lane 3"

    def line(self) -> str:
        loc = f" ({self.where})" if self.where else ""
        return f"output [{self.index}]{loc}: expected {self.expected}, got {self.actual}"


def report(what: str, mismatches: Sequence[Mismatch], total: int, unit: str = "values") -> str:
    """The failure message: what failed, how many differ, the first differences."""
    head = f"{what}: {len(mismatches)} of {total} output {unit} differ from the model"
    lines = [m.line() for m in mismatches[:REPORT_LIMIT]]
    more = len(mismatches) - len(lines)
    if more:
        lines.append(f"... and {more} more")
    return head + "\n  " + "\n  ".join(lines)


def fail_if(what: str, mismatches: Sequence[Mismatch], total: int, unit: str = "values") -> None:
    if mismatches:
        raise CheckFailure(report(what, mismatches, total, unit))


# -- PE accumulator traces -----------------------------------------------------------------


def trace_mismatches(expected, actual, start: int = 0) -> list[Mismatch]:
    """Differences of two per-cycle traces (same length) from cycle ``start`` on (earlier
    cycles are undefined, e.g. an accumulator without reset); index = the cycle."""
    e = np.asarray(expected, dtype=np.int64)
    a = np.asarray(actual, dtype=np.int64)
    if e.shape != a.shape:
        raise CheckFailure(f"trace of {a.shape[0]} cycles, the model has {e.shape[0]}")
    bad = np.flatnonzero(e[start:] != a[start:]) + start
    return [Mismatch(f"cycle {int(i)}", int(e[i]), int(a[i])) for i in bad]


# -- array results -------------------------------------------------------------------------


def result_lanes(words: Sequence[int], cfg: AccelConfig) -> np.ndarray:
    """[words, C] signed lanes of result words (docs/arithmetic.md section 7)."""
    c, bits = cfg.cols, cfg.acc_bits
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    out = np.zeros((len(words), c), dtype=np.int64)
    for i, w in enumerate(words):
        for lane in range(c):
            v = (int(w) >> (lane * bits)) & mask
            out[i, lane] = v - (1 << bits) if v >= half else v
    return out


def results_to_matrix(words: Sequence[int], m: int, n: int, cfg: AccelConfig) -> torch.Tensor:
    """Y [M, N] from result words ordered column tile j outer, row m inner."""
    c = cfg.cols
    tiles = -(-n // c)
    if len(words) != tiles * m:
        raise CheckFailure(f"{len(words)} result words, a {m}x{n} output has {tiles * m}")
    lanes = result_lanes(words, cfg).reshape(tiles, m, c)
    y = torch.from_numpy(lanes).permute(1, 0, 2).reshape(m, tiles * c)
    return y[:, :n].contiguous()


def result_mismatches(
    expected: torch.Tensor, words: Sequence[int], cfg: AccelConfig, row_offset: int = 0
) -> tuple[list[Mismatch], int]:
    """Compare every result word of a [M, N] output with the words the model's output makes
    (padding lanes must be 0); returns the differences and the number of lanes compared.
    Row indices are reported plus ``row_offset`` (the command's first row in its layer)."""
    m, n = expected.shape
    want = images.result_words(expected, cfg)
    total = len(want) * cfg.cols
    if len(words) != len(want):
        return [
            Mismatch("result word count", len(want), len(words),
                     f"{m}x{n} output, {cfg.cols} lanes a word")
        ], total
    e, a = result_lanes(want, cfg), result_lanes(words, cfg)
    out = []
    for w, lane in zip(*np.nonzero(e != a), strict=True):
        j, row = divmod(int(w), m)
        col = j * cfg.cols + int(lane)
        index = f"m={row + row_offset}, n={col}" + (" (padding lane)" if col >= n else "")
        out.append(Mismatch(index, int(e[w, lane]), int(a[w, lane]), f"word {w}, lane {lane}"))
    return out, total


def check_results(what: str, expected: torch.Tensor, words: Sequence[int],
                  cfg: AccelConfig, row_offset: int = 0) -> None:
    """Raise CheckFailure naming ``what`` when any result word differs."""
    mism, total = result_mismatches(expected, words, cfg, row_offset)
    fail_if(what, mism, total)


def tensor_mismatches(expected: torch.Tensor, actual: torch.Tensor) -> list[Mismatch]:
    """Differences of two integer tensors, indexed by position (e.g. [batch, c, y, x])."""
    if tuple(expected.shape) != tuple(actual.shape):
        raise CheckFailure(f"output of shape {tuple(actual.shape)}, the model's is "
                           f"{tuple(expected.shape)}")
    bad = torch.nonzero(expected != actual)
    return [
        Mismatch(", ".join(str(int(v)) for v in idx), int(expected[tuple(idx)]),
                 int(actual[tuple(idx)]))
        for idx in bad
    ]


def check_tensor(what: str, expected: torch.Tensor, actual: torch.Tensor) -> None:
    if tuple(expected.shape) != tuple(actual.shape):
        raise CheckFailure(f"{what}: output of shape {tuple(actual.shape)}, the model's is "
                           f"{tuple(expected.shape)}")
    fail_if(what, tensor_mismatches(expected, actual), expected.numel())
