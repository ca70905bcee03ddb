"""Any PyTorch model through torch.fx: BatchNorm folded, ReLU6, residual adds, depthwise
convolutions, requant steps; the integer network equals the fake-quantised model, its
images round-trip, and the whole network runs bit-exactly on the RTL, its cycles equal to
``sqaccel perf``'s layer by layer. Unsupported operations are refused with one error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.perf import network_perf
from sqaccel.sw import images
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.lowering import build_pipeline
from sqaccel.sw.metrics import predict
from sqaccel.sw.plan import plan, prepare


class Inverted(nn.Module):
    """An inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, the add."""

    def __init__(self, c: int, t: int = 2):
        super().__init__()
        h = c * t
        self.expand = nn.Conv2d(c, h, 1, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(h), nn.ReLU6()
        self.dw = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(h), nn.ReLU6()
        self.project = nn.Conv2d(h, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.act2(self.bn2(self.dw(self.act1(self.bn1(self.expand(x))))))
        return x + self.bn3(self.project(y))


class Basic(nn.Module):
    """A basic residual block with a 1x1 strided shortcut and the ReLU after the add."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.short(x))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn, self.relu = nn.BatchNorm2d(8), nn.ReLU()
        self.block = Basic(8, 16, 2)
        self.inverted = Inverted(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.inverted(self.block(self.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    m = Tiny().eval()
    for mod in m.modules():  # statistics far from the identity, so that folding matters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def inputs():
    return torch.rand(48, 1, 10, 10, generator=torch.Generator().manual_seed(1))


def test_plan_folds_batchnorm_fuses_activations_and_names_inputs():
    m = tiny()
    p = plan(m)
    steps = {s.name: s for s in p.steps}
    assert steps["block.conv1"].act == "relu" and steps["block.conv2"].act is None
    assert steps["inverted.expand"].act == "relu6" and steps["inverted.dw"].module.groups == 32
    # The adds read raw GEMM outputs (accumulators) and earlier activations; the first has
    # the block's ReLU fused, the second (an inverted residual) no activation.
    assert [(s.name, s.inputs, s.act) for s in p.steps if s.kind == "add"] == [
        ("add", ("block.conv2", "block.short.0"), "relu"),
        ("add_1", ("add", "inverted.project"), None)]
    assert p.output == "fc" and p.steps[-1].name == "fc"
    # Folding changes nothing the model computes (float, within rounding).
    x = torch.rand(4, 1, 10, 10)
    with torch.no_grad():
        assert torch.allclose(prepare(m)(x), m(x), atol=1e-5)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in prepare(m).modules())


@pytest.mark.parametrize("method", ["sq", "uniform"])
def test_integer_network_equals_fake_quant_and_round_trips(method, inputs, tmp_path):
    cfg = AccelConfig(pe="shift" if method == "sq" else "mult")
    p = build_pipeline(tiny(), method, 4, inputs[:32], cfg)
    kinds = [(type(s).__name__, getattr(s, "op", None), getattr(s, "groups", None))
             for s in p.network.steps]
    assert ("IntStep", "add", None) in kinds and ("IntLayer", None, 32) in kinds
    int_pred = p.network.predict(p.network.quantize_input(inputs))
    assert torch.equal(int_pred, predict(p.fake_quant, inputs))
    out = images.export(p.network, tmp_path / "img",
                        reference_inputs=p.network.quantize_input(inputs[:4]))
    loaded = images.verify(out)
    assert len(loaded.network.steps) == len(p.network.steps)


def test_whole_network_on_the_rtl_with_perf_cycles(inputs, tmp_path):
    """Residual adds, a depthwise layer and requant steps on the Verilated 8x8 top: every
    step's output equals the golden model's, and every layer's measured cycles equal the
    cycle model's (``sqaccel perf``)."""
    from sqaccel.sim import network_level

    p = build_pipeline(tiny(), "sq", 4, inputs[:32], AccelConfig())
    out = images.export(p.network, tmp_path / "img",
                        reference_inputs=p.network.quantize_input(inputs[:4]))
    x = p.network.quantize_input(inputs[:2])
    run = network_level.run_network(out, x, seed=5)
    assert run.predictions == p.network.predict(x).tolist()
    perf = network_perf(p.network, batch=2)
    assert {la.name: la.cycles for la in perf.layers} == {
        name: s["cycles"] for name, s in run.layers.items()}
    assert run.layers["inverted.dw"]["commands"] == 32


def test_an_unsupported_operation_is_one_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.gate = nn.Sequential(nn.Conv2d(4, 4, 1))

        def forward(self, x):
            return torch.sigmoid(self.gate(self.conv(x))).flatten(1)

    with pytest.raises(SqaccelError, match=r"node 'sigmoid' \(call_function sigmoid, module "
                                           r"'\(top level\)'\) is not supported"):
        plan(Odd())

    class Viewed(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Basic(1, 2, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.block(x).view(x.size(0), -1))

    with pytest.raises(SqaccelError, match=r"node 'size' \(call_method size, module"):
        plan(Viewed())
    with pytest.raises(SqaccelError, match="does not directly follow a Conv2d"):
        plan(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2)))
