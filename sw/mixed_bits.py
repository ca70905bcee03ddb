"""Mixed weight bits per layer: 2, 3 or 4 bits per layer under a weight-memory budget.

The first and the last GEMM layer run at the array's weight width (``cfg.weight_bits``, the
golden model's rule, ``lowering.array_layer_bits``); every other GEMM layer is *free* and gets
one of ``choices``. The budget counts the free layers' weight memory, bits x weights:
"the W3 budget" is ``3 x`` the number of weights of the free layers (their memory at a
uniform 3 bits), so the mixed network never stores more weight bits than the W3 one.

Each free layer's sensitivity at b bits is measured on the calibration inputs: that layer
alone quantised (the search's weights, or the search's weights after its own block
reconstruction), every other layer and every activation in full precision, and the
network's logits compared with the full-precision logits (mean squared error relative to
their mean square). The allocation minimises the sum of the sensitivities under the
budget, exactly (a dynamic programme over the Pareto front of (memory, sensitivity)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sqaccel.config import SUPPORTED_WEIGHT_BITS, AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw.calibrate import (
    CalibSettings,
    reconstruct_block,
    search_layer,
)
from sqaccel.sw.lowering import array_layer_bits, fake_quant_model_weights
from sqaccel.sw.plan import plan, prepare, run
from sqaccel.sw.train import deterministic


@dataclass
class BitAllocation:
    """Bits of every GEMM layer, and how they were chosen."""

    bits: dict[str, int]  # every GEMM layer, network order
    free: tuple[str, ...]  # the layers whose bits were chosen
    weights: dict[str, int]  # weights per layer
    budget_bits: int  # weight memory allowed to the free layers
    used_bits: int  # weight memory the free layers use
    sensitivity: dict[str, dict[int, float]] = field(default_factory=dict)
    predicted: float = 0.0  # sum of the chosen sensitivities

    @property
    def average_bits(self) -> float:
        """Mean bits per weight over the free layers."""
        n = sum(self.weights[name] for name in self.free)
        return self.used_bits / n if n else 0.0

    def to_dict(self) -> dict:
        return {
            "bits": dict(self.bits),
            "free": list(self.free),
            "weights": dict(self.weights),
            "budget_bits": self.budget_bits,
            "used_bits": self.used_bits,
            "average_bits": self.average_bits,
            "sensitivity": {k: {str(b): v for b, v in d.items()}
                            for k, d in self.sensitivity.items()},
            "predicted": self.predicted,
        }


def free_layers(model: nn.Module, cfg: AccelConfig) -> tuple[dict[str, int], tuple[str, ...]]:
    """(fixed bits of every GEMM layer by the golden model's rule, the free layers)."""
    fixed = array_layer_bits(model, cfg.weight_bits, cfg)
    names = list(fixed)
    return fixed, tuple(names[1:-1])


def budget_for(model: nn.Module, cfg: AccelConfig, average_bits: float) -> int:
    """Weight memory of the free layers at ``average_bits`` per weight ("the W3 budget" for
    ``average_bits = 3``)."""
    modules = dict(model.named_modules())
    _, free = free_layers(model, cfg)
    return int(round(average_bits * sum(modules[n].weight.numel() for n in free)))


def allocate(
    sensitivity: dict[str, dict[int, float]],
    weights: dict[str, int],
    budget_bits: int,
) -> tuple[dict[str, int], int, float]:
    """Bits per layer minimising the summed sensitivity with ``sum(bits * weights) <=
    budget_bits``: (bits, memory used, summed sensitivity). Exact; on a tie in sensitivity
    the smaller memory wins, then the earlier choice (fewer bits first in layer order)."""
    names = list(sensitivity)
    # Pareto front of partial allocations: (memory, sensitivity, bits per layer so far).
    front: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for name in names:
        options = sorted(sensitivity[name].items())
        merged = sorted(
            ((mem + b * weights[name], sens + s, chosen + (b,))
             for mem, sens, chosen in front for b, s in options),
            key=lambda t: (t[0], t[1], t[2]),
        )
        front = []
        for cand in merged:
            if cand[0] > budget_bits:
                break
            if not front or cand[1] < front[-1][1]:
                front.append(cand)
    if not front or len(front[0][2]) != len(names):
        cheapest = sum(min(sensitivity[n]) * weights[n] for n in names)
        raise SqaccelError(
            f"mixed bits: a budget of {budget_bits} weight bits is below the smallest "
            f"allocation ({cheapest} bits)"
        )
    mem, sens, chosen = min(front, key=lambda t: (t[1], t[0]))
    return dict(zip(names, chosen, strict=True)), mem, sens


def _block_io(model: nn.Module, name: str, x: torch.Tensor) -> tuple:
    """(the block step, its full-precision input, its full-precision output) on ``x``."""
    p = plan(model)
    _, t = run(p, x.to(torch.float32), record=True)
    step = p.step(name)
    if step.kind != "gemm":
        raise SqaccelError(f"mixed bits: no GEMM layer {name!r}")
    return step, t[step.inputs[0]], t[name]


def layer_sensitivity(
    model: nn.Module,
    method: str,
    cfg: AccelConfig,
    x_calib: torch.Tensor,
    choices: Sequence[int] = SUPPORTED_WEIGHT_BITS,
    per_channel: bool = False,
    calibrate: CalibSettings | None = None,
) -> dict[str, dict[int, float]]:
    """Per free layer and bit width, the relative logit MSE on ``x_calib`` with that layer
    alone quantised (``calibrate``: after that layer's own block reconstruction, its input
    in full precision)."""
    model = prepare(model)
    _, free = free_layers(model, cfg)
    modules = dict(model.named_modules())
    bad = [b for b in choices if b not in SUPPORTED_WEIGHT_BITS or b > cfg.weight_bits]
    if bad or not choices:
        raise SqaccelError(
            f"mixed bits: choices {list(choices)} must be among {SUPPORTED_WEIGHT_BITS} and at "
            f"most the array's {cfg.weight_bits} bits"
        )
    if not free:
        raise SqaccelError("mixed bits: the model has no layer between its first and last")
    seed = calibrate.seed if calibrate is not None else 0
    out: dict[str, dict[int, float]] = {}
    with deterministic(seed), torch.no_grad():
        x = x_calib.to(torch.float32)
        ref = model(x)
        norm = max(float((ref**2).mean()), 1e-30)
        for name in free:
            out[name] = {}
            for b in sorted(choices):
                qw = search_layer(modules[name].weight, method, b, cfg, per_channel)
                if calibrate is not None and calibrate.iters:
                    step, x_in, target = _block_io(model, name, x)
                    gen = torch.Generator().manual_seed(calibrate.seed)
                    with torch.enable_grad():
                        qw, _ = reconstruct_block(step, qw, x_in, target, calibrate, gen)
                z = fake_quant_model_weights(model, {name: qw})(x)
                out[name][b] = float(((z - ref) ** 2).mean()) / norm
    return out


def mixed_bits(
    model: nn.Module,
    method: str,
    cfg: AccelConfig,
    x_calib: torch.Tensor,
    average_bits: float = 3.0,
    choices: Sequence[int] = SUPPORTED_WEIGHT_BITS,
    per_channel: bool = False,
    calibrate: CalibSettings | None = None,
    sensitivity: dict[str, dict[int, float]] | None = None,
) -> BitAllocation:
    """Bits per GEMM layer within the budget of ``average_bits`` per free weight (the W3
    budget for 3.0). ``sensitivity`` (from ``layer_sensitivity``) is measured when absent."""
    model = prepare(model)
    fixed, free = free_layers(model, cfg)
    modules = dict(model.named_modules())
    weights = {n: int(modules[n].weight.numel()) for n in fixed}
    if sensitivity is None:
        sensitivity = layer_sensitivity(model, method, cfg, x_calib, choices, per_channel,
                                        calibrate)
    if sorted(sensitivity) != sorted(free):
        raise SqaccelError(
            f"mixed bits: sensitivities of {sorted(sensitivity)}, the free layers are "
            f"{sorted(free)}"
        )
    sens = {n: {b: sensitivity[n][b] for b in sorted(choices)} for n in free}
    budget = budget_for(model, cfg, average_bits)
    chosen, used, predicted = allocate(sens, weights, budget)
    bits = dict(fixed)
    bits.update(chosen)
    return BitAllocation(bits, free, weights, budget, used, sens, predicted)

