"""Whole-network cosimulation of the built-in residual and depthwise networks (resnet20,
mobilenetv2-tiny) on the RTL of the default 8x8 config: every intermediate tensor of the
RTL run compared with the golden model's, the predictions equal, and every layer's cycles
equal to ``sqaccel perf``'s cycle model. ``make test`` runs one MNIST test image per
network, ``make sim`` (SQACCEL_SIM_FULL=1) eight. SQACCEL_SEED repeats a run."""

from __future__ import annotations

import pytest
import torch

from sqaccel.perf import network_perf
from sqaccel.sim import network_level
from sqaccel.sim.builds import full_run, seed_from_env
from sqaccel.sw import images

IMAGES = 8 if full_run() else 1


# A depthwise filter has nine weights: one scale for all of a layer's channels loses most of
# them (46 % top-1 at W4), one per channel keeps full precision's 98 %.
@pytest.mark.parametrize(("model", "per_channel"), [("resnet20", False),
                                                    ("mobilenetv2-tiny", True)])
def test_cosim_whole_network(model, per_channel):
    d = network_level.network_images(model, per_channel=per_channel)
    loaded = images.load(d)
    net = loaded.network
    assert loaded.manifest["info"]["dataset"] == "mnist5k"
    seed = seed_from_env()
    x, labels, what = network_level.test_inputs(loaded, IMAGES)
    # Spread over the class-ordered split: as many classes as images (up to 10).
    assert len(set(labels.tolist())) == min(x.shape[0], 10)
    print(f"{model} cosim: seed {seed} (repeat with SQACCEL_SEED={seed}), {what}")
    run = network_level.run_network(loaded, x, seed)
    assert not run.result.failed
    assert torch.equal(torch.tensor(run.predictions), net.predict(x))
    gemms = [la.name for la in net.gemm_layers()]
    assert sorted(run.layers) == sorted(gemms)
    perf = network_perf(net, batch=x.shape[0])
    assert {la.name: la.cycles for la in perf.layers} == {
        name: s["cycles"] for name, s in run.layers.items()}
    right = sum(int(p == y) for p, y in zip(run.predictions, labels.tolist(), strict=True))
    print(f"  {len(gemms)} GEMM layers and {len(net.steps) - len(gemms)} host steps "
          f"bit-exact; {right} of {x.shape[0]} right; {run.sim_cycles} cycles, "
          f"{run.wall_s:.1f} s")
    assert right >= x.shape[0] // 2  # a working network, not only a bit-exact one
