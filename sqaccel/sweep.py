"""Design-space sweeps: many synthesis runs of a grid of design points over placement seeds,
each point's median Fmax, resources and performance figures, a table, a CSV and a Pareto
plot.

A grid (``GRID.json``, docs/commands.md "sweep") names a target, a list of design points
(a design of ``sqaccel.hw.designs``, config overrides, DSP blocks allowed or not) and a list
of seeds. Each (point, seed) is a *job*: one ``synth_design`` run in a folder of its own,
``<out>/jobs/<point>/seed<k>/``, which the tools run inside (they reach only files below
their working folder), ending with ``result.json`` written atomically. A job is finished when
that file holds the job's own description and no error; rerunning a sweep into the same
folder skips finished jobs, so an interrupted sweep resumes where it stopped. The folder is
the sweep's own (an ownership marker, ``sqaccel.files``), and a grid other than the one it
was made with is refused unless ``force``.

Jobs run on a local process pool, or as Ray tasks (``ray_address``; Ray is the optional
``cluster`` extra and is imported only then). A point may ask for the largest square array
that fits the device (``"largest": true``): its size is bisected with Yosys's resource
counts against the device's available cells, then confirmed by place-and-route (one size
smaller each time it does not fit). Each such search is a task of its own on the pool or on
Ray (``largest_job``), before the jobs at the sizes found.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqaccel import files
from sqaccel.config import CONFIG_FIELDS, SIZE_LIMITS, AccelConfig, read_json_file
from sqaccel.errors import SqaccelError

SWEEP_KIND = "sweep"  # the output folder and its jobs/ and largest/ folders (containers)
RESULT = "result.json"  # a finished job's result, in its folder
GRID_COPY = "grid.json"  # the grid the folder was made with
RESULT_FORMAT = "sqaccel-sweep-job"
OPS_PER_MAC = 2
GRID_KEYS = ("target", "seeds", "points", "freq_mhz", "timeout_s", "networks", "batch",
             "largest_fill", "comment")
# Config fields a point may set (the universal set stays the default).
POINT_CONFIG = tuple(f for f in CONFIG_FIELDS if f != "universal")
POINT_KEYS = ("name", "design", "dsp", "freq_mhz", "largest", "fill_dsp", *POINT_CONFIG)
NAME = re.compile(r"[A-Za-z0-9_.+-]+")
DEFAULT_FILL = 0.9
# Cells of the device's logic-cell type each Yosys cell takes, by cell name prefix. ECP5
# (TRELLIS_COMB; flip-flops have their own sites): a LUT4 one, a carry cell two, a 16x4
# distributed RAM three (two LUTs and its write port). iCE40 (ICESTORM_LC, a LUT and a
# flip-flop): about half the flip-flops find no LUT to share a cell with (a 4x4 array:
# 4,101 LUTs and 3,628 flip-flops in 5,999 cells). Yosys's counts (hierarchy kept) come out
# a little under the placed cells: a 4x4 shift-add array on ECP5, 4,733 against 4,922.
COMB_WEIGHTS = {"ecp5": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 3},
                "ice40": {"SB_LUT4": 1, "SB_DFF": 0.5}}
DSP_CELLS = {"ecp5": ("MULT18X18D",), "ice40": ("SB_MAC16",)}
BRAM_CELLS = {"ecp5": ("DP16KD",), "ice40": ("SB_RAM40_4K", "SB_SPRAM256KA")}


# -- the grid ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One design point: a design, its config overrides, DSP blocks allowed or not."""

    name: str
    design: str
    dsp: bool
    config: dict  # overrides of AccelConfig()
    freq_mhz: float | None = None
    largest: bool = False
    # A largest hybrid: at each size, as many multiplier columns (``mult_cols``) as the DSP
    # blocks that the requantisers leave can hold, shift-add PEs in the other columns.
    fill_dsp: bool = False

    def accel_config(self) -> AccelConfig:
        return AccelConfig().with_changes(**self.config)

    def spec(self) -> dict:
        return {"name": self.name, "design": self.design, "dsp": self.dsp,
                "config": dict(sorted(self.config.items())), "freq_mhz": self.freq_mhz,
                "largest": self.largest, "fill_dsp": self.fill_dsp}

    def with_config(self, **changes) -> Point:
        return dataclasses.replace(self, config={**self.config, **changes})

    def pes(self) -> int:
        cfg = self.accel_config()
        return 1 if self.design == "pe" else cfg.rows * cfg.cols


