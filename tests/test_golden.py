"""The integer golden model: exact GEMMs, exact requantisation, the lowering of a network,
and its accuracy against the fake-quantised float model on the digits."""

import dataclasses
import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sqaccel import arith
from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.experiments.golden_check import format_accuracy_table, integer_accuracy_table
from sqaccel.sw.actquant import ActQuant, ActScales, one_thread
from sqaccel.sw.intnet import IntStep
from sqaccel.sw.lowering import build_gemm_layer, build_int_network
from sqaccel.sw.plan import PlanStep
from sqaccel.sw.qweight import QuantizedWeight

U = UniversalSet()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The machine's cores are shared: small tensors run far faster on one thread.
    with one_thread():
        yield



# -- quantised weights built directly ------------------------------------------------------


def sq_weight(out_ch, in_shape, bits, per_channel, gen, worst=None):
    """Random SQ integers: per table a random subset (increasing magnitude), random codes.
    worst = +1 / -1: every weight at the largest magnitude (32) with that sign."""
    levels = 1 << (bits - 1)
    ints = U.int_magnitudes
    biggest = ints.index(max(ints))
    subsets = []
    for _ in range(out_ch if per_channel else 1):
        members = torch.randperm(U.size, generator=gen)[:levels].tolist()
        if worst is not None and biggest not in members:
            members[0] = biggest
        subsets.append(tuple(sorted(members, key=lambda m: ints[m])))
    numel = int(torch.tensor(in_shape).prod())
    w = torch.empty(out_ch, numel, dtype=torch.int64)
    for c in range(out_ch):
        mags = torch.tensor([ints[m] for m in subsets[c if per_channel else 0]])
        if worst is None:
            idx = torch.randint(0, levels, (numel,), generator=gen)
            sign = torch.randint(0, 2, (numel,), generator=gen) * 2 - 1
            w[c] = sign * mags[idx]
        else:
            w[c] = worst * max(ints)
    scale = torch.rand(out_ch, generator=gen, dtype=torch.float64) * 0.01 + 1e-3
    if not per_channel:
        scale[:] = scale[0]
    return QuantizedWeight("sq", bits, w.reshape(out_ch, *in_shape), scale, per_channel,
                           subsets, U)


def uniform_weight(out_ch, in_shape, bits, per_channel, gen, worst=None):
    """Random two's-complement integers; worst = -1: all at -2^(b-1), +1: all at the top."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    numel = int(torch.tensor(in_shape).prod())
    if worst is None:
        w = torch.randint(lo, hi + 1, (out_ch, numel), generator=gen)
    else:
        w = torch.full((out_ch, numel), lo if worst < 0 else hi)
    scale = torch.rand(out_ch, generator=gen, dtype=torch.float64) * 0.01 + 1e-3
    if not per_channel:
        scale[:] = scale[0]
    return QuantizedWeight("uniform", bits, w.reshape(out_ch, *in_shape), scale, per_channel)


def linear_layer(qw, cfg, relu=True, x_zp=0):
    k, n = qw.w_int.shape[1], qw.w_int.shape[0]
    fc = nn.Linear(k, n)
    step = PlanStep("gemm", "fc", ("input",), fc, "relu" if relu else None, "act" if relu else None)
    xq = ActQuant(0.02, x_zp, cfg.act_bits)
    yq = ActQuant(0.05, 0, cfg.act_bits) if relu else None
    return build_gemm_layer(step, qw, xq, yq, cfg)


def float64_reference(x, qw, bias):
    """bias + X @ W in float64 from the quantiser's own integers (exact below 2^53)."""
    w = qw.w_int.reshape(qw.out_channels, -1).T.to(torch.float64)
    ref = x.to(torch.float64) @ w + bias.to(torch.float64)
    bound = x.shape[1] * float(x.abs().max()) * float(w.abs().max()) + float(bias.abs().max())
    assert bound < 2.0**53
    return ref


CASES = [
    # (method, bits, act_bits, per_channel, step_tables)
    (method, bits, a, pc, st)
    for method in ("sq", "uniform")
    for bits in (2, 3, 4)
    for a in (4, 8)
    for pc in (False, True)
    for st in (("layer", "channel") if method == "sq" else ("channel",))
    if not (st == "layer" and pc)
]


