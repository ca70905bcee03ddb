"""Calibration after the search: block reconstruction of rounding and per-channel scales.

The search (or the uniform grid quantiser) fixes, per layer, the levels a weight may take:
the signed integer magnitudes of the layer's subset (one per table, per layer or per output
channel) or the uniform integers. Calibration keeps those levels and learns, block by block
on the calibration inputs,

- a per-output-channel scale ``s[c] = s0[c] * exp(t[c])`` (``s0`` from the search), and
- per weight, a choice between the two neighbouring levels of its own table that enclose
  ``w / s0`` (AdaRound: a rectified sigmoid ``h(v)`` blends the two; a regulariser
  annealed from ``beta`` 20 to 2 drives every ``h`` to 0 or 1; the hard choice is
  ``v >= 0``),

minimising the block output's mean squared error (relative to the output's mean square)
against the full-precision network, the block's input taken from the already calibrated,
activation-quantised network. A block is one Conv2d/Linear with the ReLU fused into it
(``sqaccel.sw.plan``); the logits layer is a block without ReLU. After the
rounding is hard, the scales alone are refitted for a few steps. Each block's output
activation scale is then chosen (``actquant.choose_quant``) on the calibrated block's
output, so the activation scales are those of the network as it runs.

The result is again one ``QuantizedWeight`` per layer: same method, bits, subsets and codes
semantics, ``w_int`` on its table's levels, the learned scale in ``scale``. The golden model
and the memory images take it unchanged; the learned scales reach the hardware only
through the requantisation words. Runs are repeatable: seeded, one thread, deterministic
algorithms, minibatches drawn from a generator of the seed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw.actquant import ActQuant, ActScales, choose_quant
from sqaccel.sw.plan import INPUT, PlanStep, gemm_forward, plan, run, step_forward
from sqaccel.sw.qweight import QuantizedWeight
from sqaccel.sw.train import deterministic

# Rectified sigmoid of AdaRound (Nagel et al. 2020): h = clamp(sigmoid(v) (z - g) + g, 0, 1).
ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class CalibSettings:
    """Hyper-parameters of the block reconstruction (per block)."""

    iters: int = 1500  # rounding + scale steps; 0: no reconstruction (search weights)
    scale_iters: int = 300  # scale-only steps once the rounding is hard
    batch_size: int = 32
    lr: float = 3e-2  # Adam, rounding variables
    scale_lr: float = 1e-3  # Adam, log-scales
    round_weight: float = 1.0  # regulariser weight (the MSE is relative)
    beta: tuple[float, float] = (20.0, 2.0)  # annealed from the first to the second
    warmup: float = 0.2  # fraction of iters without the regulariser
    seed: int = 0
    act_method: str = "mse"  # activation range choice (actquant.choose_quant)

    def __post_init__(self) -> None:
        if self.iters < 0 or self.scale_iters < 0 or self.batch_size < 1:
            raise SqaccelError("calibration: iters, scale_iters >= 0 and batch_size >= 1")
        if not (0 <= self.warmup < 1 and self.lr > 0 and self.scale_lr > 0
                and self.round_weight >= 0):
            raise SqaccelError("calibration: warmup in [0, 1), learning rates > 0, "
                               "round_weight >= 0")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["beta"] = list(self.beta)
        return d


@dataclass
class BlockReport:
    name: str
    weights: int
    mse_search: float  # relative output MSE with the search's weights (same block input)
    mse_calibrated: float  # ... with the calibrated weights
    changed: float  # fraction of weights on another level than the search put them
    scale_change: float  # mean |log(s / s0)| over output channels
    undecided: float  # fraction of rounding variables not at 0 or 1 when the rounding froze
    seconds: float
    kept_search: bool = False  # calibration did not lower the MSE: search weights kept

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Calibration:
    """Calibrated weights (layer name -> QuantizedWeight), the activation scales of the
    calibrated network, and what each block's reconstruction did."""

    qweights: dict[str, QuantizedWeight]
    scales: ActScales
    blocks: list[BlockReport] = field(default_factory=list)
    seconds: float = 0.0
    settings: CalibSettings = field(default_factory=CalibSettings)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings.to_dict(),
            "seconds": self.seconds,
            "blocks": [b.to_dict() for b in self.blocks],
            "scales": self.scales.to_dict(),
        }