@dataclass(frozen=True)
class Grid:
    target: str
    seeds: tuple[int, ...]
    points: tuple[Point, ...]
    timeout_s: float | None = None
    networks: dict[str, str] = field(default_factory=dict)  # name -> images folder
    batch: int = 1
    largest_fill: float = DEFAULT_FILL

    def spec(self) -> dict:
        """The grid as the sweep folder records it (defaults filled in)."""
        return {"target": self.target, "seeds": list(self.seeds),
                "points": [p.spec() for p in self.points], "timeout_s": self.timeout_s,
                "networks": dict(self.networks), "batch": self.batch,
                "largest_fill": self.largest_fill}


def _number(v, where: str, low: float, *, integer: bool = False, inclusive: bool = True):
    ok = type(v) is int if integer else type(v) in (int, float)
    if not ok or not (v >= low if inclusive else v > low) or v != v or v == float("inf"):
        kind = "a whole number" if integer else "a number"
        rel = ">=" if inclusive else ">"
        raise SqaccelError(f"{where} must be {kind} {rel} {low:g}, got {v!r}")
    return v


def _known_keys(d: dict, keys: tuple[str, ...], at: str) -> None:
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise SqaccelError(f"{at}: unknown key {unknown[0]!r} (the keys are "
                           f"{', '.join(keys)})")


def _point(d, i: int, where: str, grid_freq: float | None, designs: tuple[str, ...]
           ) -> Point:
    at = f"{where}: points[{i}]"
    if not isinstance(d, dict):
        raise SqaccelError(f"{at} must be an object, got {d!r}")
    _known_keys(d, POINT_KEYS, at)
    design = d.get("design", "array")
    if design not in designs:
        raise SqaccelError(f"{at}: design must be one of {', '.join(designs)}, got {design!r}")
    dsp = d.get("dsp", True)
    largest = d.get("largest", False)
    fill_dsp = d.get("fill_dsp", False)
    for key, v in (("dsp", dsp), ("largest", largest), ("fill_dsp", fill_dsp)):
        if type(v) is not bool:
            raise SqaccelError(f"{at}: {key} must be true or false, got {v!r}")
    config = {k: d[k] for k in POINT_CONFIG if k in d}
    if largest:
        if design != "array":
            raise SqaccelError(f"{at}: largest applies to the array design, not {design!r}")
        if "rows" in config or "cols" in config:
            raise SqaccelError(f"{at}: largest finds rows and cols; leave them out")
    if fill_dsp:
        if not largest or not dsp:
            raise SqaccelError(f"{at}: fill_dsp applies to a largest array with DSP blocks "
                               f"(largest and dsp true)")
        if config.get("pe", "shift") != "shift" or "mult_cols" in config:
            raise SqaccelError(f"{at}: fill_dsp finds mult_cols of a shift-add array; leave "
                               f"out pe and mult_cols")
    try:
        cfg = AccelConfig().with_changes(**config)
    except SqaccelError as e:
        raise SqaccelError(f"{at}: {e}") from None
    freq = d.get("freq_mhz", grid_freq)
    if freq is not None:
        freq = _number(freq, f"{at}: freq_mhz", 0, inclusive=False)
    name = d.get("name")
    if name is None:
        size = "largest" if largest else f"{cfg.rows}x{cfg.cols}"
        kind = "hybrid" if fill_dsp or cfg.mult_cols else cfg.pe
        name = f"{design}-{kind}" + ("" if design == "pe" else f"-{size}")
        name += "" if dsp else "-nodsp"
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.startswith("."):
        raise SqaccelError(f"{at}: name {name!r} must be letters, digits and _.+-")
    return Point(name, design, dsp, config, freq, largest, fill_dsp)