@pytest.mark.parametrize("method,bits,act_bits,per_channel,step_tables", CASES)
def test_gemm_equals_float64_reference(method, bits, act_bits, per_channel, step_tables):
    pe = "shift" if method == "sq" else "mult"
    cfg = AccelConfig(act_bits=act_bits, pe=pe, step_tables=step_tables)
    gen = torch.Generator().manual_seed(
        CASES.index((method, bits, act_bits, per_channel, step_tables)))
    make = sq_weight if method == "sq" else uniform_weight
    for _ in range(3):
        k = int(torch.randint(1, cfg.k_max + 1, (1,), generator=gen))
        n = int(torch.randint(1, 40, (1,), generator=gen))
        m = int(torch.randint(1, 20, (1,), generator=gen))
        qw = make(n, (k,), bits, per_channel, gen)
        layer = linear_layer(qw, cfg)
        x = torch.randint(0, cfg.act_max + 1, (m, k), generator=gen)
        layer.bias = torch.randint(-cfg.bias_max, cfg.bias_max + 1, (n,), generator=gen)
        acc, _ = layer.accumulate(x, cfg)
        ref = float64_reference(x, qw, layer.bias)
        assert acc.dtype == torch.int64
        assert torch.equal(acc.to(torch.float64), ref)
        # The operands carry the array's widths: widened codes decode to the same integers.
        assert int(layer.codes.max()) < 1 << cfg.weight_bits
        if pe == "shift":
            assert layer.tables.shape == (n, cfg.levels)
            assert bool((layer.tables[:, 1 << (bits - 1):] == arith.off_entry(U)).all())


@pytest.mark.parametrize("method,bits,act_bits", [
    (m, b, a) for m in ("sq", "uniform") for b in (2, 3, 4) for a in (4, 8)
])
@pytest.mark.parametrize("sign", [1, -1])
def test_gemm_worst_case_does_not_overflow(method, bits, act_bits, sign):
    pe = "shift" if method == "sq" else "mult"
    cfg = AccelConfig(act_bits=act_bits, pe=pe)
    gen = torch.Generator().manual_seed(7)
    k, n = cfg.k_max, 9
    make = sq_weight if method == "sq" else uniform_weight
    qw = make(n, (k,), bits, False, gen, worst=sign)
    layer = linear_layer(qw, cfg, relu=False)
    x = torch.full((3, k), cfg.act_max)
    layer.bias = torch.full((n,), sign * cfg.bias_max)
    acc, _ = layer.accumulate(x, cfg)
    ref = float64_reference(x, qw, layer.bias)
    assert torch.equal(acc.to(torch.float64), ref)
    biggest = max(U.int_magnitudes) if method == "sq" else (
        1 << (bits - 1) if sign < 0 else (1 << (bits - 1)) - 1)
    expected = sign * (k * cfg.act_max * biggest + cfg.bias_max)
    assert bool((acc == expected).all())
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    assert lo <= int(acc.min()) and int(acc.max()) <= hi
    assert abs(expected) < 2**53


def test_gemm_refuses_operands_outside_the_contract():
    cfg = AccelConfig()
    gen = torch.Generator().manual_seed(1)
    qw = sq_weight(4, (cfg.k_max,), 4, False, gen)
    layer = linear_layer(qw, cfg)
    with pytest.raises(SqaccelError, match="'fc'.*activation outside"):
        layer.accumulate(torch.full((1, cfg.k_max), cfg.act_max + 1), cfg)
    layer.bias = torch.full((4,), cfg.bias_max + 1)
    with pytest.raises(SqaccelError, match=r"'fc': \|bias\| above"):
        layer.accumulate(torch.zeros(1, cfg.k_max, dtype=torch.int64), cfg)
    with pytest.raises(SqaccelError, match="K = 1025 exceeds"):
        linear_layer(sq_weight(4, (cfg.k_max + 1,), 4, False, gen), cfg)


# -- requantisation ------------------------------------------------------------------------


