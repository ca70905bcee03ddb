"""The built-in data sets and networks: the mnist5k split, the digits split as it always was,
the committed weights (hash-checked, their accuracy as recorded), the networks through the
front end and onto the default array, and the calib/test image-folder layout."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw import zoo
from sqaccel.sw.data import DATASETS, Split, eval_data, load_split
from sqaccel.sw.lowering import check_fits
from sqaccel.sw.plan import plan
from sqaccel.sw.train import Recipe, fit, split_accuracy

# SHA-256 of the digits split's tensors (train, calib, test; x then y) as the code before
# the mnist5k data set made them, for seeds 0 and 1: the split must not move.
DIGITS_SPLIT_SHA256 = {
    0: "e53e23186ca12a812a293a3a307f308b41a68e62598462b5de590dfae921fe0a",
    1: "842959547b5ebbf2686072370372ff169231ebae8853c6922c00e081c3fdf928",
}
# What load_or_train_digits(0, ...) wrote before the zoo existed; the committed file is it.
DIGITS_SEED0_WEIGHTS_SHA256 = "3472ad5b53182d537df887b94c0b8d426ca35e4cac72e25ab3a798e9c3c0cfcf"


def split_digest(split: Split) -> str:
    d = hashlib.sha256()
    for part in ("train", "calib", "test"):
        for t in getattr(split, part).tensors:
            d.update(t.contiguous().numpy().tobytes())
    return d.hexdigest()


@pytest.fixture(scope="module")
def mnist() -> Split:
    return load_split("mnist5k", 0)


# -- data sets -------------------------------------------------------------------------------


def test_mnist5k_split_sizes_balance_and_scale(mnist):
    assert DATASETS == ("digits", "mnist5k")
    assert mnist.name == "mnist5k" and mnist.seed == 0
    assert mnist.sizes() == {"train": 3500, "calib": 500, "test": 1000}
    for part, per_class in (("train", 350), ("calib", 50), ("test", 100)):
        x, y = getattr(mnist, part).tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10


def test_mnist5k_split_is_deterministic_and_disjoint(mnist):
    again, other = load_split("mnist5k", 0), load_split("mnist5k", 1)
    assert split_digest(again) == split_digest(mnist)
    assert not torch.equal(other.test.tensors[0], mnist.test.tensors[0])
    rows = torch.cat([mnist.train.tensors[0], mnist.calib.tensors[0], mnist.test.tensors[0]])
    # The three parts together hold each of the 5,000 distinct images exactly once.
    assert len(torch.unique(rows.reshape(len(rows), -1), dim=0)) == 5000


def test_digits_split_is_unchanged():
    for seed, digest in DIGITS_SPLIT_SHA256.items():
        split = load_split("digits", seed)
        assert split.name == "digits" and split.seed == seed
        assert split_digest(split) == digest
    x_cal, (x_test, y_test) = eval_data("digits", calib_samples=100)
    split = load_split("digits", 0)
    assert torch.equal(x_cal, split.calib.tensors[0][:100])
    assert torch.equal(x_test, split.test.tensors[0]) and torch.equal(y_test, split.test.tensors[1])


def test_unknown_data_set_is_refused(tmp_path):
    with pytest.raises(SqaccelError, match=r"'cifar10': neither a built-in data set"):
        load_split("cifar10")
    with pytest.raises(SqaccelError, match="needs the model's input shape"):
        load_split(tmp_path)


# -- calib/test image folders ----------------------------------------------------------------


def write_folder(root, parts=("calib", "test"), classes=("a", "b"), per_class=2):
    rng = np.random.default_rng(0)
    for part in parts:
        for c in classes:
            (root / part / c).mkdir(parents=True)
            for i in range(per_class):
                # Colour and grey images of other sizes: converted and resized on reading.
                if i % 2:
                    arr = rng.integers(0, 256, (40, 30), dtype=np.uint8)
                else:
                    arr = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")
    return root


def test_image_folder_split_reads_as_the_model_input(tmp_path):
    root = write_folder(tmp_path / "data")
    Image.new("L", (28, 28), 255).save(root / "test" / "b" / "white.png")
    split = load_split(root, input_shape=(1, 28, 28))
    assert split.sizes() == {"train": 0, "calib": 4, "test": 5}
    x, y = split.test.tensors
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 1, 1, 1]  # classes in sorted folder order
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x[-1], torch.ones(1, 28, 28))
    colour = load_split(root, input_shape=(3, 8, 8))
    assert colour.calib.tensors[0].shape == (4, 3, 8, 8)


def test_image_folder_split_errors(tmp_path):
    only_calib = write_folder(tmp_path / "c", parts=("calib",))
    with pytest.raises(SqaccelError, match=r"test: missing sub-folder"):
        load_split(only_calib, input_shape=(1, 28, 28))
    empty = write_folder(tmp_path / "e")
    (empty / "test" / "c").mkdir()
    (empty / "calib" / "c").mkdir()
    (empty / "calib" / "c" / "notes.txt").write_text("x")
    with pytest.raises(SqaccelError, match=r"calib: no images in class folder\(s\) c"):
        load_split(empty, input_shape=(1, 28, 28))
    differ = write_folder(tmp_path / "d")
    shutil.rmtree(differ / "test" / "b")
    with pytest.raises(SqaccelError, match=r"class folders differ \(only in calib: \['b'\]"):
        load_split(differ, input_shape=(1, 28, 28))
    with pytest.raises(SqaccelError, match="input shape"):
        load_split(write_folder(tmp_path / "s"), input_shape=(2, 28, 28))


# -- the networks and their weights ---------------------------------------------------------


def test_registry():
    assert list(zoo.ZOO) == ["digits", "resnet20", "mobilenetv2-tiny"]
    for name, e in zoo.ZOO.items():
        assert e.name == name and e.dataset in DATASETS
    assert zoo.ZOO["resnet20"].input_shape == (1, 28, 28)
    with pytest.raises(SqaccelError, match="unknown built-in network 'vgg'"):
        zoo.load_builtin("vgg")


def test_committed_weights_match_their_recorded_hashes():
    manifest = zoo.read_manifest()
    assert set(manifest) == set(zoo.ZOO)
    for name in zoo.ZOO:
        path = zoo.verified_weights(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest[name]["sha256"]
    assert manifest["digits"]["sha256"] == DIGITS_SEED0_WEIGHTS_SHA256


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_network_accuracy_is_the_recorded_one_and_it_maps(name):
    e = zoo.ZOO[name]
    model = zoo.load_builtin(name)
    assert not model.training
    acc = split_accuracy(model, load_split(e.dataset, 0))
    assert acc == zoo.read_manifest()[name]["test_accuracy"]
    assert acc >= (97.5 if e.dataset == "mnist5k" else 95.0)
    assert model(torch.zeros(2, *e.input_shape)).shape == (2, 10)
    assert plan(model).gemms()
    check_fits(model, AccelConfig())


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    for f in zoo.WEIGHTS_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "resnet20.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one weight: still a readable file, not the trained one
    path.write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(SqaccelError, match=r"resnet20\.safetensors: SHA-256 .* does not match"):
        zoo.load_builtin("resnet20")
    zoo.load_builtin("mobilenetv2-tiny")  # the others still load
    path.unlink()
    with pytest.raises(SqaccelError, match=r"resnet20\.safetensors: built-in weights file not"):
        zoo.load_builtin("resnet20")


def test_training_is_deterministic_with_augmentation(mnist):
    x, y = mnist.train.tensors
    small = Split(TensorDataset(x[:96], y[:96]), mnist.calib, TensorDataset(x[:8], y[:8]),
                  "mnist5k", 0)
    recipe = Recipe(epochs=1, batch_size=32, shift=2)
    (a, _), (b, _) = (fit(zoo.ZOO["mobilenetv2-tiny"].build, small, 0, recipe)
                      for _ in range(2))
    c, _ = fit(zoo.ZOO["mobilenetv2-tiny"].build, small, 0, Recipe(epochs=1, batch_size=32))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # the shifts did change training


def test_retrain_and_other_seeds_go_through_the_cache(tmp_path, monkeypatch):
    # One epoch instead of the digits recipe's 30: the path is the point, not the accuracy.
    quick = dataclasses.replace(zoo.ZOO["digits"], recipe=Recipe(epochs=1))
    monkeypatch.setitem(zoo.ZOO, "digits", quick)
    messages: list[str] = []
    retrained = zoo.load_builtin("digits", retrain=True, cache_dir=tmp_path, log=messages.append)
    weights = tmp_path / "digits_cnn_seed0.safetensors"
    assert weights.is_file() and messages[0].startswith("training")
    committed = zoo.load_builtin("digits")  # seed 0 without retrain: the committed file
    assert not torch.equal(retrained[0].weight, committed[0].weight)
    other = zoo.load_builtin("digits", seed=1, cache_dir=tmp_path)
    mtime = (tmp_path / "digits_cnn_seed1.safetensors").stat().st_mtime_ns
    again = zoo.load_builtin("digits", seed=1, cache_dir=tmp_path, log=messages.append)
    assert messages[-1].startswith("loaded the cached")
    assert (tmp_path / "digits_cnn_seed1.safetensors").stat().st_mtime_ns == mtime
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in other.state_dict().items())
