"""Speed of the SQ subset search: the fast search against the brute-force oracle.

Prints, and writes build/bench/search.json:
  (a) the fast search on one 2,359,296-weight Laplacian tensor at 4 bits, and an estimate
      of the oracle there: a few of its rounds timed, times the pool's Lloyd rounds;
  (b) fast vs oracle on a 36,864-weight tensor at 3 bits, the oracle timed on a random
      sample of candidates and extrapolated to the whole pool (said in the output);
  (c) fast and oracle on a smaller tensor over the whole pool: the same subset and alpha.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sqaccel import files
from sqaccel.sw.sq_search import _direct_round, candidate_pool, search_oracle, search_tensor

OUT = Path("build/bench/search.json")
SEED = 2022


def machine() -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def best_of(fn, repeats: int) -> tuple[float, float, object]:
    runs = [timed(fn) for _ in range(repeats)]
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    return wall, cpu, runs[-1][2]


def oracle_round_seconds(w: np.ndarray, bits: int, rounds: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one brute-force oracle round on ``w``, the mean of ``rounds``."""
    pool = candidate_pool(bits)
    x = np.abs(w.reshape(-1)) / np.abs(w).max()
    c = pool.size // 2

    def go() -> None:
        alpha = 1.0
        for _ in range(rounds):
            alpha = _direct_round(x, pool.levels[c], pool.mids[c], alpha)[0]

    wall, cpu, _ = timed(go)
    return wall / rounds, cpu / rounds


def bench_large(rng: np.random.Generator) -> dict:
    w = rng.laplace(size=2_359_296)
    seconds, cpu, res = best_of(lambda: search_tensor(w, 4), 3)
    print(
        f"(a) fast search, 2,359,296 Laplacian weights, 4 bits, {res.candidates} candidates: "
        f"{seconds:.3f} s wall, {cpu:.3f} s CPU (best of 3)"
    )
    print(f"    chosen members {res.members}, alpha {res.alpha:.6f}, L2 {res.l2:.6f}, "
          f"{res.rounds} rounds; {res.pool_rounds} Lloyd rounds over the whole pool")
    round_s, round_cpu = oracle_round_seconds(w, 4, 5)
    oracle_s, oracle_cpu = round_s * res.pool_rounds, round_cpu * res.pool_rounds
    print(
        f"    brute-force oracle NOT run in full: 5 of its rounds timed on this tensor "
        f"({round_s * 1e3:.0f} ms wall, {round_cpu * 1e3:.0f} ms CPU each) x "
        f"{res.pool_rounds} rounds = {oracle_s / 3600:.1f} h wall, {oracle_cpu / 3600:.1f} h CPU; "
        f"ratio {oracle_s / seconds:.0f}x wall, {oracle_cpu / cpu:.0f}x CPU"
    )
    return {"weights": w.size, "bits": 4, "candidates": res.candidates, "seconds": seconds,
            "cpu_seconds": cpu, "members": list(res.members), "alpha": res.alpha,
            "l2": res.l2, "pool_rounds": res.pool_rounds,
            "oracle_round_seconds": round_s, "oracle_round_cpu_seconds": round_cpu,
            "oracle_seconds_estimated": oracle_s, "oracle_cpu_seconds_estimated": oracle_cpu,
            "ratio_estimated": oracle_s / seconds, "ratio_cpu_estimated": oracle_cpu / cpu}


