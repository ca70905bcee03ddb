"""Cosimulation levels 3 and 4: the GEMM layers of an exported network from their memory
images, and the whole network, on the top (``sqaccel.sim.tb_accel``).

Level 3 runs chosen GEMM layers alone: each layer's weights, step tables, biases and
requantisation words as its image files hold them, its input computed by the golden model
from the network's input, every result word compared with the golden model's.

Level 4 runs the whole network: the testbench gets every step in order, the GEMM steps
with their image words and commands, the steps between them with their parameters. It runs
each GEMM on the RTL and each step between GEMMs with the contract's integer code
(``sqaccel.arith``) on the RTL's outputs, and compares every step's output with the golden
model's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sqaccel import abi, arith, files
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sim import job as jobs
from sqaccel.sim.builds import accel_build_dir, run_accel_job, seed_from_env
from sqaccel.sim.gemm_level import command
from sqaccel.sim.runner import CosimResult
from sqaccel.sw import images
from sqaccel.sw.images import LoadedImages, reference_inputs
from sqaccel.sw.intnet import INPUT, IntLayer, gemm_operands


def _loaded(source: str | Path | LoadedImages) -> LoadedImages:
    return source if isinstance(source, LoadedImages) else images.load(source)


def layer_commands(cfg: AccelConfig, name: str, layer: dict, m: int,
                   expected: torch.Tensor | None = None) -> list[jobs.Command]:
    """A GEMM layer's commands (``sqaccel.abi.gemm_commands``): per group, per run of column
    tiles that fits the buffers, per run of rows; each with the word ranges of the layer's
    images it loads, and, when ``expected`` [M, N] is given, its part of it. ``layer`` is
    the step's manifest record."""
    g = int(layer.get("groups", 1))
    k, n = int(layer["K"]), int(layer["N"]) // g
    plan = abi.gemm_commands(cfg, m, k, n, g)
    out = []
    for c in plan:
        (r0, r1), (c0, c1) = c.rows, c.cols
        col0 = c.group * n + c0
        parts = [f"group {c.group}"] if g > 1 else []
        if (r0, r1) != (0, m):
            parts.append(f"rows {r0}..{r1 - 1} of {m}")
        if (c0, c1) != (0, n):
            parts.append(f"columns {col0}..{c.group * n + c1 - 1}")
        what = f"layer {name!r}" + (f" ({', '.join(parts)})" if parts else "")
        want = None if expected is None else expected[r0:r1, col0 : col0 + c.n]
        out.append(command(cfg, what, c.m, c.n, k, bool(layer["relu"]), row_offset=r0,
                           expected=want, col_offset=col0, group=c.group,
                           load={kind: list(r) for kind, r in c.load.items()}))
    return out


def command_loads(words: dict[str, list[int]], cmd: jobs.Command) -> dict[str, list[int]]:
    """The layer image words a command loads before it runs."""
    return {kind: words[kind][a:b] for kind, (a, b) in cmd.load.items()}


@dataclass
class LayerRun:
    """One GEMM layer of an images folder, ready to run: the config, the layer's record and
    image words, its GEMM inputs X [G, M, K] and the golden model's output [M, N]."""

    cfg: AccelConfig
    name: str
    layer: dict
    words: dict[str, list[int]]
    x: torch.Tensor
    expected: torch.Tensor

    def commands(self) -> list[jobs.Command]:
        return layer_commands(self.cfg, self.name, self.layer, self.x.shape[1], self.expected)

    def batches(self) -> list[jobs.Batch]:
        """Per command: its image words (when it loads any) and its rows' activations."""
        out = []
        for c in self.commands():
            load = command_loads(self.words, c)
            load["act"] = abi.activation_words(
                self.x[c.group, c.row_offset : c.row_offset + c.fields["m"]], self.cfg)
            out.append(jobs.Batch(load, [c]))
        return out

    def summary(self) -> dict:
        """What the layer makes the RTL do, in the keys of ``NetworkRun.layers``."""
        cmds = self.commands()
        return {"M": self.x.shape[1], "K": self.x.shape[2], "N": self.expected.shape[1],
                "groups": self.x.shape[0], "commands": len(cmds),
                "cycles": sum(c.cycles for c in cmds),
                "result_words": sum(abi.col_tiles(self.cfg, c.fields["n"]) * c.fields["m"]
                                    for c in cmds)}


