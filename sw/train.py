"""Deterministic training of the digits CNN, cached as safetensors.

The same seed gives bitwise the same weights: the initialisation and the batch order come
from the seed alone, training runs on one thread with deterministic algorithms, and the
previous global settings are restored afterwards. The cache file carries its recipe and a
SHA-256 in a JSON beside it; a cache whose recipe or hash does not match is retrained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from sqaccel import files
from sqaccel.sw.data import DigitsSplit, load_digits_split, make_loader
from sqaccel.sw.metrics import accuracy
from sqaccel.sw.models import digits_cnn, load_weights, save_weights


@dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 1e-4


DEFAULT_RECIPE = Recipe()


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


def train_digits(
    seed: int = 0, recipe: Recipe = DEFAULT_RECIPE, split: DigitsSplit | None = None
) -> tuple[nn.Sequential, float]:
    """Train the digits CNN from ``seed``; returns the model and its test accuracy (%)."""
    split = split or load_digits_split(seed)
    with deterministic(seed):
        model = digits_cnn()
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr,
                               weight_decay=recipe.weight_decay)
        steps = recipe.epochs * -(-len(split.train) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(recipe.epochs):
            model.train()
            for x, y in make_loader(split.train, recipe.batch_size, shuffle=True,
                                    seed=seed * 1000 + epoch):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
                sched.step()
        model.eval()
        acc = accuracy(model, make_loader(split.test))
    return model, acc


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_paths(seed: int, cache_dir: str | Path) -> tuple[Path, Path]:
    base = Path(cache_dir) / f"digits_cnn_seed{seed}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _cached(seed: int, cache_dir: str | Path, recipe: Recipe) -> nn.Sequential | None:
    weights, meta_path = cache_paths(seed, cache_dir)
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("recipe") != asdict(recipe) or meta.get("sha256") != _sha256(weights):
        return None
    return load_weights(digits_cnn(), weights).eval()


def load_or_train_digits(
    seed: int = 0, cache_dir: str | Path = "build/models", recipe: Recipe = DEFAULT_RECIPE,
    log=None,
) -> nn.Sequential:
    """The digits CNN of ``seed``: from the cache when it is valid, else trained and cached."""
    files.check_container(cache_dir, "model cache")
    model = _cached(seed, cache_dir, recipe)
    if model is not None:
        if log:
            log(f"loaded the cached digits CNN ({cache_paths(seed, cache_dir)[0]})")
        return model
    if log:
        log(f"training the digits CNN (seed {seed}, {recipe.epochs} epochs, CPU)")
    model, acc = train_digits(seed, recipe)
    weights, meta_path = cache_paths(seed, cache_dir)
    save_weights(model, weights)
    meta = {
        "model": "digits_cnn",
        "seed": seed,
        "test_accuracy": acc,
        "recipe": asdict(recipe),
        "sha256": _sha256(weights),
        "torch": torch.__version__,
    }
    files.write_json(meta_path, meta, indent=2)
    if log:
        log(f"trained: test accuracy {acc:.2f} %, cached in {weights}")
    return model
