"""``sqaccel report``: the run's results as Markdown and HTML pages with PNG plots.

The report reads what one ``sqaccel demo`` run left in its folder (``build/demo`` by
default: accuracy and calibration tables, the exported images, the cosimulation and
synthesis summaries) and draws the weight histograms from the same model and seed, so
every figure in it comes from that run. It is written to a temporary folder and renamed.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqaccel import files
from sqaccel.errors import SqaccelError
from sqaccel.tables import render_table

HIST_BITS = 3  # the weight histograms show the W3 subsets, where SQ and uniform differ most


NUM = (int, float)
# The shape of every file the report reads: a type, {key: shape} for an object ("?key":
# optional), [shape] for a list of items. A file of another shape stops the report with an
# error naming the file and the entry, before anything is drawn.
SHAPES: dict[str, object] = {
    "run.json": {"?seed": int, "?date": str, "?machine": str, "?cache_dir": str,
                 "?headline": [str], "?steps": [{"name": str, "seconds": NUM}]},
    "accuracy.json": {"fp_accuracy": NUM,
                      "runs": [{"method": str, "bits": int, "accuracy": NUM}]},
    "golden.json": {"rows": [{"method": str, "bits": int, "act_bits": int, "fake_quant": NUM,
                              "integer": NUM, "diff": NUM}]},
    "calibration.json": {"columns": [str], "rows": [str], "cells": dict,
                         "full_precision": NUM, "seconds": NUM},
    "cosim.json": {"levels": dict},
    "synth.json": [{"label": str, "target": str, "design": str, "logic_cells": int,
                    "ffs": int, "dsp": int, "bram": int, "fmax_mhz": (int, float, type(None))}],
    "images/manifest.json": {"config": dict, "files": dict},
    "resnet20.json": {"model": str, "dataset": str, "bits": int, "act_bits": int,
                      "integer_accuracy": NUM, "fake_quant_accuracy": NUM,
                      "perf": {"config": str, "totals": dict,
                               "layers": [{"name": str, "kind": str, "groups": int, "m": int,
                                           "k": int, "n": int, "macs": int, "cycles": int,
                                           "utilisation": NUM}],
                               "host_steps": [{"name": str, "op": str, "elements": int,
                                               "ops": int}]},
                      "cosim": {"images": int, "correct": int, "layers": dict}},
}


def _check_shape(obj, shape, where: str) -> str | None:
    """Where ``obj`` departs from ``shape`` (None: it fits)."""
    if isinstance(shape, dict):
        if not isinstance(obj, dict):
            return f"{where or 'the file'} is not an object"
        for key, sub in shape.items():
            optional, key = key.startswith("?"), key.lstrip("?")
            if key not in obj:
                if optional:
                    continue
                return f"no {where + '.' if where else ''}{key}"
            bad = _check_shape(obj[key], sub, f"{where}.{key}" if where else key)
            if bad:
                return bad
        return None
    if isinstance(shape, list):
        if not isinstance(obj, list):
            return f"{where or 'the file'} is not a list"
        for i, item in enumerate(obj):
            bad = _check_shape(item, shape[0], f"{where}[{i}]")
            if bad:
                return bad
        return None
    if isinstance(obj, bool) or not isinstance(obj, shape):
        return f"{where} is {obj!r}, of the wrong type"
    return None


def _read_json(path: Path, name: str | None = None) -> dict | list | None:
    """A file of the run, its shape checked (``SHAPES``); None when it is not there."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SqaccelError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise SqaccelError(f"{path}: cannot be read ({e.strerror})") from None
    bad = _check_shape(obj, SHAPES[name or path.name], "")
    if bad:
        raise SqaccelError(f"{path}: not a file this report reads: {bad}")
    return obj


@dataclass
class Page:
    """Markdown blocks and the PNG files they reference."""

    blocks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.blocks.append(text.strip("\n"))

    def figure(self, name: str, caption: str) -> None:
        self.images.append(name)
        self.add(f"![{caption}]({name})\n\n*{caption}*")


