"""Accuracy and logit error: the one place the toolchain measures a model.

``accuracy`` takes a float model or an integer network (anything with ``predict``) and data
as a loader or an (inputs, labels) pair; ``top1`` and ``logit_error`` are the formulas.
"""

from __future__ import annotations

import torch
from torch import nn

from sqaccel.errors import SqaccelError


def top1(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of predicted classes against labels."""
    pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
    if labels.numel() == 0:
        raise SqaccelError("accuracy: the evaluation data is empty")
    if pred.shape != labels.shape:
        raise SqaccelError(f"accuracy: {tuple(pred.shape)} predictions for "
                           f"{tuple(labels.shape)} labels")
    return 100.0 * float((pred == labels).double().mean())


def _batches(data):
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [tuple(data)]
    return data  # a DataLoader (or any iterable of (x, y) batches)


def predict(model, x: torch.Tensor) -> torch.Tensor:
    """Classes of float inputs ``x``: a float model's argmax (first on a tie), or an integer
    network's own classification."""
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model.eval()(x).argmax(dim=1)
    return model.predict(model.quantize_input(x))


def accuracy(model, data) -> float:
    """Top-1 accuracy in percent of ``model`` (float model or integer network) on ``data``:
    a loader of (x, y) batches or one (x, y) pair."""
    preds, labels = [], []
    for x, y in _batches(data):
        preds.append(predict(model, x))
        labels.append(torch.as_tensor(y))
    if not labels:
        raise SqaccelError("accuracy: the evaluation data is empty")
    return top1(torch.cat(preds), torch.cat(labels))


def logit_error(real: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared error of real logits against reference logits, relative to the
    reference's mean square."""
    real, ref = real.to(torch.float64), reference.to(torch.float64)
    return float(((real - ref) ** 2).mean() / (ref**2).mean())
