"""The integer golden model: a quantised ``nn.Sequential`` run exactly as docs/arithmetic.md
says, on int64 tensors.

Every Conv2d and Linear becomes a GEMM on the array (``IntLayer``): im2col, the weight codes
and step tables the memory images carry, the bias in accumulator units, requantisation with
(M, S) per output channel and the ReLU fused into its clamp. Pooling and flattening run
between GEMMs (section 6). The outputs this model records per layer are what every hardware
test compares with; ``gemm_operands`` hands a testbench the exact operands of one layer.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sqaccel.config import PE_KINDS, REQUANT_M_BITS, REQUANT_S_MAX, AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.sw import arith
from sqaccel.sw.actquant import (
    ActQuant,
    ActScales,
    PlanStep,
    calibrate,
    fake_quant_model,
    one_thread,
    sequential_plan,
)
from sqaccel.sw.qweight import PE_OF_METHOD, QuantizedWeight

GEMM_KINDS = ("conv", "linear")
# The smallest rescale factor M / 2^S can hold: 2^15 / 2^63.
REQUANT_MIN = 2.0 ** (REQUANT_M_BITS - 1 - REQUANT_S_MAX)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def round_half_up(v: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties towards +inf, of float64 values."""
    return torch.floor(torch.as_tensor(v, dtype=torch.float64) + 0.5).to(torch.int64)


# -- GEMM layers -------------------------------------------------------------------------