def _exact_requant(a, mv, sv, act_bits):
    exact = Fraction(a * mv, 1 << sv) + Fraction(1, 2)
    return min(max(exact.numerator // exact.denominator, 0), (1 << act_bits) - 1)


def test_requant_equals_exact_rational_rounding():
    rng = random.Random(3)
    cfg = AccelConfig()
    half = 1 << (cfg.acc_bits - 1)
    for act_bits in (4, 8):
        n = 400
        acc = [rng.randint(-half, half - 1) for _ in range(n)]
        m = [rng.randint(1 << 15, (1 << 16) - 1) for _ in range(n)]
        s = [rng.randint(1, 63) for _ in range(n)]
        # and exact ties: acc * 2^15 / 2^S = t + 1/2
        for _ in range(n):
            sv = rng.randint(16, 36)
            t = rng.randint(-40, 40)
            acc.append((2 * t + 1) << (sv - 16))
            m.append(1 << 15)
            s.append(sv)
        got = arith.requant(torch.tensor(acc)[:, None], torch.tensor(m)[:, None],
                            torch.tensor(s)[:, None], act_bits)[:, 0].tolist()
        want = [_exact_requant(a, mv, sv, act_bits) for a, mv, sv in zip(acc, m, s, strict=True)]
        assert got == want
        assert len(set(want)) > 3  # the clamp did not flatten the comparison
        raw = arith.requant(torch.tensor(acc)[None, :], torch.tensor(m), torch.tensor(s),
                            act_bits, relu=False)
        assert raw[0].tolist() == acc


def test_requant_rounds_ties_up():
    # acc * M / 2^S = 2.5 exactly -> 3; -0.5 -> 0 (floor(-0.5 + 0.5) = 0).
    assert arith.requant(torch.tensor([[5]]), torch.tensor([1 << 15]), torch.tensor([16]),
                         8).item() == 3
    assert arith.requant(torch.tensor([[-1]]), torch.tensor([1 << 15]), torch.tensor([16]),
                         8).item() == 0


def test_choose_requant_relative_error():
    rng = random.Random(5)
    for _ in range(2000):
        scale = 2.0 ** rng.uniform(-46, 14)
        m, s = arith.choose_requant(scale)
        assert (1 << 15) <= m < (1 << 16) and 1 <= s <= 63
        assert abs(Fraction(m, 1 << s) - Fraction(scale)) <= Fraction(scale) * Fraction(1, 1 << 16)


# -- lowering ------------------------------------------------------------------------------


def conv_layer(conv, qw, cfg, x_zp):
    step = PlanStep("gemm", "conv", ("input",), conv, "relu", "act")
    return build_gemm_layer(step, qw, ActQuant(0.03, x_zp, cfg.act_bits),
                            ActQuant(0.5, 0, cfg.act_bits), cfg)


@pytest.mark.parametrize("stride,padding,dilation,zp", [
    (1, 1, 1, 0), (2, 1, 1, 37), (1, 2, 2, 200), ((2, 1), (0, 1), 1, 5),
])
def test_conv_lowering_equals_conv2d(stride, padding, dilation, zp):
    cfg = AccelConfig()
    gen = torch.Generator().manual_seed(11)
    conv = nn.Conv2d(3, 10, 3, stride=stride, padding=padding, dilation=dilation)
    qw = sq_weight(10, (3, 3, 3), 3, True, gen)
    layer = conv_layer(conv, qw, cfg, zp)
    x = torch.randint(0, 256, (2, 3, 9, 7), generator=gen)
    acc, (b, oh, ow) = layer.accumulate(x, cfg)
    acc = acc.reshape(b, oh, ow, -1).permute(0, 3, 1, 2)
    # Independent reference: pad with the zero point, convolve in float64 (exact here).
    p = conv.padding
    xp = F.pad(x.double(), (p[1], p[1], p[0], p[0]), value=float(zp))
    ref = F.conv2d(xp, qw.w_int.double(), stride=conv.stride, dilation=conv.dilation)
    ref = ref + layer.bias.double().reshape(1, -1, 1, 1)
    assert torch.equal(acc.double(), ref)
    # The zero-point fold: bias_int = round(b / (s_x s_w)) - zp * sum_k w.
    fold = zp * qw.w_int.reshape(10, -1).sum(dim=1)
    s_w = qw.scale
    want = torch.floor(conv.bias.detach().double() / (0.03 * s_w) + 0.5).long() - fold
    assert torch.equal(layer.bias, want)


def test_refusals_name_the_layer():
    cfg = AccelConfig()
    gen = torch.Generator().manual_seed(2)
    with pytest.raises(SqaccelError, match="'fc': 8-bit weights on a 4-bit array"):
        linear_layer(uniform_weight(4, (8,), 8, False, gen), dataclasses.replace(cfg, pe="mult"))
    with pytest.raises(SqaccelError, match="'fc': sq weights need the shift PE.*'mult'"):
        linear_layer(sq_weight(4, (8,), 4, False, gen), dataclasses.replace(cfg, pe="mult"))
    with pytest.raises(SqaccelError, match="'fc'.*per-channel step tables"):
        linear_layer(sq_weight(4, (8,), 4, True, gen),
                     dataclasses.replace(cfg, step_tables="layer"))
    scales = ActScales(ActQuant(0.1, 0, 8))
    with pytest.raises(SqaccelError, match=r"node '_2' \(call_module BatchNorm2d, module "
                                           r"'2'\) does not directly follow a Conv2d"):
        build_int_network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2),
                                        nn.BatchNorm2d(2)), {}, scales, cfg)
    with pytest.raises(SqaccelError, match=r"'_2' \(call_module ReLU6, module '2'\) is a "
                                           r"ReLU6 that does not directly follow"):
        build_int_network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU6()), {},
                          scales, cfg)


