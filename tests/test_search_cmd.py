"""``sqaccel search`` on weight files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from sqaccel.cli import main
from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.sw.sq_search import search_channels, search_tensor


@pytest.fixture
def weights(tmp_path):
    w = np.random.default_rng(0).laplace(size=(6, 4, 3, 3)).astype(np.float32)
    path = tmp_path / "w.npy"
    np.save(path, w)
    return path, w


def test_text_output(weights, capsys) -> None:
    path, w = weights
    assert main(["search", "--weights", str(path), "--bits", "3"]) == 0
    out = capsys.readouterr().out
    res = search_tensor(w, 3)
    assert f"members   {' '.join(map(str, res.members))}" in out
    assert f"alpha     {res.alpha:.9g}" in out
    assert f"L2 error  {res.l2:.9g}" in out
    assert "levels" in out and "seconds" in out and "1365 candidates" in out


def test_json_output(weights, capsys) -> None:
    path, w = weights
    assert main(["search", "--weights", str(path), "--bits", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = search_tensor(w, 4)
    assert doc["members"] == list(res.members)
    assert doc["levels"] == list(res.levels)
    assert doc["alpha"] == res.alpha and doc["l2"] == res.l2
    assert doc["int_magnitudes"] == list(res.int_magnitudes)
    assert doc["shape"] == [6, 4, 3, 3] and doc["bits"] == 4 and doc["seconds"] > 0


def test_per_channel(weights, capsys) -> None:
    path, w = weights
    assert main(["search", "--weights", str(path), "--bits", "2", "--per-channel", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    per = search_channels(w, 2)
    assert [c["members"] for c in doc["channels"]] == [list(r.members) for r in per]
    assert main(["search", "--weights", str(path), "--bits", "2", "--per-channel"]) == 0
    out = capsys.readouterr().out
    assert len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == 6


def test_safetensors_and_config(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 9)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
    path = tmp_path / "m.safetensors"
    save_file({"a": a, "b": b}, str(path))
    assert main(["search", "--weights", str(path), "--tensor", "b", "--bits", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == list(search_tensor(b, 2).members)
    assert main(["search", "--weights", str(path), "--bits", "2"]) == 2
    assert "holds 2 tensors; name one with --tensor" in capsys.readouterr().err
    assert main(["search", "--weights", str(path), "--tensor", "c", "--bits", "2"]) == 2
    assert "no tensor named 'c'" in capsys.readouterr().err
    # a config file's universal set
    u = UniversalSet(((0, 1, 2, 3),))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(AccelConfig(weight_bits=3, universal=u).to_json())
    args = ["search", "--weights", str(path), "--tensor", "a", "--bits", "3", "--json"]
    assert main(args + ["--config", str(cfg)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["candidates"] == 5 and doc["members"] == list(search_tensor(a, 3, u).members)


def test_missing_file(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.npy"
    assert main(["search", "--weights", str(missing), "--bits", "3"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"sqaccel search: error: {missing}: weights file not found"


@pytest.mark.parametrize(
    "content,match",
    [
        (np.array([1.0, np.nan, 2.0]), "1 of 3 values are NaN or Inf"),
        (np.zeros((2, 2)), "all zero"),
        (np.array([], dtype=np.float32), "empty"),
        (np.array(["a", "b"]), "not a numeric array"),
    ],
)
def test_bad_contents(tmp_path, capsys, content, match) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, content)
    assert main(["search", "--weights", str(path), "--bits", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sqaccel search: error: ") and match in err
    assert len(err.strip().splitlines()) == 1


def test_unreadable_files(tmp_path, capsys) -> None:
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    garbage = tmp_path / "junk.npy"
    garbage.write_bytes(b"not an array")
    other = tmp_path / "w.txt"
    other.write_text("1 2 3")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 5)
    for path, match in ((pickled, "not a readable .npy"), (garbage, "not a readable .npy"),
                        (other, "expected a .npy or .safetensors"),
                        (bad_st, "not a readable .safetensors")):
        assert main(["search", "--weights", str(path), "--bits", "3"]) == 2
        assert match in capsys.readouterr().err
