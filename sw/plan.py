"""The front end: any PyTorch model, traced with ``torch.fx``, as the graph of steps the
array and its host run (docs/arithmetic.md, section 6).

``prepare(model)`` traces a copy of the model and folds every ``BatchNorm2d`` into the
convolution before it; ``plan(model)`` reads the traced graph into ``PlanStep``s in a
topological order, each naming its inputs:

- ``gemm``: a Conv2d (any stride, padding and groups) or a Linear, with a ReLU or ReLU6
  that directly follows it (its only user) fused in (``act``); without one its output is
  the raw accumulator;
- ``add``: the sum of two tensors (a residual add), with a fused ReLU / ReLU6;
- ``requant``: inserted after a raw GEMM whose output feeds anything but an add or the
  network's output, so that every tensor reaching a pooling step, a flatten or a GEMM is an
  A-bit activation;
- ``relu`` (standalone), ``maxpool``, ``avgpool`` (AvgPool2d, AdaptiveAvgPool2d(1)),
  ``flatten`` (``torch.flatten(x, 1)``, ``x.flatten(1)``, ``nn.Flatten()``).

``Identity`` and ``Dropout`` pass their input on. Anything else is refused, before any
work, with one error naming the node, its operation and the module path it sits in.
Calibration, the fake-quantised model, block reconstruction, mixed bits and the lowering to
the integer network all walk this one plan; ``run`` executes it in floating point.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from sqaccel.errors import SqaccelError

INPUT = "input"
_SUPPORTED = ("Conv2d, BatchNorm2d after a Conv2d, Linear, ReLU, ReLU6, the sum of two tensors, "
              "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), flatten from dim 1, Identity, Dropout")
_PASS = (nn.Identity, nn.Dropout)
_ADD = (operator.add, operator.iadd, torch.add)
_RELU = (F.relu, torch.relu)
_RELU6 = (F.relu6,)
_FLATTEN = (torch.flatten,)


class UnsupportedModel(SqaccelError):
    """A model with an operation the flow cannot lower."""


@dataclass(frozen=True)
class PlanStep:
    """One step: ``kind`` (gemm, add, requant, relu, maxpool, avgpool, flatten), its name
    (the module path of a module, else the traced node's name), the steps it reads
    (``inputs``; ``"input"`` is the network input), its module (gemm, pools), the fused
    activation (``act``: "relu", "relu6" or None) and the name of the module that was
    fused (``act_name``)."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    module: nn.Module | None = None
    act: str | None = None
    act_name: str | None = None

    @property
    def relu(self) -> str | None:
        """The fused activation's name (None: a raw output)."""
        return self.act_name

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.act == "relu":
            return torch.relu(y)
        if self.act == "relu6":
            return F.relu6(y)
        return y


@dataclass
class Plan:
    steps: list[PlanStep]
    output: str
    module: nn.Module  # the prepared model (BatchNorm folded) whose modules the steps hold

    def gemms(self) -> list[PlanStep]:
        return [s for s in self.steps if s.kind == "gemm"]

    def step(self, name: str) -> PlanStep:
        for s in self.steps:
            if s.name == name:
                return s
        raise SqaccelError(f"model: no step {name!r}")

    def users(self, name: str) -> list[PlanStep]:
        return [s for s in self.steps if name in s.inputs]


# -- tracing and folding ---------------------------------------------------------------------


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack)) if stack else "(top level)"


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        what = type(gm.get_submodule(node.target)).__name__
    elif node.op == "call_function":
        what = getattr(node.target, "__name__", str(node.target))
    else:
        what = str(node.target)
    return f"node {node.name!r} ({node.op} {what}, module {_module_path(node)!r})"


def _refuse(node: fx.Node, gm: fx.GraphModule, why: str = "is not supported") -> None:
    raise UnsupportedModel(f"{_describe(node, gm)} {why} (supported: {_SUPPORTED})")