def layer_runs(source: str | Path | LoadedImages, layers: Sequence[str] | None = None,
               x_int: torch.Tensor | None = None) -> list[LayerRun]:
    """GEMM layers ``layers`` (default: all) of the network in ``source`` (a folder, or
    ``sw.images.load``'s result) when the network's input is ``x_int`` (integer codes;
    default: the reference inputs stored at export). The folder is read once."""
    loaded = _loaded(source)
    net = loaded.network
    if layers is None:
        layers = [la.name for la in net.gemm_layers()]
    x = reference_inputs(loaded) if x_int is None else arith.as_i64(x_int)
    metas = {m["name"]: m for m in loaded.manifest["steps"] if m.get("op") == "gemm"}
    out = []
    for name in layers:
        ops = net.operands(name, x)
        out.append(LayerRun(net.cfg, name, metas[name], loaded.layer_words(name), ops.x,
                            ops.out))
    return out


def run_layer_runs(runs: Sequence[LayerRun], seed: int, waves: bool | None = None
                   ) -> CosimResult:
    """Run layers one after the other in one simulation (each loads its own words)."""
    if not runs or any(r.cfg != runs[0].cfg for r in runs):
        raise SqaccelError("layer runs: need at least one, all for the same config")
    job = jobs.AccelJob(config=runs[0].cfg.to_dict(), seed=int(seed), format="",
                        batches=[b for r in runs for b in r.batches()])
    return run_accel_job(runs[0].cfg, job, "run_gemms", "layers", waves)


def run_layers(source: str | Path | LoadedImages, layers: Sequence[str] | None = None,
               x_int: torch.Tensor | None = None, seed: int | None = None,
               waves: bool | None = None) -> CosimResult:
    """Run GEMM layers of an exported network on the RTL (default: every one): their
    weights, step tables, biases and requant words from the image files, their inputs
    computed by the golden model from ``x_int``; every result word compared with the golden
    model's output. Raises CosimFailure naming the layer, the output index, the expected and
    the actual value."""
    seed = seed_from_env() if seed is None else seed
    return run_layer_runs(layer_runs(source, layers, x_int), seed, waves)


# -- the whole network ---------------------------------------------------------------------


def network_steps(loaded: LoadedImages, x: torch.Tensor) -> list[jobs.NetworkStep]:
    """Every step of the network for the testbench, with the golden model's outputs on
    ``x`` (a GEMM step's as [M, N])."""
    net = loaded.network
    golden = net.run(x, record=True).outputs
    tensors = {INPUT: x, **golden}
    metas = {m["name"]: m for m in loaded.manifest["steps"]}
    steps = []
    for step in net.steps:
        meta = metas[step.name]
        if isinstance(step, IntLayer):
            ops = gemm_operands(step, tensors[step.inputs[0]], net.cfg)
            steps.append(jobs.NetworkStep(
                op="gemm", name=step.name, params=meta, inputs=list(step.inputs),
                expected=jobs.tensor_to_json(ops.out), words=loaded.layer_words(step.name),
                commands=layer_commands(net.cfg, step.name, meta, ops.x.shape[1])))
        else:
            steps.append(jobs.NetworkStep(
                op=step.op, name=step.name, params=meta, inputs=list(step.inputs),
                expected=jobs.tensor_to_json(golden[step.name])))
    return steps


@dataclass
class NetworkRun:
    """What ``run_network`` measured: the RTL's logits and classes, and the simulation's
    cost per GEMM layer."""

    predictions: list[int]
    logits: list[list[int]]
    layers: dict[str, dict]  # per GEMM layer: M, K, N, commands, cycles, host/result words
    sim_cycles: int
    wall_s: float
    result: CosimResult


def run_network(source: str | Path | LoadedImages, x_int: torch.Tensor,
                seed: int | None = None, waves: bool | None = None) -> NetworkRun:
    """The whole network of ``source`` on the RTL for the integer inputs ``x_int`` (a
    batch: the images share the GEMMs' M dimension, so each layer's words load once)."""
    seed = seed_from_env() if seed is None else seed
    loaded = _loaded(source)
    net = loaded.network
    x = arith.as_i64(x_int)
    report = accel_build_dir(net.cfg) / "jobs" / f"network-report-{os.getpid()}.json"
    report.unlink(missing_ok=True)
    job = jobs.AccelJob(config=net.cfg.to_dict(), seed=int(seed), format="",
                        network_input=jobs.tensor_to_json(x), network=network_steps(loaded, x),
                        report=str(report.resolve()))
    try:
        result = run_accel_job(net.cfg, job, "run_network", "network", waves)
        r = jobs.read_report(report)
    finally:
        report.unlink(missing_ok=True)
    logits = jobs.tensor_from_json(r.logits)
    return NetworkRun(net.classify(logits).tolist(), logits.tolist(), r.layers, r.sim_cycles,
                      r.wall_s, result)


