"""From a trained model to an images folder, and back: what ``sqaccel export`` and
``sqaccel verify-images`` do.

``export_digits``: load (or train) the digits CNN, quantise its weights for the array,
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
    reports: list[str] = field(default_factory=list)
    files: int = 0


def export_digits(out: str | Path, cfg: AccelConfig, method: str, bits: int, *,
                  per_channel: bool = False, seed: int = 0, calibration: str = "mse",
                  calib_samples: int = 512, cache_dir: str | Path = "build/models",
                  force: bool = False, log=None) -> ExportResult:
    """The digits CNN quantised for ``cfg`` with ``method`` at ``bits``, as images in
    ``out`` (see the module docstring). The output path and the network's fit on the array
    are checked before any work."""
    from sqaccel import files
    from sqaccel.sw.data import eval_data
    from sqaccel.sw.lowering import build_pipeline, check_fits
    from sqaccel.sw.metrics import accuracy, top1
    from sqaccel.sw.models import digits_cnn
    from sqaccel.sw.train import load_or_train_digits

    if bits > cfg.weight_bits:
        raise SqaccelError(f"--bits {bits} exceeds the array's {cfg.weight_bits}-bit weights")
    if calib_samples < 1:
        raise SqaccelError(f"--calib-samples must be >= 1, got {calib_samples}")
    files.check_replaceable(out, images.KIND, force)
    check_fits(digits_cnn(), cfg)
    model = load_or_train_digits(seed=seed, cache_dir=cache_dir, log=log)
    x_cal, (x_test, y_test) = eval_data("digits", calib_samples, seed)
    with one_thread():
        p = build_pipeline(model, method, bits, x_cal, cfg, per_channel, calibration)
        net = p.network
        x_int = net.quantize_input(x_test)
        preds = net.predict(x_int)
        fq_acc = accuracy(p.fake_quant, (x_test, y_test))
    int_acc = top1(preds, y_test)
    info = {
        "model": "digits_cnn",
        "dataset": "digits",
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
                        fq_acc, int(y_test.numel()), list(net.reports),
                        len(list(d.iterdir())))


def verify_export(directory: str | Path, cfg: AccelConfig | None = None,
                  samples: int | None = None, structural: bool = False) -> list[str]:
    """``images.verify``, then the test predictions recorded at export re-run from the
    images alone; the lines of what was checked. Raises ImageError on any difference."""
    from sqaccel.sw.data import eval_data
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
    if info.get("dataset") != "digits" or not test:
        lines.append("no digits test record in the manifest: accuracy not re-run")
        return lines
    _, (x_test, y_test) = eval_data("digits", seed=int(info.get("seed", 0)))
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
    lines.append(f"ok: {n} digits test predictions equal to export; integer accuracy "
                 f"{acc:.2f} %" + (f" (export: {test['integer_accuracy']:.2f} %, "
                                   f"fake-quantised float {test['fake_quant_accuracy']:.2f} %)"
                                   if n == test["count"] else ""))
    return lines