def md_table(headers: list[str], rows: list[list], text_cols: int = 1) -> str:
    return render_table(headers, [[str(c) for c in r] for r in rows], markdown=True,
                        text_cols=text_cols)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- figures ---------------------------------------------------------------------------


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    _plt().close(fig)
    return name


def plot_weight_histograms(out: Path, seed: int, cache_dir: Path) -> tuple[str, list[list]]:
    """Each quantised layer's weights with the SQ and the uniform levels drawn over them."""
    import torch

    from sqaccel.sw.models import quantizable_layers
    from sqaccel.sw.quantizers import make_quantizer
    from sqaccel.sw.zoo import load_builtin

    plt = _plt()
    model = load_builtin("digits", seed=seed, cache_dir=cache_dir)
    layers = quantizable_layers(model)
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2))
    rows = []
    for ax, (name, mod) in zip(axes, layers, strict=True):
        w = mod.weight.detach().to(torch.float64)
        sq = make_quantizer("sq", HIST_BITS).quantize(w)
        uni = make_quantizer("uniform", HIST_BITS).quantize(w)
        ax.hist(w.flatten().numpy(), bins=80, color="#888888")
        for q, color, label in ((sq, "#d62728", "SQ"), (uni, "#1f77b4", "uniform")):
            levels = sorted({float(v) for v in q.dequantize().flatten().tolist()})
            for i, v in enumerate(levels):
                ax.axvline(v, color=color, lw=1.2, ls="-" if label == "SQ" else "--",
                           label=label if i == 0 else None)
            mse = float(((q.dequantize().to(torch.float64) - w) ** 2).mean())
            rows.append([name, type(mod).__name__, label, len(levels), f"{mse:.3e}"])
        ax.set_title(f"layer {name} ({type(mod).__name__}, {w.numel()} weights)", fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    fig.suptitle(f"weights and W{HIST_BITS} levels (per tensor): SQ solid, uniform dashed")
    return _save(fig, out, "weights.png"), rows


def plot_accuracy(out: Path, accuracy: dict | None, calibration: dict | None) -> str:
    plt = _plt()
    panels = [("weights only, float activations (per tensor)", accuracy_series(accuracy)),
              ("integer golden model, A8 (the array's arithmetic)",
               calibration_series(calibration))]
    panels = [(t, s) for t, s in panels if s]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True,
                             squeeze=False)
    fp = (accuracy or {}).get("fp_accuracy", (calibration or {}).get("full_precision"))
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for label, pts in series.items():
            ax.plot([b for b, _ in pts], [a for _, a in pts], marker="o", label=label)
        if fp is not None:
            ax.axhline(fp, color="k", lw=0.8, ls=":", label="full precision")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("weight bits (inner layers)")
        ax.set_xticks(sorted({b for pts in series.values() for b, _ in pts}))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("digits test accuracy (%)")
    return _save(fig, out, "accuracy.png")


