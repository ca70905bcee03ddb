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

from sqaccel import abi, arith
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sim import job as jobs
from sqaccel.sim.builds import accel_build_dir, run_accel_job, seed_from_env
from sqaccel.sim.gemm_level import command
from sqaccel.sim.runner import CosimResult
from sqaccel.sw import images
from sqaccel.sw.images import LoadedImages, reference_inputs
from sqaccel.sw.intnet import IntLayer, gemm_operands


def _loaded(source: str | Path | LoadedImages) -> LoadedImages:
    return source if isinstance(source, LoadedImages) else images.load(source)


def layer_commands(cfg: AccelConfig, name: str, m: int, k: int, n: int, relu: bool,
                   expected: torch.Tensor | None = None) -> list[jobs.Command]:
    """A layer's commands: one per row range whose activations fit the buffer (the
    layer's weights stay loaded); each with its rows of ``expected`` [M, N] when given."""
    out = []
    for r0, r1 in abi.row_chunks(cfg, m, k):
        what = f"layer {name!r}" + (f" (rows {r0}..{r1 - 1} of {m})" if (r0, r1) != (0, m)
                                    else "")
        out.append(command(cfg, what, r1 - r0, n, k, relu, row_offset=r0,
                           expected=None if expected is None else expected[r0:r1]))
    return out


@dataclass
class LayerRun:
    """One GEMM layer of an images folder, ready to run: the config, the layer's image
    words, its GEMM input X [M, K] and the golden model's output [M, N]."""

    cfg: AccelConfig
    name: str
    words: dict[str, list[int]]
    x: torch.Tensor
    expected: torch.Tensor
    relu: bool

    def commands(self) -> list[jobs.Command]:
        m, k = self.x.shape
        return layer_commands(self.cfg, self.name, m, k, self.expected.shape[1], self.relu,
                              self.expected)

    def batches(self) -> list[jobs.Batch]:
        """The first command loads the layer's words; every one loads its rows'
        activations."""
        out = []
        for i, c in enumerate(self.commands()):
            rows = self.x[c.row_offset : c.row_offset + c.fields["m"]]
            load = dict(self.words) if i == 0 else {}
            load["act"] = abi.activation_words(rows, self.cfg)
            out.append(jobs.Batch(load, [c]))
        return out

    def summary(self) -> dict:
        """What the layer makes the RTL do, in the keys of ``NetworkRun.layers``."""
        cmds = self.commands()
        m, n = self.expected.shape
        return {"M": m, "K": self.x.shape[1], "N": n, "commands": len(cmds),
                "cycles": sum(c.cycles for c in cmds),
                "result_words": len(abi.result_words(self.expected, self.cfg))}


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
    out = []
    for name in layers:
        ops = net.operands(name, x)
        out.append(LayerRun(net.cfg, name, loaded.layer_words(name), ops.x, ops.out, ops.relu))
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
    ``x``."""
    net = loaded.network
    golden = net.run(x, record=True)
    steps, prev = [], "input"
    tensors = {"input": x}
    for step in net.steps:
        inp = tensors[prev]
        if isinstance(step, IntLayer):
            ops = gemm_operands(step, inp, net.cfg)
            m, k = ops.x.shape
            steps.append(jobs.NetworkStep(
                op="gemm", name=step.name, params=step.meta(), inputs=[prev],
                expected=jobs.tensor_to_json(ops.out), words=loaded.layer_words(step.name),
                commands=layer_commands(net.cfg, step.name, m, k, step.n, step.relu)))
        else:
            steps.append(jobs.NetworkStep(
                op=step.op, name=step.name, params=step.meta(), inputs=[prev],
                expected=jobs.tensor_to_json(golden.outputs[step.name])))
        tensors[step.name] = golden.outputs[step.name]
        prev = step.name
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


def test_inputs(source: str | Path | LoadedImages, count: int
                ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The network inputs of ``sqaccel cosim --network N``: the first ``count`` test images
    of the data set the images were exported from, as integer inputs, with their labels;
    without such a record, the reference inputs stored at export (no labels)."""
    from sqaccel.sw.data import digits_eval_data

    loaded = _loaded(source)
    net = loaded.network
    info = loaded.manifest.get("info") or {}
    if info.get("dataset") == "digits":
        _, (x_test, y_test) = digits_eval_data(seed=int(info.get("seed", 0)))
        if not 1 <= count <= x_test.shape[0]:
            raise SqaccelError(f"{count} test images asked for, the split has "
                               f"{x_test.shape[0]}")
        return (net.quantize_input(x_test[:count]), y_test[:count],
                f"the first {count} digits test images")
    ref = reference_inputs(loaded)
    if not 1 <= count <= ref.shape[0]:
        raise SqaccelError(f"{loaded.directory}: --network {count}: the images were not "
                           f"exported from the digits dataset and the manifest stores "
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


def digits_images(cfg: AccelConfig | None = None, bits: int = 4, seed: int = 0,
                  out_dir: Path | None = None) -> Path:
    """Memory images of the quantised digits CNN for ``cfg`` (SQ weights on the shift-add
    PE, uniform on the multiplier PE), exported as ``sqaccel export`` does; kept in the
    cosimulation build folder and re-exported when missing or unreadable."""
    from sqaccel.sim.builds import build_root, digest
    from sqaccel.sw.actquant import one_thread
    from sqaccel.sw.data import digits_eval_data
    from sqaccel.sw.lowering import build_pipeline
    from sqaccel.sw.qweight import METHOD_OF_PE
    from sqaccel.sw.train import load_or_train_digits

    cfg = cfg or AccelConfig()
    method = METHOD_OF_PE[cfg.pe]
    out = Path(out_dir or build_root() / f"images-digits-{method}{bits}-s{seed}-"
                                         f"{digest(cfg.to_dict())}")
    if out.is_dir():
        try:
            images.load(out, cfg)
            return out
        except SqaccelError:
            pass
    model = load_or_train_digits(seed=seed)
    x_cal, (x_test, _) = digits_eval_data(seed=seed)
    with one_thread():
        net = build_pipeline(model, method, bits, x_cal, cfg).network
        ref = net.quantize_input(x_test[:16])
    info = {"model": "digits_cnn", "dataset": "digits", "seed": seed, "method": method,
            "bits": bits}
    return images.export(net, out, reference_inputs=ref, info=info)
