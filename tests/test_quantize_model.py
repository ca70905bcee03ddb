"""Whole-model weight quantisation, the ``quantize`` command and the ResNet / image-folder path."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sqaccel.cli import main
from sqaccel.errors import SqaccelError
from sqaccel.sw.data import image_folder_loader, load_split, make_loader
from sqaccel.sw.metrics import accuracy as evaluate
from sqaccel.sw.models import quantizable_layers, save_weights
from sqaccel.sw.quantize_model import EDGE_BITS, quantize_model
from sqaccel.sw.quantizers import (
    METHODS,
    apot_magnitudes,
    pot_magnitudes,
    uniform_magnitudes,
)
from sqaccel.sw.resnet import load_resnet, resnet
from sqaccel.sw.train import load_or_train_digits


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def digits(cache_dir):
    model = load_or_train_digits(0, cache_dir)
    return model, make_loader(load_split("digits", 0).test)


def tables_of(qw, dq):
    """The groups of weights that share one set of levels: channels, or the whole tensor."""
    flat = dq.reshape(dq.shape[0], -1)
    return list(flat) if qw.per_channel else [flat.reshape(-1)]


def check_on_levels(name, qw, w, dq):
    assert dq.shape == w.shape
    assert torch.equal(dq, qw.dequantize())
    for group in tables_of(qw, dq):
        # b-bit codes give at most 2**b distinct values per table.
        assert len(torch.unique(group)) <= 1 << qw.bits, name
    grid = {"uniform": uniform_magnitudes, "pot": pot_magnitudes, "apot": apot_magnitudes}
    if qw.method in grid:
        allowed = torch.tensor(grid[qw.method](qw.bits))
        assert torch.isin(qw.w_int.abs(), allowed).all(), name
    if qw.method == "sq":
        ints = torch.tensor(qw.universal.int_magnitudes)
        table_of = range(qw.out_channels) if qw.per_channel else [0] * qw.out_channels
        for c, t in enumerate(table_of):
            allowed = ints[list(qw.subsets[t])]
            assert len(allowed) == 1 << (qw.bits - 1)
            assert torch.isin(qw.w_int[c].abs(), allowed).all(), name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [4, 3, 2])
def test_each_method_puts_weights_on_its_levels(digits, method, bits):
    model, _ = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = quantize_model(model, method, bits, progress=False)
    names = [n for n, _ in quantizable_layers(model)]
    assert list(qm.weights) == names and list(qm.mse) == names
    assert qm.edge_layers == (names[0], names[-1])
    qmods = dict(qm.model.named_modules())
    for name, m in quantizable_layers(model):
        qw = qm.weights[name]
        if name in qm.edge_layers:
            assert (qw.method, qw.bits, qw.per_channel) == ("uniform", EDGE_BITS, False)
        else:
            assert (qw.method, qw.bits) == (method, bits)
        w, dq = m.weight.detach(), qmods[name].weight.detach()
        check_on_levels(name, qw, w, dq)
        assert qm.mse[name] == pytest.approx(float(((w - dq) ** 2).mean()), rel=1e-5)
        assert qm.mse[name] > 0
        assert torch.equal(qmods[name].bias, m.bias)  # biases stay in floating point
    # The model it was given is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("method", ["uniform", "sq"])
def test_per_channel_and_every_layer_at_low_precision(digits, method):
    model, _ = digits
    qm = quantize_model(model, method, 3, per_channel=True, first_last_8bit=False,
                        progress=False)
    assert qm.edge_layers == ()
    qmods = dict(qm.model.named_modules())
    for name, m in quantizable_layers(model):
        qw = qm.weights[name]
        assert (qw.method, qw.bits, qw.per_channel) == (method, 3, True)
        check_on_levels(name, qw, m.weight.detach(), qmods[name].weight.detach())


def test_accuracy_full_precision_and_8bit(digits):
    model, loader = digits
    fp = evaluate(model, loader)
    assert fp >= 95.0
    q8 = evaluate(quantize_model(model, "uniform", 8, progress=False).model, loader)
    assert abs(q8 - fp) <= 0.5
    # Two-bit per-tensor weights everywhere cost accuracy: the comparison above can fail.
    q2 = evaluate(quantize_model(model, "uniform", 2, first_last_8bit=False,
                                 progress=False).model, loader)
    assert q2 < fp - 0.5


def test_bad_models_are_refused(digits):
    model, _ = digits
    with pytest.raises(SqaccelError, match="no quantizable layer"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Flatten()), "sq", 4, progress=False)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(SqaccelError, match="layer '2': weight holds NaN"):
        quantize_model(broken, "sq", 4, progress=False)
    zero = copy.deepcopy(model)
    with torch.no_grad():
        zero[5].weight.zero_()
    with pytest.raises(SqaccelError, match="layer '5': .*all zero"):
        quantize_model(zero, "uniform", 4, progress=False)
    with pytest.raises(SqaccelError, match="ReLU is not quantizable"):
        quantize_model(model, "sq", 4, layers=["0", "1"], progress=False)
    with pytest.raises(SqaccelError, match="no such module"):
        quantize_model(model, "sq", 4, layers=["99"], progress=False)


def test_selected_layers_only(digits):
    model, _ = digits
    qm = quantize_model(model, "pot", 3, layers=["2", "5", "9"], progress=False)
    assert list(qm.weights) == ["2", "5", "9"] and qm.edge_layers == ("2", "9")
    assert qm.weights["5"].method == "pot"
    assert torch.equal(qm.model[0].weight, model[0].weight)


# -- the ``quantize`` command ----------------------------------------------------------------


def test_cli_quantize_prints_tables(digits, cache_dir, capsys):
    rc = main(["quantize", "--method", "uniform", "sq", "--bits", "3", "--cache-dir",
               str(cache_dir), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert any(line.startswith("full precision") for line in lines)
    assert any(line.split()[:2] == ["uniform", "3"] for line in lines)
    assert any(line.split()[:2] == ["sq", "3"] for line in lines)
    layer_rows = [line.split() for line in lines if line.split()[:2] == ["5", "Conv2d"]]
    assert len(layer_rows) == 1 and layer_rows[0][2] == "32x32x3x3"


def test_cli_quantize_json(digits, cache_dir, capsys):
    rc = main(["quantize", "--method", "apot", "--bits", "4", "2", "--per-channel",
               "--no-first-last-8bit", "--json", "--cache-dir", str(cache_dir), "--no-progress"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "digits" and not result["first_last_8bit"]
    assert [(r["method"], r["bits"], r["per_channel"]) for r in result["runs"]] == [
        ("apot", 4, True), ("apot", 2, True)]
    for r in result["runs"]:
        assert set(r["layer_bits"].values()) == {r["bits"]}
        assert set(r["mse"]) == {layer["name"] for layer in result["layers"]}


def test_cli_errors_return_2(tmp_path, capsys):
    cases = [
        (["--model", "resnet18", "--data", str(tmp_path)], "needs --weights"),
        (["--model", "resnet18", "--weights", str(tmp_path / "w.safetensors")], "needs --data"),
        (["--model", "resnet18", "--weights", str(tmp_path / "w.safetensors"), "--data",
          str(tmp_path / "nodata")], "data folder not found"),
        (["--weights", str(tmp_path / "w.safetensors")], "weights file not found"),
        (["--data", str(tmp_path)], "calib: missing sub-folder"),
        (["--method", "sq", "--bits", "8"], "bits must be one of"),
    ]
    for extra, message in cases:
        assert main(["quantize", "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("sqaccel quantize: error: ") and message in err[-1], err


def test_demo_steps_write_the_accuracy_table(digits, cache_dir, tmp_path, monkeypatch, capsys):
    import sqaccel.demo.software

    monkeypatch.setattr(sqaccel.demo.software, "DEMO_BITS", (2,))  # one width keeps the test short
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cache-dir", str(cache_dir), "--no-progress",
                 "--until", "accuracy"]) == 0
    printed = capsys.readouterr().out
    assert "[1/5] data:" in printed and "[5/5] accuracy:" in printed  # --until: 5 steps
    result = json.loads((out / "accuracy.json").read_text())
    assert [(r["method"], r["bits"]) for r in result["runs"]] == [(m, 2) for m in METHODS]
    assert result["fp_accuracy"] >= 95.0 and result["split"]["test"] == 540
    table = printed[printed.index("method "):]
    assert "full precision" in table and all(f"\n{m} " in table for m in METHODS)
    assert sorted(p.name for p in out.iterdir()) == [
        ".sqaccel-output.json", "accuracy.json", "progress.json", "verilog"]
    assert main(["demo", "--until", "nothing"]) == 2


# -- ResNet on a generated image folder ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / "data" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "data" / f"c{c}" / f"{i}.png")
    torch.manual_seed(0)
    weights = save_weights(resnet("resnet18", num_classes=2), root / "r18.safetensors")
    return root / "data", weights


def test_resnet_quantize_and_evaluate_end_to_end(tiny_imagenet):
    data, weights = tiny_imagenet
    model = load_resnet("resnet18", weights, num_classes=2)
    loader = image_folder_loader(data, batch_size=4, resize=32, crop=32)
    fp = evaluate(model, loader)
    assert fp in {100.0 * k / 8 for k in range(9)}
    qm = quantize_model(model, "sq", 2, progress=False)
    assert qm.edge_layers == ("conv1", "fc")
    assert len(qm.weights) == 21  # 20 convolutions (3 of them 1x1 shortcuts) and fc
    assert qm.weights["layer3.0.downsample.0"].method == "sq"
    acc = evaluate(qm.model, loader)
    assert acc in {100.0 * k / 8 for k in range(9)}
    # BatchNorm statistics are carried over unchanged.
    assert torch.equal(qm.model.layer1[0].bn1.running_var, model.layer1[0].bn1.running_var)


def test_cli_quantize_resnet(tiny_imagenet, capsys):
    data, weights = tiny_imagenet
    rc = main(["quantize", "--model", "resnet18", "--weights", str(weights), "--data", str(data),
               "--method", "sq", "--bits", "2", "--resize", "32", "--crop", "32",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert any(line.split()[:2] == ["layer4.1.conv2", "Conv2d"] for line in out.splitlines())
