"""From a trained model to an images folder, and back: what ``sqaccel export`` and
``sqaccel verify-images`` do.

``export_model``: load the model (``sqaccel.sw.workloads``), quantise its weights for the array,
calibrate the activations, build the integer network and write its images with a manifest
that records the test-split predictions and a few reference inputs. ``verify_export``:
re-read the images, rebuild the network from them alone and re-run it, showing the same
outputs and accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.sw import images
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.qweight import METHOD_OF_PE, PE_OF_METHOD

REFERENCE_SAMPLES = 16


def array_config(cfg: AccelConfig, method: str | None, from_file: bool) -> tuple[AccelConfig,
                                                                               str]:
    """The config and the weight method: the method picks the PE kind, unless a config file
    fixed it (they must then agree)."""
    if method is None:
        return cfg, METHOD_OF_PE[cfg.pe] if from_file else "sq"
    if from_file and PE_OF_METHOD[method] != cfg.pe:
        raise SqaccelError(f"the config's pe = {cfg.pe!r} runs {METHOD_OF_PE[cfg.pe]} weights, "
                           f"not {method}")
    return cfg.with_changes(pe=PE_OF_METHOD[method]), method


@dataclass
class ExportResult:
    directory: Path
    cfg: AccelConfig
    method: str
    bits: int
    layer_bits: list[int]
    integer_accuracy: float
    fake_quant_accuracy: float
    test_images: int
    dataset: str
    reports: list[str] = field(default_factory=list)
    files: int = 0


def export_model(out: str | Path, cfg: AccelConfig, method: str, bits: int, *,
                 model: str = "digits", weights: str | Path | None = None,
                 data: str | Path | None = None, retrain: bool = False,
                 per_channel: bool = False, seed: int = 0, calibration: str = "mse",
                 calib_samples: int = 512, cache_dir: str | Path = "build/models",
                 force: bool = False, log=None) -> ExportResult:
    """The network ``model`` names (``sqaccel.sw.workloads``) quantised for ``cfg`` with
    ``method`` at ``bits``, as images in ``out`` (see the module docstring). The output
    path, the model (every operation supported) and its fit on the array are checked before
    any quantisation."""
    from sqaccel import files
    from sqaccel.sw.lowering import build_pipeline, check_fits
    from sqaccel.sw.metrics import accuracy, top1
    from sqaccel.sw.workloads import resolve_data, resolve_model

    if bits > cfg.weight_bits:
        raise SqaccelError(f"--bits {bits} exceeds the array's {cfg.weight_bits}-bit weights")
    if calib_samples < 1:
        raise SqaccelError(f"--calib-samples must be >= 1, got {calib_samples}")
    files.check_replaceable(out, images.KIND, force)
    source = resolve_model(model, weights, retrain=retrain, seed=seed, cache_dir=cache_dir,
                           **({"log": log} if log else {}))
    check_fits(source.model, cfg)
    split = resolve_data(data, source, seed)
    x_cal, (x_test, y_test) = split.eval_tensors(calib_samples)
    with one_thread():
        p = build_pipeline(source.model, method, bits, x_cal, cfg, per_channel, calibration)
        net = p.network
        x_int = net.quantize_input(x_test)
        preds = net.predict(x_int)
        fq_acc = accuracy(p.fake_quant, (x_test, y_test))
    int_acc = top1(preds, y_test)
    info = {
        "model": source.name,
        "dataset": split.name,
        "seed": seed,
        "method": method,
        "bits": bits,
        "layer_bits": {name: qw.bits for name, qw in p.qweights.items()},
        "act_bits": cfg.act_bits,
        "per_channel": bool(per_channel),
        "calibration": calibration,
        "calib_samples": int(x_cal.shape[0]),
        "activation_scales": p.scales.to_dict(),
        "test": {
            "count": int(y_test.numel()),
            "integer_accuracy": int_acc,
            "fake_quant_accuracy": fq_acc,
            "predictions": preds.tolist(),
        },
    }
    d = images.export(net, out, reference_inputs=x_int[:REFERENCE_SAMPLES], info=info,
                      force=force)
    return ExportResult(d, cfg, method, bits, [la.bits for la in net.gemm_layers()], int_acc,
                        fq_acc, int(y_test.numel()), split.name, list(net.reports),
                        len(list(d.iterdir())))


def network_for(model: str, cfg: AccelConfig, *, weights: str | Path | None = None,
                data: str | Path | None = None, retrain: bool = False, seed: int = 0,
                calib_samples: int = 64, cache_dir: str | Path = "build/models"):
    """The integer network of ``model`` on ``cfg`` (weights of the config's PE kind at its
    width, activations calibrated on a few samples), without writing images: what
    ``sqaccel perf --model`` measures (cycles depend on the shapes and the config only)."""
    from sqaccel.sw.lowering import build_pipeline, check_fits
    from sqaccel.sw.qweight import METHOD_OF_PE
    from sqaccel.sw.workloads import resolve_data, resolve_model

    source = resolve_model(model, weights, retrain=retrain, seed=seed, cache_dir=cache_dir)
    check_fits(source.model, cfg)
    x_cal, _ = resolve_data(data, source, seed).eval_tensors(calib_samples)
    with one_thread():
        return build_pipeline(source.model, METHOD_OF_PE[cfg.pe], cfg.weight_bits, x_cal,
                              cfg).network


def verify_export(directory: str | Path, cfg: AccelConfig | None = None,
                  samples: int | None = None, structural: bool = False) -> list[str]:
    """``images.verify``, then the test predictions recorded at export re-run from the
    images alone; the lines of what was checked. Raises ImageError on any difference."""
    from sqaccel.sw.metrics import top1

    loaded = images.verify(directory, cfg, structural)
    net = loaded.network
    lines = [f"ok: {line}" for line in loaded.checks]
    if structural:
        return lines
    ref = loaded.manifest.get("reference")
    if ref is not None and ref["logits"]:
        lines.append(f"reference input 0 logits: {ref['logits'][0]}")
    info = loaded.manifest.get("info") or {}
    test = info.get("test")
    found = recorded_test_split(info)
    if found is None or not test:
        lines.append("no built-in data set test record in the manifest: accuracy not re-run")
        return lines
    x_test, y_test = found
    n = y_test.numel() if samples is None else samples
    if not 1 <= n <= y_test.numel():
        raise SqaccelError(f"--samples must be in 1..{y_test.numel()}, got {n}")
    with one_thread():
        preds = net.predict(net.quantize_input(x_test[:n]))
    want = torch.tensor(test["predictions"][:n], dtype=torch.int64)
    if not torch.equal(preds, want):
        bad = int((preds != want).sum())
        raise images.ImageError(
            f"{loaded.directory}: {bad} of {n} test predictions differ from export"
        )
    acc = top1(preds, y_test[:n])
    lines.append(f"ok: {n} {info['dataset']} test predictions equal to export; integer accuracy "
                 f"{acc:.2f} %" + (f" (export: {test['integer_accuracy']:.2f} %, "
                                   f"fake-quantised float {test['fake_quant_accuracy']:.2f} %)"
                                   if n == test["count"] else ""))
    return lines


def recorded_test_split(info: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(test inputs, labels) of the built-in data set an export recorded, or None (a
    folder, or no record)."""
    from sqaccel.sw.data import DATASETS, load_split

    name = info.get("dataset")
    if name not in DATASETS:
        return None
    seed = info.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise images.ImageError(f"manifest info: seed {seed!r} is not a seed")
    _, test = load_split(name, seed).eval_tensors()
    return test
