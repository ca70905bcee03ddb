"""The demo's residual-network flow: resnet20 on MNIST, from its committed weights to the
RTL. Exported as ``sqaccel export --model resnet20`` does (SQ weights, calibrated A8
activations), its cycles from ``sqaccel perf`` and a whole-network cosimulation of a few
MNIST test images on the same Verilog, every step's tensor compared."""

from __future__ import annotations

import time

import torch

from sqaccel.demo.state import DemoRun, digest
from sqaccel.errors import SqaccelError

NETWORK = "resnet20"
IMAGES = 4  # whole-network cosimulation: test images (a minute or two each on two cores)


def resnet_key(run: DemoRun) -> str:
    return digest(["resnet20", run.state.verilog_digest, run.cfg.to_dict(), run.seed, IMAGES])


def step_resnet20(run: DemoRun) -> None:
    from sqaccel.perf import network_perf
    from sqaccel.sim import network_level
    from sqaccel.sim.runner import CosimFailure, logs_to
    from sqaccel.sw import images
    from sqaccel.sw.deploy import export_model

    cfg = run.cfg
    bits = min(4, cfg.weight_bits)
    r = export_model(run.out / f"images-{NETWORK}", cfg, "sq", bits, model=NETWORK,
                     seed=run.seed, cache_dir=run.cache_dir, force=run.force)
    run.say(f"{NETWORK} SQ W{bits}A{cfg.act_bits} on the {r.dataset} test split: integer "
            f"{r.integer_accuracy:.2f} %, fake-quantised float {r.fake_quant_accuracy:.2f} % "
            f"({r.test_images} images); images in {r.directory}")
    loaded = images.load(r.directory, cfg)
    perf = network_perf(loaded.network, batch=1)
    tot = perf.totals
    run.say(f"cycle model: {tot['cycles']:,} cycles per image, {tot['macs']:,} MACs, "
            f"utilisation {100 * tot['utilisation']:.1f} %")
    x, labels, what = network_level.test_inputs(loaded, IMAGES)
    seed = run.seed + 1
    t0 = time.perf_counter()
    try:
        with logs_to(run.out / "logs"):
            nr = network_level.run_network(loaded, x, seed)
    except CosimFailure as e:
        raise SqaccelError(f"{NETWORK}: the whole-network cosimulation failed (seed {seed}):\n"
                           f"{e}") from None
    correct = int((torch.tensor(nr.predictions) == labels).sum())
    run.say(f"RTL on {what}: every step's tensor equal to the golden model, classes "
            f"{nr.predictions}, labels {labels.tolist()} ({correct}/{len(labels)} correct; "
            f"{nr.wall_s:.0f} s in the simulator)")
    run.write_json(f"{NETWORK}.json", {
        "model": NETWORK, "dataset": r.dataset, "method": "sq", "bits": bits,
        "act_bits": cfg.act_bits, "config": cfg.name(),
        "integer_accuracy": r.integer_accuracy, "fake_quant_accuracy": r.fake_quant_accuracy,
        "test_images": r.test_images,
        "perf": perf.to_dict(),
        "cosim": {"images": len(labels), "seed": seed, "predictions": nr.predictions,
                  "labels": labels.tolist(), "correct": correct, "bit_exact": True,
                  "layers": nr.layers, "sim_cycles": nr.sim_cycles,
                  "sim_seconds": nr.wall_s, "seconds": time.perf_counter() - t0},
    })
