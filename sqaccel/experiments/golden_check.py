"""The integer golden model against the fake-quantised float model it stands for: per
method and weight width, both accuracies on the digits test split and their difference."""

from __future__ import annotations

from torch import nn

from sqaccel.config import AccelConfig
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.data import eval_data
from sqaccel.sw.lowering import array_cfg, build_pipeline
from sqaccel.sw.metrics import accuracy


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
    x_cal, (x_test, y_test) = eval_data("digits", calib_samples, seed)
    if model is None:
        from sqaccel.sw.zoo import load_builtin

        model = load_builtin("digits", seed=seed)
    test = (x_test, y_test)
    base = cfg if cfg is not None else AccelConfig()
    rows = []
    with one_thread():
        for method in methods:
            for b in bits:
                p = build_pipeline(model, method, b, x_cal, array_cfg(base, method, act_bits),
                                   per_channel)
                fq = accuracy(p.fake_quant, test)
                ia = accuracy(p.network, test)
                rows.append(dict(method=method, bits=b, act_bits=act_bits, fake_quant=fq,
                                 integer=ia, diff=ia - fq, reports=list(p.network.reports)))
    return rows


def format_accuracy_table(rows: list[dict]) -> str:
    lines = [f"{'method':8} {'W/A':6} {'fake-quant %':>13} {'integer %':>10} {'diff':>6}"]
    for r in rows:
        lines.append(
            f"{r['method']:8} {'W{}A{}'.format(r['bits'], r['act_bits']):6} "
            f"{r['fake_quant']:13.2f} {r['integer']:10.2f} {r['diff']:+6.2f}"
        )
    return "\n".join(lines)

