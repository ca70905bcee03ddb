"""The main job end to end (without the calibration table and the synthesis, which
``make demo`` adds), the report it writes, and what an interruption leaves behind.

The run goes through the real steps: the digits CNN, the SQ search, calibration, the
images, the Verilog and all four cosimulation levels on Verilator (small counts), then the
report; its HTML must reference only PNG files that exist.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sqaccel import cli, imagecodec, report
from sqaccel.demo import hardware as demo_hw
from sqaccel.sw import images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def html_images(path: Path) -> list[str]:
    p = _Images()
    p.feed(path.read_text())
    return p.srcs


def assert_report_complete(out: Path) -> list[str]:
    """Every image index.html and index.md reference exists under ``out`` and is a PNG."""
    srcs = html_images(out / "index.html")
    md = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "index.md").read_text())
    assert srcs and sorted(srcs) == sorted(md)
    for src in srcs:
        f = out / src
        assert f.is_file(), f"{src} referenced but missing"
        assert f.read_bytes()[:8] == PNG_MAGIC, f"{src} is not a PNG"
        assert f.stat().st_size > 2000, f"{src} is nearly empty"
    return srcs


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--out", str(base / "run"), "--report", str(base / "report"),
            "--skip", "table", "--skip", "synth", "--skip", "resnet20", "--cosim-images", "2",
            "--no-progress"]
    assert cli.main(argv) == 0
    return base, argv


def test_demo_runs_every_level_bit_exact_and_reports(demo_run, capsys):
    base, _ = demo_run
    run_dir = base / "run"
    cosim = json.loads((run_dir / "cosim.json").read_text())
    assert list(cosim["levels"]) == ["PE", "GEMM", "layer", "network"]
    assert all(v["status"] == "pass" and v["count"] > 0 for v in cosim["levels"].values())
    assert cosim["levels"]["PE"]["count"] >= demo_hw.PE_CYCLES
    assert cosim["levels"]["GEMM"]["count"] == demo_hw.GEMMS
    net = cosim["network"]
    assert net["images"] == 2 and len(net["predictions"]) == 2
    # The images the demo exported load and re-run; the cosimulated network is that one.
    loaded = images.verify(run_dir / "images")
    assert Path(cosim["images_dir"]) == run_dir / "images"
    assert len(loaded.network.gemm_layers()) == cosim["levels"]["layer"]["count"]

    rec = json.loads((run_dir / "run.json").read_text())
    skipped = {s["name"] for s in rec["steps"] if s.get("skipped")}
    assert skipped == {"table", "synth", "resnet20"}
    assert any("bit-exact" in h for h in rec["headline"])

    out = base / "report"
    srcs = assert_report_complete(out)
    assert {"weights.png", "accuracy.png", "cosim.png"} <= set(srcs)
    text = (out / "index.md").read_text()
    golden = json.loads((run_dir / "golden.json").read_text())["rows"]
    assert {(r["method"], r["bits"]) for r in golden} == {
        (m, b) for m in ("sq", "uniform") for b in (4, 3, 2)}
    for r in golden:  # the golden model against the fake-quantised model, printed
        assert f"| {r['method']} | W{r['bits']}A8 | {r['fake_quant']:.2f} |" in text
    assert "Synthesis was not part of this run." in text
    for layer in loaded.network.gemm_layers():
        assert f"| {layer.name} |" in text  # each layer's histogram row
    for name, entry in loaded.manifest["files"].items():  # the image hashes used
        if entry["format"] == "hex":
            assert f"| {name} | {entry['layer']} | {entry['sha256'][:16]} |" in text


def test_a_second_run_reuses_finished_steps(demo_run, capsys):
    base, argv = demo_run
    progress = json.loads((base / "run" / "progress.json").read_text())
    assert {"accuracy", "golden", "cosim"} <= set(progress)
    capsys.readouterr()
    assert cli.main(argv[:-1] + ["--until", "cosim"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished by an earlier run") == 3  # accuracy, golden and cosim


def test_report_with_synthesis_and_calibration_tables(demo_run, tmp_path):
    base, _ = demo_run
    run_dir = tmp_path / "run"
    shutil.copytree(base / "run", run_dir)
    # Rendering only: the schema the synth and table steps write, with small values.
    (run_dir / "synth.json").write_text(json.dumps([
        {"label": "PE shift-add", "design": "pe", "target": "ecp5", "pe": "shift",
         "logic_cells": 120, "ffs": 110, "dsp": 0, "bram": 0, "fmax_mhz": 200.0},
        {"label": "PE multiplier (LUTs)", "design": "pe", "target": "ecp5", "pe": "mult",
         "logic_cells": 210, "ffs": 110, "dsp": 0, "bram": 0, "fmax_mhz": 160.0},
        {"label": "8x8 top", "design": "top", "target": "ecp5", "pe": "shift",
         "logic_cells": 15000, "ffs": 9000, "dsp": 16, "bram": 20, "fmax_mhz": None},
    ]))
    cells = {"W4A8": {"accuracy": 98.0}, "W3A8": {"accuracy": 97.0},
             "W2A8": {"accuracy": 95.0}, "W4A4": {"accuracy": 96.0}}
    (run_dir / "calibration.json").write_text(json.dumps({
        "columns": list(cells), "rows": ["SQ + calibration"], "full_precision": 98.5,
        "seconds": 1.0, "cells": {"SQ + calibration": cells}}))
    out = report.write_report(run_dir, tmp_path / "report")
    srcs = assert_report_complete(out)
    assert "hardware.png" in srcs
    text = (out / "index.md").read_text()
    assert "| SQ + calibration | 98.00 | 97.00 | 95.00 | 96.00 |" in text
    assert "| 8x8 top | ecp5 | 15000 | 9000 | 16 | 20 | - |" in text


def test_interrupted_report_leaves_the_previous_one(demo_run, tmp_path, monkeypatch):
    base, _ = demo_run
    out = tmp_path / "report"
    report.write_report(base / "run", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(blocks):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "to_html", interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(base / "run", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left


def test_interrupted_export_is_not_taken_for_finished(demo_run, tmp_path, monkeypatch, capsys):
    base, argv = demo_run
    run_dir = tmp_path / "run"
    shutil.copytree(base / "run", run_dir)
    shutil.rmtree(run_dir / "images")
    argv = [a if a != str(base / "run") else str(run_dir) for a in argv]

    def interrupt(manifest):  # every data file written, the manifest not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(imagecodec, "manifest_bytes", interrupt)
    assert cli.main(argv + ["--until", "export"]) == 130
    assert "interrupted in step export" in capsys.readouterr().out
    assert sorted(p.name for p in run_dir.iterdir() if "images" in p.name) == []
    monkeypatch.undo()
    assert cli.main(argv + ["--until", "export"]) == 0
    images.verify(run_dir / "images")


def test_bad_demo_arguments_give_one_error(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--cosim-images", "0"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("sqaccel demo: error: argument --cosim-images") and "'0'" in last
    assert cli.main(["report", "--run", str(tmp_path / "nothing"),
                     "--out", str(tmp_path / "r")]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_background_work_runs_apart_reports_and_stops(tmp_path):
    """A step's early work (the synthesis) in a spawned process: what it printed comes back
    through the step's ``say``, a failure is one error naming its log, and an interrupted
    demo stops it."""
    import time

    from sqaccel.config import AccelConfig
    from sqaccel.demo.state import Background
    from sqaccel.errors import SqaccelError

    said: list[str] = []
    Background(print, ("hello from the background",), tmp_path / "a.log").wait(said.append)
    assert said == ["hello from the background"]
    bad = Background(AccelConfig.load, (str(tmp_path / "nowhere.json"),), tmp_path / "b.log")
    with pytest.raises(SqaccelError, match=r"background process failed \(exit 2\).*b\.log"):
        bad.wait(said.append)
    assert said[-1].startswith("error: ") and "nowhere.json" in said[-1]
    slow = Background(time.sleep, (600,), tmp_path / "c.log")
    t = time.monotonic()
    slow.stop()
    assert not slow.process.is_alive() and time.monotonic() - t < 30
