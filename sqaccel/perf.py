"""Performance of a network on the array: per layer its GEMM shape, MACs, commands, cycles
and utilisation from the cycle model, the host steps between layers, and for the network
the latency, images per second and GOPS at a clock frequency.

The layers run as the cosimulation runs them: ``sqaccel.abi.gemm_commands`` cuts each layer
into commands, ``hw.timing.cycles`` counts each command from its acceptance to its last
result word (the cosimulation checks that count against the RTL command by command, so a
layer's cycles here equal the cycles the whole-network cosimulation measures). Cycles count
the array's work; loading a command's words through the host interface and the host steps
are reported beside it (words and element operations), since their time depends on the
host and its link.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw import timing
from sqaccel.sw.intnet import INPUT, IntLayer, IntNetwork

OPS_PER_MAC = 2


@dataclass
class LayerPerf:
    name: str
    kind: str  # conv / linear
    groups: int
    m: int  # rows: images x output pixels
    k: int  # per group
    n: int  # output channels
    macs: int
    commands: int
    cycles: int
    utilisation: float  # useful PE-cycles / (R x C x cycles)
    load_words: int  # image and activation words the host writes before its commands
    result_words: int


@dataclass
class HostStepPerf:
    name: str
    op: str
    elements: int  # output elements the host computes
    ops: int  # element operations (adds, compares, rescales)


@dataclass
class NetworkPerf:
    config: str
    rows: int
    cols: int
    batch: int
    layers: list[LayerPerf]
    host_steps: list[HostStepPerf]
    fmax_mhz: float | None = None
    logic_cells: int | None = None
    totals: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _host_ops(op: str, out: torch.Tensor, inputs: list[torch.Tensor], step) -> int:
    if op in ("flatten",):
        return 0
    if op == "add":
        return 3 * out.numel()  # two products-and-sum and the rescale, per element
    if op in ("requant", "relu"):
        return out.numel()
    window = inputs[0].numel() // max(1, out.numel())  # pooling: about the window's size
    return out.numel() * window


def network_perf(net: IntNetwork, batch: int = 1, fmax_mhz: float | None = None,
                 logic_cells: int | None = None) -> NetworkPerf:
    """Per layer and for the network (see the module docstring), for ``batch`` images in one
    run (they share every layer's M)."""
    if batch < 1:
        raise SqaccelError(f"perf: batch must be >= 1, got {batch}")
    if net.input_shape is None:
        raise SqaccelError("perf: the network does not record its input shape")
    cfg: AccelConfig = net.cfg
    x = torch.zeros((batch, *net.input_shape), dtype=torch.int64) + net.input.zero_point
    t = net.run(x, record=True).outputs
    t[INPUT] = x
    layers, host = [], []
    for step in net.steps:
        if isinstance(step, IntLayer):
            xm, _ = step.lower(t[step.inputs[0]])
            m = xm.shape[1]
            cmds = abi.gemm_commands(cfg, m, step.k, step.n_group, step.groups)
            cycles = sum(timing.cycles(cfg, c.m, c.n, c.k) for c in cmds)
            macs = m * step.k * step.n
            loads = sum(b - a for c in cmds for a, b in c.load.values())
            acts = sum(abi.row_tiles(cfg, c.m) * c.k for c in cmds)
            results = sum(abi.col_tiles(cfg, c.n) * c.m for c in cmds)
            layers.append(LayerPerf(step.name, step.kind, step.groups, m, step.k, step.n,
                                    macs, len(cmds), cycles,
                                    macs / (cfg.rows * cfg.cols * cycles), loads + acts,
                                    results))
        else:
            out = t[step.name]
            ins = [t[i] for i in step.inputs]
            host.append(HostStepPerf(step.name, step.op, out.numel(),
                                     _host_ops(step.op, out, ins, step)))
    perf = NetworkPerf(cfg.name(), cfg.rows, cfg.cols, batch, layers, host, fmax_mhz,
                       logic_cells)
    perf.totals = totals(perf)
    return perf


def totals(p: NetworkPerf) -> dict:
    """The network's figures: cycles, MACs, utilisation; with an Fmax, latency, images per
    second and GOPS; with a cell count too, GOPS per thousand logic cells."""
    cycles = sum(la.cycles for la in p.layers)
    macs = sum(la.macs for la in p.layers)
    out = {
        "cycles": cycles,
        "macs": macs,
        "macs_per_image": macs // p.batch,
        "array_mac_share": 1.0,  # every multiply-accumulate runs on the array
        "host_ops": sum(h.ops for h in p.host_steps),
        "utilisation": macs / (p.rows * p.cols * cycles) if cycles else 0.0,
        "load_words": sum(la.load_words for la in p.layers),
        "result_words": sum(la.result_words for la in p.layers),
    }
    if p.fmax_mhz:
        seconds = cycles / (p.fmax_mhz * 1e6)
        out.update(latency_ms=1e3 * seconds, images_per_s=p.batch / seconds,
                   gops=OPS_PER_MAC * macs / seconds / 1e9,
                   peak_gops=OPS_PER_MAC * p.rows * p.cols * p.fmax_mhz / 1e3)
        if p.logic_cells:
            out["gops_per_kcell"] = out["gops"] / (p.logic_cells / 1e3)
    return out


def format_table(p: NetworkPerf) -> str:
    """The figures as a table for people."""
    from sqaccel.tables import render_table

    rows = [[la.name, la.kind + (f" g{la.groups}" if la.groups > 1 else ""),
             f"{la.m}x{la.k}x{la.n}", f"{la.macs:,}", str(la.commands), f"{la.cycles:,}",
             f"{100 * la.utilisation:.1f}"] for la in p.layers]
    text = [render_table(["layer", "kind", "M x K x N", "MACs", "commands", "cycles",
                          "util %"], rows, text_cols=2)]
    if p.host_steps:
        text.append("host steps: " + ", ".join(f"{h.name} ({h.op}, {h.elements:,} elements)"
                                              for h in p.host_steps))
    tot = p.totals
    line = (f"{p.config}, batch {p.batch}: {tot['cycles']:,} cycles, {tot['macs']:,} MACs "
            f"(all on the array), utilisation {100 * tot['utilisation']:.1f} %")
    if "latency_ms" in tot:
        line += (f"; at {p.fmax_mhz:.1f} MHz: {tot['latency_ms']:.3f} ms, "
                 f"{tot['images_per_s']:,.0f} images/s, {tot['gops']:.2f} GOPS "
                 f"(peak {tot['peak_gops']:.2f})")
        if "gops_per_kcell" in tot:
            line += f", {tot['gops_per_kcell']:.3f} GOPS per thousand cells"
    text.append(line)
    return "\n".join(text)


def synth_figures(path: Path) -> tuple[float | None, int | None]:
    """(Fmax in MHz, logic cells) of a synthesis report."""
    try:
        r = json.loads(path.read_bytes())
        fmax, cells = r["fmax_mhz"], r["resources"]["logic_cells"]
    except FileNotFoundError:
        raise SqaccelError(f"{path}: synthesis report not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SqaccelError(f"{path}: not a synthesis report.json ({e})") from None
    if not (fmax is None or isinstance(fmax, int | float)) or not isinstance(cells, int):
        raise SqaccelError(f"{path}: not a synthesis report.json (fmax_mhz, logic_cells)")
    return fmax, cells
