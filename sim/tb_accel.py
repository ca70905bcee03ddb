"""cocotb tests of the accelerator top (levels 2-4), driven through its host interface.

``run_gemms`` plays a job of batches: load buffer words with write packets, then run each
command and compare every result word with the expected output the job carries (computed
by the golden arithmetic on the host side). ``run_network`` runs a whole quantised network
step by step: each GEMM step on the RTL (its image words loaded once, its input lowered from
the RTL's own earlier outputs), each step between GEMMs with the contract's integer code;
every step's output is compared with the golden model's.

The job (``sqaccel.sim.job``) says everything; this module imports only the job format, the
checker, the drivers and the contract.
"""

from __future__ import annotations

import time

import torch

from sqaccel import abi, arith
from sqaccel.config import AccelConfig
from sqaccel.sim import checker
from sqaccel.sim import job as jobs
from sqaccel.sim.drivers import AccelTB, HostFormat


def make_tb(dut, fmt: HostFormat, job: jobs.AccelJob) -> AccelTB:
    return AccelTB(dut, fmt.result_last_bit, ready_prob=job.ready_prob, seed=job.seed)


def load_packets(fmt: HostFormat, contents: dict[str, list[int]]) -> list[int]:
    return [p for name, words in contents.items() for p in fmt.writes(name, words)]


async def run_command(tb: AccelTB, fmt: HostFormat, cmd: jobs.Command) -> list[int]:
    """One command; with ``result.ready`` held high its cycle count must be hw.timing's."""
    words = await tb.command(fmt.command(**cmd.fields), cmd.timeout)
    if tb.results.ready_prob >= 1 and tb.last_cycles != cmd.cycles:
        raise checker.CheckFailure(
            f"{cmd.name}: {tb.last_cycles} cycles from the command to its last result "
            f"word, hw.timing says {cmd.cycles}"
        )
    return words


async def run_checked(tb: AccelTB, fmt: HostFormat, cfg: AccelConfig, cmd: jobs.Command,
                      expected: torch.Tensor, failures: list[str]) -> list[int]:
    """Run ``cmd`` and compare every result word with ``expected`` [M, N]; a difference
    goes to ``failures``."""
    words: list[int] = []
    try:
        words = await run_command(tb, fmt, cmd)
        checker.check_results(cmd.name, expected, words, cfg, cmd.row_offset, cmd.col_offset)
    except checker.CheckFailure as e:
        failures.append(str(e))
    return words


def summarise(failures: list[str], done: int, what: str) -> None:
    if failures:
        shown = failures[:4]
        more = f"\n({len(failures) - len(shown)} more failing)" if len(failures) > 4 else ""
        raise checker.CheckFailure(
            f"{len(failures)} of {done} {what} differ from the model\n" + "\n".join(shown) + more
        )


async def run_gemm_step(tb: AccelTB, fmt: HostFormat, cfg: AccelConfig,
                        step: jobs.NetworkStep, x: torch.Tensor) -> torch.Tensor:
    """One GEMM step on the RTL, command by command: the image words the command loads,
    its rows of its group's lowered input; every result word against the golden [M, N].
    Returns the step's output tensor, assembled from the RTL's results."""
    xm, lead = arith.lower(step.params, x)
    expected = jobs.tensor_from_json(step.expected)
    y = torch.zeros_like(expected)
    failures: list[str] = []
    for cmd in step.commands:
        r0, c0 = cmd.row_offset, cmd.col_offset
        m, n = cmd.fields["m"], cmd.fields["n"]
        load = {kind: step.words[kind][a:b] for kind, (a, b) in cmd.load.items()}
        load["act"] = abi.activation_words(xm[cmd.group, r0 : r0 + m], cfg)
        await tb.send(load_packets(fmt, load))
        part = expected[r0 : r0 + m, c0 : c0 + n]
        words = await run_checked(tb, fmt, cfg, cmd, part, failures)
        summarise(failures, len(step.commands), f"commands of layer {step.name!r}")
        y[r0 : r0 + m, c0 : c0 + n] = checker.results_to_matrix(words, m, n, cfg)
    return arith.gemm_output(step.params, y, lead)


try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def run_gemms(dut):
        """Every command of every batch; every result word against the job's expectation."""
        job = jobs.read_accel_job()
        cfg = AccelConfig.from_dict(job.config)
        fmt = HostFormat.load(job.format)
        tb = make_tb(dut, fmt, job)
        dut._log.info("seed %d, config %s", job.seed, cfg.name())
        await tb.start()
        failures: list[str] = []
        t0, c0 = time.perf_counter(), tb.sim_cycles()
        done = 0
        for batch in job.batches:
            await tb.send(load_packets(fmt, batch.load))
            for cmd in batch.commands:
                await run_checked(tb, fmt, cfg, cmd, jobs.tensor_from_json(cmd.expected),
                                  failures)
                done += 1
        dt = time.perf_counter() - t0
        dut._log.info("%d commands, %d host words in, %d result words, %d cycles (%d in "
                      "commands), %.1f s", done, tb.host.sent, len(tb.results.words),
                      tb.sim_cycles() - c0, tb.command_cycles, dt)
        summarise(failures, done, "commands")

    @cocotb.test()
    async def run_network(dut):
        """GEMM steps on the RTL, the steps between them with the contract's integer code on
        the RTL's outputs; every step's output against the golden model's."""
        job = jobs.read_accel_job()
        cfg = AccelConfig.from_dict(job.config)
        fmt = HostFormat.load(job.format)
        tb = make_tb(dut, fmt, job)
        torch.set_num_threads(1)  # small tensors; the machine's cores run the simulator
        x = jobs.tensor_from_json(job.network_input)
        dut._log.info("seed %d, config %s, %d inputs, %d steps", job.seed, cfg.name(),
                      x.shape[0], len(job.network))
        await tb.start()
        t0, c0 = time.perf_counter(), tb.sim_cycles()
        tensors = {"input": x}
        layers = {}
        out = x
        for step in job.network:
            ins = [tensors[i] for i in step.inputs]
            if step.op == "gemm":
                # Every result word is checked against the golden GEMM output, command by
                # command; the step's output is then the RTL's own.
                s0, w0, r0 = tb.command_cycles, tb.host.sent, len(tb.results.words)
                out = await run_gemm_step(tb, fmt, cfg, step, ins[0])
                expected = step.expected["shape"]
                layers[step.name] = {
                    "commands": len(step.commands), "M": expected[0],
                    "K": step.commands[0].fields["k"], "N": expected[1],
                    "groups": int(step.params.get("groups", 1)),
                    "cycles": tb.command_cycles - s0, "host_words": tb.host.sent - w0,
                    "result_words": len(tb.results.words) - r0}
            else:
                out = arith.host_step(step.params, ins if step.op in ("add", "requant")
                                      else ins[0])
                checker.check_tensor(f"step {step.name!r} output",
                                     jobs.tensor_from_json(step.expected), out)
            tensors[step.name] = out
        wall = time.perf_counter() - t0
        report = jobs.NetworkReport(logits=jobs.tensor_to_json(out), layers=layers,
                                    sim_cycles=tb.sim_cycles() - c0, wall_s=wall)
        jobs.write(report, job.report)
        dut._log.info("%d inputs: every step equal to the golden model; %d cycles, %.1f s",
                      x.shape[0], report.sim_cycles, wall)
