"""A quantised weight tensor, the one hand-off between the quantisers and everything after.

Every quantiser (SQ, uniform, power-of-two, APoT) returns a ``QuantizedWeight``. The real
weight it stands for is ``scale[c] * w_int`` (c = output channel, dim 0); ``w_int`` is the
signed integer the array adds up (docs/arithmetic.md, section 2). The fake-quantised float
model uses ``dequantize()``; the integer golden model and the memory images use
``w_int``, ``scale`` and, for hardware codes, ``codes()`` and ``step_tables()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sqaccel.config import UniversalSet
from sqaccel.errors import SqaccelError

# Methods whose integers the array can run, and the PE kind that runs them.
PE_OF_METHOD = {"sq": "shift", "uniform": "mult"}
METHOD_OF_PE = {pe: method for method, pe in PE_OF_METHOD.items()}


@dataclass
class QuantizedWeight:
    method: str  # "sq", "uniform", "pot", "apot"
    bits: int
    w_int: torch.Tensor  # int64, the weight's shape
    scale: torch.Tensor  # float64, [out_channels]
    per_channel: bool = False
    # SQ: per table (one, or one per output channel), the chosen universal-set members in
    # increasing magnitude; a code's index is the position in this tuple.
    subsets: list[tuple[int, ...]] | None = None
    universal: UniversalSet | None = None
    info: dict = field(default_factory=dict)  # alpha, L2 error, search seconds, ...

    @property
    def out_channels(self) -> int:
        return int(self.w_int.shape[0])

    @property
    def pe(self) -> str | None:
        """The PE kind that runs these integers, or None for fake-quant-only methods."""
        return PE_OF_METHOD.get(self.method)

    def dequantize(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.w_int.dim() - 1)
        return (self.w_int.to(torch.float64) * self.scale.reshape(shape)).to(torch.float32)

    # -- hardware encodings (docs/arithmetic.md, section 2) ----------------------------
    def _table_of_channel(self) -> list[int]:
        if self.subsets is None:
            raise SqaccelError(f"{self.method} weights have no step tables")
        if self.per_channel:
            if len(self.subsets) != self.out_channels:
                raise SqaccelError(
                    f"{len(self.subsets)} subsets for {self.out_channels} output channels"
                )
            return list(range(self.out_channels))
        return [0] * self.out_channels

    def step_tables(self) -> torch.Tensor:
        """Step-table words, [tables, 2**(bits-1)]: one table, or one per output channel."""
        if self.subsets is None or self.universal is None:
            raise SqaccelError(f"{self.method} weights have no step tables")
        u = self.universal
        return torch.tensor(
            [[u.step_entry(member) for member in subset] for subset in self.subsets],
            dtype=torch.int64,
        )

    def codes(self) -> torch.Tensor:
        """b-bit codes, the weight's shape: sign/index (SQ) or two's complement (uniform)."""
        if self.method == "uniform":
            from sqaccel.arith import encode_mult_weights

            return encode_mult_weights(self.w_int, self.bits)
        if self.method != "sq" or self.subsets is None or self.universal is None:
            raise SqaccelError(f"{self.method} weights have no hardware encoding")
        ints = torch.tensor(self.universal.int_magnitudes, dtype=torch.int64)
        table_of = self._table_of_channel()
        flat = self.w_int.reshape(self.out_channels, -1)
        out = torch.empty_like(flat)
        for c in range(self.out_channels):
            mags = ints[list(self.subsets[table_of[c]])]  # increasing
            a = flat[c].abs()
            index = torch.searchsorted(mags, a).clamp_max(len(mags) - 1)
            if bool((mags[index] != a).any()):
                raise SqaccelError(f"output channel {c}: a weight is not a level of its subset")
            out[c] = ((flat[c] < 0).to(torch.int64) << (self.bits - 1)) | index
        return out.reshape(self.w_int.shape)
