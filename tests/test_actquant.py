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
from sqaccel.sw.plan import sequential_plan


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
    with pytest.raises(SqaccelError, match="not an nn.Sequential"):
        sequential_plan(nn.Linear(2, 2))
    with pytest.raises(SqaccelError, match="'0' \\(Linear\\): must be followed by ReLU"):
        sequential_plan(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with pytest.raises(SqaccelError, match="'1': Sigmoid is not supported"):
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
    seen = {}

    def hook(name):
        def f(_m, _inp, out):
            seen[name] = out.detach().double()
        return f

    for name, m in fq.named_children():
        m.register_forward_hook(hook(name))
    with torch.no_grad():
        out = fq(x)
    assert out.shape == (64, 3)
    for key, q in (("input_quant", scales.input), ("0_quant", scales.outputs["0"]),
                   ("3_quant", scales.outputs["3"]), ("5_quant", scales.outputs["3"]),
                   ("8_quant", scales.outputs["8"])):
        codes = seen[key] / q.scale
        assert torch.allclose(codes, codes.round(), atol=1e-4), key
        assert float(codes.max()) <= q.qmax + 1e-4 and float(codes.min()) >= 0
