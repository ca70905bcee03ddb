"""Lowering: a PyTorch model, its quantised weights and its activation scales become the
integer network the array runs (``sqaccel.sw.intnet``).

Per Conv2d/Linear: the weight codes and step tables at the array's width (section 2 of
docs/arithmetic.md), the bias in accumulator units with the zero-point fold and its
saturation, the negligible channels run with zero weights, and the requantisation words
(M, S) of each output channel (section 5). ``build_pipeline`` runs the whole chain for a
method and a bit width: quantise for the array, calibrate the activations, lower.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from sqaccel import arith
from sqaccel.config import REQUANT_M_BITS, REQUANT_S_MAX, AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.sw.actquant import ActQuant, ActScales, calibrate, fake_quant_model
from sqaccel.sw.intnet import IntLayer, IntNetwork, IntStep
from sqaccel.sw.plan import INPUT, PlanStep, plan, prepare
from sqaccel.sw.qweight import PE_OF_METHOD, QuantizedWeight

# The smallest rescale factor M / 2^S can hold: 2^15 / 2^63.
REQUANT_MIN = 2.0 ** (REQUANT_M_BITS - 1 - REQUANT_S_MAX)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def round_half_up(v: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties towards +inf, of float64 values."""
    return torch.floor(torch.as_tensor(v, dtype=torch.float64) + 0.5).to(torch.int64)


def _array_codes(qw: QuantizedWeight, name: str, cfg: AccelConfig) -> tuple:
    """(codes [K, N], tables [N, L] or None) at the array's width, from a QuantizedWeight."""
    n = qw.out_channels
    try:
        codes = qw.codes().reshape(n, -1).T.contiguous()
    except SqaccelError as e:
        raise SqaccelError(f"layer {name!r}: {e}") from None
    if qw.pe == "mult":
        w = arith.decode_mult_weights(codes, qw.bits)
        return arith.encode_mult_weights(w, cfg.weight_bits), None
    if qw.universal is not None and qw.universal != cfg.universal:
        raise SqaccelError(
            f"layer {name!r}: quantised with universal set {qw.universal.exponents}, the "
            f"array has {cfg.universal.exponents}"
        )
    tables = qw.step_tables()
    if tables.shape[0] == 1:
        tables = tables.expand(n, -1)
    elif cfg.step_tables == "layer" and not bool((tables == tables[0]).all()):
        raise SqaccelError(
            f"layer {name!r}: per-channel step tables, but the array has one table per layer "
            "(config step_tables = 'layer')"
        )
    codes = arith.widen_shift_codes(codes, qw.bits, cfg.weight_bits)
    tables = arith.widen_tables(tables.contiguous(), qw.bits, cfg.weight_bits, cfg.universal)
    return codes, tables


