"""Activation quantisation: rounding, range search, calibration and the fake-quant model."""

import pytest
import torch
from torch import nn

from sqaccel.errors import SqaccelError
from sqaccel.sw.actquant import (
    ActQuant,
    ActScales,
    calibrate,
    choose_quant,
    fake_quant_model,
    one_thread,
    quant_for_range,
)
from sqaccel.sw.plan import run, sequential_plan


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The machine's cores are shared: small tensors run far faster on one thread.
    with one_thread():
        yield


def test_quantize_rounds_half_up_and_clamps():
    q = ActQuant(0.5, 0, 4)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.25, 0.75, 1.25, 7.5, 7.74, 100.0])
    assert q.quantize(x).tolist() == [0, 0, 0, 1, 2, 3, 15, 15, 15]
    assert q.fake(torch.tensor([0.3])).item() == 0.5
    with pytest.raises(SqaccelError, match="NaN or Inf"):
        q.quantize(torch.tensor([float("nan")]))
    for bad in (dict(scale=0.0, zero_point=0, bits=8), dict(scale=1.0, zero_point=300, bits=8),
                dict(scale=1.0, zero_point=0, bits=6)):
        with pytest.raises(SqaccelError):
            ActQuant(**bad)


def test_signed_input_gets_a_zero_point_that_represents_zero_exactly():
    x = torch.linspace(-1.0, 3.0, 1001)
    for bits in (4, 8):
        q = choose_quant(x, bits)
        assert 0 < q.zero_point < q.qmax
        assert q.dequantize(q.quantize(torch.tensor([0.0]))).item() == 0.0
        lo, hi = q.dequantize(torch.tensor(0)).item(), q.dequantize(torch.tensor(q.qmax)).item()
        assert lo < 0 < hi
        inside = x.double()[(x >= lo) & (x <= hi)]
        err = (q.fake(inside) - inside).abs().max().item()
        assert err <= q.scale / 2 + 1e-12


def test_unsigned_tensor_has_zero_point_zero():
    x = torch.rand(10000)
    assert choose_quant(x, 8).zero_point == 0
    assert quant_for_range(0.0, 2.0, 8).scale == 2.0 / 255


def test_mse_search_clips_an_outlier_and_beats_the_full_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(20000, generator=gen), torch.tensor([50.0])])
    for bits in (4, 8):
        q = choose_quant(x, bits, "mse")
        full = quant_for_range(0.0, 50.0, bits)

        def mse(qq):
            return float(((qq.fake(x.double()) - x.double()) ** 2).mean())

        assert q.scale < full.scale
        assert mse(q) < mse(full)
        # the minimum over its grid: no other clip on the grid does better
        for i in (5, 10, 20, 50, 100):
            assert mse(q) <= mse(quant_for_range(0.0, 50.0 * i / 100, bits))


def test_percentile_range():
    x = torch.arange(10001, dtype=torch.float64) / 100  # 0 .. 100
    q = choose_quant(x, 8, "percentile", 99.0)
    assert q.zero_point == 0
    assert abs(q.scale * 255 - 99.0) < 1e-9
    with pytest.raises(SqaccelError, match="method must be one of"):
        choose_quant(x, 8, "entropy")


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(6, 5), nn.ReLU(),
        nn.Linear(5, 3),
    ).eval()


def test_plan_fuses_relus_and_keeps_the_raw_last_layer():
    plan = sequential_plan(small_net())
    assert [(s.kind, s.name, s.relu) for s in plan] == [
        ("gemm", "0", "1"), ("maxpool", "2", None), ("gemm", "3", "4"), ("avgpool", "5", None),
        ("flatten", "6", None), ("gemm", "8", "9"), ("gemm", "10", None),
    ]
    # A raw GEMM that feeds another GEMM gets a requant step (its output is an activation).
    chain = sequential_plan(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    assert [(s.kind, s.name, s.inputs) for s in chain] == [
        ("gemm", "0", ("input",)), ("requant", "0.q", ("0",)), ("gemm", "1", ("0.q",))]
    with pytest.raises(SqaccelError, match=r"node '_1' \(call_module Sigmoid, module '1'\) "
                                           "is not supported"):
        sequential_plan(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()))


def test_calibration_and_fake_quant_model_put_activations_on_the_grids():
    net = small_net()
    x = torch.rand(64, 1, 8, 8)
    scales = calibrate(net, x, 8)
    assert set(scales.outputs) == {"0", "3", "8"}
    assert scales.input.zero_point == 0 and scales.input.bits == 8
    assert all(q.zero_point == 0 for q in scales.outputs.values())
    assert ActScales.from_dict(scales.to_dict()) == scales
    fq = fake_quant_model(net, scales)
    assert fq(x).shape == (64, 3)
    # Every tensor the integer network holds as an activation sits on its grid: the input,
    # the ReLU outputs, and the average pool re-rounded to its input's grid.
    _, seen = run(fq.plan, x, fq.weights, fq.quants, record=True)
    for key, q in (("input", scales.input), ("0", scales.outputs["0"]),
                   ("3", scales.outputs["3"]), ("5", scales.outputs["3"]),
                   ("8", scales.outputs["8"])):
        codes = seen[key].double() / q.scale
        assert torch.allclose(codes, codes.round(), atol=1e-4), key
        assert float(codes.max()) <= q.qmax + 1e-4 and float(codes.min()) >= 0
