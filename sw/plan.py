"""The layer structure of a model the array can run: its steps in network order.

A step is a GEMM (Conv2d or Linear, with the ReLU that follows it fused in), or one of the
steps that run between GEMMs (ReLU, max and average pooling, flatten). Calibration, the
fake-quantised model and the lowering to the integer network all walk this one plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sqaccel.errors import SqaccelError

_NO_OPS = (nn.Identity, nn.Dropout)
_KNOWN = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
          nn.Flatten)
_SUPPORTED = "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout"


@dataclass(frozen=True)
class PlanStep:
    """One step of a network: kind in gemm, relu, maxpool, avgpool, flatten."""

    kind: str
    name: str
    module: nn.Module
    relu: str | None = None  # gemm: the name of the ReLU fused into it, None for raw output


def _leaves(model: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            out += _leaves(m, full + ".")
        else:
            out.append((full, m))
    return out


def sequential_plan(model: nn.Module) -> list[PlanStep]:
    """The steps of an ``nn.Sequential`` (nested ones flattened, names as ``named_modules``).

    A Conv2d/Linear must be followed by a ReLU, which is fused into it, unless it is the
    last step: its output is then the raw accumulator (the logits).
    """
    if not isinstance(model, nn.Sequential):
        raise SqaccelError(
            f"model: a {type(model).__name__} is not an nn.Sequential; only sequential "
            "networks can be lowered to the array"
        )
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, _NO_OPS)]
    for name, m in leaves:
        if not isinstance(m, _KNOWN):
            raise SqaccelError(
                f"layer {name!r}: {type(m).__name__} is not supported (supported: {_SUPPORTED}"
                "; fold batch norm into the convolution first)"
            )
    steps: list[PlanStep] = []
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        if isinstance(m, nn.Conv2d | nn.Linear):
            nxt = leaves[i + 1] if i + 1 < len(leaves) else None
            if nxt is not None and isinstance(nxt[1], nn.ReLU):
                steps.append(PlanStep("gemm", name, m, relu=nxt[0]))
                i += 2
                continue
            if nxt is not None:
                raise SqaccelError(
                    f"layer {name!r} ({type(m).__name__}): must be followed by ReLU or be the "
                    f"network's last layer, found {type(nxt[1]).__name__} {nxt[0]!r}"
                )
            steps.append(PlanStep("gemm", name, m))
        elif isinstance(m, nn.ReLU):
            steps.append(PlanStep("relu", name, m))
        elif isinstance(m, nn.MaxPool2d):
            steps.append(PlanStep("maxpool", name, m))
        elif isinstance(m, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            steps.append(PlanStep("avgpool", name, m))
        else:
            steps.append(PlanStep("flatten", name, m))
        i += 1
    if not any(s.kind == "gemm" for s in steps):
        raise SqaccelError("model: no Conv2d or Linear layer to run on the array")
    return steps
