"""Deterministic training of the digits CNN and the built-in networks, cached as
safetensors.

The same seed gives bitwise the same weights: the initialisation and the batch order come
from the seed alone, training runs on one thread with deterministic algorithms, and the
previous global settings are restored afterwards. The cache file carries its recipe and a
SHA-256 in a JSON beside it; a cache whose recipe or hash does not match is retrained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from sqaccel import files
from sqaccel.errors import SqaccelError
from sqaccel.sw.data import Split, load_split, make_loader
from sqaccel.sw.metrics import accuracy
from sqaccel.sw.models import digits_cnn, load_weights, save_weights

AUG_SEED = 1 << 20  # the augmentation generators' seeds lie apart from the loaders'


@dataclass(frozen=True)
class Recipe:
    """Adam with a one-cycle learning rate; ``shift`` > 0 adds random translations of up to
    that many pixels to the training images (0: the images as they are)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 1e-4
    shift: int = 0


DEFAULT_RECIPE = Recipe()


class Trainable(Protocol):
    """What ``train`` needs of a network (``sqaccel.sw.zoo.ZooEntry`` is one)."""

    name: str
    build: Callable[[], nn.Module]
    dataset: str
    recipe: Recipe


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded, single-threaded, deterministic torch; the global settings come back after."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        torch.set_rng_state(rng)


def _shifted(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by a random (dy, dx) in [-shift, shift], zeros coming in."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w]
                        for i, (dy, dx) in enumerate(offsets)])


def fit(
    build: Callable[[], nn.Module], split: Split, seed: int = 0,
    recipe: Recipe = DEFAULT_RECIPE,
) -> tuple[nn.Module, float]:
    """Train ``build()`` on ``split.train`` from ``seed``; the model (eval mode) and its test
    accuracy (%)."""
    if len(split.train) == 0:
        raise SqaccelError(f"data {split.name!r}: no training images")
    with deterministic(seed):
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr,
                               weight_decay=recipe.weight_decay)
        steps = recipe.epochs * -(-len(split.train) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(recipe.epochs):
            model.train()
            # A generator of its own, so the augmentation leaves the global stream (the
            # initialisation and anything after it) as it is without augmentation.
            aug = torch.Generator().manual_seed(AUG_SEED + seed * 1000 + epoch)
            for x, y in make_loader(split.train, recipe.batch_size, shuffle=True,
                                    seed=seed * 1000 + epoch):
                if recipe.shift:
                    x = _shifted(x, recipe.shift, aug)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
                sched.step()
        model.eval()
        acc = split_accuracy(model, split)
    return model, acc


def split_accuracy(model: nn.Module, split: Split) -> float:
    """The model's top-1 accuracy (%) on ``split.test``, one-threaded and in fixed batches,
    so that it is the same figure wherever it is measured."""
    with deterministic(0):
        return accuracy(model, make_loader(split.test))


def train(
    entry: Trainable, seed: int = 0, recipe: Recipe | None = None
) -> tuple[nn.Module, float]:
    """Train a network on its data set's split of ``seed``; the model and its test accuracy."""
    return fit(entry.build, load_split(entry.dataset, seed), seed, recipe or entry.recipe)


def train_digits(
    seed: int = 0, recipe: Recipe = DEFAULT_RECIPE, split: Split | None = None
) -> tuple[nn.Sequential, float]:
    """Train the digits CNN from ``seed``; returns the model and its test accuracy (%)."""
    return fit(digits_cnn, split or load_split("digits", seed), seed, recipe)


def _recipe_record(recipe: Recipe) -> dict:
    """The recipe as a cache records it; without augmentation, without the ``shift`` key,
    so caches written before augmentation existed stay valid."""
    record = asdict(recipe)
    if not recipe.shift:
        del record["shift"]
    return record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_paths(
    seed: int, cache_dir: str | Path, model: str = "digits_cnn"
) -> tuple[Path, Path]:
    """The weights file and its JSON record of ``model`` trained from ``seed``."""
    base = Path(cache_dir) / f"{model}_seed{seed}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _cached(
    build: Callable[[], nn.Module], model: str, seed: int, cache_dir: str | Path,
    recipe: Recipe,
) -> nn.Module | None:
    weights, meta_path = cache_paths(seed, cache_dir, model)
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("recipe") != _recipe_record(recipe) or meta.get("sha256") != _sha256(weights):
        return None
    return load_weights(build(), weights).eval()


def load_or_train(
    build: Callable[[], nn.Module], dataset: str, model: str, seed: int = 0,
    cache_dir: str | Path = "build/models", recipe: Recipe = DEFAULT_RECIPE,
    log: Callable[[str], None] | None = None, retrain: bool = False, label: str | None = None,
) -> nn.Module:
    """``model`` (a cache name) of ``seed``: from the cache when it is valid and ``retrain``
    is not asked for, else trained on ``dataset`` and cached; ``label`` names it in the
    log."""
    label = label or f"{model} network ({dataset})"
    files.check_container(cache_dir, "model cache")
    weights, meta_path = cache_paths(seed, cache_dir, model)
    with files.exclusive(weights):  # one process trains; the others then load its weights
        cached = None if retrain else _cached(build, model, seed, cache_dir, recipe)
        if cached is not None:
            if log:
                log(f"loaded the cached {label} ({weights})")
            return cached
        if log:
            log(f"training the {label} (seed {seed}, {recipe.epochs} epochs, CPU)")
        net, acc = fit(build, load_split(dataset, seed), seed, recipe)
        save_weights(net, weights)
        meta = {
            "model": model,
            "seed": seed,
            "test_accuracy": acc,
            "recipe": _recipe_record(recipe),
            "sha256": _sha256(weights),
            "torch": torch.__version__,
        }
        files.write_json(meta_path, meta, indent=2)
    if log:
        log(f"trained: test accuracy {acc:.2f} %, cached in {weights}")
    return net


def load_or_train_digits(
    seed: int = 0, cache_dir: str | Path = "build/models", recipe: Recipe = DEFAULT_RECIPE,
    log=None,
) -> nn.Sequential:
    """The digits CNN of ``seed``: from the cache when it is valid, else trained and cached."""
    return load_or_train(digits_cnn, "digits", "digits_cnn", seed, cache_dir, recipe, log,
                         label="digits CNN")
