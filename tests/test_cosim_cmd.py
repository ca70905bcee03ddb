"""``sqaccel cosim``: an exported layer or network on the RTL, bit for bit; a model that
disagrees with the RTL makes it exit 1 with a report naming the layer, the output index,
the expected and the actual value; bad input is one error line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import torch

from sqaccel import cli
from sqaccel.errors import SqaccelError
from sqaccel.hw import timing
from sqaccel.sim import builds, network_level
from sqaccel.sw import images

LAYER = "11"  # the smallest GEMM layer of the digits CNN


@pytest.fixture(scope="module")
def digits():
    return network_level.network_images("digits")


def _cosim(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["cosim", *argv])
    out, err = capsys.readouterr()
    print(out + err)
    return rc, out, err


def test_one_layer_is_bit_exact(digits, tmp_path, capsys):
    loaded = images.load(digits)
    cfg, layer = loaded.network.cfg, loaded.network.layer(LAYER)
    m = images.reference_inputs(loaded).shape[0]
    rc, out, err = _cosim(capsys, str(digits), "--layer", LAYER, "--seed", "7",
                          "--log-dir", str(tmp_path / "logs"))
    assert rc == 0 and err == ""
    assert "seed 7 (repeat with --seed 7)" in out
    words = -(-layer.n // cfg.cols) * m
    assert (f"layer '{LAYER}': GEMM M={m} K={layer.k} N={layer.n}, 1 command, "
            f"{timing.cycles(cfg, m, layer.n, layer.k)} cycles, {words} result words "
            "compared: bit-exact") in out
    assert (tmp_path / "logs" / f"{builds.TOPLEVEL}.sim.log").is_file()


def test_a_wrong_golden_output_exits_1_naming_layer_index_and_values(
        digits, tmp_path, capsys, monkeypatch):
    """The model's output for the layer gets one value changed; the RTL's stays right."""
    m_idx, n_idx = 5, 3
    seen = {}
    real = network_level.layer_runs

    def wrong_model(images, layers=None, x_int=None):
        [lr] = real(images, layers, x_int)
        want = lr.expected.clone()
        true = int(want[m_idx, n_idx])
        want[m_idx, n_idx] = true - 1 if true > 0 else true + 1
        seen.update(true=true, wrong=int(want[m_idx, n_idx]))
        return [dataclasses.replace(lr, expected=want)]

    monkeypatch.setattr(network_level, "layer_runs", wrong_model)
    rc, out, err = _cosim(capsys, str(digits), "--layer", LAYER, "--seed", "3",
                          "--log-dir", str(tmp_path / "logs"))
    assert rc == 1 and "bit-exact" not in out
    assert "the cosimulation failed (seed 3; repeat with --seed 3)" in err
    assert f"layer '{LAYER}': 1 of" in err
    assert re.search(rf"output \[m={m_idx}, n={n_idx}\] \(word \d+, lane \d+\): expected "
                     rf"{seen['wrong']}, got {seen['true']}\n", err + "\n")
    assert str(tmp_path / "logs") in err and "Traceback" not in err


def test_network_on_digits_test_images(digits, tmp_path, capsys):
    x, labels, _ = network_level.test_inputs(digits, 2)
    golden = images.load(digits).network.predict(x).tolist()
    rc, out, err = _cosim(capsys, str(digits), "--network", "2", "--log-dir",
                          str(tmp_path / "logs"))
    assert rc == 0 and err == ""
    assert "whole network on 2 digits test images (from the first, every 270th)" in out
    for la in images.load(digits).network.gemm_layers():
        assert re.search(rf"layer '{la.name}': GEMM M=\d+ K={la.k} N={la.n}, .* bit-exact", out)
    assert f"predicted classes: {golden}" in out
    right = sum(int(p == y) for p, y in zip(golden, labels.tolist(), strict=True))
    assert f"RTL accuracy: {100.0 * right / 2:.2f} % ({right} of 2)" in out


def test_network_inputs_without_a_dataset_are_the_reference_inputs(digits, tmp_path):
    d = tmp_path / "images"
    shutil.copytree(digits, d)
    manifest = json.loads((d / images.MANIFEST).read_text())
    manifest["info"] = {"model": "user_model"}
    (d / images.MANIFEST).write_text(json.dumps(manifest))
    loaded = images.load(d)
    ref = images.reference_inputs(loaded)
    x, labels, what = network_level.test_inputs(loaded, 3)
    assert torch.equal(x, ref[:3]) and labels is None and "reference inputs" in what
    with pytest.raises(SqaccelError, match=f"stores {ref.shape[0]} reference inputs"):
        network_level.test_inputs(loaded, ref.shape[0] + 1)


@pytest.mark.parametrize("case", ["missing", "layer"])
def test_bad_input_is_one_error_line(digits, tmp_path, capsys, case):
    if case == "missing":
        argv, want = [str(tmp_path / "absent")], f"{tmp_path / 'absent'}: images folder not found"
    else:
        argv, want = [str(digits), "--layer", "3"], "no GEMM layer '3'"
    rc, out, err = _cosim(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sqaccel cosim: error: ") and want in err
