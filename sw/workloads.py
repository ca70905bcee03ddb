"""The model and the data a command works on: the digits CNN on its test split (the
offline default), or a ResNet with a user's weights file on an image folder."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from sqaccel.errors import SqaccelError
from sqaccel.sw.data import image_folder_loader, load_split, make_loader
from sqaccel.sw.models import digits_cnn, load_weights
from sqaccel.sw.resnet import ARCHS, load_resnet
from sqaccel.sw.train import load_or_train_digits

MODELS = ("digits", *ARCHS)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class Workload:
    name: str
    model: nn.Module
    loader: DataLoader
    data: str  # what the accuracy is measured on


def load_workload(
    model_name: str = "digits",
    weights: str | Path | None = None,
    data: str | Path | None = None,
    seed: int = 0,
    cache_dir: str | Path = "build/models",
    batch_size: int = 64,
    resize: int = 256,
    crop: int = 224,
    num_classes: int | None = None,
    log: Log = _stderr,
) -> Workload:
    """The model and the evaluation loader that ``sqaccel quantize`` works on."""
    if model_name == "digits":
        if data is not None:
            raise SqaccelError("--data: the digits model uses the built-in digits test split")
        split = load_split("digits", seed)
        if weights is None:
            model = load_or_train_digits(seed, cache_dir, log=log)
        else:
            model = load_weights(digits_cnn(), weights).eval()
        loader = make_loader(split.test, batch_size)
        return Workload("digits", model, loader, f"digits test split (seed {seed}, "
                        f"{len(split.test)} images)")
    if model_name not in ARCHS:
        raise SqaccelError(f"unknown model {model_name!r} (choose from {', '.join(MODELS)})")
    if weights is None:
        raise SqaccelError(f"{model_name} needs --weights FILE (torchvision state dict keys)")
    if data is None:
        raise SqaccelError(f"{model_name} needs --data DIR (an image folder, one folder per class)")
    loader = image_folder_loader(data, batch_size=batch_size, resize=resize, crop=crop)
    model = load_resnet(model_name, weights, num_classes)
    n_classes = len(loader.dataset.classes)
    if model.fc.out_features < n_classes:
        raise SqaccelError(
            f"{data}: {n_classes} class folders, but the model has {model.fc.out_features} "
            "outputs"
        )
    if model.fc.out_features != n_classes:
        log(f"note: {n_classes} class folders for {model.fc.out_features} outputs; label i is "
            "the i-th folder in sorted order, so the folders must follow the model's classes")
    return Workload(model_name, model, loader, f"{data} ({len(loader.dataset)} images)")