def _geometry(step: PlanStep) -> dict:
    m = step.module
    if isinstance(m, nn.Linear):
        return dict(kind="linear", in_channels=m.in_features, out_channels=m.out_features,
                    kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
    if m.padding_mode != "zeros":
        raise SqaccelError(
            f"layer {step.name!r}: Conv2d padding_mode {m.padding_mode!r} (only 'zeros')"
        )
    padding = m.padding
    if isinstance(padding, str):
        if padding != "valid":
            raise SqaccelError(f"layer {step.name!r}: Conv2d padding {padding!r} (give numbers)")
        padding = (0, 0)
    return dict(kind="conv", in_channels=m.in_channels, out_channels=m.out_channels,
                groups=m.groups, kernel=_pair(m.kernel_size), stride=_pair(m.stride),
                padding=_pair(padding), dilation=_pair(m.dilation))


def _gemm_shape(geo: dict) -> tuple[int, int, int]:
    """(K of each group, N of each group, groups) of a layer's geometry."""
    g = geo.get("groups", 1)
    return (geo["in_channels"] // g * geo["kernel"][0] * geo["kernel"][1],
            geo["out_channels"] // g, g)


def check_fits(model: nn.Module, cfg: AccelConfig) -> None:
    """Refuse, before any quantisation, a model one of whose Conv2d/Linear layers cannot
    run on ``cfg`` (``sqaccel.abi.capacity_problems``)."""
    from sqaccel import abi

    for step in plan(model).gemms():
        k, n, _ = _gemm_shape(_geometry(step))
        problems = abi.capacity_problems(cfg, k, n)
        if problems:
            raise ConfigError(f"layer {step.name!r} does not fit the array {cfg.name()}: "
                              f"{'; '.join(problems)}")


def _requant_params(
    name: str, r: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ms, ss = [], []
    for n, v in enumerate(r.tolist()):
        try:
            m, s = arith.choose_requant(v)
        except ConfigError as e:
            raise SqaccelError(f"layer {name!r}, output channel {n}: {e}") from None
        ms.append(m)
        ss.append(s)
    return torch.tensor(ms, dtype=torch.int64), torch.tensor(ss, dtype=torch.int64)


def _check_relu6(name: str, y: ActQuant | None, cfg: AccelConfig) -> None:
    """A ReLU6's clamp at 6 must be the requantiser's at 2^A - 1 (docs/arithmetic.md,
    section 5): ``floor(6 / s_y + 1/2) >= 2^A - 1``."""
    if y is None or y.zero_point != 0 or math.floor(6.0 / y.scale + 0.5) < cfg.act_max:
        raise SqaccelError(
            f"layer {name!r}: a ReLU6 output needs zero point 0 and a scale of at most "
            f"6 / {cfg.act_max} (its range within 6), got {y}")


def build_gemm_layer(
    step: PlanStep,
    qw: QuantizedWeight,
    x_quant: ActQuant,
    y_quant: ActQuant | None,
    cfg: AccelConfig,
) -> IntLayer:
    """The IntLayer of one Conv2d/Linear: input quantisation ``x_quant``, output ``y_quant``
    (None for the raw logits layer)."""
    name, mod = step.name, step.module
    geo = _geometry(step)
    if qw.pe is None:
        raise SqaccelError(
            f"layer {name!r}: {qw.method} weights have no integer PE (array methods: "
            f"{sorted(PE_OF_METHOD)})"
        )
    if qw.pe != cfg.pe:
        raise SqaccelError(
            f"layer {name!r}: {qw.method} weights need the {qw.pe} PE, the config has "
            f"pe = {cfg.pe!r}"
        )
    if qw.bits > cfg.weight_bits:
        raise SqaccelError(
            f"layer {name!r}: {qw.bits}-bit weights on a {cfg.weight_bits}-bit array (the "
            "array has no wider weight path: quantise this layer to at most "
            f"{cfg.weight_bits} bits)"
        )
    if tuple(qw.w_int.shape) != tuple(mod.weight.shape):
        raise SqaccelError(
            f"layer {name!r}: quantised weight shape {tuple(qw.w_int.shape)}, layer has "
            f"{tuple(mod.weight.shape)}"
        )
    k, n_group, _ = _gemm_shape(geo)
    n = geo["out_channels"]
    if k > cfg.k_max:
        raise SqaccelError(f"layer {name!r}: K = {k} exceeds the array's K_max = {cfg.k_max}")
    if n_group > cfg.n_max:
        raise SqaccelError(f"layer {name!r}: N = {n_group} exceeds the array's N_max = "
                           f"{cfg.n_max}")
    if step.act == "relu6":
        _check_relu6(name, y_quant, cfg)
    codes, tables = _array_codes(qw, name, cfg)
    w = (arith.decode_shift_weights(codes, tables, cfg.weight_bits, cfg.universal)
         if tables is not None else arith.decode_mult_weights(codes, cfg.weight_bits))
    if not torch.equal(w, qw.w_int.reshape(n, -1).T):
        raise SqaccelError(f"layer {name!r}: weight codes do not decode to the layer's integers")

    s_x = float(x_quant.scale)
    s_w = qw.scale.to(torch.float64).reshape(-1).clone()
    if s_w.numel() != n or not bool(torch.isfinite(s_w).all()) or bool((s_w < 0).any()):
        raise SqaccelError(f"layer {name!r}: weight scales must be {n} finite values >= 0")
    if y_quant is not None:
        # A channel whose rescale factor is below what (M, S) can hold (2^-48) has weights
        # that cannot move its output by 2^-25 of a step: it runs with zero weights
        # (docs/arithmetic.md section 6, "Negligible channels").
        zeroed = ((s_w == 0) | (s_x * s_w / y_quant.scale < REQUANT_MIN)).nonzero()
        zeroed = zeroed.flatten().tolist()
        if zeroed:
            codes, tables, w = _zero_channels(name, codes, tables, w, zeroed, cfg)
            s_w[zeroed] = y_quant.scale / s_x  # any scale is exact for zero weights
    else:
        zeroed = []
        dead = s_w == 0
        if bool((w[:, dead] != 0).any()):
            raise SqaccelError(f"layer {name!r}: weight scale 0 in a channel of non-zero codes")
        if bool(dead.any()):  # keep the logits' common scale
            s_w[dead] = float(s_w.max()) if bool((~dead).any()) else 1.0
    bias_real = (mod.bias.detach().to(torch.float64) if mod.bias is not None
                 else torch.zeros(n, dtype=torch.float64))
    if not bool(torch.isfinite(bias_real).all()):
        raise SqaccelError(f"layer {name!r}: bias holds NaN or Inf")
    bias = round_half_up(bias_real / (s_x * s_w)) - x_quant.zero_point * w.sum(dim=0)
    if y_quant is not None:
        # A saturating bias shifts the output by (|bias| - bias_max) * r steps; zero weights
        # shift it by at most K * (2^A - 1) * max|w| * r. Take the smaller error.
        r = s_x * s_w / y_quant.scale
        sat_err = (bias.abs() - cfg.bias_max).clamp_min(0).to(torch.float64) * r
        zero_err = k * cfg.act_max * w.abs().amax(dim=0).to(torch.float64) * r
        worse = ((sat_err > zero_err) & (bias.abs() > cfg.bias_max)).nonzero().flatten().tolist()
        if worse:
            codes, tables, w = _zero_channels(name, codes, tables, w, worse, cfg)
            s_w[worse] = y_quant.scale / s_x
            bias[worse] = round_half_up(bias_real[worse] / y_quant.scale)
            zeroed = sorted(set(zeroed) | set(worse))
    over = (bias.abs() > cfg.bias_max).nonzero().flatten().tolist()
    bias = bias.clamp(-cfg.bias_max, cfg.bias_max)

    if y_quant is not None:
        m, s = _requant_params(name, s_x * s_w / y_quant.scale)
    else:  # raw output: requant words are the contract's padding value
        m = torch.full((n,), 1 << (cfg.requant_m_bits - 1), dtype=torch.int64)
        s = torch.ones(n, dtype=torch.int64)
    return IntLayer(
        name=name, **geo, inputs=step.inputs, activation=step.act, bits=qw.bits,
        method=qw.method, pe=qw.pe, codes=codes,
        tables=tables, bias=bias, m=m, s=s, relu=y_quant is not None, in_scale=s_x,
        in_zero_point=x_quant.zero_point,
        out_scale=None if y_quant is None else float(y_quant.scale),
        weight_scale=s_w, bias_saturated=tuple(over), zeroed=tuple(zeroed),
    )


def _zero_channels(
    name: str, codes: torch.Tensor, tables: torch.Tensor | None, w: torch.Tensor,
    channels: list[int], cfg: AccelConfig,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    codes, w = codes.clone(), w.clone()
    w[:, channels] = 0
    if tables is None:
        codes[:, channels] = 0  # two's complement zero
        return codes, None, w
    tables = tables.clone()
    if cfg.step_tables == "channel":
        tables[channels] = arith.off_entry(cfg.universal)
        codes[:, channels] = 0
        return codes, tables, w
    mags = arith.table_magnitudes(tables[0], cfg.universal)
    zero = (mags == 0).nonzero().flatten().tolist()
    if not zero:
        raise SqaccelError(
            f"layer {name!r}: output channels {channels} have negligible weights (rescale "
            "below 2^-48) and the layer's one step table has no zero to give them"
        )
    codes[:, channels] = zero[0]
    return codes, tables, w


def _pool_step(step: PlanStep, zp: int) -> IntStep:
    m = step.module
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise SqaccelError(f"layer {step.name!r}: MaxPool2d with return_indices")
        return IntStep("maxpool", step.name, _pair(m.kernel_size),
                       _pair(m.stride if m.stride is not None else m.kernel_size),
                       _pair(m.padding), _pair(m.dilation), bool(m.ceil_mode))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _pair(m.output_size) != (1, 1):
            raise SqaccelError(
                f"layer {step.name!r}: AdaptiveAvgPool2d to {m.output_size} (only 1: global)"
            )
        return IntStep("avgpool", step.name)
    padding = _pair(m.padding)
    if m.ceil_mode:
        raise SqaccelError(f"layer {step.name!r}: AvgPool2d with ceil_mode")
    if padding != (0, 0) and (not m.count_include_pad or zp != 0):
        raise SqaccelError(
            f"layer {step.name!r}: padded AvgPool2d needs count_include_pad and zero point 0"
        )
    return IntStep("avgpool", step.name, _pair(m.kernel_size),
                   _pair(m.stride if m.stride is not None else m.kernel_size), padding,
                   divisor=m.divisor_override)


@dataclass(frozen=True)
class _Acc:
    """How a raw GEMM output's integers read: real = scale[c] * acc (per channel c)."""

    scale: torch.Tensor  # float64 [N]


def _sigma(q: ActQuant | _Acc) -> tuple[torch.Tensor, int]:
    """(real scale per channel, or one for all, and zero point) of a tensor's integers."""
    if isinstance(q, _Acc):
        return q.scale, 0
    return torch.tensor([q.scale], dtype=torch.float64), q.zero_point


def _rescale_params(name: str, sigmas: list[torch.Tensor], s_y: float
                    ) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """(M per input per channel, S per channel) of an add or requant (docs/arithmetic.md,
    section 6): S from the largest factor of the channel, every M at that S."""
    c = max(len(sg) for sg in sigmas)
    r = torch.stack([sg.expand(c) if len(sg) == 1 else sg for sg in sigmas]) / s_y
    ms: list[list[int]] = [[] for _ in sigmas]
    ss: list[int] = []
    for ch in range(c):
        try:
            _, shift = arith.choose_requant(float(r[:, ch].max()))
        except ConfigError as e:
            raise SqaccelError(f"step {name!r}, channel {ch}: {e}") from None
        for i in range(len(sigmas)):
            ms[i].append(int(math.floor(float(r[i, ch]) * 2.0**shift + 0.5)))
        ss.append(shift)
    return tuple(tuple(m) for m in ms), tuple(ss)


def build_int_network(
    model: nn.Module,
    qweights: dict[str, QuantizedWeight],
    scales: ActScales,
    cfg: AccelConfig,
    input_shape: tuple[int, ...] | None = None,
) -> IntNetwork:
    """The integer network of a float model (its plan: ``sqaccel.sw.plan``), its quantised
    weights (layer name -> QuantizedWeight) and its activation scales, for ``cfg``."""
    p = plan(model)
    if scales.bits != cfg.act_bits:
        raise SqaccelError(
            f"activation scales are {scales.bits}-bit, the config has act_bits = {cfg.act_bits}"
        )
    # How each tensor's integers read: an A-bit activation or a raw accumulator.
    quant: dict[str, ActQuant | _Acc] = {INPUT: scales.input}
    steps: list[IntLayer | IntStep] = []
    reports: list[str] = []

    def out_quant(step) -> ActQuant:
        if step.name not in scales.outputs:
            raise SqaccelError(f"layer {step.name!r}: no activation scale")
        return scales.outputs[step.name]

    def activation_in(step) -> ActQuant:
        q = quant[step.inputs[0]]
        if isinstance(q, _Acc):
            raise SqaccelError(f"step {step.name!r}: reads a raw accumulator (plan error)")
        return q

    for step in p.steps:
        if step.kind == "gemm":
            if step.name not in qweights:
                raise SqaccelError(f"layer {step.name!r}: no quantised weights")
            y_quant = out_quant(step) if step.act is not None else None
            layer = build_gemm_layer(step, qweights[step.name], activation_in(step), y_quant,
                                     cfg)
            if layer.zeroed:
                reports.append(
                    f"layer {step.name!r}: output channels {list(layer.zeroed)} run with zero "
                    "weights (negligible weights: docs/arithmetic.md section 6)"
                )
            if layer.bias_saturated:
                reports.append(
                    f"layer {step.name!r}: bias saturated to +-{cfg.bias_max} in output "
                    f"channels {list(layer.bias_saturated)}"
                )
            steps.append(layer)
            quant[step.name] = y_quant if y_quant is not None else _Acc(
                layer.in_scale * layer.weight_scale)
        elif step.kind in ("add", "requant"):
            y = out_quant(step)
            if step.act == "relu6":
                _check_relu6(step.name, y, cfg)
            elif step.act == "relu" and y.zero_point != 0:
                raise SqaccelError(f"step {step.name!r}: a ReLU output has zero point 0, got "
                                   f"{y.zero_point}")
            sig = [_sigma(quant[i]) for i in step.inputs]
            m, s = _rescale_params(step.name, [sg for sg, _ in sig], y.scale)
            steps.append(IntStep(step.kind, step.name, inputs=step.inputs, m=m, s=s,
                                 in_zero_points=tuple(z for _, z in sig),
                                 zero_point=y.zero_point, activation=step.act,
                                 act_max=cfg.act_max, out_scale=y.scale))
            quant[step.name] = y
        elif step.kind == "relu":
            q = activation_in(step)
            steps.append(IntStep("relu", step.name, inputs=step.inputs, zero_point=q.zero_point))
            quant[step.name] = q
        elif step.kind == "flatten":
            quant[step.name] = activation_in(step)
            steps.append(IntStep("flatten", step.name, inputs=step.inputs))
        else:
            q = activation_in(step)
            steps.append(dataclasses.replace(_pool_step(step, q.zero_point),
                                             inputs=step.inputs))
            quant[step.name] = q
    if steps[-1].name != p.output:
        raise SqaccelError(f"model: its output {p.output!r} is not its last step")
    return IntNetwork(cfg, scales.input, steps,
                      tuple(input_shape) if input_shape is not None else None, reports)


# -- weights for the array and the whole pipeline ------------------------------------------


def array_cfg(cfg: AccelConfig, method: str, act_bits: int | None = None) -> AccelConfig:
    """``cfg`` with the PE kind of ``method`` (and the activation width, when given)."""
    if method not in PE_OF_METHOD:
        raise SqaccelError(
            f"method {method!r} has no integer PE (array methods: {sorted(PE_OF_METHOD)})"
        )
    changes = {"pe": PE_OF_METHOD[method]}
    if act_bits is not None:
        changes["act_bits"] = act_bits
    return dataclasses.replace(cfg, **changes)


def array_layer_bits(model: nn.Module, bits: int, cfg: AccelConfig) -> dict[str, int]:
    """Weight bits per GEMM layer: the first and last at the array's widest weight
    (``cfg.weight_bits``: the array has no 8-bit path), the others at ``bits``."""
    names = [s.name for s in plan(model).gemms()]
    if bits > cfg.weight_bits:
        raise SqaccelError(f"{bits}-bit weights on a {cfg.weight_bits}-bit array")
    out = {n: bits for n in names}
    out[names[0]] = out[names[-1]] = cfg.weight_bits
    return out


def quantize_for_array(
    model: nn.Module, method: str, bits: int, cfg: AccelConfig, per_channel: bool = False
) -> dict[str, QuantizedWeight]:
    """Quantised weights of every Conv2d/Linear as the array runs them (docs section 2)."""
    from sqaccel.sw.quantizers import make_quantizer

    out: dict[str, QuantizedWeight] = {}
    p = plan(model)
    for name, b in array_layer_bits(model, bits, cfg).items():
        q = make_quantizer(method, b, per_channel=per_channel, universal=cfg.universal)
        out[name] = q.quantize(p.step(name).module.weight.detach())
    return out


@dataclass
class Pipeline:
    """One quantised network in its two forms: fake-quantised float and integer."""

    method: str
    bits: int
    cfg: AccelConfig
    qweights: dict[str, QuantizedWeight]
    scales: ActScales
    fake_quant: nn.Module
    network: IntNetwork


def build_pipeline(
    model: nn.Module,
    method: str,
    bits: int,
    x_calib: torch.Tensor,
    cfg: AccelConfig,
    per_channel: bool = False,
    calibration: str = "mse",
) -> Pipeline:
    """Quantise the weights for the array, calibrate the activations on ``x_calib`` with
    those weights, and build both the fake-quantised float model and the integer network."""
    model = prepare(model)
    qweights = quantize_for_array(model, method, bits, cfg, per_channel)
    weight_only = fake_quant_model_weights(model, qweights)
    scales = calibrate(weight_only, x_calib, cfg.act_bits, calibration)
    fq = fake_quant_model(model, scales, qweights)
    net = build_int_network(model, qweights, scales, cfg, tuple(x_calib.shape[1:]))
    return Pipeline(method, bits, cfg, qweights, scales, fq, net)


def fake_quant_model_weights(model: nn.Module, qweights: dict[str, QuantizedWeight]) -> nn.Module:
    """A copy of ``model`` (BatchNorm folded) with its Conv2d/Linear weights dequantised
    (activations float)."""
    out = copy.deepcopy(prepare(model)).eval()
    modules = dict(out.named_modules())
    with torch.no_grad():
        for name, qw in qweights.items():
            modules[name].weight.copy_(qw.dequantize().to(modules[name].weight.dtype))
    return out