def test_bias_saturation_is_reported():
    cfg = AccelConfig()
    gen = torch.Generator().manual_seed(4)
    qw = sq_weight(3, (5,), 4, False, gen)
    model = nn.Sequential(nn.Linear(5, 3))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.0, 1e9, -1e9]))
    net = build_int_network(model, {"0": qw}, ActScales(ActQuant(0.01, 0, 8)), cfg)
    layer = net.layer("0")
    assert layer.bias_saturated == (1, 2)
    assert layer.bias.tolist()[1:] == [cfg.bias_max, -cfg.bias_max]
    assert any("bias saturated" in r and "[1, 2]" in r for r in net.reports)


def test_pooling_rules():
    cfg = AccelConfig()
    x = torch.tensor([[[[0, 1, 2, 3], [4, 5, 6, 255], [9, 9, 9, 10], [9, 9, 9, 9]]]])
    mp = IntStep("maxpool", "p", (2, 2), (2, 2))
    assert mp.run(x, cfg).tolist() == [[[[5, 255], [9, 10]]]]
    ap = IntStep("avgpool", "a", (2, 2), (2, 2))
    # sums 10, 266, 36, 37 -> (sum + 2) // 4: 3 (2.5 up), 67 (66.5 up), 9, 9 (9.25 down)
    assert ap.run(x, cfg).tolist() == [[[[3, 67], [9, 9]]]]
    gap = IntStep("avgpool", "g")
    assert gap.run(torch.tensor([[[[1, 2], [2, 2]]]]), cfg).tolist() == [[[[2]]]]  # 7/4 -> 2
    assert gap.run(torch.tensor([[[[1, 1], [2, 2]]]]), cfg).tolist() == [[[[2]]]]  # 1.5 -> 2


# -- the digits network ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_model():
    from sqaccel.sw.train import load_or_train_digits

    return load_or_train_digits(seed=0)


@pytest.fixture(scope="module")
def digits_pipeline(digits_model):
    from sqaccel.sw.data import eval_data
    from sqaccel.sw.lowering import array_cfg, build_pipeline

    x_cal = eval_data("digits")[0]
    return build_pipeline(digits_model, "sq", 3, x_cal, array_cfg(AccelConfig(), "sq"))


@pytest.fixture(scope="module")
def accuracy_rows(digits_model):
    return integer_accuracy_table(digits_model, act_bits=8)


def test_integer_accuracy_matches_fake_quant(accuracy_rows):
    print()
    print(format_accuracy_table(accuracy_rows))
    assert [(r["method"], r["bits"]) for r in accuracy_rows] == [
        (m, b) for m in ("sq", "uniform") for b in (4, 3, 2)
    ]
    for r in accuracy_rows:
        assert abs(r["integer"] - r["fake_quant"]) <= 0.5, r
        assert r["integer"] > 50.0, r  # a network that classifies, not one that broke


def test_run_records_every_step_and_operands_match(digits_pipeline):
    net = digits_pipeline.network
    x = net.quantize_input(digits_pipeline_inputs())
    run = net.run(x)
    assert list(run.outputs) == [s.name for s in net.steps]
    assert torch.equal(run.logits, run.outputs[net.steps[-1].name])
    prev = x
    for step in net.steps:
        if isinstance(step, IntStep):
            prev = run.outputs[step.name]
            continue
        ops = net.operands(step.name, x)
        assert ops.x.shape[2] == step.k and ops.codes.shape == (step.k, step.n)
        out = ops.out
        if step.kind == "conv":
            b, _, oh, ow = run.outputs[step.name].shape
            out = out.reshape(b, oh, ow, step.n).permute(0, 3, 1, 2)
        assert torch.equal(out, run.outputs[step.name])
        assert int(ops.x.max()) <= net.cfg.act_max and int(ops.x.min()) >= 0
        prev = run.outputs[step.name]
    assert prev is run.outputs[net.steps[-1].name]


def digits_pipeline_inputs():
    from sqaccel.sw.data import eval_data

    return eval_data("digits")[1][0][:20]


# -- toolchain rules of section 6 ------------------------------------------------------------