def bench_ratio(rng: np.random.Generator, sample: int = 60) -> dict:
    w = rng.laplace(size=36_864)
    pool = candidate_pool(3)
    fast_s, fast_cpu, fast = best_of(lambda: search_tensor(w, 3), 5)
    picks = np.sort(rng.choice(pool.size, size=sample, replace=False))
    sample_s, sample_cpu, part = timed(lambda: search_oracle(w, 3, candidates=picks))
    # Two extrapolations to the whole pool: by candidates, and by Lloyd rounds (the oracle
    # runs exactly the rounds the fast search counted; rounds per candidate vary widely).
    by_cand = pool.size / sample
    by_round = fast.pool_rounds / part.pool_rounds
    oracle_s, oracle_cpu = sample_s * by_cand, sample_cpu * by_cand
    oracle_r_s, oracle_r_cpu = sample_s * by_round, sample_cpu * by_round
    print(
        f"(b) 36,864 Laplacian weights, 3 bits, {pool.size} candidates: fast {fast_s * 1e3:.1f} ms "
        f"wall, {fast_cpu * 1e3:.1f} ms CPU (best of 5)"
    )
    print(
        f"    brute-force oracle timed on a random sample of {sample} candidates "
        f"({part.pool_rounds} rounds: {sample_s:.2f} s wall, {sample_cpu:.2f} s CPU), "
        f"extrapolated to all {pool.size}"
    )
    print(
        f"      by candidates: {oracle_s:.1f} s wall, {oracle_cpu:.1f} s CPU; ratio "
        f"{oracle_s / fast_s:.0f}x wall, {oracle_cpu / fast_cpu:.0f}x CPU"
    )
    print(
        f"      by rounds ({fast.pool_rounds} in the pool): {oracle_r_s:.1f} s wall, "
        f"{oracle_r_cpu:.1f} s CPU; ratio {oracle_r_s / fast_s:.0f}x wall, "
        f"{oracle_r_cpu / fast_cpu:.0f}x CPU"
    )
    return {"weights": w.size, "bits": 3, "candidates": pool.size, "fast_seconds": fast_s,
            "fast_cpu_seconds": fast_cpu, "pool_rounds": fast.pool_rounds,
            "oracle_sampled_candidates": sample, "oracle_sample_rounds": part.pool_rounds,
            "oracle_sample_seconds": sample_s, "oracle_sample_cpu_seconds": sample_cpu,
            "oracle_seconds_by_candidates": oracle_s,
            "oracle_cpu_seconds_by_candidates": oracle_cpu,
            "oracle_seconds_by_rounds": oracle_r_s, "oracle_cpu_seconds_by_rounds": oracle_r_cpu,
            "ratio": oracle_s / fast_s, "ratio_cpu": oracle_cpu / fast_cpu,
            "ratio_by_rounds": oracle_r_s / fast_s, "ratio_cpu_by_rounds": oracle_r_cpu / fast_cpu,
            "fast_members": list(fast.members)}


def bench_agree(rng: np.random.Generator) -> dict:
    w = rng.laplace(size=4096)
    fast = search_tensor(w, 3)
    oracle = search_oracle(w, 3)
    same = fast.members == oracle.members
    rel = abs(fast.alpha - oracle.alpha) / abs(oracle.alpha)
    print(
        f"(c) 4,096 Laplacian weights, 3 bits, whole pool: fast {fast.seconds * 1e3:.1f} ms, "
        f"oracle {oracle.seconds:.2f} s; same subset: {same} ({fast.members}), "
        f"alpha relative difference {rel:.1e}"
    )
    return {"weights": w.size, "bits": 3, "same_subset": same, "alpha_rel_diff": rel,
            "fast_seconds": fast.seconds, "oracle_seconds": oracle.seconds,
            "members": list(fast.members)}


def write_json(doc: dict) -> None:
    files.write_json(OUT, doc, indent=2)


def main() -> int:
    info = machine()
    print(f"SQ search benchmark, {info['date']}")
    print(f"machine: {info['cpu_count']} CPUs ({info['cpu']}), python {info['python']}, "
          f"numpy {info['numpy']}, torch {info['torch']}")
    rng = np.random.default_rng(SEED)
    doc = {"machine": info, "seed": SEED}
    doc["large"] = bench_large(rng)
    doc["ratio"] = bench_ratio(rng)
    doc["agree"] = bench_agree(rng)
    write_json(doc)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
