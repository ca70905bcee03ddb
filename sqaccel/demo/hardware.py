"""The demo's hardware steps: Verilog, cosimulation at four levels, synthesis.

Each writes its summary into the run folder (``verilog/``, ``cosim.json``, ``synth.json``)
for the report; simulator and tool output goes to log files beside them, named on failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sqaccel.demo.state import Background, DemoRun, digest, file_digest
from sqaccel.errors import SqaccelError

PE_CYCLES = 100_000  # random cycles on every PE of the PE bench (make sim: 10^6)
GEMMS = 24  # random GEMMs on the demo's array (make sim: over 1,000 across configs)


def step_verilog(run: DemoRun) -> None:
    from sqaccel.hw.verilog import VERILOG_FILE, generate, lint

    cfg = run.cfg
    out = generate(cfg, run.out / "verilog")
    rc, msg = lint(out / VERILOG_FILE)
    if rc != 0:
        raise SqaccelError(f"verilator --lint-only -Wall on {out / VERILOG_FILE} failed:\n{msg}")
    lines = (out / VERILOG_FILE).read_text().count("\n")
    run.say(f"{out / VERILOG_FILE}: {lines} lines, {cfg.rows}x{cfg.cols} {cfg.pe} PEs, "
            f"A{cfg.act_bits} W{cfg.weight_bits}, {cfg.acc_bits}-bit accumulators, K_max "
            f"{cfg.k_max}; config.json and format.json beside it; lint clean")
    run.state.verilog_digest = file_digest(out / VERILOG_FILE)


# -- cosimulation ----------------------------------------------------------------------------


def cosim_key(run: DemoRun) -> str:
    return digest(["cosim", run.state.verilog_digest, run.state.manifest_digest,
                   run.cosim_images, run.seed, PE_CYCLES, GEMMS])


def _level(name: str, fn, log) -> dict:
    from sqaccel.sim.runner import CosimFailure

    t0 = time.perf_counter()
    try:
        entry = fn()
    except CosimFailure as e:
        entry = {"status": "fail", "count": 0, "unit": "", "detail": str(e).splitlines()[0],
                 "message": str(e)}
    entry["seconds"] = time.perf_counter() - t0
    shown = "bit-exact" if entry["status"] == "pass" else "MISMATCH"
    log(f"{name:>8}: {entry['count']} {entry['unit']}, {shown} ({entry['seconds']:.1f} s)"
        + (f"; {entry['detail']}" if entry.get("detail") else ""))
    return entry


def step_cosim(run: DemoRun) -> None:
    from sqaccel.sim import gemm_level, network_level, pe_level
    from sqaccel.sim.runner import logs_to
    from sqaccel.sw import images

    cfg = run.cfg
    images_dir = run.state.need("images_dir")
    seed = run.seed + 1
    logs = run.out / "logs"
    loaded = images.load(images_dir)
    run.say(f"cocotb on Verilator, seed {seed}; build and simulator output in {logs}/ "
            "(the first run builds each model: a minute or two)")
    levels: dict[str, dict] = {}
    summary: dict = {}

    def pe() -> dict:
        cfgs = pe_level.PE_BENCH_CONFIGS
        pe_level.run_pe(PE_CYCLES, seed)
        return {"status": "pass", "count": PE_CYCLES * len(cfgs), "unit": "PE-cycles",
                "detail": f"{len(cfgs)} PEs of both kinds, corner cases then {PE_CYCLES} "
                          "random cycles, every accumulator every cycle"}

    def gemm() -> dict:
        cases = gemm_level.random_gemm_cases(cfg, GEMMS, seed)
        gemm_level.run_gemms(cfg, cases, seed)
        values = sum(g.shape[0] * g.shape[1] for _, g in cases)  # M x N of each
        return {"status": "pass", "count": GEMMS, "unit": "GEMMs",
                "detail": f"random shapes, requant and extremes on {cfg.name()}; "
                          f"{values} output values"}

    def layer() -> dict:
        runs = network_level.layer_runs(loaded)
        network_level.run_layer_runs(runs, seed)
        values = sum(r.expected.numel() for r in runs)
        inputs = images.reference_inputs(loaded).shape[0]
        return {"status": "pass", "count": len(runs), "unit": "layers",
                "detail": f"loaded from the images through the host interface, on the "
                          f"{inputs} reference inputs; {values} output values"}

    def network() -> dict:
        x, labels, _ = network_level.test_inputs(loaded, run.cosim_images)
        t0 = time.perf_counter()
        nr = network_level.run_network(loaded, x, seed)
        call_s = time.perf_counter() - t0
        correct = int((torch.tensor(nr.predictions) == labels).sum())
        n = len(nr.predictions)
        summary.update(images=n, predictions=nr.predictions, labels=labels.tolist(),
                       correct=correct, accuracy=100.0 * correct / n, sim_cycles=nr.sim_cycles,
                       sim_seconds=nr.wall_s, seconds_per_image=nr.wall_s / n,
                       call_seconds=call_s, layers=nr.layers)
        return {"status": "pass", "count": n, "unit": "images",
                "detail": f"every step's tensor equal to the golden model; classes "
                          f"{nr.predictions}, labels {labels.tolist()}: {correct}/{n} correct"}

    with logs_to(logs):
        for name, fn in (("PE", pe), ("GEMM", gemm), ("layer", layer), ("network", network)):
            levels[name] = _level(name, fn, run.say)
    result = {"config": cfg.name(), "seed": seed, "images_dir": str(images_dir),
              "levels": levels, "network": summary}
    run.write_json("cosim.json", result)
    bad = [k for k, v in levels.items() if v["status"] != "pass"]
    if bad:
        raise SqaccelError(f"cosimulation failed at level {bad[0]} (see {run.out / 'cosim.json'} "
                           f"and {logs}/):\n{levels[bad[0]]['message']}")


# -- synthesis -------------------------------------------------------------------------------


def synth_runs(cfg) -> list[tuple[str, str, object, bool]]:
    """(label, design, config, DSP blocks) of each synthesis run: the PE kinds side by side
    at the same widths, then the default array's board top."""
    mult = cfg.with_changes(pe="mult")
    return [
        ("PE shift-add", "pe", cfg, False),
        ("PE multiplier (LUTs)", "pe", mult, False),
        ("PE multiplier (DSP)", "pe", mult, True),
        (f"{cfg.rows}x{cfg.cols} top on the ULX3S (UART)", "top", cfg, True),
    ]


