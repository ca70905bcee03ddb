"""Weight quantisation of a whole model: every Conv2d / Linear through one quantiser.

The result keeps three things: a fake-quantised copy of the model (each weight replaced by
its dequantised value, biases and everything else untouched), the ``QuantizedWeight`` of
each layer (what the golden model and the memory images use) and each layer's weight MSE.
As in the SQ reference, the first and the last quantizable layer (the first convolution and
the classifier) stay 8-bit uniform per tensor by default.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sqaccel.config import UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw.models import QUANTIZABLE_TYPES, quantizable_layers
from sqaccel.sw.qweight import QuantizedWeight

EDGE_BITS = 8  # first / last layer precision when they are kept at high precision


@dataclass
class QuantizedModel:
    model: nn.Module  # fake-quantised copy
    weights: dict[str, QuantizedWeight]  # layer name -> quantised weight
    mse: dict[str, float]  # layer name -> mean squared weight error
    method: str
    bits: int
    per_channel: bool
    first_last_8bit: bool
    edge_layers: tuple[str, ...] = field(default_factory=tuple)

    def layer_bits(self) -> dict[str, int]:
        return {name: qw.bits for name, qw in self.weights.items()}


def _select_layers(
    model: nn.Module, layers: Sequence[str] | None
) -> list[tuple[str, nn.Module]]:
    if layers is None:
        return quantizable_layers(model)
    modules = dict(model.named_modules())
    chosen = []
    for name in layers:
        if name not in modules:
            raise SqaccelError(f"layer {name!r}: no such module in {type(model).__name__}")
        m = modules[name]
        if not isinstance(m, QUANTIZABLE_TYPES):
            raise SqaccelError(
                f"layer {name!r}: {type(m).__name__} is not quantizable (only Conv2d and Linear)"
            )
        chosen.append((name, m))
    if not chosen:
        raise SqaccelError(f"{type(model).__name__}: no layer selected for quantisation")
    return chosen


def quantize_model(
    model: nn.Module,
    method: str,
    bits: int,
    per_channel: bool = False,
    first_last_8bit: bool = True,
    universal: UniversalSet | None = None,
    progress: bool = True,
    layers: Sequence[str] | None = None,
) -> QuantizedModel:
    """Quantise the weights of ``layers`` (default: every Conv2d / Linear) of ``model``.

    ``model`` is not modified. With ``first_last_8bit`` the first and last of those layers
    use the 8-bit uniform per-tensor quantiser instead of ``method``.
    """
    from tqdm import tqdm

    from sqaccel.sw.quantizers import make_quantizer

    selected = _select_layers(model, layers)
    for name, m in selected:
        if not bool(torch.isfinite(m.weight).all()):
            raise SqaccelError(f"layer {name!r}: weight holds NaN or Inf")
    quantizer = make_quantizer(method, bits, per_channel=per_channel, universal=universal)
    edge = make_quantizer("uniform", EDGE_BITS, per_channel=False) if first_last_8bit else None
    edge_names = (selected[0][0], selected[-1][0]) if first_last_8bit else ()

    qmodel = copy.deepcopy(model).eval()
    qmodules = dict(qmodel.named_modules())
    weights: dict[str, QuantizedWeight] = {}
    mse: dict[str, float] = {}
    # disable=None: a bar on a terminal only, nothing in logs.
    bar = tqdm(selected, desc=f"{method} W{bits}", unit="layer", file=sys.stderr,
               disable=None if progress else True, leave=False)
    for name, m in bar:
        bar.set_postfix_str(name)
        q = edge if name in edge_names else quantizer
        w = m.weight.detach()
        try:
            qw = q.quantize(w)
        except SqaccelError as e:
            raise SqaccelError(f"layer {name!r}: {e}") from None
        dq = qw.dequantize()
        if dq.shape != w.shape:
            raise SqaccelError(
                f"layer {name!r}: {q.name} returned shape {tuple(dq.shape)} for {tuple(w.shape)}"
            )
        with torch.no_grad():
            qmodules[name].weight.copy_(dq.to(w.dtype))
        weights[name] = qw
        mse[name] = float(((w.to(torch.float64) - dq.to(torch.float64)) ** 2).mean())
    bar.close()
    return QuantizedModel(qmodel, weights, mse, method, bits, per_channel, first_last_8bit,
                          tuple(edge_names))
