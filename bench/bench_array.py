"""Cycles and PE utilisation of GEMMs on the array, measured in Amaranth simulation.

For each array (2x2, 8x8, 16x16; shift-add and multiplier PEs) and K in 64, 128, 512, one
GEMM of 4 x 4 output tiles (M = 4R, N = 4C) runs from preloaded buffers; the cycles from
the command's acceptance to its last result word are compared with the documented formula
(sqaccel.hw.timing), and every result word with the golden model. Prints a table and
writes build/bench/array.json.

    .venv/bin/python bench/bench_array.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from sqaccel import files
from sqaccel.config import AccelConfig
from sqaccel.hw import timing
from sqaccel.sim import hostmodel as hm

ARRAYS = [(2, 2), (8, 8), (16, 16)]
PES = ["shift", "mult"]
KS = [64, 128, 512]
TILES = 4  # row tiles = column tiles
OUT = Path("build/bench/array.json")


def bench_config(rows: int, cols: int, pe: str, ks: list[int]) -> list[dict]:
    cfg = AccelConfig(rows=rows, cols=cols, pe=pe)
    rng = random.Random(rows * 100 + len(pe))
    m, n = TILES * rows, TILES * cols
    gemms = [hm.random_gemm(cfg, m, n, k, rng) for k in ks]
    placed, contents = hm.place(cfg, gemms)
    t0 = time.perf_counter()
    runs = hm.simulate(cfg, [p.command_packet(cfg) for p in placed], init=contents)
    wall = time.perf_counter() - t0
    rows_out = []
    for k, g, run in zip(ks, gemms, runs, strict=True):
        if run.words != g.expected(cfg):
            raise SystemExit(f"{cfg.name()} K={k}: result words differ from the golden model")
        exact = timing.cycles(cfg, m, n, k)
        closed = timing.cycles_closed_form(cfg, m, n, k) if timing.steady_state(
            cfg, m, n, k) else None
        rows_out.append({
            "config": cfg.name(),
            "rows": rows, "cols": cols, "pe": pe,
            "M": m, "N": n, "K": k, "tiles": TILES * TILES,
            "cycles": run.cycles,
            "formula_cycles": exact,
            "closed_form_cycles": closed,
            "formula_matches": run.cycles == exact and closed in (None, run.cycles),
            "utilisation": timing.utilisation(cfg, m, n, k, run.cycles),
            "sim_seconds": wall / len(ks),
        })
    return rows_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2x2 and 8x8 only, K = 64")
    args = ap.parse_args(argv)
    arrays = ARRAYS[:2] if args.quick else ARRAYS
    ks = KS[:1] if args.quick else KS
    results = []
    print(f"{'array':>7} {'pe':>5} {'M':>4} {'N':>4} {'K':>4} {'cycles':>7} {'formula':>7} "
          f"{'match':>5} {'util':>6} {'sim s':>6}")
    for rows, cols in arrays:
        for pe in PES:
            for r in bench_config(rows, cols, pe, ks):
                results.append(r)
                print(f"{rows:>3}x{cols:<3} {pe:>5} {r['M']:>4} {r['N']:>4} {r['K']:>4} "
                      f"{r['cycles']:>7} {r['formula_cycles']:>7} "
                      f"{'yes' if r['formula_matches'] else 'NO':>5} "
                      f"{100 * r['utilisation']:>5.1f}% {r['sim_seconds']:>6.1f}", flush=True)
    files.write_json(OUT, {"tiles_per_gemm": TILES * TILES, "results": results}, indent=2)
    print(f"wrote {OUT}")
    bad = [r for r in results if not r["formula_matches"]]
    low = [r for r in results if r["K"] >= 64 and r["utilisation"] < 0.9]
    if bad or low:
        print(f"{len(bad)} formula mismatches, {len(low)} runs below 90 % utilisation",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
