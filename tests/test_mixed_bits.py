"""Mixed bits per layer: the allocation is the best one within the budget, and the golden
model and the memory images carry each layer's bits."""

import itertools
import json
import random

import pytest

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw import images
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.calibrate import CalibSettings, reconstruct, search_weights
from sqaccel.sw.intnet import network_differences
from sqaccel.sw.lowering import build_int_network
from sqaccel.sw.mixed_bits import allocate, budget_for, free_layers, layer_sensitivity, mixed_bits

CFG = AccelConfig()
FAST = CalibSettings(iters=120, scale_iters=30, seed=0)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def model():
    from sqaccel.sw.train import load_or_train_digits

    return load_or_train_digits(seed=0)


@pytest.fixture(scope="module")
def x_calib():
    from sqaccel.sw.data import load_split

    return load_split("digits", 0).calib.tensors[0]


@pytest.fixture(scope="module")
def sensitivity(model, x_calib):
    return layer_sensitivity(model, "sq", CFG, x_calib)


# -- the allocation --------------------------------------------------------------------------


def brute_force(sens, weights, budget):
    best = None
    names = list(sens)
    for bits in itertools.product(*(sorted(sens[n]) for n in names)):
        mem = sum(b * weights[n] for b, n in zip(bits, names, strict=True))
        if mem > budget:
            continue
        s = sum(sens[n][b] for b, n in zip(bits, names, strict=True))
        if best is None or s < best[0]:
            best = (s, mem)
    return best


def test_allocation_is_the_best_within_the_budget():
    rng = random.Random(0)
    for case in range(60):
        names = [f"l{i}" for i in range(rng.randint(1, 5))]
        weights = {n: rng.choice([64, 100, 4608, 9216, 8192, 333]) for n in names}
        sens = {}
        for n in names:
            # Sensitivities usually fall with bits, but not always (noise): both kinds.
            vals = sorted((rng.random() for _ in range(3)), reverse=case % 3 != 0)
            sens[n] = dict(zip((2, 3, 4), vals, strict=True))
        total = sum(weights.values())
        for avg in (2.0, 2.3, 2.5, 3.0, 3.7, 4.0):
            budget = int(avg * total)
            bits, used, predicted = allocate(sens, weights, budget)
            assert used <= budget
            assert used == sum(bits[n] * weights[n] for n in names)
            assert predicted == pytest.approx(sum(sens[n][bits[n]] for n in names))
            best = brute_force(sens, weights, budget)
            assert predicted == pytest.approx(best[0], abs=1e-12), (case, avg)


def test_a_budget_below_every_allocation_is_refused():
    sens = {"a": {2: 1.0, 3: 0.5}, "b": {2: 1.0, 3: 0.5}}
    with pytest.raises(SqaccelError, match="below the smallest allocation"):
        allocate(sens, {"a": 10, "b": 10}, 39)
    assert allocate(sens, {"a": 10, "b": 10}, 40)[0] == {"a": 2, "b": 2}


def test_w3_budget_counts_the_layers_between_first_and_last(model):
    fixed, free = free_layers(model, CFG)
    assert fixed == {"0": 4, "2": 4, "5": 4, "9": 4, "11": 4}
    assert free == ("2", "5", "9")
    assert budget_for(model, CFG, 3) == 3 * (16 * 32 * 9 + 32 * 32 * 9 + 128 * 64)


def test_sensitivity_falls_with_more_bits(sensitivity):
    assert sorted(sensitivity) == ["2", "5", "9"]
    for name, s in sensitivity.items():
        assert s[2] > s[3] > s[4] > 0, name


# -- end to end ------------------------------------------------------------------------------


def test_mixed_bits_are_carried_by_golden_model_and_images(model, x_calib, sensitivity,
                                                          tmp_path):
    alloc = mixed_bits(model, "sq", CFG, x_calib, 2.5, sensitivity=sensitivity)
    assert alloc.used_bits <= alloc.budget_bits == budget_for(model, CFG, 2.5)
    assert alloc.bits["0"] == alloc.bits["11"] == CFG.weight_bits
    free_bits = [alloc.bits[n] for n in alloc.free]
    assert set(free_bits) <= {2, 3, 4} and len(set(free_bits)) > 1  # really mixed
    assert alloc.average_bits <= 2.5

    qw = search_weights(model, "sq", alloc.bits, CFG)
    cal = reconstruct(model, qw, x_calib, CFG.act_bits, FAST, progress=False)
    assert {n: q.bits for n, q in cal.qweights.items()} == alloc.bits
    net = build_int_network(model, cal.qweights, cal.scales, CFG, tuple(x_calib.shape[1:]))
    assert {layer.name: layer.bits for layer in net.gemm_layers()} == alloc.bits

    out = images.export(net, tmp_path / "mixed", reference_inputs=net.quantize_input(x_calib[:4]))
    manifest = json.loads((out / images.MANIFEST).read_text())
    gemm = {s["name"]: s["bits"] for s in manifest["steps"] if s.get("op") == "gemm"}
    assert gemm == alloc.bits
    for entry in manifest["files"].values():
        assert entry["bits"] == alloc.bits[entry["layer"]]
        assert entry["array_bits"] == CFG.weight_bits
    loaded = images.verify(out, CFG)
    assert network_differences(loaded.network, net) == []
    assert {layer.name: layer.bits for layer in loaded.network.gemm_layers()} == alloc.bits


def test_w3_budget_allocation_fits(model, x_calib, sensitivity):
    alloc = mixed_bits(model, "sq", CFG, x_calib, 3.0, sensitivity=sensitivity)
    assert alloc.used_bits <= budget_for(model, CFG, 3)
    # Spending the whole W3 budget at 3 bits each is one candidate: the choice is no worse.
    uniform = sum(sensitivity[n][3] for n in alloc.free)
    assert alloc.predicted <= uniform


def test_choices_wider_than_the_array_are_refused(model, x_calib):
    with pytest.raises(SqaccelError, match="choices"):
        layer_sensitivity(model, "sq", AccelConfig(weight_bits=3), x_calib, choices=(2, 4))