def negligible_net(method, step_tables="channel", zero_in_subset=True, bits=3):
    """Linear(6, 3) + ReLU: channel 1 has a rescale below 2^-48, channel 2 a bias that
    saturates while its weights are ~1e-9 of a step; channel 0 is ordinary."""
    pe = "shift" if method == "sq" else "mult"
    cfg = AccelConfig(pe=pe, step_tables=step_tables)
    w_int = torch.tensor([[1, -2, 3, -4, 5, -6], [7, 7, -7, 7, 7, 7], [1, 1, 1, -1, 1, 1]])
    scale = torch.tensor([0.01, 1e-20, 1e-11], dtype=torch.float64)
    if method == "sq":
        mags = U.int_magnitudes
        members = [mags.index(v) for v in (0, 1, 16, 32, 2, 3, 4, 6)[: 1 << (bits - 1)]]
        if not zero_in_subset:
            members[0] = mags.index(8)
        table = tuple(sorted(members, key=lambda m: mags[m]))
        w_int = torch.tensor([[1, -16, 32, -1, 16, -32], [32, 32, -32, 32, 32, 1],
                              [1, 1, 1, -1, 1, 1]])
        qw = QuantizedWeight("sq", bits, w_int, scale, per_channel=step_tables == "channel",
                             subsets=[table] * (3 if step_tables == "channel" else 1),
                             universal=U)
    else:
        qw = QuantizedWeight("uniform", 4, w_int, scale, per_channel=True)
    model = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.05, 0.2, 0.3]))
    make = sq_weight if method == "sq" else uniform_weight
    last = make(2, (3,), 4, False, torch.Generator().manual_seed(0))
    scales = ActScales(ActQuant(0.01, 0, 8), {"0": ActQuant(0.004, 0, 8)})
    return model, {"0": qw, "2": last}, scales, cfg


@pytest.mark.parametrize("method", ["sq", "uniform"])
def test_negligible_channels_run_with_zero_weights(method):
    model, qws, scales, cfg = negligible_net(method)
    net = build_int_network(model, qws, scales, cfg)
    layer = net.layer("0")
    assert layer.zeroed == (1, 2) and layer.bias_saturated == ()
    assert not bool(layer.weights[:, 1:].any()) and bool(layer.weights[:, 0].any())
    assert layer.bias[1:].tolist() == [50, 75]  # round(b / s_y): 0.2 / 0.004, 0.3 / 0.004
    assert (layer.m[1:].tolist(), layer.s[1:].tolist()) == ([1 << 15] * 2, [15] * 2)
    assert any("[1, 2] run with zero weights" in r for r in net.reports)
    x = torch.randint(0, 256, (5, 6))
    y = net.run(x).outputs["0"]
    assert y[:, 1].tolist() == [50] * 5 and y[:, 2].tolist() == [75] * 5
    if method == "sq":
        assert bool((layer.tables[1:] == arith.off_entry(U)).all())


def test_negligible_channels_with_one_table_use_its_zero():
    model, qws, scales, cfg = negligible_net("sq", "layer")
    layer = build_int_network(model, qws, scales, cfg).layer("0")
    zero_index = arith.table_magnitudes(layer.tables[0], U).tolist().index(0)
    assert bool((layer.codes[:, 1:] == zero_index).all())
    # a narrower layer's table is padded with all-off words: those give the zero
    model, qws, scales, cfg = negligible_net("sq", "layer", zero_in_subset=False)
    layer = build_int_network(model, qws, scales, cfg).layer("0")
    assert bool((layer.codes[:, 1:] == 4).all()) and not bool(layer.weights[:, 1:].any())
    model, qws, scales, cfg = negligible_net("sq", "layer", zero_in_subset=False, bits=4)
    with pytest.raises(SqaccelError, match="'0': output channels \\[1\\] have negligible.*no zero"):
        build_int_network(model, qws, scales, cfg)


def test_logits_with_per_channel_scales_compare_real_values():
    cfg = AccelConfig(pe="mult")
    model = nn.Sequential(nn.Linear(3, 2))
    qw = QuantizedWeight("uniform", 4, torch.tensor([[1, 2, 3], [3, 2, 1]]),
                         torch.tensor([1e-3, 2e-3], dtype=torch.float64), per_channel=True)
    net = build_int_network(model, {"0": qw}, ActScales(ActQuant(0.01, 0, 8)), cfg)
    logits = torch.tensor([[10, 8], [3, 2], [4, 2]])
    assert net.classify(logits).tolist() == [1, 1, 0]  # 10 < 16, 3 < 4, 4 = 4: first
    qw.scale = torch.tensor([2e-3, 2e-3], dtype=torch.float64)
    net = build_int_network(model, {"0": qw}, ActScales(ActQuant(0.01, 0, 8)), cfg)
    assert net.logit_scale() is None
    assert net.classify(logits).tolist() == [0, 0, 0]