def accuracy_series(accuracy: dict | None) -> dict[str, list[tuple[int, float]]]:
    """Per method of the weight-only sweep, (weight bits, accuracy)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in (accuracy or {}).get("runs", []):
        out.setdefault(r["method"], []).append((int(r["bits"]), float(r["accuracy"])))
    return {k: sorted(v) for k, v in out.items()}


def calibration_series(calibration: dict | None) -> dict[str, list[tuple[int, float]]]:
    """Per row of the calibration table, (weight bits, accuracy) of its A8 columns."""
    out: dict[str, list[tuple[int, float]]] = {}
    for label in (calibration or {}).get("rows", []):
        pts = []
        for col, cell in calibration["cells"][label].items():
            w, a = col[1:].split("A")
            if int(a) == 8 and cell.get("accuracy") is not None:
                pts.append((int(w), float(cell["accuracy"])))
        if pts:
            out[label] = sorted(pts)
    return out


def plot_hardware(out: Path, synth: list[dict]) -> str:
    """The PEs side by side (the board top is in the table: it would dwarf them)."""
    plt = _plt()
    pes = [s for s in synth if s.get("design", "pe") == "pe"] or synth
    labels = [s["label"] for s in pes]
    colors = ["#d62728" if s.get("pe") == "shift" else "#1f77b4" for s in pes]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(pes) + 1.6))
    for ax, key, unit in ((axes[0], "logic_cells", "logic cells (LUT4 + carry)"),
                          (axes[1], "fmax_mhz", "Fmax (MHz)")):
        vals = [s[key] or 0 for s in pes]
        ax.barh(labels, vals, color=colors)
        for i, v in enumerate(vals):
            extra = f" + {pes[i]['dsp']} DSP" if key == "logic_cells" and pes[i]["dsp"] else ""
            ax.text(v, i, f" {v:.0f}{extra}", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.3 if vals and max(vals) else 1)
        ax.set_xlabel(unit)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("one PE in a register shell on the ECP5: shift-add (red) against "
                 "multiplier (blue), same widths", fontsize=10)
    return _save(fig, out, "hardware.png")


def plot_cosim(out: Path, cosim: dict) -> str:
    plt = _plt()
    levels = cosim["levels"]
    names = list(levels)
    counts = [levels[n]["count"] for n in names]
    colors = ["#2ca02c" if levels[n]["status"] == "pass" else "#d62728" for n in names]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.barh(names, counts, color=colors)
    for i, n in enumerate(names):
        ax.text(counts[i], i, f" {levels[n]['status']}: {counts[i]} {levels[n]['unit']}",
                va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1, max(counts + [1]) * 300)
    ax.invert_yaxis()
    ax.set_xlabel("checked items (log scale); green = bit-exact, red = mismatch")
    return _save(fig, out, "cosim.png")


def plot_perf(out: Path, perf: dict, title: str, name: str) -> str:
    """Cycles per layer (bars) and the array's utilisation (dots), in network order."""
    plt = _plt()
    layers = perf["layers"]
    names = [la["name"] for la in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 4))
    colors = ["#9467bd" if la["groups"] > 1 else "#1f77b4" for la in layers]
    ax.bar(range(len(names)), [la["cycles"] for la in layers], color=colors)
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("cycles (cycle model = RTL)")
    ax2 = ax.twinx()
    ax2.plot(range(len(names)), [100 * la["utilisation"] for la in layers], "o",
             color="#d62728", markersize=4)
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("PE utilisation % (red)")
    ax.set_title(f"{title}: cycles per layer on {perf['config']} (grouped / depthwise in "
                 "purple)", fontsize=9)
    return _save(fig, out, name)


def resnet_section(page: Page, out: Path, res: dict) -> None:
    perf, c = res["perf"], res["cosim"]
    tot = perf["totals"]
    page.add(f"resnet20 (residual basic blocks, BatchNorm folded) trained on {res['dataset']}, "
             f"SQ W{res['bits']}A{res['act_bits']} with calibration: integer golden model "
             f"{res['integer_accuracy']:.2f} %, fake-quantised float "
             f"{res['fake_quant_accuracy']:.2f} % on the test split. On the RTL: "
             f"{c['images']} test images, every step's tensor bit-exact, {c['correct']}/"
             f"{c['images']} correct. Every convolution and Linear ran on the array "
             f"({100 * tot['array_mac_share']:.0f} % of the {tot['macs_per_image']:,} MACs "
             f"per image); the adds, pooling and requantisation ran as host steps "
             f"({tot['host_ops']:,} element operations per image).")
    page.figure(plot_perf(out, perf, "resnet20", "perf-resnet20.png"),
                "Cycles and utilisation per layer")
    rows = [[la["name"], "array", la["kind"] + (f" (groups {la['groups']})"
                                                  if la["groups"] > 1 else ""),
             f"{la['m']}x{la['k']}x{la['n']}", f"{la['macs']:,}", f"{la['cycles']:,}",
             _pct(100 * la["utilisation"])] for la in perf["layers"]]
    rows += [[h["name"], "host", h["op"], "-", "-", "-", f"{h['ops']:,} ops"]
             for h in perf["host_steps"]]
    page.add(md_table(["step", "runs on", "op", "M x K x N", "MACs", "cycles",
                       "utilisation"], rows, text_cols=4))


# -- pages -----------------------------------------------------------------------------


