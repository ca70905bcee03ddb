"""cocotb tests of the accelerator top (levels 2-4), driven through its host interface.

``run_gemms`` plays a job of batches: load buffer words with write packets, then run each
command and compare every result word with the expected output the job carries (computed
by the golden arithmetic on the Python side). ``run_network`` runs a whole quantised
network from its memory images: each GEMM layer on the RTL, the steps between them in the
golden model's integer code on the RTL's outputs, every intermediate tensor compared with
the golden model's.
"""

from __future__ import annotations

import json
import os
import time

import torch

from sqaccel.config import AccelConfig
from sqaccel.sim import checker
from sqaccel.sim.cosim import JOB_ENV
from sqaccel.sim.drivers import AccelTB, HostFormat


def load_job() -> dict:
    with open(os.environ[JOB_ENV]) as f:
        return json.load(f)


def make_tb(dut, fmt: HostFormat, job: dict) -> AccelTB:
    return AccelTB(dut, fmt.result_last_bit, ready_prob=float(job.get("ready_prob", 1.0)),
                   seed=int(job["seed"]))


def load_packets(fmt: HostFormat, contents: dict[str, list[int]]) -> list[int]:
    return [p for name, words in contents.items() for p in fmt.writes(name, words)]


async def run_command(tb: AccelTB, fmt: HostFormat, entry: dict) -> list[int]:
    """One command; with ``result.ready`` held high its cycle count must be hw.timing's."""
    words = await tb.command(fmt.command(**entry["command"]), int(entry["timeout"]))
    want = entry.get("cycles")
    if want is not None and tb.results.ready_prob >= 1 and tb.last_cycles != want:
        raise checker.CheckFailure(
            f"{entry['name']}: {tb.last_cycles} cycles from the command to its last result "
            f"word, hw.timing says {want}"
        )
    return words


async def play_batches(tb: AccelTB, fmt: HostFormat, cfg: AccelConfig, batches: list[dict],
                       failures: list[str]) -> list[list[int]]:
    """Load each batch's words, run its commands; check every result word against the
    entry's expected output (a difference goes to ``failures``). Returns each command's
    result words."""
    out = []
    for batch in batches:
        await tb.send(load_packets(fmt, batch["load"]))
        for entry in batch["commands"]:
            words: list[int] = []
            try:
                words = await run_command(tb, fmt, entry)
                checker.check_results(entry["name"], torch.tensor(entry["expected"]), words,
                                      cfg, int(entry.get("row_offset", 0)))
            except checker.CheckFailure as e:
                failures.append(str(e))
            out.append(words)
    return out


def summarise(failures: list[str], done: int, what: str) -> None:
    if failures:
        shown = failures[:4]
        more = f"\n({len(failures) - len(shown)} more failing)" if len(failures) > 4 else ""
        raise checker.CheckFailure(
            f"{len(failures)} of {done} {what} differ from the model\n" + "\n".join(shown) + more
        )


try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def run_gemms(dut):
        """Every command of every batch; every result word against the job's expectation."""
        job = load_job()
        cfg = AccelConfig.from_dict(job["config"])
        fmt = HostFormat.load(job["format"])
        tb = make_tb(dut, fmt, job)
        dut._log.info("seed %d, config %s", job["seed"], cfg.name())
        await tb.start()
        failures: list[str] = []
        t0, c0 = time.perf_counter(), tb.sim_cycles()
        done = len(await play_batches(tb, fmt, cfg, job["batches"], failures))
        dt = time.perf_counter() - t0
        dut._log.info("%d commands, %d host words in, %d result words, %d cycles (%d in "
                      "commands), %.1f s", done, tb.host.sent, len(tb.results.words),
                      tb.sim_cycles() - c0, tb.command_cycles, dt)
        summarise(failures, done, "commands")

    @cocotb.test()
    async def run_network(dut):
        """GEMM layers on the RTL, the steps between them in the golden model's integer code
        on the RTL's outputs; every step's output against the golden model's."""
        from sqaccel.sim.cosim import layer_batches, layer_image_words
        from sqaccel.sw import images
        from sqaccel.sw.golden import IntLayer, gemm_operands

        job = load_job()
        cfg = AccelConfig.from_dict(job["config"])
        fmt = HostFormat.load(job["format"])
        tb = make_tb(dut, fmt, job)
        torch.set_num_threads(1)  # small tensors; the machine's cores run the simulator
        loaded = images.load(job["images"], cfg)
        net = loaded.network
        x = torch.tensor(job["inputs"], dtype=torch.int64).reshape(job["shape"])
        golden = net.run(x, record=True)
        dut._log.info("seed %d, config %s, %d inputs, images %s", job["seed"], cfg.name(),
                      x.shape[0], job["images"])
        await tb.start()
        t0, c0 = time.perf_counter(), tb.sim_cycles()
        layers, cur = {}, x
        for step in net.steps:
            if isinstance(step, IntLayer):
                # The golden layer on the RTL's own input: each layer is checked alone,
                # the chain below checks that the inputs agree too.
                ops = gemm_operands(step, cur, cfg)
                xm = ops.x
                batches = layer_batches(cfg, step.name, layer_image_words(loaded, step.name),
                                        xm, ops.out, step.relu)
                failures: list[str] = []
                s0, w0, r0 = tb.command_cycles, tb.host.sent, len(tb.results.words)
                words = await play_batches(tb, fmt, cfg, batches, failures)
                summarise(failures, len(batches), f"commands of layer {step.name!r}")
                y = torch.cat([checker.results_to_matrix(w, len(b["commands"][0]["expected"]),
                                                         step.n, cfg)
                               for w, b in zip(words, batches, strict=True)])
                cur = step.shape_output(y, ops.lead)
                layers[step.name] = {"commands": len(batches), "M": xm.shape[0], "K": step.k,
                                     "N": step.n, "cycles": tb.command_cycles - s0,
                                     "host_words": tb.host.sent - w0,
                                     "result_words": len(tb.results.words) - r0}
            else:
                cur = step.run(cur, cfg)
            checker.check_tensor(f"step {step.name!r} output", golden.outputs[step.name], cur)
        preds = net.classify(cur)
        wall = time.perf_counter() - t0
        report = {"predictions": preds.tolist(), "logits": cur.tolist(), "layers": layers,
                  "sim_cycles": tb.sim_cycles() - c0, "wall_s": wall}
        with open(job["report"], "w") as f:
            json.dump(report, f)
        dut._log.info("%d inputs: every step equal to the golden model; %d cycles, %.1f s",
                      x.shape[0], report["sim_cycles"], wall)