def trace(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` (one error if it cannot be traced)."""
    if isinstance(model, fx.GraphModule):
        return model if getattr(model, "_sqaccel_prepared", False) else copy.deepcopy(model)
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"model: a {type(model).__name__}, not a torch.nn.Module")
    try:
        return fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as e:  # fx raises many kinds for data-dependent control flow
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModel(f"model {type(model).__name__}: torch.fx cannot trace it "
                               f"({first})") from None


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place (docs/arithmetic.md, section 6), in float64."""
    a = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = conv.weight.detach().double() * a.reshape(-1, 1, 1, 1)
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(a)
    b = (b - bn.running_mean.double()) * a + bn.bias.detach().double()
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(w.to(dtype))
    conv.bias = nn.Parameter(b.to(dtype))


def prepare(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` with every BatchNorm2d folded into the Conv2d before it.
    Idempotent: a prepared model comes back unchanged."""
    gm = trace(model)
    if getattr(gm, "_sqaccel_prepared", False):
        return gm
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        conv = (gm.get_submodule(src.target) if isinstance(src, fx.Node)
                and src.op == "call_module" else None)
        if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
            _refuse(node, gm, "does not directly follow a Conv2d whose only user it is")
        if not mod.track_running_stats or mod.running_var is None:
            _refuse(node, gm, "has no running statistics to fold")
        _fold(conv, mod)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm._sqaccel_prepared = True
    return gm.eval()


# -- the plan --------------------------------------------------------------------------------


def _activation(node: fx.Node, gm: fx.GraphModule) -> str | None:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.ReLU6):
            return "relu6"
        if isinstance(mod, nn.ReLU):
            return "relu"
    if node.op == "call_function":
        if node.target in _RELU:
            return "relu"
        if node.target in _RELU6:
            return "relu6"
    return None


def _is_flatten(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    flat = (node.op == "call_function" and node.target in _FLATTEN) or (
        node.op == "call_method" and node.target == "flatten")
    return flat and start == 1 and end == -1


def plan(model: nn.Module) -> Plan:
    """The steps of ``model`` (see the module docstring), refused with one error naming the
    first node the flow cannot lower."""
    gm = prepare(model)
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModel(f"model: {len(placeholders)} inputs, the flow takes one")
    alias: dict[fx.Node, str] = {placeholders[0]: INPUT}  # node -> the step it stands for
    steps: list[PlanStep] = []
    fused: set[fx.Node] = set()
    counts: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    output = None

    def src(n) -> str:
        if not isinstance(n, fx.Node) or n not in alias:
            _refuse(node, gm, "takes an input that is not a tensor of the network")
        return alias[n]

    def name_of(n: fx.Node) -> str:
        if n.op == "call_module" and counts[n.target] == 1:
            return str(n.target)
        return n.name

    def fusable(n: fx.Node) -> tuple[str | None, str | None]:
        """The activation that is the only user of ``n``, to fuse into it."""
        if len(n.users) == 1:
            (u,) = n.users
            act = _activation(u, gm)
            if act is not None:
                fused.add(u)
                alias[u] = name_of(n)
                return act, name_of(u)
        return None, None

    for node in nodes:
        if node.op in ("placeholder", "get_attr") or node in fused:
            continue
        if node.op == "output":
            output = src(node.args[0])
            continue
        mod = gm.get_submodule(node.target) if node.op == "call_module" else None
        args = node.args
        if isinstance(mod, _PASS):
            alias[node] = src(args[0])
            continue
        if isinstance(mod, nn.Conv2d | nn.Linear):
            if counts[node.target] > 1:
                _refuse(node, gm, "is called more than once (its weights would be used twice)")
            if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
                _refuse(node, gm, f"has padding_mode {mod.padding_mode!r} (only 'zeros')")
            inputs = (src(args[0]),)
            act, act_name = fusable(node)
            step = PlanStep("gemm", name_of(node), inputs, mod, act, act_name)
        elif (node.op == "call_function" and node.target in _ADD) or (
                node.op == "call_method" and node.target == "add"):
            if len(args) != 2 or node.kwargs or not all(isinstance(a, fx.Node) for a in args):
                _refuse(node, gm, "is not the sum of two tensors")
            act, act_name = fusable(node)
            step = PlanStep("add", name_of(node), (src(args[0]), src(args[1])), None, act,
                            act_name)
        elif _activation(node, gm) == "relu":
            step = PlanStep("relu", name_of(node), (src(args[0]),), mod)
        elif _activation(node, gm) == "relu6":
            _refuse(node, gm, "is a ReLU6 that does not directly follow a Conv2d, a Linear or "
                              "an add")
        elif isinstance(mod, nn.MaxPool2d):
            step = PlanStep("maxpool", name_of(node), (src(args[0]),), mod)
        elif isinstance(mod, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            step = PlanStep("avgpool", name_of(node), (src(args[0]),), mod)
        elif _is_flatten(node, gm):
            step = PlanStep("flatten", name_of(node), (src(args[0]),), mod)
        else:
            _refuse(node, gm)
        alias[node] = step.name
        steps.append(step)
    if not any(s.kind == "gemm" for s in steps):
        raise UnsupportedModel("model: no Conv2d or Linear layer to run on the array")
    if output is None or output == INPUT:
        raise UnsupportedModel("model: its output is not computed by any layer")
    return Plan(_with_requants(steps), output, gm)


def _with_requants(steps: list[PlanStep]) -> list[PlanStep]:
    """A ``requant`` step after every raw GEMM whose output feeds anything but an add or the
    network's output (docs/arithmetic.md, section 6); those users read the requant's
    output."""
    rename: dict[str, str] = {}
    out: list[PlanStep] = []
    for s in steps:
        if s.kind != "add":
            s = dataclasses.replace(s, inputs=tuple(rename.get(x, x) for x in s.inputs))
        out.append(s)
        if s.kind == "gemm" and s.act is None and any(
                u.kind != "add" for u in steps if s.name in u.inputs):
            rename[s.name] = f"{s.name}.q"
            out.append(PlanStep("requant", rename[s.name], (s.name,)))
    return out


def sequential_plan(model: nn.Module) -> list[PlanStep]:
    """The steps of ``model`` (``plan(model).steps``)."""
    return plan(model).steps


# -- running a plan in floating point ---------------------------------------------------------


def gemm_forward(step: PlanStep, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A GEMM step's output (after its fused activation) with weight ``w``."""
    m = step.module
    bias = m.bias.detach() if m.bias is not None else None
    if isinstance(m, nn.Conv2d):
        y = F.conv2d(x, w, bias, m.stride, m.padding, m.dilation, m.groups)
    else:
        y = F.linear(x, w, bias)
    return step.activate(y)


def quant_points(p: Plan) -> list[str]:
    """The tensors that become A-bit activations and need a scale: the input, every GEMM
    with an activation, every add and requant."""
    return [INPUT] + [s.name for s in p.steps
                      if (s.kind == "gemm" and s.act is not None) or s.kind in ("add",
                                                                                 "requant")]


def step_forward(step: PlanStep, xs: list[torch.Tensor], w: torch.Tensor | None = None,
                 ) -> torch.Tensor:
    """One step in floating point (``w``: a GEMM's weight, default its own)."""
    if step.kind == "gemm":
        return gemm_forward(step, xs[0], step.module.weight if w is None else w)
    if step.kind == "add":
        return step.activate(xs[0] + xs[1])
    if step.kind == "requant":
        return xs[0]
    if step.kind == "relu":
        return torch.relu(xs[0])
    if step.kind == "flatten":
        return xs[0].flatten(1)
    return step.module(xs[0])  # pools


def run(p: Plan, x: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None,
        quants: Mapping | None = None, record: bool = False):
    """``p`` on ``x`` in floating point: with ``weights`` (GEMM name -> weight) in place of
    the model's, and with every tensor named in ``quants`` (name -> ActQuant; ``"input"``
    for the input) rounded to its grid, as the integer network rounds it. An average pool
    re-rounds to its input's grid. Returns the output, or (output, every step's output)."""
    weights, quants = weights or {}, quants or {}
    grid: dict[str, object] = {}
    t: dict[str, torch.Tensor] = {}
    q = quants.get(INPUT)
    t[INPUT] = q.fake(x) if q is not None else x
    grid[INPUT] = q
    with torch.no_grad():
        for s in p.steps:
            y = step_forward(s, [t[i] for i in s.inputs], weights.get(s.name))
            q = quants.get(s.name)
            if q is not None:
                y = q.fake(y)
            elif s.kind in ("maxpool", "avgpool", "flatten", "relu"):
                q = grid.get(s.inputs[0])
                if s.kind == "avgpool" and q is not None:  # the integer average rounds
                    y = q.fake(y)
            t[s.name], grid[s.name] = y, q
    return (t[p.output], t) if record else t[p.output]


class PlanModule(nn.Module):
    """``run`` as a module: the fake-quantised float model (``weights``, ``quants``)."""

    def __init__(self, p: Plan, weights: Mapping | None = None, quants: Mapping | None = None):
        super().__init__()
        self.plan, self.weights, self.quants = p, dict(weights or {}), dict(quants or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(self.plan, x, self.weights, self.quants)