def build_page(run_dir: Path, out: Path) -> Page:
    page = Page()
    run = _read_json(run_dir / "run.json")
    if not isinstance(run, dict):
        raise SqaccelError(f"{run_dir}: no run.json; run `sqaccel demo` (make demo) first")
    accuracy = _read_json(run_dir / "accuracy.json")
    calibration = _read_json(run_dir / "calibration.json")
    cosim = _read_json(run_dir / "cosim.json")
    synth = _read_json(run_dir / "synth.json")
    manifest = _read_json(run_dir / "images" / "manifest.json", "images/manifest.json")
    golden = _read_json(run_dir / "golden.json")
    for name, level in (cosim or {}).get("levels", {}).items():
        bad = _check_shape(level, {"status": str, "count": int, "unit": str}, f"levels.{name}")
        if bad:
            raise SqaccelError(f"{run_dir / 'cosim.json'}: not a file this report reads: {bad}")
    seed = int(run.get("seed", 0))

    page.add("# sqaccel report")
    page.add(f"Run of {run.get('date', 'unknown date')} on {run.get('machine', '?')}, seed "
             f"{seed}: the digits CNN (scikit-learn digits, offline), SQ search, calibration, "
             f"memory images, the accelerator's RTL cosimulated on Verilator, synthesis for "
             f"the ECP5. Every figure below was produced by that run.")
    if run.get("headline"):
        page.add("\n".join(f"- {h}" for h in run["headline"]))

    page.add("## Weights and their levels")
    name, rows = plot_weight_histograms(out, seed, Path(run.get("cache_dir", "build/models")))
    page.figure(name, f"Weight histograms with the W{HIST_BITS} SQ and uniform levels")
    page.add(md_table(["layer", "type", "method", "levels", "weight MSE"], rows, text_cols=3))

    page.add("## Accuracy against bits")
    if accuracy or calibration:
        page.figure(plot_accuracy(out, accuracy, calibration),
                    "Digits test accuracy against weight bits, per method")
    if accuracy:
        bits = sorted({r["bits"] for r in accuracy["runs"]}, reverse=True)
        acc = {(r["method"], r["bits"]): r["accuracy"] for r in accuracy["runs"]}
        methods = list(dict.fromkeys(r["method"] for r in accuracy["runs"]))
        page.add(f"Weights only (activations in floating point), per tensor, first and last "
                 f"layer 8-bit; full precision {accuracy['fp_accuracy']:.2f} %:")
        page.add(md_table(["method"] + [f"W{b}" for b in bits],
                          [[m] + [_pct(acc.get((m, b))) for b in bits] for m in methods]))
    else:
        page.add("The weight-only accuracy sweep was not part of this run.")
    if golden:
        page.add("The integer golden model against the fake-quantised float model it stands "
                 "for (search only, A8 activations, ranges by MSE):")
        page.add(md_table(["method", "W/A", "fake-quant %", "integer %", "difference"],
                          text_cols=2, rows=[
            [r["method"], f"W{r['bits']}A{r['act_bits']}", _pct(r["fake_quant"]),
             _pct(r["integer"]), f"{r['diff']:+.2f}"] for r in golden["rows"]]))
    if calibration:
        cols = calibration["columns"]
        page.add(f"Integer golden model (what the array computes), digits test split; full "
                 f"precision {calibration['full_precision']:.2f} %. Calibration: block "
                 f"reconstruction of the rounding on the subset's levels, on the calibration "
                 f"split only ({calibration['seconds']:.0f} s for the table):")
        page.add(md_table([""] + cols, [
            [label] + [_pct(calibration["cells"][label].get(c, {}).get("accuracy"))
                       for c in cols]
            for label in calibration["rows"]]))
    page.add("## Hardware cost")
    if synth:
        page.figure(plot_hardware(out, synth), "Logic cells and Fmax, shift-add vs multiplier")
        page.add(md_table(
            ["design", "target", "logic cells", "FFs", "DSP", "BRAM", "Fmax MHz"],
            [[s["label"], s["target"], s["logic_cells"], s["ffs"], s["dsp"], s["bram"],
              "-" if s["fmax_mhz"] is None else f"{s['fmax_mhz']:.1f}"] for s in synth]))
    else:
        page.add("Synthesis was not part of this run.")

    page.add("## Cosimulation")
    if cosim:
        page.figure(plot_cosim(out, cosim), "Cosimulation levels, every word compared")
        page.add(md_table(
            ["level", "status", "count", "detail"],
            [[k, v["status"], f"{v['count']} {v['unit']}", v.get("detail", "")]
             for k, v in cosim["levels"].items()]))
    else:
        page.add("Cosimulation was not part of this run.")

    res = _read_json(run_dir / "resnet20.json")
    page.add("## A residual network on the array")
    if res:
        resnet_section(page, out, res)
    else:
        page.add("The resnet20 flow was not part of this run.")

    page.add("## Configuration and images")
    if manifest:
        cfg = manifest.get("config", {})
        page.add("The accelerator config of the images (and of the RTL that ran them):")
        page.add(md_table(["field", "value"], text_cols=2, rows=[
            [k, json.dumps(v, separators=(",", ":"))] for k, v in sorted(cfg.items())
            if k != "derived"]))
        files = [[f["file"], f.get("layer", "-"), str(f.get("sha256", ""))[:16]]
                 for f in _manifest_files(manifest) if f.get("format") != "bin"]
        page.add("The `$readmemh` images (the raw binaries beside them carry the same words):")
        page.add(md_table(["image", "layer", "SHA-256 (first 16)"], files, text_cols=3))
    else:
        page.add("No images were exported in this run.")
    if run.get("steps"):
        page.add("## Steps of the run")
        page.add(md_table(["step", "seconds", "note"], text_cols=1, rows=[
            [s["name"], f"{s['seconds']:.1f}",
             "skipped" if s.get("skipped") else
             "reused from an earlier run with the same inputs" if s.get("reused") else ""]
            for s in run["steps"]]))
    return page


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _manifest_files(manifest: dict) -> list[dict]:
    """The manifest's file entries (``files``: name -> entry), each with its name."""
    return [{"file": k, **v} for k, v in manifest.get("files", {}).items()]


