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

from sqaccel import abi
from sqaccel.config import AccelConfig

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


def results_to_matrix(words: Sequence[int], m: int, n: int, cfg: AccelConfig) -> torch.Tensor:
    """Y [M, N] from result words ordered column tile j outer, row m inner."""
    want = abi.col_tiles(cfg, n) * m
    if len(words) != want:
        raise CheckFailure(f"{len(words)} result words, a {m}x{n} output has {want}")
    return torch.from_numpy(np.ascontiguousarray(abi.results_from_words(words, m, n, cfg)[:, :n]))


def result_mismatches(
    expected: torch.Tensor, words: Sequence[int], cfg: AccelConfig, row_offset: int = 0,
    col_offset: int = 0,
) -> tuple[list[Mismatch], int]:
    """Compare every result word of a [M, N] output with the words the model's output makes
    (padding lanes must be 0); returns the differences and the number of lanes compared.
    Row and column indices are reported plus ``row_offset`` and ``col_offset`` (where the
    command's output sits in its layer's)."""
    m, n = expected.shape
    want = abi.result_words(expected, cfg)
    total = len(want) * cfg.cols
    if len(words) != len(want):
        return [
            Mismatch("result word count", len(want), len(words),
                     f"{m}x{n} output, {cfg.cols} lanes a word")
        ], total
    lanes, bits = abi.result_lanes(cfg)
    e = abi.unpack(want, lanes, bits, signed=True)
    a = abi.unpack(words, lanes, bits, signed=True)
    out = []
    for w, lane in zip(*np.nonzero(e != a), strict=True):
        j, row = divmod(int(w), m)
        col = j * cfg.cols + int(lane)
        index = (f"m={row + row_offset}, n={col + col_offset}"
                 + (" (padding lane)" if col >= n else ""))
        out.append(Mismatch(index, int(e[w, lane]), int(a[w, lane]), f"word {w}, lane {lane}"))
    return out, total


def check_results(what: str, expected: torch.Tensor, words: Sequence[int],
                  cfg: AccelConfig, row_offset: int = 0, col_offset: int = 0) -> None:
    """Raise CheckFailure naming ``what`` when any result word differs."""
    mism, total = result_mismatches(expected, words, cfg, row_offset, col_offset)
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