def spread(n: int, count: int) -> torch.Tensor:
    """``count`` indices evenly spaced over ``range(n)``, the first 0."""
    return torch.arange(count) * n // count


def test_inputs(source: str | Path | LoadedImages, count: int
                ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The network inputs of ``sqaccel cosim --network N``: ``count`` test images of the
    data set the images were exported from, evenly spaced over its test split (which is in
    class order for mnist5k: the first images would all be zeros), as integer inputs, with
    their labels; without such a record, the first reference inputs stored at export (no
    labels)."""
    from sqaccel.sw.deploy import recorded_test_split

    loaded = _loaded(source)
    net = loaded.network
    info = loaded.manifest.get("info") or {}
    found = recorded_test_split(info)
    if found is not None:
        x_test, y_test = found
        if not 1 <= count <= x_test.shape[0]:
            raise SqaccelError(f"{count} test images asked for, the split has "
                               f"{x_test.shape[0]}")
        idx = spread(x_test.shape[0], count)
        every = "" if count == 1 else f", every {x_test.shape[0] // count}th"
        return (net.quantize_input(x_test[idx]), y_test[idx],
                f"{count} {info['dataset']} test images (from the first{every})")
    ref = reference_inputs(loaded)
    if not 1 <= count <= ref.shape[0]:
        raise SqaccelError(f"{loaded.directory}: --network {count}: the images were not "
                           f"exported from a built-in data set and the manifest stores "
                           f"{ref.shape[0]} reference inputs")
    return ref[:count], None, f"the first {count} reference inputs stored at export (no labels)"


def chosen_layers(loaded: LoadedImages, wanted: Sequence[str] | None) -> list[str]:
    """The GEMM layers of ``--layer`` (default: all), checked against the network's."""
    names = [la.name for la in loaded.network.gemm_layers()]
    unknown = [n for n in wanted or [] if n not in names]
    if unknown:
        raise SqaccelError(f"{loaded.directory}: no GEMM layer {unknown[0]!r}; the GEMM "
                           f"layers are {names}")
    reference_inputs(loaded)  # raises when export stored none
    return list(dict.fromkeys(wanted or names))


def network_images(model: str = "digits", cfg: AccelConfig | None = None, bits: int = 4,
                   seed: int = 0, out_dir: Path | None = None,
                   per_channel: bool = False) -> Path:
    """Memory images of a built-in network (``sqaccel.sw.zoo``) quantised for ``cfg`` (SQ
    weights on the shift-add PE, uniform on the multiplier PE) as ``sqaccel export`` makes
    them, calibrated on its data set; kept in the cosimulation build folder and exported
    again when missing or unreadable."""
    from sqaccel.sim.builds import build_root, digest
    from sqaccel.sw.actquant import one_thread
    from sqaccel.sw.lowering import build_pipeline
    from sqaccel.sw.qweight import METHOD_OF_PE
    from sqaccel.sw.workloads import resolve_data, resolve_model
    from sqaccel.sw.zoo import read_manifest

    cfg = cfg or AccelConfig()
    method = METHOD_OF_PE[cfg.pe]
    # Committed weights that change (a retrained network) must not reuse older images.
    weights = read_manifest().get(model, {}).get("sha256") if seed == 0 else None
    out = Path(out_dir or build_root() / f"images-{model}-{method}{bits}"
                                         f"{'-pc' if per_channel else ''}-s{seed}-"
                                         f"{digest([cfg.to_dict(), weights])}")
    with files.exclusive(out):  # a second process waits and then finds the images
        if out.is_dir():
            try:
                images.load(out, cfg)
                return out
            except SqaccelError:
                pass
        source = resolve_model(model, seed=seed)
        split = resolve_data(None, source, seed)
        x_cal, (x_test, _) = split.eval_tensors()
        with one_thread():
            net = build_pipeline(source.model, method, bits, x_cal, cfg, per_channel).network
            ref = net.quantize_input(x_test[:16])
        info = {"model": model, "dataset": split.name, "seed": seed, "method": method,
                "bits": bits, "per_channel": per_channel}
        return images.export(net, out, reference_inputs=ref, info=info)
