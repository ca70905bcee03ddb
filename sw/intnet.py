"""The integer golden model: a quantised network run exactly as docs/arithmetic.md says, on
int64 tensors.

Every Conv2d and Linear is a GEMM on the array (``IntLayer``): im2col, the weight codes and
step tables the memory images carry, the bias in accumulator units, requantisation with
(M, S) per output channel and the ReLU fused into its clamp. Pooling and flattening run
between GEMMs (``IntStep``, section 6). The integer rules themselves are the contract's
(``sqaccel.arith``); this module holds the network's parameters and runs them. The outputs
it records per step are what every hardware test compares with; ``gemm_operands`` hands a
testbench the exact operands of one layer. ``sqaccel.sw.lowering`` builds these networks
from PyTorch models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sqaccel import arith
from sqaccel.config import PE_KINDS, AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw.actquant import ActQuant

GEMM_KINDS = ("conv", "linear")
INPUT = "input"  # the name the steps give the network's input


# -- GEMM layers -------------------------------------------------------------------------


@dataclass(eq=False)
class IntLayer:
    """One Conv2d/Linear as the array runs it: ``Y = requant(X @ W + bias)``.

    ``codes`` are [K, N] at the array's weight width (k = (in_channel, ky, kx) within the
    column's group; ``groups`` > 1: a grouped convolution, G GEMMs of K = Cin/G * kh * kw
    side by side, docs/arithmetic.md section 6), ``tables`` the step table of every column
    [N, L] (shift PE) or None (multiplier PE). ``bits`` is the layer's own weight width
    (codes of narrower layers are widened, section 2). ``relu``: the requantiser clamps (a
    fused ReLU or ReLU6, ``activation``); otherwise the output is the raw accumulator.
    ``inputs`` names the step whose output it reads.
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
    groups: int = 1
    activation: str | None = None  # "relu", "relu6" or None
    inputs: tuple[str, ...] = ()
    weights: torch.Tensor = field(default=None, repr=False)  # decoded [K, N], set by decode()

    def __post_init__(self) -> None:
        if self.kind not in GEMM_KINDS:
            raise SqaccelError(f"layer {self.name!r}: kind {self.kind!r} not in {GEMM_KINDS}")
        g = self.groups
        if g < 1 or self.in_channels % g or self.out_channels % g or (
                self.kind == "linear" and g != 1):
            raise SqaccelError(f"layer {self.name!r}: {g} groups for {self.in_channels} inputs "
                               f"and {self.out_channels} outputs")
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
        """K of each group's GEMM."""
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def n(self) -> int:
        return self.out_channels

    @property
    def n_group(self) -> int:
        """N of each group's GEMM."""
        return self.out_channels // self.groups

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

    def geometry(self) -> dict:
        """What the lowering needs (``arith.lower``): the manifest's geometry fields."""
        return {
            "name": self.name,
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "groups": self.groups,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "in_zero_point": self.in_zero_point,
        }

    def lower(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The GEMM operands X [G, M, K] of a layer input, and the output's leading
        shape."""
        return arith.lower(self.geometry(), x)

    def accumulate(self, x: torch.Tensor, cfg: AccelConfig) -> tuple[torch.Tensor, tuple]:
        xm, lead = self.lower(x)
        return self.gemm(xm, cfg), lead

    def gemm(self, xm: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        """The accumulators [M, N] of the lowered input X [G, M, K]."""
        w = self.weights if self.weights is not None else self.decode(cfg)
        try:
            return arith.grouped_gemm(xm, w, self.bias, cfg)
        except SqaccelError as e:
            raise SqaccelError(f"layer {self.name!r}: {e}") from None

    def shape_output(self, y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """The layer's output tensor from its GEMM result [M, N] (``lead`` from lower)."""
        return arith.gemm_output(self.geometry(), y, lead)

    def run(self, x: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        acc, lead = self.accumulate(x, cfg)
        y = arith.requant(acc, self.m, self.s, cfg.act_bits, relu=self.relu)
        return self.shape_output(y, lead)

    def forward(self, xs: list[torch.Tensor], cfg: AccelConfig) -> torch.Tensor:
        (x,) = xs
        return self.run(x, cfg)

    def meta(self) -> dict:
        """Everything but the integer arrays (those travel in the memory images)."""
        return {
            "op": "gemm",
            **self.geometry(),
            "K": self.k,
            "N": self.n,
            "inputs": list(self.inputs),
            "activation": self.activation,
            "bits": self.bits,
            "method": self.method,
            "pe": self.pe,
            "relu": self.relu,
            "in_scale": self.in_scale,
            "out_scale": self.out_scale,
            "weight_scale": [float(v) for v in self.weight_scale.tolist()],
            "bias_saturated": list(self.bias_saturated),
            "zeroed": list(self.zeroed),
        }


# -- steps between GEMMs (section 6) ------------------------------------------------------


@dataclass
class IntStep:
    """A non-GEMM step: ``relu`` (clamp at the zero point), ``maxpool``, ``avgpool``
    (kernel None: global), ``flatten``, ``add`` and ``requant`` (``arith.rescale``: per
    input ``m`` per channel, ``s`` per channel, ``in_zero_points``, ``zero_point``, the
    fused ``activation`` and the clamp's top ``act_max``)."""

    op: str
    name: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    divisor: int | None = None  # avgpool: divisor_override
    zero_point: int = 0  # relu: the integer image of real zero; add/requant: the output's
    inputs: tuple[str, ...] = ()
    m: tuple[tuple[int, ...], ...] = ()  # add/requant
    s: tuple[int, ...] = ()
    in_zero_points: tuple[int, ...] = ()
    activation: str | None = None
    act_max: int = 0
    out_scale: float | None = None  # add/requant: the output's real scale

    def forward(self, xs: list[torch.Tensor], cfg: AccelConfig) -> torch.Tensor:
        try:
            return arith.host_step(self.meta(), xs if self.op in ("add", "requant") else xs[0])
        except SqaccelError as e:
            raise SqaccelError(f"step {self.name!r}: {e}") from None

    def run(self, x: torch.Tensor, cfg: AccelConfig) -> torch.Tensor:
        return self.forward([x], cfg)

    def meta(self) -> dict:
        d = {"op": self.op, "name": self.name, "inputs": list(self.inputs)}
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
        if self.op in ("add", "requant"):
            d.update(m=[list(m) for m in self.m], s=list(self.s),
                     in_zero_points=list(self.in_zero_points), zero_point=self.zero_point,
                     activation=self.activation, act_max=self.act_max,
                     out_scale=self.out_scale)
        return d

    @classmethod
    def from_meta(cls, d: dict) -> IntStep:
        def opt(v):
            return tuple(int(a) for a in v) if v is not None else None

        if d.get("op") not in arith.HOST_OPS:
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
            inputs=tuple(str(i) for i in d.get("inputs", ())),
            m=tuple(tuple(int(v) for v in m) for m in d.get("m", ())),
            s=tuple(int(v) for v in d.get("s", ())),
            in_zero_points=tuple(int(v) for v in d.get("in_zero_points", ())),
            activation=d.get("activation"),
            act_max=int(d.get("act_max", 0)),
            out_scale=None if d.get("out_scale") is None else float(d["out_scale"]),
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
    x: torch.Tensor  # [G, M, K] unsigned activations, one GEMM per group
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
        if INPUT in names:
            raise SqaccelError(f"network: a step may not be called {INPUT!r}")
        seen = {INPUT}
        for i, step in enumerate(self.steps):
            if not step.inputs:  # a chain: each step reads the one before
                step.inputs = (self.steps[i - 1].name if i else INPUT,)
            unknown = [x for x in step.inputs if x not in seen]
            if unknown:
                raise SqaccelError(f"network: step {step.name!r} reads {unknown[0]!r}, which "
                                   "no earlier step makes")
            seen.add(step.name)
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
        t = {INPUT: x}
        for step in self.steps:
            t[step.name] = step.forward([t[i] for i in step.inputs], self.cfg)
        out = t[self.steps[-1].name]
        return GoldenRun(out, {s.name: t[s.name] for s in self.steps} if record else {})

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

    def operands(self, name: str, x_int: torch.Tensor) -> GemmOperands:
        """The GEMM operands of layer ``name`` when the network's input is ``x_int``."""
        layer = self.layer(name)
        t = self.run(x_int, record=True).outputs
        (src,) = layer.inputs
        return gemm_operands(layer, arith.as_i64(x_int) if src == INPUT else t[src], self.cfg)


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