def synth_key(run: DemoRun) -> str:
    return digest(["synth", run.state.verilog_digest,
                   [(lab, d, c.to_dict(), dsp) for lab, d, c, dsp in synth_runs(run.cfg)]])


SYNTH_PENDING = "synth.pending.json"  # the background synthesis's result, until collected


def synthesise(cfg, root: Path, say) -> list[dict]:
    """The runs of ``synth_runs(cfg)`` into ``root``: one summary entry each."""
    from sqaccel.hw.designs import synth_design

    entries = []
    runs = synth_runs(cfg)
    for i, (label, design, c, dsp) in enumerate(runs, 1):
        say(f"({i}/{len(runs)}) {label}: Yosys, nextpnr-ecp5 ...")
        t0 = time.perf_counter()
        res = synth_design(design, c, "ecp5", dsp=dsp, out_root=root)
        r = res.report
        seconds = time.perf_counter() - t0
        entries.append({
            "label": label, "design": design, "target": "ecp5", "pe": c.pe,
            "config": c.name(), "dsp_allowed": dsp,
            "logic_cells": r["resources"]["logic_cells"], "lut4": r["resources"]["lut4"],
            "ffs": r["resources"]["ffs"], "dsp": r["resources"]["dsp"],
            "bram": r["resources"]["bram"], "io": r["resources"]["io"],
            "fmax_mhz": r["fmax_mhz"], "seconds": seconds,
            "report": str(Path(res.path) / "report.json"),
        })
        fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f} MHz"
        say(f"    {r['resources']['logic_cells']} logic cells, {r['resources']['ffs']} FFs, "
            f"{r['resources']['dsp']} DSP, {r['resources']['bram']} block RAM, Fmax {fmax} "
            f"({seconds:.0f} s; {res.path}/)")
    return entries


def synth_process(cfg, out: str) -> None:
    """The synthesis in a process of its own (``start_synth``)."""
    from sqaccel import files

    out_dir = Path(out)
    entries = synthesise(cfg, out_dir / "synth", lambda m: print(m, flush=True))
    files.write_json(out_dir / SYNTH_PENDING, entries)


def start_synth(run: DemoRun) -> Background:
    """The synthesis needs only the config and the generator: it starts once the Verilog
    is generated and runs beside the software steps and the cosimulation."""
    (run.out / SYNTH_PENDING).unlink(missing_ok=True)
    run.say("synthesis (step synth) started in the background")
    return Background(synth_process, (run.cfg, str(run.out)), run.out / "synth.log")


def step_synth(run: DemoRun) -> None:
    bg = run.state.background.pop("synth", None)
    if bg is None:
        entries = synthesise(run.cfg, run.out / "synth", run.say)
    else:
        if bg.process.is_alive():
            run.say("waiting for the synthesis started after step verilog ...")
        bg.wait(run.say)
        pending = run.out / SYNTH_PENDING
        entries = json.loads(pending.read_bytes())
        pending.unlink()
    run.write_json("synth.json", entries)
