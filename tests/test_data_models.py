"""Data sets, models, weights files and deterministic training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sqaccel.errors import SqaccelError
from sqaccel.sw.data import ImageFolderDataset, _digits_split, image_folder_loader, load_split
from sqaccel.sw.metrics import accuracy as evaluate
from sqaccel.sw.models import digits_cnn, load_weights, quantizable_layers, save_weights
from sqaccel.sw.resnet import load_resnet, resnet
from sqaccel.sw.train import Recipe, cache_paths, load_or_train_digits, train_digits


def write_image_folder(root, classes=2, per_class=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"img{i}.png")
    return root


# -- digits ------------------------------------------------------------------------------


def test_digits_split_is_deterministic_stratified_and_scaled():
    a, b, c = load_split("digits", 0), load_split("digits", 0), load_split("digits", 1)
    assert a.sizes() == {"train": 1077, "calib": 180, "test": 540}
    for part in ("train", "calib", "test"):
        xa, ya = getattr(a, part).tensors
        xb, yb = getattr(b, part).tensors
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and xa.shape[1:] == (1, 8, 8)
        assert float(xa.min()) == 0.0 and float(xa.max()) == 1.0
        assert set(ya.tolist()) == set(range(10))  # every class in every part
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    # The three parts are disjoint and cover the whole set.
    rows = torch.cat([a.train.tensors[0], a.calib.tensors[0], a.test.tensors[0]]).reshape(-1, 64)
    assert len(rows) == 1797


def test_digits_split_rejects_bad_fractions():
    with pytest.raises(SqaccelError, match="fractions"):
        _digits_split(0, calib_fraction=0.5, test_fraction=0.6)


def test_digits_cnn_is_a_lowerable_sequential():
    model = digits_cnn()
    assert isinstance(model, nn.Sequential)
    allowed = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear)
    assert all(isinstance(m, allowed) for m in model)
    for _, m in quantizable_layers(model):
        k = m.weight[0].numel()  # GEMM K: in_channels * kh * kw, or in_features
        assert k <= 1024
    assert [n for n, _ in quantizable_layers(model)] == ["0", "2", "5", "9", "11"]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_quantizable_layers_refuses_a_model_without_any():
    with pytest.raises(SqaccelError, match="no quantizable layer"):
        quantizable_layers(nn.Sequential(nn.ReLU(), nn.Flatten()))


@pytest.fixture(scope="module")
def cached_model(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    return load_or_train_digits(0, cache), cache


def test_trained_model_is_accurate_and_cached(cached_model):
    model, cache = cached_model
    weights, meta_path = cache_paths(0, cache)
    meta = json.loads(meta_path.read_text())
    acc = evaluate(model, torch.utils.data.DataLoader(load_split("digits", 0).test, batch_size=100))
    assert acc == meta["test_accuracy"]
    assert acc >= 95.0
    assert not list(cache.glob("*.tmp"))
    # A second call loads the cache instead of training: same file, same tensors.
    mtime = weights.stat().st_mtime_ns
    again = load_or_train_digits(0, cache)
    assert weights.stat().st_mtime_ns == mtime
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_corrupt_or_stale_cache_is_retrained(tmp_path):
    recipe = Recipe(epochs=1)
    model = load_or_train_digits(0, tmp_path, recipe)
    weights, meta_path = cache_paths(0, tmp_path)
    good = weights.read_bytes()
    weights.write_bytes(good[:-4] + b"\0\0\0\0")  # the hash no longer matches
    fresh = load_or_train_digits(0, tmp_path, recipe)
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert weights.read_bytes() == good
    # A cache made by another recipe is not used for this one.
    other = load_or_train_digits(0, tmp_path, Recipe(epochs=2))
    assert not torch.equal(other[0].weight, model[0].weight)
    assert json.loads(meta_path.read_text())["recipe"]["epochs"] == 2


def test_same_seed_trains_bitwise_identical_weights():
    recipe = Recipe(epochs=2)
    a, _ = train_digits(3, recipe)
    b, _ = train_digits(3, recipe)
    c, _ = train_digits(4, recipe)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_restores_global_torch_settings():
    threads = torch.get_num_threads()
    train_digits(0, Recipe(epochs=1))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


# -- weights files -------------------------------------------------------------------------


def test_weights_round_trip_safetensors_and_pt(tmp_path):
    torch.manual_seed(0)
    src = digits_cnn()
    save_weights(src, tmp_path / "m.safetensors")
    torch.save(src.state_dict(), tmp_path / "m.pt")
    for name in ("m.safetensors", "m.pt"):
        dst = load_weights(digits_cnn(), tmp_path / name)
        assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())


def test_bad_weights_files(tmp_path):
    with pytest.raises(SqaccelError, match="weights file not found"):
        load_weights(digits_cnn(), tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(SqaccelError, match="not a readable safetensors"):
        load_weights(digits_cnn(), tmp_path / "bad.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(SqaccelError, match="unknown weights format"):
        load_weights(digits_cnn(), tmp_path / "w.npz")
    small = nn.Sequential(nn.Linear(4, 2))
    save_weights(small, tmp_path / "small.safetensors")
    with pytest.raises(SqaccelError, match="keys do not match"):
        load_weights(digits_cnn(), tmp_path / "small.safetensors")
    nan = digits_cnn()
    with torch.no_grad():
        nan[0].weight[0, 0, 0, 0] = float("nan")
    save_weights(nan, tmp_path / "nan.safetensors")
    with pytest.raises(SqaccelError, match="0.weight holds NaN"):
        load_weights(digits_cnn(), tmp_path / "nan.safetensors")


# -- ResNet --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, params, keys",
    [("resnet18", 11_689_512, 122), ("resnet34", 21_797_672, 218),
     ("resnet50", 25_557_032, 320)],
)
def test_resnets_have_torchvisions_sizes_and_keys(arch, params, keys):
    model = resnet(arch)
    assert sum(p.numel() for p in model.parameters()) == params
    state = model.state_dict()
    assert len(state) == keys
    for k in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "layer4.1.conv2.weight", "fc.bias"):
        assert k in state


def test_load_resnet_takes_num_classes_from_the_weights(tmp_path):
    torch.manual_seed(0)
    src = resnet("resnet18", num_classes=3)
    save_weights(src, tmp_path / "r.safetensors")
    model = load_resnet("resnet18", tmp_path / "r.safetensors")
    assert model.fc.out_features == 3 and not model.training
    assert torch.equal(model.layer3[1].conv1.weight, src.layer3[1].conv1.weight)
    with pytest.raises(SqaccelError, match="fc.weight has shape"):
        load_resnet("resnet18", tmp_path / "r.safetensors", num_classes=5)
    with pytest.raises(SqaccelError, match="keys do not match"):
        load_resnet("resnet34", tmp_path / "r.safetensors")
    with pytest.raises(SqaccelError, match="unknown architecture"):
        resnet("resnet101")


# -- image folders -------------------------------------------------------------------------


def test_image_folder_reads_resizes_and_normalises(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=2, per_class=3, size=40)
    Image.new("L", (20, 30), 128).save(root / "class1" / "grey.jpg")  # grey, not square
    loader = image_folder_loader(root, batch_size=4, resize=36, crop=32)
    ds = loader.dataset
    assert ds.classes == ["class0", "class1"] and len(ds) == 7
    labels = []
    for x, y in loader:
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        labels += y.tolist()
    assert labels == [0, 0, 0, 1, 1, 1, 1]
    grey, _ = ds[[p.name for p, _ in ds.samples].index("grey.jpg")]
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    assert torch.allclose(grey.mean(dim=(1, 2)), expected, atol=2e-2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(SqaccelError, match="data folder not found"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SqaccelError, match="no class folders"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(SqaccelError, match="no images"):
        ImageFolderDataset(tmp_path / "noimg")
    root = write_image_folder(tmp_path / "broken", classes=1, per_class=1)
    (root / "class0" / "zz.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(root, resize=32, crop=32)
    with pytest.raises(SqaccelError, match=r"zz\.png: cannot read the image"):
        ds[1]