def parse_grid(d, where: str = "grid", base: Path | None = None) -> Grid:
    """A grid from its JSON form; every problem is one SqaccelError naming the key.
    ``base``: the folder that relative network paths are relative to."""
    from sqaccel.hw.designs import DESIGNS
    from sqaccel.hw.synth import TARGETS

    if not isinstance(d, dict):
        raise SqaccelError(f"{where} must be a JSON object, got {type(d).__name__}")
    _known_keys(d, GRID_KEYS, where)
    target = d.get("target", "ecp5")
    if target not in TARGETS:
        raise SqaccelError(f"{where}: target must be one of {', '.join(sorted(TARGETS))}, "
                           f"got {target!r}")
    seeds = d.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds:
        raise SqaccelError(f"{where}: seeds must be a non-empty list of whole numbers, "
                           f"got {seeds!r}")
    for s in seeds:
        _number(s, f"{where}: a seed", 0, integer=True)
    if len(set(seeds)) != len(seeds):
        raise SqaccelError(f"{where}: seeds repeat a seed: {seeds}")
    freq = d.get("freq_mhz")
    if freq is not None:
        freq = _number(freq, f"{where}: freq_mhz", 0, inclusive=False)
    timeout = d.get("timeout_s")
    if timeout is not None:
        timeout = _number(timeout, f"{where}: timeout_s", 0, inclusive=False)
    batch = _number(d.get("batch", 1), f"{where}: batch", 1, integer=True)
    fill = _number(d.get("largest_fill", DEFAULT_FILL), f"{where}: largest_fill", 0,
                   inclusive=False)
    if fill > 1:
        raise SqaccelError(f"{where}: largest_fill must be at most 1, got {fill!r}")
    points = d.get("points")
    if not isinstance(points, list) or not points:
        raise SqaccelError(f"{where}: points must be a non-empty list of design points")
    parsed = tuple(_point(p, i, where, freq, DESIGNS) for i, p in enumerate(points))
    names = [p.name for p in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SqaccelError(f"{where}: two points are named {dup[0]!r}; give each a name")
    nets = d.get("networks", {})
    if not isinstance(nets, dict) or not all(isinstance(v, str) for v in nets.values()):
        raise SqaccelError(f"{where}: networks must be an object of name -> images folder")
    networks = {}
    for name, folder in nets.items():
        path = Path(folder) if base is None else base / folder
        if not path.is_dir():
            raise SqaccelError(f"{where}: networks: {name!r}: images folder {path} not found")
        networks[name] = str(path)
    return Grid(target, tuple(seeds), parsed, timeout, networks, batch, fill)


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    d = read_json_file(path, "grid file", SqaccelError)
    return parse_grid(d, str(path), path.parent)


# -- one job ------------------------------------------------------------------------------


def job_spec(grid: Grid, point: Point, seed: int) -> dict:
    """What a job runs: the same spec means the same result."""
    return {"format": RESULT_FORMAT, "target": grid.target, "point": point.spec(),
            "seed": seed, "timeout_s": grid.timeout_s}


def _job_folder(out: Path, point: Point, seed: int) -> Path:
    return out / "jobs" / point.name / f"seed{seed}"


def run_job(spec: dict, folder: str, cache_dir: str | None = None) -> dict:
    """One (point, seed): synthesis in ``folder`` (its own), then ``folder/result.json``
    written atomically. Returns the result; a failed run's result holds ``error``. The
    process pool and the Ray tasks both run this function."""
    if cache_dir and not os.environ.get("YOWASP_CACHE_DIR"):
        os.environ["YOWASP_CACHE_DIR"] = cache_dir
    from sqaccel.hw.designs import synth_design

    p = spec["point"]
    t0 = time.monotonic()
    result: dict = {"job": spec, "host": os.uname().nodename}
    # The tools run inside the run folder (hw.synth); the worker itself works in the job's
    # folder too, so that nothing a job writes by a relative path lands beside another's.
    Path(folder).mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(folder)
    try:
        cfg = AccelConfig().with_changes(**p["config"])
        res = synth_design(p["design"], cfg, spec["target"], dsp=p["dsp"],
                           out_root=Path(folder) / "synth", name="run",
                           freq_mhz=p["freq_mhz"], seed=spec["seed"],
                           timeout_s=spec["timeout_s"])
        r = res.report
        result.update(resources=r["resources"], available=r["available"],
                      fmax_mhz=r["fmax_mhz"], critical_path=r["critical_path"],
                      runtime_s=r["runtime_s"], report=str(res.path / "report.json"))
    except SqaccelError as e:
        result["error"] = str(e)
    except Exception as e:  # a bug in a worker: recorded, the sweep goes on
        result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
    finally:
        os.chdir(here)
    result["wall_s"] = round(time.monotonic() - t0, 2)
    files.write_json(Path(folder) / RESULT, result)
    return result


def finished(folder: Path, spec: dict) -> dict | None:
    """The folder's result if it is this job's and a success, else None."""
    try:
        r = json.loads((folder / RESULT).read_bytes())
    except (OSError, ValueError):
        return None
    ok = isinstance(r, dict) and r.get("job") == spec and "error" not in r
    return r if ok else None


# -- executors -----------------------------------------------------------------------------


Call = tuple[str, Callable, tuple]  # (key, a module-level function, its arguments)


def _run_pool(calls: list[Call], workers: int, done: Callable[[str, object], None]) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # Spawned workers: no state forked from a parent that may hold threads.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    pending = {pool.submit(fn, *args): key for key, fn, args in calls}
    try:
        while pending:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                done(pending.pop(fut), fut.result())
    except BaseException:
        # Ctrl-C or a broken worker: no new job starts, and the running ones are not waited
        # for (a finished job's result is on disk; the others rerun on resume).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


@contextlib.contextmanager
def _ray_session(address: str, workers: int):
    """Ray, connected (``local``: a fresh instance on this machine) for the sweep's span."""
    try:
        import ray
    except ImportError:
        raise SqaccelError("--ray needs Ray, which is not installed: pip install "
                           "'sqaccel[cluster]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            if address == "local":
                ray.init(address="local", num_cpus=workers, include_dashboard=False,
                         log_to_driver=False, object_store_memory=100 * 1024**2)
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as e:  # ConnectionError, ValueError, RuntimeError...
            raise SqaccelError(f"--ray {address}: cannot connect ({e})") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _run_ray(ray, calls: list[Call], done: Callable[[str, object], None]) -> None:
    tasks: dict[Callable, object] = {}
    pending = {}
    for key, fn, args in calls:
        if fn not in tasks:
            tasks[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
        pending[tasks[fn].remote(*args)] = key
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done(pending.pop(ref), ray.get(ref))


# -- the sweep -----------------------------------------------------------------------------


@dataclass
class SweepResult:
    out: Path
    rows: list[dict]  # one per point (results.json's "points")
    ran: list[str]  # job keys run this time
    reused: list[str]  # job keys finished before
    failed: list[str]
    wall_s: float

    def to_dict(self) -> dict:
        return {"out": str(self.out), "points": self.rows, "ran": self.ran,
                "reused": self.reused, "failed": self.failed, "wall_s": self.wall_s}


def _check_folder(out: Path, grid: Grid, force: bool) -> None:
    """The sweep folder: absent, empty, or a sweep folder of this grid (``force``: of any)."""
    files.check_container(out, SWEEP_KIND, create=False)  # a user's folder, a file: refused
    try:
        old = json.loads((out / GRID_COPY).read_bytes())
    except (OSError, ValueError):
        return
    if old != grid.spec() and not force:
        raise SqaccelError(f"{out}: a sweep of another grid (its {GRID_COPY} differs); "
                           "choose another --out, or add --force to sweep this grid there "
                           "(finished jobs of unchanged points are kept)")


def select_points(grid: Grid, names: Iterable[str]) -> Grid:
    """``grid`` with only the points named (in the grid's order)."""
    names = list(names)
    known = [p.name for p in grid.points]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SqaccelError(f"the grid has no point {unknown[0]!r}; its points: "
                           f"{', '.join(known)}")
    return dataclasses.replace(grid, points=tuple(p for p in grid.points if p.name in names))


def run_sweep(grid: Grid, out: str | Path, *, workers: int = 1, ray_address: str | None = None,
              force: bool = False, progress: Callable[[str], None] | None = None,
              only: Iterable[str] = ()) -> SweepResult:
    """Runs every unfinished job of ``grid`` into ``out`` (module docstring) and writes the
    results: results.json, results.csv, summary.md, pareto.png. ``only``: the names of the
    points to sweep this time; the folder still records the whole grid, so that sweeping
    all of it later reuses their jobs."""
    say = progress or (lambda s: None)
    out = Path(out)
    if workers < 1:
        raise SqaccelError(f"workers must be >= 1, got {workers}")
    whole, only = grid, list(only)
    if only:
        grid = select_points(whole, only)
    _check_folder(out, whole, force)
    nets = _load_networks(grid)  # damaged images stop the sweep before any synthesis
    t0 = time.monotonic()
    files.check_container(out, SWEEP_KIND)
    files.write_json(out / GRID_COPY, whole.spec())
    cache = os.environ.get("YOWASP_CACHE_DIR") or str(Path("build/yowasp-cache").resolve())
    files.check_container(out / "jobs", SWEEP_KIND)

    ran: list[str] = []
    results: dict[str, dict] = {}

    def record(key: str, r: dict) -> None:
        results[key] = r
        ran.append(key)
        what = (f"error: {r['error'].splitlines()[0]}" if "error" in r else
                f"{r['resources']['logic_cells']} cells, {r['fmax_mhz']} MHz")
        say(f"  {key}: {what} ({r['wall_s']:.0f} s)")

    with _ray_session(ray_address, workers) if ray_address else contextlib.nullcontext() as ray:
        where = f"on Ray at {ray_address}" if ray_address else f"{workers} workers"

        def execute(calls: list[Call], done: Callable[[str, dict], None]) -> None:
            if ray is not None:
                _run_ray(ray, calls, done)
            else:
                _run_pool(calls, workers, done)

        points = list(grid.points)
        largest = [i for i, p in enumerate(points) if p.largest]
        if largest:
            # The device probe runs once, here, before the workers that read it start.
            _available(grid, files.check_container(out / "largest", SWEEP_KIND), cache)
            say(f"sweep: finding the largest array of {len(largest)} points, {where}")
            errors = []

            def found(key: str, r: dict) -> None:
                i = int(key)
                for line in r["log"]:
                    say(line)
                for k, v in r["records"].items():
                    record(k, v)
                if "error" in r:
                    errors.append(r["error"])
                else:
                    points[i] = dataclasses.replace(points[i], config=r["config"])

            execute([(str(i), largest_job, (points[i], grid, str(out.resolve()), cache))
                     for i in largest], found)
            if errors:
                raise SqaccelError(errors[0])

        todo: list[tuple[str, dict, str]] = []
        reused: list[str] = []
        for p in points:
            for seed in grid.seeds:
                key, spec = f"{p.name}/seed{seed}", job_spec(grid, p, seed)
                folder = _job_folder(out, p, seed)
                if key in results:
                    continue
                prev = finished(folder, spec)
                if prev is not None:
                    results[key] = prev
                    reused.append(key)
                    continue
                files.check_container(folder.parent, SWEEP_KIND)
                todo.append((key, spec, str(folder.resolve())))
        say(f"sweep: {len(todo)} jobs to run, {len(reused)} finished before, {where}")
        if todo:
            execute([(key, run_job, (spec, folder, cache)) for key, spec, folder in todo],
                    record)

    rows = [point_row(p, grid, {s: results[f"{p.name}/seed{s}"] for s in grid.seeds}, nets)
            for p in points]
    failed = sorted(k for k, r in results.items() if "error" in r)
    res = SweepResult(out, rows, ran, reused, failed, round(time.monotonic() - t0, 1))
    write_results(res, grid)
    return res


def _load_networks(grid: Grid) -> dict:
    if not grid.networks:
        return {}
    from sqaccel.sw import images

    return {name: images.load(folder).network for name, folder in grid.networks.items()}


# -- the largest array -------------------------------------------------------------------


def yosys_fit(point: Point, n: int, target: str, work: Path) -> dict:
    """Yosys's resource counts of ``point`` as an n x n array (no place and route)."""
    from sqaccel.hw.designs import build_design, design_options
    from sqaccel.hw.synth import get_target, module_cells, yosys_cells

    t = get_target(target)
    cfg = point.accel_config().with_changes(rows=n, cols=n)
    name = f"{point.name}-{n}x{n}" + (f"-m{cfg.mult_cols}" if cfg.mult_cols else "")
    module_cells(build_design("array", cfg, t, baud=115_200), t, name,
                 options=design_options("array", t, dsp=point.dsp), out_root=work, reuse=True)
    stat = json.loads((work / t.name / name / "yosys_stat.json").read_bytes())
    cells = yosys_cells(stat)
    return {
        "logic_cells": round(sum(w * v for c, v in cells.items()
                                 for prefix, w in COMB_WEIGHTS[t.name].items()
                                 if c.startswith(prefix))),
        "dsp": sum(cells.get(c, 0) for c in DSP_CELLS[t.name]),
        "bram": sum(cells.get(c, 0) for c in BRAM_CELLS[t.name]),
    }


def largest_job(point: Point, grid: Grid, out: str, cache: str | None) -> dict:
    """A largest point resolved in a worker (process pool or Ray task): its config, the
    place-and-route runs made on the way (by job key) and the progress lines, or ``error``."""
    if cache and not os.environ.get("YOWASP_CACHE_DIR"):
        os.environ["YOWASP_CACHE_DIR"] = cache
    records: dict[str, dict] = {}
    log: list[str] = []
    try:
        p = _resolve_largest(point, grid, Path(out), cache, records.__setitem__, log.append)
    except SqaccelError as e:
        return {"error": str(e), "records": records, "log": log}
    return {"config": p.config, "records": records, "log": log}


def _resolve_largest(point: Point, grid: Grid, out: Path, cache: str | None,
                     record: Callable[[str, dict], None], say: Callable[[str], None]) -> Point:
    """``point`` at the largest n x n that fits: bisection on Yosys's counts against the
    device's available cells (times ``largest_fill``), then place-and-route of the first
    seed, one size smaller until it fits. A ``fill_dsp`` point takes at each size as many
    multiplier columns as the DSP blocks left by the requantisers hold. The answer is kept
    in ``<out>/largest/``."""
    root = files.check_container(out / "largest", SWEEP_KIND)
    memo = root / f"{point.name}.json"
    key = {"point": point.spec(), "target": grid.target, "seed": grid.seeds[0],
           "fill": grid.largest_fill, "timeout_s": grid.timeout_s}
    try:
        known = json.loads(memo.read_bytes())
        if known.get("key") == key:
            return dataclasses.replace(point, config=known["config"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    avail = _available(grid, root, cache)
    limits = {"logic_cells": grid.largest_fill * avail["logic_cells"], "dsp": avail["dsp"],
              "bram": avail["bram"]}
    work = root / "yosys"
    base: dict[int, dict] = {}  # the point without multiplier columns, by size
    estimates: dict[int, dict] = {}  # the point as built at each size
    failed: dict[int, str] = {}  # sizes whose Yosys run failed, with the reason
    hi = min(SIZE_LIMITS["rows"][1], SIZE_LIMITS["cols"][1])

    def fit(p: Point, n: int) -> dict:
        est = yosys_fit(p, n, grid.target, work)
        mc = p.config.get("mult_cols", 0)
        say(f"  {point.name}: {n}x{n}{f' ({mc} multiplier columns)' if mc else ''} needs "
            f"{est['logic_cells']} cells, {est['dsp']} DSP, {est['bram']} BRAM (Yosys)")
        return est

    for n in (2, 4, 8):
        base[n] = fit(point, n)
    if point.fill_dsp:
        # DSP blocks per multiplier PE, and the logic cells that one saves against a
        # shift-add PE, from a 2 x 2 array of multiplier PEs.
        two = fit(point.with_config(mult_cols=2), 2)
        per_pe = max(1, (two["dsp"] - base[2]["dsp"]) / 4)
        saved = (base[2]["logic_cells"] - two["logic_cells"]) / 4

    def config_at(n: int) -> dict:
        cfg = {"rows": n, "cols": n}
        if point.fill_dsp:
            spare = limits["dsp"] - _quadratic(base, "dsp", n)
            cfg["mult_cols"] = max(0, min(n, int(spare // (n * per_pe))))
        return cfg

    def predicted(n: int) -> dict:
        est = {k: _quadratic(base, k, n) for k in limits}
        mc = config_at(n).get("mult_cols", 0)
        if mc:
            est["logic_cells"] -= mc * n * saved
            est["dsp"] += mc * n * per_pe
        return est

    def fits(n: int) -> bool:
        if n in failed:
            return False
        if n not in estimates:
            p = point.with_config(**config_at(n))
            try:
                estimates[n] = base[n] if not point.fill_dsp and n in base else fit(p, n)
            except SqaccelError as e:
                # A size the synthesis tool cannot build does not fit this flow (Yosys
                # 0.70's ABC9 stops on a few array shapes); the reason stays in the answer.
                failed[n] = str(e).splitlines()[0]
                say(f"  {point.name}: {n}x{n} not synthesised: {failed[n]}")
                return False
        return all(estimates[n][k] <= limits[k] for k in limits)

    # The largest n that three small sizes predict (each resource as a + b n + d n^2) is
    # checked with Yosys, and stepped up or down until it is the largest that fits.
    n = max([1] + [m for m in range(1, hi + 1)
                   if all(v <= limits[k] for k, v in predicted(m).items())])
    if fits(n):
        while n < hi and fits(n + 1):
            n += 1
    else:
        n -= 1
        while n >= 1 and not fits(n):
            n -= 1
    say(f"  {point.name}: largest by Yosys's counts: {n}x{n}")
    tried = []
    while n >= 1:
        p = point.with_config(**config_at(n))
        seed = grid.seeds[0]
        spec, folder = job_spec(grid, p, seed), _job_folder(out, p, seed)
        r = finished(folder, spec)
        if r is None:
            say(f"  {point.name}: confirming {n}x{n} by place-and-route (seed {seed})")
            files.check_container(folder.parent, SWEEP_KIND)
            r = run_job(spec, str(folder.resolve()), cache)
            record(f"{p.name}/seed{seed}", r)
        if "error" not in r:
            files.write_json(memo, {"key": key, "size": n, "config": p.config,
                                    "estimates": estimates, "available": avail,
                                    "not_synthesised": failed, "not_placed": tried})
            return p
        tried.append(n)
        n -= 1
    raise SqaccelError(f"{point.name}: no array size fits {grid.target}")


def _quadratic(est: dict[int, dict], key: str, n: int) -> float:
    """``est[.][key]`` at n, from the quadratic through est's first three sizes."""
    (n0, c0), (n1, c1), (n2, c2) = sorted((m, e[key]) for m, e in est.items())[:3]
    f01, f12 = (c1 - c0) / (n1 - n0), (c2 - c1) / (n2 - n1)
    d = (f12 - f01) / (n2 - n0)
    b = f01 - d * (n0 + n1)
    return c0 + b * (n - n0) + d * (n * n - n0 * n0)


def _available(grid: Grid, root: Path, cache: str | None) -> dict:
    """The device's available resources, from the report of a single PE's place-and-route
    (seconds)."""
    spec = {"format": RESULT_FORMAT, "target": grid.target,
            "point": Point("probe", "pe", False, {}).spec(), "seed": 1, "timeout_s": None}
    r = finished(root / "probe", spec) or run_job(spec, str((root / "probe").resolve()), cache)
    if "error" in r:
        raise SqaccelError(f"largest: the device probe failed: {r['error']}")
    return r["available"]


# -- results ---------------------------------------------------------------------------------


def point_row(point: Point, grid: Grid, by_seed: dict[int, dict], nets: dict) -> dict:
    """One point's figures: resources of its first successful seed, Fmax per seed and the
    median, peak GOPS, GOPS per thousand cells and, for arrays, per network."""
    cfg = point.accel_config()
    ok = {s: r for s, r in by_seed.items() if "error" not in r}
    row: dict = {"name": point.name, "design": point.design, "target": grid.target,
                 "pe": cfg.pe, "mult_cols": cfg.mult_cols, "rows": cfg.rows, "cols": cfg.cols,
                 "pes": point.pes(),
                 "dsp_allowed": point.dsp, "largest": point.largest, "fill_dsp": point.fill_dsp,
                 "config": dict(sorted(point.config.items())),
                 "fmax_mhz": {str(s): (r["fmax_mhz"] if s in ok else None)
                              for s, r in by_seed.items()},
                 "errors": {str(s): r["error"] for s, r in by_seed.items() if s not in ok}}
    if not ok:
        return row
    first = ok[min(ok)]
    res = first["resources"]
    row.update(cells=res["logic_cells"], ffs=res["ffs"], lut4=res["lut4"],
               carry=res["carry"], dsp=res["dsp"], bram=res["bram"],
               available=first["available"], critical_path=first.get("critical_path"))
    fmaxes = [r["fmax_mhz"] for r in ok.values() if r["fmax_mhz"] is not None]
    if not fmaxes:
        return row
    fmax = statistics.median(fmaxes)
    peak = OPS_PER_MAC * point.pes() * fmax / 1e3
    row.update(fmax_median_mhz=round(fmax, 2), peak_gops=round(peak, 3),
               gops_per_kcell=round(peak / (res["logic_cells"] / 1e3), 4)
               if res["logic_cells"] else None)
    if nets and point.design != "pe":
        row["networks"] = {name: _network(net, cfg, grid.batch, fmax, res["logic_cells"])
                           for name, net in nets.items()}
    return row


def _network(net, cfg: AccelConfig, batch: int, fmax: float, cells: int) -> dict:
    """``sqaccel.perf`` of ``net`` on the point's array (its rows, columns and PE kind;
    the network's widths and buffers). A hybrid's multiplier columns take the same cycles."""
    from sqaccel.perf import network_perf

    here = net.cfg.with_changes(rows=cfg.rows, cols=cfg.cols, pe=cfg.pe, mult_cols=0)
    try:
        t = network_perf(dataclasses.replace(net, cfg=here), batch, fmax, cells).totals
    except SqaccelError as e:
        return {"error": str(e)}
    keep = ("cycles", "utilisation", "latency_ms", "images_per_s", "gops", "gops_per_kcell")
    return {k: (round(t[k], 6) if isinstance(t[k], float) else t[k]) for k in keep if k in t}


def pareto(rows: Iterable[dict]) -> list[str]:
    """Names of the points no other point beats on both cells (fewer) and peak GOPS (more)."""
    pts = [(r["name"], r["cells"], r["peak_gops"]) for r in rows if r.get("peak_gops")]
    front = []
    for name, c, g in pts:
        beaten = any(c2 <= c and g2 >= g and (c2 < c or g2 > g) for _, c2, g2 in pts)
        if not beaten:
            front.append(name)
    return front


CSV_HEAD = ("name", "design", "target", "pe", "mult_cols", "rows", "cols", "pes",
            "dsp_allowed", "cells", "ffs", "dsp", "bram")


def csv_text(rows: list[dict], seeds: Iterable[int]) -> str:
    seeds = list(seeds)
    nets = sorted({n for r in rows for n in r.get("networks", {})})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_HEAD, *(f"fmax_seed{s}_mhz" for s in seeds), "fmax_median_mhz",
                "peak_gops", "gops_per_kcell", *(f"gops_{n}" for n in nets)])
    for r in rows:
        w.writerow([*(r.get(k, "") for k in CSV_HEAD),
                    *(_blank(r["fmax_mhz"].get(str(s))) for s in seeds),
                    *(_blank(r.get(k)) for k in ("fmax_median_mhz", "peak_gops",
                                                 "gops_per_kcell")),
                    *(_blank(r.get("networks", {}).get(n, {}).get("gops")) for n in nets)])
    return buf.getvalue()


def _blank(v) -> str:
    return "" if v is None else str(v)


def table_rows(rows: list[dict], front: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table for people: one line per point."""
    head = ["point", "PE", "size", "DSP ok", "cells", "FF", "DSP", "BRAM", "Fmax med (MHz)",
            "Fmax range", "peak GOPS", "GOPS/kcell", "Pareto"]
    body = []
    for r in rows:
        f = [v for v in r["fmax_mhz"].values() if v is not None]
        size = "1 PE" if r["design"] == "pe" else f"{r['rows']}x{r['cols']}"
        if r["design"] == "top":
            size += " top"
        pe = r["pe"] + (f" + {r['mult_cols']} mult cols" if r.get("mult_cols") else "")
        body.append([r["name"], pe, size, "yes" if r["dsp_allowed"] else "no",
                     *(_dash(r.get(k)) for k in ("cells", "ffs", "dsp", "bram")),
                     _dash(r.get("fmax_median_mhz"), ".1f"),
                     f"{min(f):.0f}-{max(f):.0f}" if f else "-",
                     _dash(r.get("peak_gops"), ".2f"), _dash(r.get("gops_per_kcell"), ".3f"),
                     "*" if r["name"] in front else ""])
    return head, body


def _dash(v, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def format_table(res: SweepResult, markdown: bool = False) -> str:
    from sqaccel.tables import render_table

    front = pareto(res.rows)
    head, body = table_rows(res.rows, front)
    text = render_table(head, body, markdown=markdown, text_cols=4)
    nets = sorted({n for r in res.rows for n in r.get("networks", {})})
    if nets:
        nb = [[r["name"], *(_dash(r.get("networks", {}).get(n, {}).get("gops"), ".2f")
                            for n in nets)] for r in res.rows if r.get("networks")]
        text += "\n\n" + render_table(["point", *(f"{n} GOPS" for n in nets)], nb,
                                      markdown=markdown)
    return text


def write_results(res: SweepResult, grid: Grid) -> None:
    out = res.out
    front = pareto(res.rows)
    files.write_json(out / "results.json", {"grid": grid.spec(), "pareto": front,
                                            **res.to_dict()})
    files.write_text(out / "results.csv", csv_text(res.rows, grid.seeds))
    lines = [f"# Sweep on {grid.target}: {len(grid.points)} points x {len(grid.seeds)} seeds",
             "", f"Seeds {', '.join(map(str, grid.seeds))}; Fmax is the median over them; "
             "peak GOPS = 2 x PEs x Fmax; * marks the Pareto front of cells against peak "
             f"GOPS. This run: {len(res.ran)} jobs run, {len(res.reused)} finished before, "
             f"{res.wall_s:.0f} s.", "", format_table(res, markdown=True)]
    errors = [(r["name"], s, e) for r in res.rows for s, e in r["errors"].items()]
    if errors:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {n} seed {s}: {e.splitlines()[0]}" for n, s, e in errors]
    files.write_text(out / "summary.md", "\n".join(lines) + "\n")
    plot(res.rows, front, out / "pareto.png")


def plot(rows: list[dict], front: list[str], path: Path) -> None:
    """Peak GOPS against cells with the Pareto front, and Fmax against the number of PEs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("peak_gops")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    kinds = sorted({(r["pe"], r["dsp_allowed"]) for r in done})
    for pe, dsp in kinds:
        rs = [r for r in done if (r["pe"], r["dsp_allowed"]) == (pe, dsp)]
        label = pe + ("" if pe == "shift" else " (DSP)" if dsp else " (LUT)")
        a.scatter([r["cells"] for r in rs], [r["peak_gops"] for r in rs], label=label)
        b.scatter([r["pes"] for r in rs], [r["fmax_median_mhz"] for r in rs], label=label)
    fr = sorted((r for r in done if r["name"] in front), key=lambda r: r["cells"])
    if fr:
        a.scatter([r["cells"] for r in fr], [r["peak_gops"] for r in fr], s=160,
                  facecolors="none", edgecolors="black", label="Pareto front")
        a.step([r["cells"] for r in fr], [r["peak_gops"] for r in fr], where="post",
               color="black", linestyle="--", linewidth=0.8)
    for r in done:
        a.annotate(r["name"], (r["cells"], r["peak_gops"]), fontsize=7)
    a.set(xlabel="logic cells", ylabel="peak GOPS", title="Peak GOPS against cells")
    b.set(xlabel="PEs", ylabel="Fmax, median over seeds (MHz)", title="Fmax against size")
    for ax in (a, b):
        if len(done) > 1 and min(r["cells"] for r in done) > 0:
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        files.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
