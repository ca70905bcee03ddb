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
        failures, done = [], 0
        t0, c0 = time.perf_counter(), tb.sim_cycles()
        for batch in job["batches"]:
            await tb.send(load_packets(fmt, batch["load"]))
            for entry in batch["commands"]:
                try:
                    words = await run_command(tb, fmt, entry)
                    checker.check_results(entry["name"], torch.tensor(entry["expected"]),
                                          words, cfg, int(entry.get("row_offset", 0)))
                except checker.CheckFailure as e:
                    failures.append(str(e))
                done += 1
        dt = time.perf_counter() - t0
        dut._log.info("%d commands, %d host words in, %d result words, %d cycles (%d in "
                      "commands), %.1f s", done, tb.host.sent, len(tb.results.words),
                      tb.sim_cycles() - c0, tb.command_cycles, dt)
        summarise(failures, done, "commands")