# -- the levels a weight may take --------------------------------------------------------


def table_of_channel(qw: QuantizedWeight) -> list[int]:
    """Per output channel, the position of its table in ``signed_levels(qw)``."""
    if qw.method == "sq" and qw.per_channel:
        if qw.subsets is None or len(qw.subsets) != qw.out_channels:
            raise SqaccelError(
                f"per-channel SQ weights need {qw.out_channels} subsets, have "
                f"{0 if qw.subsets is None else len(qw.subsets)}"
            )
        return list(range(qw.out_channels))
    return [0] * qw.out_channels


def signed_levels(qw: QuantizedWeight) -> list[torch.Tensor]:
    """Per table, the sorted signed integer levels of ``qw`` (float64): the subset's
    integer magnitudes with both signs (SQ) or ``-(2^(b-1)-1) .. 2^(b-1)-1`` (uniform)."""
    if qw.method == "sq":
        if qw.subsets is None or qw.universal is None:
            raise SqaccelError("SQ weights without subsets")
        ints = qw.universal.int_magnitudes
        out = []
        for subset in qw.subsets:
            mags = {ints[m] for m in subset}
            out.append(torch.tensor(sorted(mags | {-m for m in mags}), dtype=torch.float64))
        return out
    if qw.method == "uniform":
        top = (1 << (qw.bits - 1)) - 1
        return [torch.arange(-top, top + 1, dtype=torch.float64)]
    raise SqaccelError(f"calibration: {qw.method} weights are not calibrated (sq or uniform)")


# -- one block -----------------------------------------------------------------------------


def _rectified(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


class RoundingWeight(nn.Module):
    """The weight of one layer as ``s[c] * (lo + h (hi - lo))``: ``lo < hi`` the neighbouring
    levels of ``w / s0`` in the channel's table (the two outermost beyond the range)."""

    def __init__(self, w: torch.Tensor, qw: QuantizedWeight) -> None:
        super().__init__()
        n = qw.out_channels
        s0 = qw.scale.to(torch.float64).reshape(n)
        u = w.detach().to(torch.float64).reshape(n, -1) / s0[:, None]
        tables = signed_levels(qw)
        lo = torch.empty_like(u)
        hi = torch.empty_like(u)
        for c, t in enumerate(table_of_channel(qw)):
            lv = tables[t]
            i = (torch.searchsorted(lv, u[c], right=True) - 1).clamp(0, len(lv) - 2)
            lo[c], hi[c] = lv[i], lv[i + 1]
        frac = ((u - lo) / (hi - lo)).clamp(0.0, 1.0)
        # h(v0) = frac: the soft weight starts at the float weight (AdaRound's start).
        v0 = -torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)
        self.shape = tuple(w.shape)
        self.register_buffer("lo", lo.to(torch.float32))
        self.register_buffer("step", (hi - lo).to(torch.float32))
        self.register_buffer("s0", s0)
        self.v = nn.Parameter(v0.to(torch.float32))
        self.t = nn.Parameter(torch.zeros(n, dtype=torch.float32))
        # The given weights' own choice, where they are one of the two neighbours (the
        # search's nearest level always is); elsewhere the nearer neighbour.
        given = qw.w_int.reshape(n, -1).to(torch.float64)
        self.register_buffer("search_up", torch.where((given == lo) | (given == hi),
                                                      given == hi, frac > 0.5))

    def scale(self) -> torch.Tensor:
        return (self.s0.to(torch.float32) * torch.exp(self.t))[:, None]

    def h(self) -> torch.Tensor:
        return _rectified(self.v)

    def soft(self) -> torch.Tensor:
        return (self.scale() * (self.lo + self.h() * self.step)).reshape(self.shape)

    def up(self) -> torch.Tensor:
        return self.v >= 0

    def hard(self) -> torch.Tensor:
        return (self.scale() * (self.lo + self.up().to(torch.float32) * self.step)).reshape(
            self.shape)

    def result(self, qw: QuantizedWeight, up: torch.Tensor, t: torch.Tensor) -> QuantizedWeight:
        w_int = torch.round(self.lo.to(torch.float64) + up.to(torch.float64)
                            * self.step.to(torch.float64)).to(torch.int64)
        scale = self.s0 * torch.exp(t.detach().to(torch.float64))
        return dataclasses.replace(qw, w_int=w_int.reshape(self.shape), scale=scale,
                                   info=dict(qw.info))


