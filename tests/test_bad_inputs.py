"""The bad-input corpus (tests/bad_inputs.py) in-process: every case exits as it must, with
one error line naming the problem and no traceback, and every user file is as it was."""

from __future__ import annotations

import traceback

import pytest
from bad_inputs import Case, Outcome, cases, fill, make_images, snapshot

from sqaccel import cli

CASES = cases()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("corpus"))


def run_in_process(case: Case, d, capsys, monkeypatch) -> Outcome:
    monkeypatch.chdir(d)
    for k, v in case.env.items():
        monkeypatch.setenv(k, fill(v, d))
    capsys.readouterr()
    try:
        status = cli.main([fill(a, d) for a in case.argv])
    except SystemExit as e:  # argparse's own exit
        status = e.code
    except BaseException:
        return Outcome(None, capsys.readouterr().err + traceback.format_exc())
    return Outcome(status, capsys.readouterr().err)


def test_the_corpus_is_large_and_covers_every_command():
    from sqaccel.commands import COMMANDS

    assert len(CASES) >= 80
    assert {c.command for c in CASES} >= set(COMMANDS)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, images, tmp_path, capsys, monkeypatch):
    d = tmp_path / "case"
    d.mkdir()
    if case.setup:
        case.setup(d, images)
    before = snapshot(d)
    out = run_in_process(case, d, capsys, monkeypatch)
    print(out.err)
    assert out.verdict(case, before, snapshot(d)) == []


def test_ctrl_c_during_start_up_exits_130(monkeypatch, capsys):
    import importlib

    def interrupted(name, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["verilog", "--out", "v"]) == 130
    assert capsys.readouterr().err.strip() == "sqaccel verilog: interrupted"


def test_ctrl_c_during_an_export_leaves_nothing(tmp_path, monkeypatch, capsys):
    from sqaccel import imagecodec

    def interrupted(manifest):  # every data file written, the manifest not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(imagecodec, "manifest_bytes", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "--out", "img", "--cache-dir", "models"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # committed weights: no cache
