"""Levels 3 and 4 of the cosimulation: the quantised digits CNN on the RTL (default 8x8
config), loaded from its exported memory images through the host interface.

Level 3 runs every Conv2d/Linear layer alone on the golden model's input for it; level 4 runs
the whole network on a batch of test images, the steps between GEMMs in the golden model's
integer code on the RTL's outputs, and checks every intermediate tensor.
``make test`` runs a quick slice; ``make sim`` (SQACCEL_SIM_FULL=1) the full counts.
SQACCEL_SEED repeats a run.
"""

from __future__ import annotations

import pytest
import torch

from sqaccel import abi
from sqaccel.perf import network_perf, totals
from sqaccel.sim import network_level
from sqaccel.sim.builds import full_run, seed_from_env
from sqaccel.sw import images

LAYER_INPUTS = 16 if full_run() else 2  # reference inputs stored at export (16)
NETWORK_IMAGES = 100 if full_run() else 4


@pytest.fixture(scope="module")
def digits():
    return network_level.network_images("digits")


def _layer_names(d) -> list[str]:
    return [la.name for la in images.load(d).network.gemm_layers()]


def test_every_layer_from_its_images(digits):
    seed = seed_from_env()
    x = images.reference_inputs(images.load(digits))[:LAYER_INPUTS]
    names = _layer_names(digits)
    print(f"layer cosim: seed {seed} (repeat with SQACCEL_SEED={seed}), layers {names}, "
          f"{x.shape[0]} inputs")
    runs = network_level.layer_runs(digits, names, x)
    result = network_level.run_layer_runs(runs, seed)
    assert [c.name for c in result.cases] == ["run_gemms"] and not result.failed
    for lr in runs:
        m, n = lr.expected.shape
        print(f"  layer {lr.name!r}: M={m} K={lr.x.shape[1]} N={n}, {len(lr.batches())} "
              "commands, every result word equal to the golden model")


def test_network_on_test_images(digits):
    seed = seed_from_env()
    x, labels, _ = network_level.test_inputs(digits, NETWORK_IMAGES)
    print(f"network cosim: seed {seed} (repeat with SQACCEL_SEED={seed}), "
          f"{x.shape[0]} digits test images")
    run = network_level.run_network(digits, x, seed)
    assert not run.result.failed
    preds = torch.tensor(run.predictions)
    golden = images.load(digits).network.predict(x)
    assert torch.equal(preds, golden)
    acc = 100.0 * float((preds == labels).double().mean())
    print(f"  RTL predictions: {run.predictions}")
    print(f"  RTL accuracy on these {x.shape[0]} images: {acc:.2f} %, "
          f"{run.sim_cycles} cycles, {run.wall_s:.1f} s ({run.wall_s / x.shape[0]:.2f} s per "
          "image)")
    assert set(run.layers) == set(_layer_names(digits))
    # sqaccel perf's cycle model counts what the RTL did, layer by layer.
    perf = network_perf(images.load(digits).network, batch=x.shape[0])
    assert {la.name: la.cycles for la in perf.layers} == {
        name: s["cycles"] for name, s in run.layers.items()}
    assert totals(perf)["cycles"] == sum(s["cycles"] for s in run.layers.values())


def test_row_chunks_fit_the_activation_buffer(digits):
    cfg = images.load(digits).network.cfg
    for m, k in [(1, 9), (3200, 144), (800, 288), (7, cfg.act_depth)]:
        chunks = abi.row_chunks(cfg, m, k)
        assert chunks[0][0] == 0 and chunks[-1][1] == m
        assert all(a == b for (_, a), (b, _) in zip(chunks, chunks[1:], strict=False))
        assert all(-(-(r1 - r0) // cfg.rows) * k <= cfg.act_depth for r0, r1 in chunks)