def block_forward(step: PlanStep, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The block's output (after its fused activation, when it has one) with weight ``w``."""
    return gemm_forward(step, x, w)


def _rel_mse(y: torch.Tensor, target: torch.Tensor, norm: float) -> float:
    return float(((y - target) ** 2).mean()) / norm


def _beta(i: int, settings: CalibSettings) -> float | None:
    """The regulariser's exponent at step i, None during the warm-up (no regulariser)."""
    start = int(settings.warmup * settings.iters)
    if i < start:
        return None
    rel = (i - start) / max(1, settings.iters - start)
    b0, b1 = settings.beta
    return b1 + (b0 - b1) * max(0.0, 1.0 - rel)


def reconstruct_block(
    step: PlanStep,
    qw: QuantizedWeight,
    x_in: torch.Tensor,
    target: torch.Tensor,
    settings: CalibSettings,
    generator: torch.Generator,
    bar=None,
) -> tuple[QuantizedWeight, BlockReport]:
    """Calibrate one block: ``x_in`` its input from the quantised network, ``target`` the
    full-precision block output; both [N, ...] float32 on the calibration set."""
    t0 = time.perf_counter()
    w = step.module.weight.detach()
    rw = RoundingWeight(w, qw)
    norm = max(float((target**2).mean()), 1e-30)
    n = x_in.shape[0]
    bs = min(settings.batch_size, n)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(n, generator=generator)[:bs]
        return x_in[idx], target[idx]

    with torch.no_grad():
        search_w = rw.result(qw, rw.search_up, torch.zeros_like(rw.t))
        mse_search = _rel_mse(block_forward(step, x_in, search_w.dequantize()), target, norm)

    if settings.iters:
        opt = torch.optim.Adam([{"params": [rw.v], "lr": settings.lr},
                                {"params": [rw.t], "lr": settings.scale_lr}])
        for i in range(settings.iters):
            xb, tb = batch()
            y = block_forward(step, xb, rw.soft())
            loss = ((y - tb) ** 2).mean() / norm
            beta = _beta(i, settings)
            if beta is not None and settings.round_weight:
                reg = (1.0 - (2.0 * rw.h() - 1.0).abs().pow(beta)).mean()
                loss = loss + settings.round_weight * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        # The rounding is now fixed; the scales adapt to it.
        up = rw.up().detach().clone()
        h = rw.h().detach()
        undecided = float(((h > 0) & (h < 1)).double().mean())
        rw.v.requires_grad_(False)
        opt = torch.optim.Adam([rw.t], lr=settings.scale_lr)
        for _ in range(settings.scale_iters):
            xb, tb = batch()
            loss = ((block_forward(step, xb, rw.hard()) - tb) ** 2).mean() / norm
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        with torch.no_grad():
            cal = rw.result(qw, up, rw.t)
            mse_cal = _rel_mse(block_forward(step, x_in, cal.dequantize()), target, norm)
    else:
        up, cal, mse_cal, undecided = rw.search_up, search_w, mse_search, 0.0

    kept = mse_cal >= mse_search and settings.iters > 0
    if kept:  # never hand on weights that fit the calibration data worse than the search's
        cal, mse_cal, up = search_w, mse_search, rw.search_up
    if settings.iters:
        cal.info["calibration"] = {
            "method": "block reconstruction (AdaRound rounding + per-channel scale)",
            "mse_search": mse_search,
            "mse_calibrated": mse_cal,
            "kept_search": kept,
        }
    report = BlockReport(
        name=step.name,
        weights=int(w.numel()),
        mse_search=mse_search,
        mse_calibrated=mse_cal,
        changed=float((up != rw.search_up).double().mean()),
        scale_change=float(torch.log(cal.scale / qw.scale.to(torch.float64)).abs().mean()),
        undecided=undecided,
        seconds=time.perf_counter() - t0,
        kept_search=kept,
    )
    return cal, report


# -- the network ---------------------------------------------------------------------------


def reconstruct(
    model: nn.Module,
    qweights: dict[str, QuantizedWeight],
    x_calib: torch.Tensor,
    act_bits: int,
    settings: CalibSettings | None = None,
    progress: bool = True,
) -> Calibration:
    """Calibrate every Conv2d/Linear of ``model`` (its plan: ``sqaccel.sw.plan``), block by
    block in network order, on the calibration inputs ``x_calib`` with ``act_bits``-bit
    activations.

    ``qweights`` (layer name -> QuantizedWeight, e.g. from the search) fix each layer's
    levels; the returned weights keep them. A block's input is the quantised network's
    tensor, its target the full-precision network's. Every tensor the integer network holds
    as an A-bit activation gets its scale from the calibrated network as it runs. With
    ``settings.iters = 0`` nothing is learned: the search's weights come back with the
    activation scales of that network.
    """
    from tqdm import tqdm

    settings = settings or CalibSettings()
    p = plan(model)
    gemms = p.gemms()
    missing = [s.name for s in gemms if s.name not in qweights]
    if missing:
        raise SqaccelError(f"calibration: no quantised weights for layers {missing}")
    for s in gemms:
        got, want = tuple(qweights[s.name].w_int.shape), tuple(s.module.weight.shape)
        if got != want:
            raise SqaccelError(f"calibration: layer {s.name!r} has quantised weights of shape "
                               f"{got}, the layer {want}")
    if x_calib.shape[0] == 0:
        raise SqaccelError("calibration: no calibration samples")
    if not bool(torch.isfinite(x_calib).all()):
        raise SqaccelError("calibration: calibration inputs hold NaN or Inf")
    t_start = time.perf_counter()
    total = len(gemms) * (settings.iters + (settings.scale_iters if settings.iters else 0))
    bar = tqdm(total=total, desc=f"calibration A{act_bits}", unit="step", file=sys.stderr,
               disable=None if progress and total else True, leave=False)
    out: dict[str, QuantizedWeight] = {}
    reports: list[BlockReport] = []
    quants: dict[str, ActQuant] = {}
    with deterministic(settings.seed), torch.no_grad():
        generator = torch.Generator().manual_seed(settings.seed)
        x_fp = x_calib.to(torch.float32)
        in_quant = choose_quant(x_fp, act_bits, settings.act_method)
        fp = {INPUT: x_fp}  # the full-precision network's tensors
        q = {INPUT: in_quant.fake(x_fp)}  # the calibrated, activation-quantised network's
        grid = {INPUT: in_quant}  # the grid each tensor of q sits on (None: not rounded)
        for step in p.steps:
            if step.kind == "gemm":
                target = block_forward(step, fp[step.inputs[0]], step.module.weight)
                bar.set_postfix_str(step.name)
                with torch.enable_grad():
                    qw, rep = reconstruct_block(step, qweights[step.name], q[step.inputs[0]],
                                                target, settings, generator, bar)
                out[step.name], fp[step.name] = qw, target
                reports.append(rep)
                y = block_forward(step, q[step.inputs[0]], qw.dequantize())
            else:
                fp[step.name] = step_forward(step, [fp[i] for i in step.inputs])
                y = step_forward(step, [q[i] for i in step.inputs])
            g = None
            if (step.kind == "gemm" and step.act is not None) or step.kind in ("add",
                                                                               "requant"):
                g = quants[step.name] = choose_quant(y, act_bits, settings.act_method)
                y = g.fake(y)
            elif step.kind in ("maxpool", "avgpool", "flatten", "relu"):
                g = grid[step.inputs[0]]
                if step.kind == "avgpool" and g is not None:  # the integer average rounds
                    y = g.fake(y)
            q[step.name], grid[step.name] = y, g
    bar.close()
    return Calibration(out, ActScales(in_quant, quants, settings.act_method), reports,
                       time.perf_counter() - t_start, settings)


def block_errors(
    model: nn.Module,
    qweights: dict[str, QuantizedWeight],
    scales: ActScales,
    x: torch.Tensor,
) -> dict[str, float]:
    """Per GEMM block, the relative MSE of its output in the activation-quantised network
    (``qweights``, ``scales``) against the full-precision network's, on inputs ``x``."""
    p = plan(model)
    weights = {name: qw.dequantize() for name, qw in qweights.items()}
    x = x.to(torch.float32)
    _, fp = run(p, x, record=True)
    _, qt = run(p, x, weights, scales.quants(), record=True)
    errs: dict[str, float] = {}
    with torch.no_grad():
        for step in p.gemms():
            target = fp[step.name]
            y = block_forward(step, qt[step.inputs[0]], weights[step.name])
            errs[step.name] = _rel_mse(y, target, max(float((target**2).mean()), 1e-30))
    return errs


# -- weights for the array ---------------------------------------------------------------


def search_layer(
    weight: torch.Tensor, method: str, bits: int, cfg: AccelConfig, per_channel: bool = False,
    progress: bool = False,
) -> QuantizedWeight:
    """The search's (or grid quantiser's) weights of one layer."""
    from sqaccel.sw.quantizers import make_quantizer

    q = make_quantizer(method, bits, per_channel=per_channel, universal=cfg.universal,
                       progress=progress)
    return q.quantize(weight.detach())


def search_weights(
    model: nn.Module,
    method: str,
    layer_bits: dict[str, int],
    cfg: AccelConfig,
    per_channel: bool = False,
    progress: bool = False,
) -> dict[str, QuantizedWeight]:
    """The search's (or grid quantiser's) weights of every GEMM layer at its own bits."""
    p = plan(model)
    names = [s.name for s in p.gemms()]
    if sorted(layer_bits) != sorted(names):
        raise SqaccelError(f"layer bits {sorted(layer_bits)} do not name the GEMM layers {names}")
    out = {}
    for name in names:
        try:
            out[name] = search_layer(p.step(name).module.weight, method, layer_bits[name], cfg,
                                     per_channel, progress)
        except SqaccelError as e:
            raise SqaccelError(f"layer {name!r}: {e}") from None
    return out


def calibrated_network(
    model: nn.Module,
    qweights: dict[str, QuantizedWeight],
    x_calib: torch.Tensor,
    cfg: AccelConfig,
    settings: CalibSettings | None = None,
    progress: bool = True,
):
    """(Calibration, IntNetwork): calibrate at ``cfg.act_bits`` and build the golden model."""
    from sqaccel.sw.lowering import build_int_network

    cal = reconstruct(model, qweights, x_calib, cfg.act_bits, settings, progress)
    net = build_int_network(model, cal.qweights, cal.scales, cfg, tuple(x_calib.shape[1:]))
    return cal, net


__all__ = [
    "BlockReport",
    "CalibSettings",
    "Calibration",
    "RoundingWeight",
    "block_errors",
    "block_forward",
    "calibrated_network",
    "reconstruct",
    "reconstruct_block",
    "search_layer",
    "search_weights",
    "signed_levels",
    "table_of_channel",
]
