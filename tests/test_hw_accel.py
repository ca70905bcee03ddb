"""The top level through its host streams: buffers written by packets, commands, results
read with backpressure, busy/done, a command held while another runs."""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from sqaccel.config import AccelConfig
from sqaccel.hw import timing
from sqaccel.hw.accel import Accelerator
from sqaccel.hw.array import result_layout
from sqaccel.sim import hostmodel as hm


def test_load_by_packets_then_run():
    cfg = AccelConfig(rows=2, cols=2, weight_bits=3, k_max=64, act_depth=256, weight_depth=256,
                      n_max=16)
    rng = random.Random(11)
    gemms = [hm.random_gemm(cfg, m, n, k, rng, relu=relu)
             for m, n, k, relu in [(3, 5, 9, True), (4, 2, 1, False), (5, 3, 12, True)]]
    placed, contents = hm.place(cfg, gemms)
    runs = hm.simulate(cfg, [p.command_packet(cfg) for p in placed],
                       preload_packets=hm.load_packets(cfg, contents), ready_prob=0.6, seed=2)
    for p, run in zip(placed, runs, strict=True):
        assert run.words == p.gemm.expected(cfg)
        assert run.lasts[-1] == 1 and sum(run.lasts) == 1
        assert run.error == 0


def test_mult_load_by_packets_cycles_match_formula():
    cfg = AccelConfig(rows=2, cols=2, pe="mult", k_max=64, act_depth=256, weight_depth=256,
                      n_max=16)
    rng = random.Random(12)
    g = hm.random_gemm(cfg, 4, 4, 20, rng)
    placed, contents = hm.place(cfg, [g])
    (run,) = hm.simulate(cfg, [placed[0].command_packet(cfg)],
                         preload_packets=hm.load_packets(cfg, contents))
    assert run.words == g.expected(cfg)
    assert timing.steady_state(cfg, 4, 4, 20)
    assert run.cycles == timing.cycles(cfg, 4, 4, 20) == timing.cycles_closed_form(cfg, 4, 4, 20)


def test_command_waits_while_busy_and_status():
    """A second command is held (ready low) until the first ends; busy covers each command
    from its acceptance to its last result; done pulses once per command."""
    cfg = AccelConfig(rows=2, cols=2, k_max=32, act_depth=128, weight_depth=128, n_max=8)
    rng = random.Random(13)
    a, b = hm.random_gemm(cfg, 3, 3, 10, rng), hm.random_gemm(cfg, 2, 4, 7, rng, relu=False)
    placed, contents = hm.place(cfg, [a, b])
    dut = Accelerator(cfg, init=contents)
    data_bits = result_layout(cfg)["data"].width
    log = {"words": [], "accept": [], "done": [], "busy": []}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def host(ctx):
        ctx.set(dut.result.ready, 1)
        cycle = 0
        for p in placed:
            ctx.set(dut.host_in.payload.as_value(), p.command_packet(cfg))
            ctx.set(dut.host_in.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.host_in.ready)
                cycle += 1
                if ready:
                    break
            ctx.set(dut.host_in.valid, 0)
            log["accept"].append(cycle - 1)

    async def watch(ctx):
        cycle = 0
        async for _, _, valid, payload, done, busy in ctx.tick().sample(
                dut.result.valid, dut.result.payload.as_value(), dut.done, dut.busy):
            if valid:
                log["words"].append(payload & ((1 << data_bits) - 1))
            if done:
                log["done"].append(cycle)
            log["busy"].append(busy)
            cycle += 1
            if len(log["done"]) == 2:
                return

    sim.add_testbench(host, background=True)
    sim.add_testbench(watch)
    sim.run()
    assert log["words"] == a.expected(cfg) + b.expected(cfg)
    first_done, second_done = log["done"]
    # The first command is taken at once; the second waits until the first one's done.
    assert log["accept"] == [0, first_done]
    assert first_done > timing.cycles(cfg, 3, 3, 10)
    busy = log["busy"]
    assert all(busy[1:first_done]) and busy[first_done] == 0
    assert all(busy[first_done + 1 : second_done]) and busy[second_done] == 0


def test_wrong_word_detected():
    """The host-stream comparison fails on a corrupted buffer: a changed weight word."""
    cfg = AccelConfig(rows=2, cols=2, k_max=16, act_depth=64, weight_depth=64, n_max=4)
    rng = random.Random(14)
    g = hm.random_gemm(cfg, 2, 2, 3, rng)
    placed, contents = hm.place(cfg, [g])
    contents["weights"][0] ^= 1 << (cfg.weight_bits - 1)  # flip one weight's sign
    (run,) = hm.simulate(cfg, [placed[0].command_packet(cfg)],
                         preload_packets=hm.load_packets(cfg, contents))
    assert run.words != g.expected(cfg)
