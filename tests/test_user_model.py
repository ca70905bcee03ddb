"""A user's model from a Python file, end to end through the commands: the README's example
(``mynet.py:mynet``) exported with its weights, run whole on the RTL, measured by ``sqaccel
perf`` (cycles equal to the cosimulation's); an unsupported operation in a user's model is
one error line naming the node, its op and its module path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from sqaccel import cli
from sqaccel.sw.models import save_weights

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- user-model-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md has no user-model example"
    return m.group(1)


@pytest.fixture(scope="module")
def mynet(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("user")
    src = readme_example()
    assert len(src.strip().splitlines()) <= 15
    (d / "mynet.py").write_text(src)
    torch.manual_seed(0)
    # Untrained, but with BatchNorm statistics away from the identity so folding matters.
    ns: dict = {}
    exec(compile(src, "mynet.py", "exec"), ns)
    model = ns["mynet"]()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    save_weights(model, d / "mynet.safetensors")
    return d / "mynet.py", d / "mynet.safetensors"


def test_readme_example_exports_runs_on_the_rtl_and_perf_matches(mynet, tmp_path, capsys,
                                                                   monkeypatch):
    py, weights = mynet
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "img"
    assert cli.main(["export", "--model", f"{py}:mynet", "--weights", str(weights),
                     "--data", "digits", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "on the digits test split: integer" in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["info"]["model"] == f"{py}:mynet"
    assert {s["runs_on"] for s in manifest["steps"]} == {"array", "host"}
    assert any(s["op"] == "add" for s in manifest["steps"])
    assert cli.main(["verify-images", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["cosim", str(out), "--network", "2", "--seed", "3"]) == 0
    cosim = capsys.readouterr().out
    assert "every step's output equal to the golden model" in cosim
    measured = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"layer '([^']+)': GEMM .*? (\d+) cycles", cosim)}
    assert cli.main(["perf", str(out), "--batch", "2", "--json"]) == 0
    perf = json.loads(capsys.readouterr().out)
    assert {la["name"]: la["cycles"] for la in perf["layers"]} == measured
    assert len(measured) == 4  # stem, the block's two convolutions, the classifier


def test_user_model_with_an_unsupported_op_is_one_error(tmp_path, capsys):
    src = readme_example().replace("torch.relu(x + ", "torch.sigmoid(x + ")
    (tmp_path / "odd.py").write_text(src)
    ns: dict = {}
    exec(compile(src, "odd.py", "exec"), ns)
    save_weights(ns["mynet"](), tmp_path / "odd.safetensors")
    rc = cli.main(["export", "--model", f"{tmp_path / 'odd.py'}:mynet", "--weights",
                   str(tmp_path / "odd.safetensors"), "--data", "digits", "--out",
                   str(tmp_path / "img")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("sqaccel export: error: ")
    assert "node 'sigmoid' (call_function sigmoid, module '2') is not supported" in err
    assert not (tmp_path / "img").exists()
