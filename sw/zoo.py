"""The built-in networks: each with its data set, input shape, training recipe and trained
weights committed in ``sw/weights`` (seed 0).

``sw/weights/manifest.json`` records, for each network, its weights file's SHA-256 and the
test accuracy the training measured; ``load_builtin`` checks the hash before it loads a file,
so damaged or swapped weights are refused instead of silently giving other figures.
``python -m sqaccel.sw.zoo NAME...`` retrains networks from seed 0 and rewrites their files
and records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from sqaccel import files
from sqaccel.errors import SqaccelError
from sqaccel.sw.models import digits_cnn, load_weights, save_weights
from sqaccel.sw.nets import mobilenetv2_tiny, resnet20
from sqaccel.sw.train import DEFAULT_RECIPE, Recipe, load_or_train, train

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class ZooEntry:
    """A built-in network: ``build()`` gives it untrained; ``dataset`` names its data
    (``sqaccel.sw.data.DATASETS``); ``input_shape`` is (channels, height, width)."""

    name: str
    build: Callable[[], nn.Module]
    dataset: str
    input_shape: tuple[int, int, int]
    recipe: Recipe


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("digits", digits_cnn, "digits", (1, 8, 8), DEFAULT_RECIPE),
        ZooEntry("resnet20", resnet20, "mnist5k", (1, 28, 28),
                 Recipe(epochs=20, batch_size=64, lr=3e-3, weight_decay=5e-4, shift=2)),
        ZooEntry("mobilenetv2-tiny", mobilenetv2_tiny, "mnist5k", (1, 28, 28),
                 Recipe(epochs=20, batch_size=64, lr=5e-3, weight_decay=1e-4, shift=2)),
    )
}


def entry(name: str) -> ZooEntry:
    """The registry entry of a built-in network; an unknown name is an error."""
    if name not in ZOO:
        raise SqaccelError(f"unknown built-in network {name!r} (choose from {', '.join(ZOO)})")
    return ZOO[name]


def _cache_name(name: str) -> str:
    # The digits CNN keeps the cache file name load_or_train_digits has always used.
    return "digits_cnn" if name == "digits" else name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(weights_dir: Path | None = None) -> dict[str, dict]:
    """The records of the committed weights: {name: {file, sha256, test_accuracy, ...}}."""
    path = (weights_dir or WEIGHTS_DIR) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SqaccelError(f"{path}: the built-in weights' manifest is missing") from None
    except (OSError, json.JSONDecodeError) as e:
        raise SqaccelError(f"{path}: not a readable JSON manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise SqaccelError(f"{path}: not a manifest (expected an object of records)")
    return manifest


def verified_weights(name: str, weights_dir: Path | None = None) -> Path:
    """The committed weights file of ``name`` after its SHA-256 matched the manifest's."""
    weights_dir = weights_dir or WEIGHTS_DIR
    record = read_manifest(weights_dir).get(entry(name).name)
    if not isinstance(record, dict) or "sha256" not in record:
        raise SqaccelError(f"{weights_dir / MANIFEST}: no record of {name!r}")
    path = weights_dir / f"{name}.safetensors"
    if not path.is_file():
        raise SqaccelError(f"{path}: built-in weights file not found")
    actual = sha256(path)
    if actual != record["sha256"]:
        raise SqaccelError(f"{path}: SHA-256 {actual[:16]}... does not match the recorded "
                           f"{record['sha256'][:16]}...; the file is damaged or was changed "
                           "(retrain it with retrain=True)")
    return path


def load_builtin(
    name: str, *, retrain: bool = False, seed: int = 0, cache_dir: str | Path = "build/models",
    log: Log | None = None,
) -> nn.Module:
    """A built-in network in eval mode: seed 0 from its committed, hash-checked weights;
    another seed from ``cache_dir`` (trained there when not cached); ``retrain=True``
    trains it again into ``cache_dir`` whatever is there."""
    e = entry(name)
    if retrain or seed != 0:
        return load_or_train(e.build, e.dataset, _cache_name(name), seed, cache_dir, e.recipe,
                             log, retrain=retrain)
    path = verified_weights(name, WEIGHTS_DIR)
    if log:
        log(f"loaded the built-in {name} ({path})")
    return load_weights(e.build(), path).eval()


def weights_path(name: str, seed: int = 0, cache_dir: str | Path = "build/models") -> Path:
    """The weights file ``load_builtin(name, seed=seed, cache_dir=cache_dir)`` reads: the
    committed one for seed 0, the cached training of another seed."""
    from sqaccel.sw.train import cache_paths

    if seed == 0:
        return WEIGHTS_DIR / f"{entry(name).name}.safetensors"
    return cache_paths(seed, cache_dir, _cache_name(name))[0]


def publish(name: str, weights_dir: Path | None = None, log: Log | None = None) -> dict:
    """Train ``name`` from seed 0 and write its weights and its manifest record."""
    weights_dir = weights_dir or WEIGHTS_DIR
    e = entry(name)
    if log:
        log(f"training {name} on {e.dataset} ({e.recipe})")
    start = time.monotonic()
    model, acc = train(e, seed=0)
    seconds = time.monotonic() - start
    path = save_weights(model, weights_dir / f"{name}.safetensors")
    record = {
        "file": path.name,
        "sha256": sha256(path),
        "dataset": e.dataset,
        "seed": 0,
        "test_accuracy": acc,
        "recipe": asdict(e.recipe),
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    manifest_path = weights_dir / MANIFEST
    manifest = read_manifest(weights_dir) if manifest_path.is_file() else {}
    manifest[name] = record
    files.write_json(manifest_path, dict(sorted(manifest.items())), indent=2)
    if log:
        log(f"{name}: test accuracy {acc:.2f} % in {seconds:.0f} s, {path}")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqaccel.sw.zoo",
                                     description="Retrain built-in networks (seed 0) and "
                                     "rewrite their committed weights and records.")
    parser.add_argument("names", nargs="+", choices=list(ZOO))
    args = parser.parse_args(argv)
    for name in args.names:
        publish(name, log=print)


if __name__ == "__main__":
    main()
