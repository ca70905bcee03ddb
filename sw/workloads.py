"""The model and the data a command works on.

``--model`` names a built-in network (``sqaccel.sw.zoo``: its committed weights, or trained
again with ``--retrain``), a torchvision-style ResNet for an ImageNet image folder (with a
user's ``--weights``), or a user's model as ``path/to/file.py:function``: the function is
called with no arguments and returns an ``nn.Module``, whose weights come from
``--weights``. ``--data`` names a built-in data set (``digits``, ``mnist5k``) or a folder
(``FOLDER/calib/<class>/*`` and ``FOLDER/test/<class>/*``); a built-in network defaults to
the data set it was trained on.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader

from sqaccel.errors import SqaccelError
from sqaccel.sw.data import (
    DATASETS,
    Split,
    first_image_size,
    image_folder_loader,
    load_split,
    make_loader,
)
from sqaccel.sw.models import load_weights
from sqaccel.sw.resnet import ARCHS, load_resnet
from sqaccel.sw.zoo import ZOO, load_builtin

Log = Callable[[str], None]
USER_MODEL = "FILE.py:FUNCTION"
MODEL_HELP = (f"{', '.join(ZOO)} (built in, committed weights), {', '.join(ARCHS)} "
              f"(ImageNet: needs --weights and --data DIR), or {USER_MODEL} (a function "
              "returning an nn.Module; needs --weights and --data)")
DATA_HELP = (f"{', '.join(DATASETS)}, or a folder with calib/ and test/ image folders "
             "(one sub-folder per class); default: the data set a built-in network was "
             "trained on")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class ModelSource:
    name: str  # as the user named it
    model: nn.Module
    dataset: str | None  # the built-in data set the model was trained on, if any
    input_shape: tuple[int, int, int] | None = None  # (C, H, W), known for built-ins


def is_user_model(spec: str) -> bool:
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def _user_model(spec: str) -> nn.Module:
    """Call FUNCTION of FILE.py; every way this can fail is one error naming the file."""
    path_s, func = spec.rsplit(":", 1)
    path = Path(path_s)
    if not path.is_file():
        raise SqaccelError(f"--model {spec}: {path} not found")
    if not func.isidentifier():
        raise SqaccelError(f"--model {spec}: {func!r} is not a function name")
    mod_name = f"sqaccel_user_model_{abs(hash(str(path.resolve())))}"
    try:
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    except Exception as e:  # the user's file may raise anything while it is imported
        raise SqaccelError(f"--model {spec}: importing {path} failed "
                           f"({type(e).__name__}: {e})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise SqaccelError(f"--model {spec}: {path} defines no function {func!r}")
    try:
        model = fn()
    except Exception as e:
        raise SqaccelError(f"--model {spec}: {func}() failed ({type(e).__name__}: {e})"
                           ) from None
    if not isinstance(model, nn.Module):
        raise SqaccelError(f"--model {spec}: {func}() returned a {type(model).__name__}, "
                           "not a torch.nn.Module")
    return model


def resolve_model(spec: str, weights: str | Path | None = None, *, retrain: bool = False,
                  seed: int = 0, cache_dir: str | Path = "build/models",
                  log: Log = _stderr) -> ModelSource:
    """The model ``--model spec`` names, with its weights, in eval mode."""
    if spec in ZOO:
        if weights is not None:
            model = load_weights(ZOO[spec].build(), weights).eval()
        else:
            model = load_builtin(spec, retrain=retrain, seed=seed, cache_dir=cache_dir, log=log)
        return ModelSource(spec, model, ZOO[spec].dataset, ZOO[spec].input_shape)
    if spec in ARCHS:
        raise SqaccelError(f"--model {spec}: the ImageNet ResNets are for sqaccel quantize "
                           "(weights only); the array runs the built-in networks and "
                           f"{USER_MODEL}")
    if retrain:
        raise SqaccelError(f"--retrain: only the built-in networks ({', '.join(ZOO)}) are "
                           "trained here")
    if is_user_model(spec):
        if weights is None:
            raise SqaccelError(f"--model {spec} needs --weights FILE (.safetensors, or a "
                               ".pt/.pth state dict)")
        return ModelSource(spec, load_weights(_user_model(spec), weights).eval(), None)
    raise SqaccelError(f"--model {spec!r}: not a built-in network ({', '.join(ZOO)}) nor "
                       f"{USER_MODEL}")


def resolve_data(spec: str | Path | None, source: ModelSource, seed: int = 0) -> Split:
    """The calibration and test data of ``--data`` for ``source`` (its own data set by
    default)."""
    if spec is None:
        if source.dataset is None:
            raise SqaccelError(f"--model {source.name} needs --data ({DATA_HELP})")
        spec = source.dataset
    shape = source.input_shape
    if shape is None and not (isinstance(spec, str) and spec in DATASETS):
        shape = (_in_channels(source), *first_image_size(Path(spec)))
    split = load_split(spec, seed, shape)
    got = tuple(split.test.tensors[0].shape[1:])
    if source.input_shape is not None and got != tuple(source.input_shape):
        raise SqaccelError(f"--data {spec}: images of shape {got}, but {source.name} takes "
                           f"{tuple(source.input_shape)} (its data set is {source.dataset})")
    return split


def _in_channels(source: ModelSource) -> int:
    first = next((m for m in source.model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise SqaccelError(f"--model {source.name}: no Conv2d to take the image folder's "
                           "channel count from")
    return first.in_channels


def data_label(split: Split) -> str:
    return f"{split.name} test split (seed {split.seed}, {len(split.test)} images)"


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
    retrain: bool = False,
    log: Log = _stderr,
) -> Workload:
    """The model and the evaluation loader that ``sqaccel quantize`` works on."""
    if model_name not in ARCHS:
        source = resolve_model(model_name, weights, retrain=retrain, seed=seed,
                               cache_dir=cache_dir, log=log)
        split = resolve_data(data, source, seed)
        return Workload(model_name, source.model, make_loader(split.test, batch_size),
                        data_label(split))
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