def to_html(markdown_blocks: list[str]) -> str:
    """A small Markdown subset (headings, lists, tables, images, code) as HTML."""
    body = []
    for block in markdown_blocks:
        lines = block.splitlines()
        if block.startswith("```"):
            body.append("<pre>" + html.escape("\n".join(lines[1:-1])) + "</pre>")
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            body.append(f"<h{level}>{html.escape(block.lstrip('#').strip())}</h{level}>")
        elif block.startswith("!["):
            alt, src = block[2:].split("](", 1)
            src = src.split(")", 1)[0]
            cap = lines[-1].strip("*")
            body.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
                        f"<figcaption>{html.escape(cap)}</figcaption></figure>")
        elif block.startswith("|"):
            rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
            head, data = rows[0], rows[2:]
            t = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
            t += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                  for r in data]
            body.append("".join(t) + "</table>")
        elif block.startswith("- "):
            body.append("<ul>" + "".join(f"<li>{html.escape(ln[2:])}</li>" for ln in lines)
                        + "</ul>")
        else:
            body.append(f"<p>{html.escape(block)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:2px 8px;text-align:right}img{max-width:100%}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>sqaccel report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


KIND = "report"  # the output kind of a report folder (sqaccel.files)


def write_report(run_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write index.md, index.html and the PNGs to ``out``; an earlier report stays until
    the new one is complete. ``out`` must not be the run folder or inside it, and is
    replaced only if it is a report this toolchain wrote (unless ``force``)."""
    run_dir, out = Path(run_dir), Path(out)
    files.check_outside(out, {"--run": run_dir})
    with files.staged_folder(out, KIND, force) as tmp:
        page = build_page(run_dir, tmp)
        (tmp / "index.md").write_text("\n\n".join(page.blocks) + "\n")
        (tmp / "index.html").write_text(to_html(page.blocks))
        (tmp / "report.json").write_text(json.dumps(
            {"written": datetime.now(UTC).isoformat(timespec="seconds"),
             "run_dir": str(run_dir), "images": page.images}, indent=1))
    return out