@dataclass(eq=False)
class IntLayer:
    """One Conv2d/Linear as the array runs it: ``Y = requant(X @ W + bias)``.

    ``codes`` are [K, N] at the array's weight width (k = (in_channel, ky, kx)), ``tables``
    the step table of every column [N, L] (shift PE) or None (multiplier PE). ``bits`` is
    the layer's own weight width (codes of narrower layers are widened, section 2).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bits: int
    method: str
    pe: str
    codes: torch.Tensor
    tables: torch.Tensor | None
    bias: torch.Tensor
    m: torch.Tensor
    s: torch.Tensor
    relu: bool
    in_scale: float
    in_zero_point: int
    out_scale: float | None  # None: raw accumulator output (the logits)
    weight_scale: torch.Tensor  # float64 [N]: real weight = weight_scale[n] * w_int
    bias_saturated: tuple[int, ...] = ()  # channels whose bias was clamped to +-bias_max
    zeroed: tuple[int, ...] = ()  # channels run with zero weights (negligible, section 6)
    weights: torch.Tensor = field(default=None, repr=False)  # decoded [K, N], set by decode()

    def __post_init__(self) -> None:
        if self.kind not in GEMM_KINDS:
            raise SqaccelError(f"layer {self.name!r}: kind {self.kind!r} not in {GEMM_KINDS}")
        if self.pe not in PE_KINDS:
            raise SqaccelError(f"layer {self.name!r}: pe {self.pe!r} not in {PE_KINDS}")
        shapes = {"codes": (self.k, self.n), "bias": (self.n,), "m": (self.n,),
                  "s": (self.n,), "weight_scale": (self.n,)}
        for f, shape in shapes.items():
            if tuple(getattr(self, f).shape) != shape:
                raise SqaccelError(
                    f"layer {self.name!r}: {f} has shape {tuple(getattr(self, f).shape)}, "
                    f"expected {shape}"
                )

    @property
    def k(self) -> int:
        return self.in_channels * self.kernel[0] * self.kernel[1]

    @property
    def n(self) -> int:
        return self.out_channels

    def decode(self, cfg: AccelConfig) -> torch.Tensor:
        """The signed integer weights [K, N] the PEs apply, from codes and tables."""
        if self.pe == "shift":
            if self.tables is None:
                raise SqaccelError(f"layer {self.name!r}: shift-add codes need step tables")
            w = arith.decode_shift_weights(
                self.codes, self.tables, cfg.weight_bits, cfg.universal
            )
        else:
            w = arith.decode_mult_weights(self.codes, cfg.weight_bits)
        self.weights = w
        return w

    def lower(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The GEMM operand X [M, K] of a layer input, and the output's leading shape."""
        x = arith.as_i64(x)
        if self.kind == "linear":
            if x.dim() != 2 or x.shape[1] != self.k:
                raise SqaccelError(
                    f"layer {self.name!r}: Linear expects input [batch, {self.k}], got "
                    f"{tuple(x.shape)}"
                )
            return x, (x.shape[0],)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SqaccelError(
                f"layer {self.name!r}: Conv2d expects input [batch, {self.in_channels}, H, W], "
                f"got {tuple(x.shape)}"
            )
        return im2col(x, self.kernel, self.stride, self.padding, self.dilation,
                      self.in_zero_point)

    def accumulate(self, x: torch.Tensor, cfg: AccelConfig) -> tuple[torch.Tensor, tuple]:
        xm, lead = self.lower(x)
        return self.gemm(xm, cfg), lead

    def gemm(self, xm: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        """The accumulators [M, N] of the lowered input X [M, K]."""
        w = self.weights if self.weights is not None else self.decode(cfg)
        try:
            return arith.gemm(xm, w, self.bias, cfg)
        except SqaccelError as e:
            raise SqaccelError(f"layer {self.name!r}: {e}") from None

    def shape_output(self, y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """The layer's output tensor from its GEMM result [M, N] (``lead`` from lower)."""
        if self.kind == "conv":
            b, oh, ow = lead
            return y.reshape(b, oh, ow, self.n).permute(0, 3, 1, 2).contiguous()
        return y

    def run(self, x: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        acc, lead = self.accumulate(x, cfg)
        y = arith.requant(acc, self.m, self.s, cfg.act_bits, relu=self.relu)
        return self.shape_output(y, lead)

    def meta(self) -> dict:
        """Everything but the integer arrays (those travel in the memory images)."""
        return {
            "op": "gemm",
            "name": self.name,
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "K": self.k,
            "N": self.n,
            "bits": self.bits,
            "method": self.method,
            "pe": self.pe,
            "relu": self.relu,
            "in_scale": self.in_scale,
            "in_zero_point": self.in_zero_point,
            "out_scale": self.out_scale,
            "weight_scale": [float(v) for v in self.weight_scale.tolist()],
            "bias_saturated": list(self.bias_saturated),
            "zeroed": list(self.zeroed),
        }


def im2col(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """X [M, K] of a convolution: m = (batch, out_y, out_x), k = (in_channel, ky, kx),
    the input padded with ``pad_value`` (the integer zero point). float64 is exact here."""
    b, _, h, w = x.shape
    xf = x.to(torch.float64)
    if padding != (0, 0):
        xf = F.pad(xf, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value))
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise SqaccelError(f"convolution input {h}x{w} is smaller than its kernel")
    cols = F.unfold(xf, kernel, dilation=dilation, stride=stride)  # [B, K, OH*OW]
    xm = cols.transpose(1, 2).reshape(b * oh * ow, -1).to(torch.int64)
    return xm, (b, oh, ow)


# -- steps between GEMMs (section 6) ------------------------------------------------------


@dataclass
class IntStep:
    """A non-GEMM step: ``relu`` (clamp at the zero point), ``maxpool``, ``avgpool``
    (kernel None: global), ``flatten``."""

    op: str
    name: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    divisor: int | None = None  # avgpool: divisor_override
    zero_point: int = 0  # relu: the integer image of real zero

    def run(self, x: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        if self.op == "flatten":
            return x.reshape(x.shape[0], -1)
        if self.op == "relu":
            return x.clamp_min(self.zero_point)
        if x.dim() != 4:
            raise SqaccelError(f"step {self.name!r}: pooling expects [batch, C, H, W]")
        xf = x.to(torch.float64)
        if self.op == "maxpool":  # exact: quantisation is monotone
            y = F.max_pool2d(xf, self.kernel, self.stride, self.padding, self.dilation,
                             ceil_mode=self.ceil_mode)
            return y.to(torch.int64)
        kernel = self.kernel if self.kernel is not None else (x.shape[2], x.shape[3])
        stride = self.stride if self.stride is not None else kernel
        n = self.divisor if self.divisor is not None else kernel[0] * kernel[1]
        sums = F.avg_pool2d(xf, kernel, stride, self.padding, divisor_override=1)
        return (sums.to(torch.int64) + n // 2) // n  # half-up

    def meta(self) -> dict:
        d = {"op": self.op, "name": self.name}
        if self.op in ("maxpool", "avgpool"):
            d.update(
                kernel=list(self.kernel) if self.kernel is not None else None,
                stride=list(self.stride) if self.stride is not None else None,
                padding=list(self.padding),
                dilation=list(self.dilation),
                ceil_mode=self.ceil_mode,
                divisor=self.divisor,
            )
        if self.op == "relu":
            d["zero_point"] = self.zero_point
        return d

    @classmethod
    def from_meta(cls, d: dict) -> IntStep:
        def opt(v):
            return tuple(int(a) for a in v) if v is not None else None

        if d.get("op") not in ("relu", "maxpool", "avgpool", "flatten"):
            raise SqaccelError(f"step {d.get('name')!r}: unknown operation {d.get('op')!r}")
        return cls(
            op=d["op"],
            name=d["name"],
            kernel=opt(d.get("kernel")),
            stride=opt(d.get("stride")),
            padding=opt(d.get("padding")) or (0, 0),
            dilation=opt(d.get("dilation")) or (1, 1),
            ceil_mode=bool(d.get("ceil_mode", False)),
            divisor=d.get("divisor"),
            zero_point=int(d.get("zero_point", 0)),
        )


# -- the network ---------------------------------------------------------------------------


@dataclass
class GoldenRun:
    logits: torch.Tensor  # the last step's output (raw accumulators of the logits layer)
    outputs: dict[str, torch.Tensor]  # step name -> its integer output


@dataclass
class GemmOperands:
    """What the array sees for one GEMM layer and one input, and what it must produce."""

    name: str
    x: torch.Tensor  # [M, K] unsigned activations
    codes: torch.Tensor  # [K, N] at cfg.weight_bits
    tables: torch.Tensor | None  # [N, L] step words (shift PE)
    bias: torch.Tensor  # [N]
    m: torch.Tensor  # [N]
    s: torch.Tensor  # [N]
    relu: bool
    weights: torch.Tensor  # [K, N] decoded signed integers
    acc: torch.Tensor  # [M, N] accumulators
    out: torch.Tensor  # [M, N] requantised (relu) or the accumulators
    lead: tuple[int, ...] = ()  # the output's leading shape (IntLayer.shape_output)


@dataclass
class IntNetwork:
    cfg: AccelConfig
    input: ActQuant
    steps: list[IntLayer | IntStep]
    input_shape: tuple[int, ...] | None = None  # one sample's shape, e.g. (1, 8, 8)
    reports: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise SqaccelError(f"network: repeated step names {names}")
        for layer in self.gemm_layers():
            layer.decode(self.cfg)

    def gemm_layers(self) -> list[IntLayer]:
        return [s for s in self.steps if isinstance(s, IntLayer)]

    def layer(self, name: str) -> IntLayer:
        for s in self.gemm_layers():
            if s.name == name:
                return s
        raise SqaccelError(f"network: no GEMM layer {name!r}")

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float inputs to the network's integer input codes (section 3)."""
        return self.input.quantize(x)

    def run(self, x_int: torch.Tensor, record: bool = True) -> GoldenRun:
        x = arith.as_i64(x_int)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > self.input.qmax):
            raise SqaccelError(f"network input outside 0..{self.input.qmax}")
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise SqaccelError(
                f"network input shape {tuple(x.shape[1:])}, expected {tuple(self.input_shape)}"
            )
        outputs: dict[str, torch.Tensor] = {}
        for step in self.steps:
            x = step.run(x, self.cfg)
            if record:
                outputs[step.name] = x
        return GoldenRun(x, outputs)

    def logit_scale(self) -> torch.Tensor | None:
        """Per-class real scale of the raw output (None when all classes share one)."""
        last = self.steps[-1]
        if isinstance(last, IntLayer) and not last.relu:
            ws = last.weight_scale
            if not bool((ws == ws[0]).all()):
                return ws
        return None

    def classify(self, logits: torch.Tensor) -> torch.Tensor:
        """Class = argmax of the raw logits (first on a tie); with per-channel weight scales
        the host compares ``acc[n] * s_w[n]`` instead (section 6)."""
        scale = self.logit_scale()
        if scale is None:
            return logits.argmax(dim=1)
        return (logits.to(torch.float64) * scale).argmax(dim=1)

    def predict(self, x_int: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        preds = [
            self.classify(self.run(x_int[i : i + batch], record=False).logits)
            for i in range(0, x_int.shape[0], batch)
        ]
        return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)

    def accuracy(self, x_float: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy in percent on float inputs (quantised by ``quantize_input``)."""
        pred = self.predict(self.quantize_input(x_float))
        return 100.0 * float((pred == torch.as_tensor(labels)).double().mean())

    def operands(self, name: str, x_int: torch.Tensor) -> GemmOperands:
        """The GEMM operands of layer ``name`` when the network's input is ``x_int``."""
        x = arith.as_i64(x_int)
        for step in self.steps:
            if step.name == name:
                if not isinstance(step, IntLayer):
                    raise SqaccelError(f"network: step {name!r} is not a GEMM layer")
                return gemm_operands(step, x, self.cfg)
            x = step.run(x, self.cfg)
        raise SqaccelError(f"network: no GEMM layer {name!r}")


def network_differences(a: IntNetwork, b: IntNetwork) -> list[str]:
    """What differs between two integer networks (empty when they compute the same way)."""
    out = []
    if a.cfg != b.cfg:
        out.append("config")
    if a.input != b.input:
        out.append(f"input quantisation {a.input} vs {b.input}")
    if [s.name for s in a.steps] != [s.name for s in b.steps]:
        return out + ["step names"]
    for sa, sb in zip(a.steps, b.steps, strict=True):
        if type(sa) is not type(sb):
            out.append(f"step {sa.name!r}: kind")
        elif isinstance(sa, IntStep):
            if sa != sb:
                out.append(f"step {sa.name!r}: parameters")
        else:
            if sa.meta() != sb.meta():
                out.append(f"layer {sa.name!r}: metadata")
            for f in ("codes", "tables", "bias", "m", "s", "weights"):
                va, vb = getattr(sa, f), getattr(sb, f)
                if (va is None) != (vb is None) or (va is not None and not torch.equal(va, vb)):
                    out.append(f"layer {sa.name!r}: {f}")
    return out


def gemm_operands(layer: IntLayer, layer_input: torch.Tensor, cfg: AccelConfig) -> GemmOperands:
    """The operands of ``layer`` for its own input tensor (e.g. a recorded output)."""
    xm, lead = layer.lower(layer_input)
    acc = layer.gemm(xm, cfg)
    return GemmOperands(
        name=layer.name,
        x=xm,
        codes=layer.codes,
        tables=layer.tables,
        bias=layer.bias,
        m=layer.m,
        s=layer.s,
        relu=layer.relu,
        weights=layer.weights,
        acc=acc,
        out=arith.requant(acc, layer.m, layer.s, cfg.act_bits, relu=layer.relu),
        lead=lead,
    )


# -- building from a float model, quantised weights and activation scales -----------------


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
    if m.groups != 1:
        raise SqaccelError(f"layer {step.name!r}: Conv2d with groups = {m.groups} (only 1)")
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
                kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(padding),
                dilation=_pair(m.dilation))


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
    k = geo["in_channels"] * geo["kernel"][0] * geo["kernel"][1]
    n = geo["out_channels"]
    if k > cfg.k_max:
        raise SqaccelError(f"layer {name!r}: K = {k} exceeds the array's K_max = {cfg.k_max}")
    if n > cfg.n_max:
        raise SqaccelError(f"layer {name!r}: N = {n} exceeds the array's N_max = {cfg.n_max}")
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
        name=name, **geo, bits=qw.bits, method=qw.method, pe=qw.pe, codes=codes,
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


def build_int_network(
    model: nn.Module,
    qweights: dict[str, QuantizedWeight],
    scales: ActScales,
    cfg: AccelConfig,
    input_shape: tuple[int, ...] | None = None,
) -> IntNetwork:
    """The integer network of a float ``nn.Sequential``, its quantised weights (layer name ->
    QuantizedWeight) and its activation scales, for the accelerator ``cfg``."""
    plan = sequential_plan(model)
    if scales.bits != cfg.act_bits:
        raise SqaccelError(
            f"activation scales are {scales.bits}-bit, the config has act_bits = {cfg.act_bits}"
        )
    current: ActQuant | None = scales.input
    steps: list[IntLayer | IntStep] = []
    reports: list[str] = []
    for step in plan:
        if current is None:
            raise SqaccelError(f"layer {step.name!r}: follows the raw logits layer")
        if step.kind == "gemm":
            if step.name not in qweights:
                raise SqaccelError(f"layer {step.name!r}: no quantised weights")
            y_quant = None
            if step.relu is not None:
                if step.name not in scales.outputs:
                    raise SqaccelError(f"layer {step.name!r}: no activation scale")
                y_quant = scales.outputs[step.name]
            layer = build_gemm_layer(step, qweights[step.name], current, y_quant, cfg)
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
            current = y_quant
        elif step.kind == "relu":
            steps.append(IntStep("relu", step.name, zero_point=current.zero_point))
        elif step.kind == "flatten":
            m = step.module
            if m.start_dim != 1 or m.end_dim != -1:
                raise SqaccelError(f"layer {step.name!r}: Flatten only from dim 1 to the end")
            steps.append(IntStep("flatten", step.name))
        else:
            steps.append(_pool_step(step, current.zero_point))
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
    names = [s.name for s in sequential_plan(model) if s.kind == "gemm"]
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
    modules = dict(model.named_modules())
    for name, b in array_layer_bits(model, bits, cfg).items():
        q = make_quantizer(method, b, per_channel=per_channel, universal=cfg.universal)
        out[name] = q.quantize(modules[name].weight.detach())
    return out


@dataclass
class Pipeline:
    """One quantised network in its two forms: fake-quantised float and integer."""

    method: str
    bits: int
    cfg: AccelConfig
    qweights: dict[str, QuantizedWeight]
    scales: ActScales
    fake_quant: nn.Sequential
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
    model = model.eval()
    qweights = quantize_for_array(model, method, bits, cfg, per_channel)
    weight_only = fake_quant_model_weights(model, qweights)
    scales = calibrate(weight_only, x_calib, cfg.act_bits, calibration)
    fq = fake_quant_model(model, scales, qweights)
    net = build_int_network(model, qweights, scales, cfg, tuple(x_calib.shape[1:]))
    return Pipeline(method, bits, cfg, qweights, scales, fq, net)


def fake_quant_model_weights(model: nn.Module, qweights: dict[str, QuantizedWeight]) -> nn.Module:
    """A copy of ``model`` with its Conv2d/Linear weights dequantised (activations float)."""
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    with torch.no_grad():
        for name, qw in qweights.items():
            modules[name].weight.copy_(qw.dequantize().to(modules[name].weight.dtype))
    return out


def float_accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of a float model."""
    with torch.no_grad():
        pred = model.eval()(x).argmax(dim=1)
    return 100.0 * float((pred == labels).double().mean())


def integer_accuracy_table(
    model: nn.Module | None = None,
    cfg: AccelConfig | None = None,
    methods: tuple[str, ...] = ("sq", "uniform"),
    bits: tuple[int, ...] = (4, 3, 2),
    act_bits: int = 8,
    per_channel: bool = False,
    seed: int = 0,
    calib_samples: int = 512,
) -> list[dict]:
    """Digits test accuracy of the fake-quantised float model and of the integer golden
    model, per method and weight width: rows of method, bits, act_bits, fake_quant,
    integer, diff (points) and the bias-saturation reports."""
    x_cal, (x_test, y_test) = digits_eval_data(calib_samples, seed)
    if model is None:
        from sqaccel.sw.train import load_or_train_digits

        model = load_or_train_digits(seed=seed)
    base = cfg if cfg is not None else AccelConfig()
    rows = []
    with one_thread():
        for method in methods:
            for b in bits:
                p = build_pipeline(model, method, b, x_cal, array_cfg(base, method, act_bits),
                                   per_channel)
                fq = float_accuracy(p.fake_quant, x_test, y_test)
                ia = p.network.accuracy(x_test, y_test)
                rows.append(dict(method=method, bits=b, act_bits=act_bits, fake_quant=fq,
                                 integer=ia, diff=ia - fq, reports=list(p.network.reports)))
    return rows


def digits_eval_data(
    calib_samples: int = 512, seed: int = 0
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(calibration inputs, (test inputs, test labels)) of the digits data set."""
    from sqaccel.sw.data import load_digits_split

    split = load_digits_split(seed)
    x_cal = split.calib.tensors[0][:calib_samples]
    return x_cal, (split.test.tensors[0], split.test.tensors[1])


def format_accuracy_table(rows: list[dict]) -> str:
    lines = [f"{'method':8} {'W/A':6} {'fake-quant %':>13} {'integer %':>10} {'diff':>6}"]
    for r in rows:
        lines.append(
            f"{r['method']:8} {'W{}A{}'.format(r['bits'], r['act_bits']):6} "
            f"{r['fake_quant']:13.2f} {r['integer']:10.2f} {r['diff']:+6.2f}"
        )
    return "\n".join(lines)

