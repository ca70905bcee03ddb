"""Python-side entry points of the cosimulation: generate Verilog for a design into a build
folder, describe the work in a JSON job file, run the cocotb test module on Verilator.

The cocotb test modules (``tb_pe``, ``tb_accel``) read the job named by ``SQACCEL_COSIM_JOB``.
Builds live in ``build/cosim/<design>`` (``SQACCEL_COSIM_BUILD`` moves them) and are
incremental: the Verilog file is rewritten only when its text changes, so a second run of
the same design skips the C++ compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from amaranth.back import verilog
from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.hw import timing
from sqaccel.hw.pe import make_pe, weight_operand_shape
from sqaccel.sim.runner import CosimResult, run_cocotb, waves_requested
from sqaccel.sw import arith

JOB_ENV = "SQACCEL_COSIM_JOB"
SEED_ENV = "SQACCEL_SEED"
FULL_ENV = "SQACCEL_SIM_FULL"
BUILD_ENV = "SQACCEL_COSIM_BUILD"
REPO = Path(__file__).resolve().parents[1]
# Amaranth's Verilog trips Verilator's width lints (it extends by concatenation); they are
# style, not errors. cocotb's runner makes every signal public (--public-flat-rw), which
# keeps Verilator from optimising the model (4x the C++, 2-3x slower); the testbenches
# touch only the top's ports, so only depth 1 stays public.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-public-flat-rw",
                  "--public-depth", "1")
# The C++ of the full top takes minutes at Verilator's default -Os and well under one at
# -O0; the simulation's time goes to the Python side anyway.
MAKE_OPT_FLAGS = ("OPT_FAST=-O0", "OPT_GLOBAL=-O0")


def build_root() -> Path:
    return Path(os.environ.get(BUILD_ENV, REPO / "build" / "cosim"))


def full_run() -> bool:
    """True under ``make sim``: the full counts of every level instead of the quick slices."""
    return os.environ.get(FULL_ENV, "0") not in ("", "0")


def seed_from_env() -> int:
    """``SQACCEL_SEED`` when set (to repeat a run), else a fresh random seed."""
    v = os.environ.get(SEED_ENV, "")
    return int(v) if v.strip() else random.SystemRandom().randrange(1 << 31)


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` unless the file already holds it (keeps Verilator's build incremental)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_job(build_dir: Path, name: str, job: dict) -> Path:
    """The job file the cocotb module reads (written whole, then renamed into place)."""
    path = Path(build_dir) / "jobs" / f"{name}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(job, f)
    os.replace(tmp, path)
    return path


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def simulate(
    *,
    verilog_file: Path,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    job: dict,
    job_name: str,
    seed: int,
    waves: bool | None = None,
    testcase: str | Sequence[str] | None = None,
) -> CosimResult:
    waves = waves_requested() if waves is None else waves
    if waves:
        # Traced and untraced models differ: each keeps its own incremental build.
        build_dir = Path(build_dir).with_name(Path(build_dir).name + "-waves")
    job_path = write_job(build_dir, job_name, job)
    saved_flags = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join([saved_flags or "", *MAKE_OPT_FLAGS]).strip()
    try:
        return run_cocotb(
            sources=[verilog_file],
            toplevel=toplevel,
            test_module=test_module,
            build_dir=build_dir,
            testcase=testcase,
            env={JOB_ENV: str(job_path)},
            seed=seed,
            waves=waves,
            build_args=VERILATOR_ARGS,
        )
    finally:
        job_path.unlink(missing_ok=True)
        if saved_flags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_flags


# -- level 1: the PE bench -----------------------------------------------------------------

# One build holds a PE of every kind and shape worth testing; all run in parallel, each on
# its own random stream. Shift PEs differ by activation width and universal set (the weight
# width never reaches the PE: codes become step words outside it); multiplier PEs by both.
PE_BENCH_CONFIGS: tuple[AccelConfig, ...] = (
    AccelConfig(),
    AccelConfig(act_bits=4, k_max=64),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 1, 3), (0, 2, 4), (1, 5)))),
    AccelConfig(k_max=16, universal=UniversalSet(((0, 2), (1, 3, 4, 6, 7)))),
    AccelConfig(pe="mult"),
    AccelConfig(pe="mult", weight_bits=3, k_max=64),
    AccelConfig(pe="mult", weight_bits=2, act_bits=4, k_max=64),
    AccelConfig(pe="mult", weight_bits=4, act_bits=4, k_max=1024),
)


def pe_label(cfg: AccelConfig) -> str:
    if cfg.pe == "shift":
        sets = "/".join("".join(map(str, e)) for e in cfg.universal.exponents)
        return f"shift a{cfg.act_bits} U={sets} k{cfg.k_max}"
    return f"mult b{cfg.weight_bits} a{cfg.act_bits} k{cfg.k_max}"


def pe_stim_widths(cfg: AccelConfig) -> list[int]:
    """Fields of one PE in the bench's input word, low bits first: x, w, en, first, bias."""
    w = weight_operand_shape(cfg)
    wbits = w.size if hasattr(w, "size") else w.width
    return [cfg.act_bits, wbits, 1, 1, cfg.acc_bits]


class PEBench(wiring.Component):
    """Several PEs side by side, their inputs packed into ``stim`` and their accumulators
    into ``acc`` (PE 0 in the low bits), so that one write and one read serve a cycle."""

    def __init__(self, cfgs: Sequence[AccelConfig]):
        self.cfgs = tuple(cfgs)
        super().__init__({
            "stim": In(sum(sum(pe_stim_widths(c)) for c in self.cfgs)),
            "acc": Out(sum(c.acc_bits for c in self.cfgs)),
        })

    def elaborate(self, platform):
        m = Module()
        pos, accs = 0, []
        for i, cfg in enumerate(self.cfgs):
            pe = make_pe(cfg)
            m.submodules[f"pe{i}"] = pe
            w = pe.w.as_value() if cfg.pe == "shift" else pe.w
            fields = Cat(pe.x, w, pe.en, pe.first, pe.bias)
            assert len(fields) == sum(pe_stim_widths(cfg))
            m.d.comb += fields.eq(self.stim[pos : pos + len(fields)])
            pos += len(fields)
            accs.append(pe.acc)
        m.d.comb += self.acc.eq(Cat(*accs))
        return m


def pe_bench_verilog(cfgs: Sequence[AccelConfig], out_dir: Path) -> Path:
    bench = PEBench(cfgs)
    text = verilog.convert(bench, name="pe_bench")
    return write_if_changed(Path(out_dir) / "pe_bench.v", text)


def run_pe(
    cycles: int,
    seed: int,
    cfgs: Sequence[AccelConfig] = PE_BENCH_CONFIGS,
    chunk: int = 50_000,
    build_dir: Path | None = None,
    waves: bool | None = None,
    model_offset: dict | None = None,
) -> CosimResult:
    """Directed corner cases, then ``cycles`` random cycles, on every PE of ``cfgs`` at once;
    every PE's accumulator is compared with the model every cycle. ``model_offset``
    ({"pe", "operand", "delta"}) gives the model a wrong weight for one operand, to show
    that a wrong model fails."""
    dicts = [c.to_dict() for c in cfgs]
    build_dir = Path(build_dir or build_root() / f"pe_bench-{_digest(dicts)}")
    src = pe_bench_verilog(cfgs, build_dir)
    job = {"configs": dicts, "cycles": int(cycles), "chunk": int(chunk), "seed": int(seed),
           "model_offset": model_offset}
    return simulate(verilog_file=src, toplevel="pe_bench", test_module="sqaccel.sim.tb_pe",
                    build_dir=build_dir, job=job, job_name="pe", seed=seed, waves=waves)


# -- levels 2-4: the accelerator top ---------------------------------------------------------

TOPLEVEL = "sqaccel_top"


def accel_build_dir(cfg: AccelConfig) -> Path:
    return build_root() / f"accel-{cfg.name()}-{_digest(cfg.to_dict())}"


def accel_verilog(cfg: AccelConfig, build_dir: Path) -> Path:
    """``hw.verilog.generate`` into ``build_dir/rtl``: the top's Verilog, config.json and
    format.json (the host interface the testbench drives)."""
    from sqaccel.hw import verilog as hw_verilog

    # Verilator skips its whole run when its input is older than its output, so files whose
    # text did not change keep their time stamps.
    rtl = Path(build_dir) / "rtl"
    rtl.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        fresh = hw_verilog.generate(cfg, Path(tmp) / "rtl")
        for f in sorted(fresh.iterdir()):
            write_if_changed(rtl / f.name, f.read_text())
    return rtl / hw_verilog.VERILOG_FILE


def gemm_expected(cfg: AccelConfig, g) -> torch.Tensor:
    """What the golden arithmetic says a GEMM (hw.hostmodel.Gemm) must output."""
    acc = arith.gemm(g.x, g.weights(cfg), g.bias, cfg)
    return arith.requant(acc, g.m, g.s, cfg.act_bits, relu=g.relu)


def command_timeout(cfg: AccelConfig, m: int, n: int, k: int, ready_prob: float = 1.0) -> int:
    """Generous cycle bound for one command: every slot, the drain, backpressure."""
    tiles = -(-m // cfg.rows) * -(-n // cfg.cols)
    return int((tiles * (k + 4 * (cfg.rows + cfg.cols) + 32) + 1000) * 4 / ready_prob)


def command_entry(cfg: AccelConfig, name: str, expected: torch.Tensor, *, k: int, relu: bool,
                  bases: dict[str, int] | None = None, row_offset: int = 0) -> dict:
    """One command of a job: its fields, the output it must produce ([M, N]), the cycle
    count hw.timing gives it and a timeout."""
    m, n = expected.shape
    return {
        "name": name,
        "command": {"m": m, "n": n, "k": k, "relu": bool(relu), **(bases or {})},
        "expected": expected.tolist(),
        "row_offset": row_offset,
        "timeout": command_timeout(cfg, m, n, k),
        "cycles": timing.cycles(cfg, m, n, k),
    }


def gemm_batches(cfg: AccelConfig, cases: Sequence[tuple[str, object]],
                 expected: Sequence[torch.Tensor] | None = None) -> list[dict]:
    """Pack named GEMMs into batches that fit the buffers together: each batch loads its
    GEMMs' words one after another, then runs their commands back to back."""
    from sqaccel.hw import hostmodel

    batches: list[dict] = []
    group: list[int] = []

    def flush():
        if not group:
            return
        placed, contents = hostmodel.place(cfg, [cases[i][1] for i in group])
        cmds = []
        for i, p in zip(group, placed, strict=True):
            want = expected[i] if expected is not None else gemm_expected(cfg, cases[i][1])
            bases = {"act_base": p.act_base, "w_base": p.w_base, "step_base": p.step_base,
                     "param_base": p.param_base}
            cmds.append(command_entry(cfg, cases[i][0], want, k=p.gemm.shape[2],
                                      relu=p.gemm.relu, bases=bases))
        batches.append({"load": contents, "commands": cmds})
        group.clear()

    for i in range(len(cases)):
        try:
            hostmodel.place(cfg, [cases[j][1] for j in group + [i]])
        except ValueError:
            if not group:
                raise
            flush()
        group.append(i)
    flush()
    return batches


def run_accel_job(cfg: AccelConfig, job: dict, testcase: str, seed: int, job_name: str,
                  waves: bool | None = None) -> CosimResult:
    build_dir = accel_build_dir(cfg)
    src = accel_verilog(cfg, build_dir)
    job = {"config": cfg.to_dict(), "seed": int(seed),
           "format": str(src.with_name("format.json")), **job}
    return simulate(verilog_file=src, toplevel=TOPLEVEL, test_module="sqaccel.sim.tb_accel",
                    build_dir=build_dir, job=job, job_name=job_name, seed=seed, waves=waves,
                    testcase=testcase)


def run_gemms(cfg: AccelConfig, cases: Sequence[tuple[str, object]], seed: int,
              ready_prob: float = 1.0, expected: Sequence[torch.Tensor] | None = None,
              waves: bool | None = None) -> CosimResult:
    """Run named GEMMs (``hw.hostmodel.Gemm``) through the top's host interface and compare
    every result word with ``expected`` (default: sw/arith's gemm + requant)."""
    job = {"batches": gemm_batches(cfg, cases, expected), "ready_prob": ready_prob}
    return run_accel_job(cfg, job, "run_gemms", seed, "gemms", waves)


# -- level 2: random GEMMs -----------------------------------------------------------------

# Array shapes, widths, PE kinds and step-table modes for the GEMM level: every value of
# every parameter appears, most pairs of values too. Small K_max and buffers keep builds and
# runs short; the default 8x8 build (shared with the layer and network levels) runs too.
GEMM_CONFIGS: tuple[AccelConfig, ...] = tuple(
    AccelConfig(rows=r, cols=c, weight_bits=b, act_bits=a, pe=pe, step_tables=st, k_max=64,
                act_depth=512, weight_depth=512, n_max=64)
    for r, c, b, a, pe, st in [
        (2, 4, 3, 8, "shift", "channel"),
        (4, 2, 4, 4, "mult", "channel"),
        (2, 2, 2, 4, "shift", "layer"),
        (4, 4, 2, 8, "mult", "channel"),
        (4, 8, 3, 4, "shift", "layer"),
        (8, 4, 4, 8, "shift", "channel"),
        (8, 2, 3, 8, "mult", "channel"),
        (2, 8, 4, 4, "shift", "channel"),
        (8, 8, 2, 8, "shift", "layer"),
    ]
)


def _strongest_code(cfg: AccelConfig, tables: torch.Tensor | None, col: int, negative: bool):
    """The code of the largest |weight| of one sign in column ``col``."""
    if cfg.pe == "mult":
        return (1 << (cfg.weight_bits - 1)) if negative else (1 << (cfg.weight_bits - 1)) - 1
    mags = arith.table_magnitudes(tables[col], cfg.universal)
    return (int(negative) << (cfg.weight_bits - 1)) | int(torch.argmax(mags))


def random_gemm_case(cfg: AccelConfig, index: int, rng: random.Random):
    """One named random GEMM: shapes across tile edges (M up to 3R+1, N up to 3C+1, K from
    1 to K_max), ReLU or raw, and one of four flavours: random operands with requant
    parameters that spread the outputs, random requant over the whole S range, every
    operand at its extreme (saturation, accumulator limits, +-bias_max), zero activations."""
    from sqaccel.hw import hostmodel

    m = rng.choice([1, cfg.rows, rng.randint(1, 3 * cfg.rows + 1)])
    n = rng.choice([1, cfg.cols, rng.randint(1, min(cfg.n_max, 3 * cfg.cols + 1))])
    k = rng.choice([1, cfg.k_max, rng.randint(1, cfg.k_max), rng.randint(1, cfg.k_max)])
    relu = rng.random() < 0.75
    g = hostmodel.random_gemm(cfg, m, n, k, rng, relu=relu)
    flavour = rng.choices(["random", "wide-requant", "extreme", "zero-x"], [6, 2, 2, 1])[0]
    if flavour == "wide-requant":
        g.m = torch.tensor([rng.randrange(1 << 15, 1 << 16) for _ in range(n)])
        g.s = torch.tensor([rng.randint(1, 63) for _ in range(n)])
    elif flavour == "extreme":
        g.x = torch.full((m, k), cfg.act_max, dtype=torch.int64)
        if g.tables is not None:  # one entry of every table: the universal set's largest
            u = cfg.universal
            g.tables = g.tables.clone()
            g.tables[:, rng.randrange(cfg.levels)] = u.step_entry(
                u.int_magnitudes.index(u.max_int_magnitude))
        neg = [rng.random() < 0.5 for _ in range(n)]
        g.codes = torch.tensor([[_strongest_code(cfg, g.tables, j, neg[j]) for j in range(n)]]
                               ).expand(k, n).contiguous()
        g.bias = torch.tensor([cfg.bias_max * (-1 if ng else 1) for ng in neg])
    elif flavour == "zero-x":
        g.x = torch.zeros((m, k), dtype=torch.int64)
    kind = "relu" if relu else "raw"
    return f"GEMM {index} ({flavour}, M={m}, N={n}, K={k}, {kind})", g


def random_gemm_cases(cfg: AccelConfig, count: int, seed: int) -> list[tuple[str, object]]:
    rng = random.Random(seed)
    return [random_gemm_case(cfg, i, rng) for i in range(count)]


# -- levels 3 and 4: layers and networks from memory images ----------------------------------


def layer_image_words(loaded, name: str) -> dict[str, list[int]]:
    """The buffer words of GEMM layer ``name`` read from its image files (``.hex``), as a
    host loads them; ``loaded`` is ``sw.images.load``'s result (hashes already checked)."""
    from sqaccel.sw import images

    for meta in loaded.manifest["steps"]:
        if meta.get("op") == "gemm" and meta["name"] == name:
            break
    else:
        raise SqaccelError(f"{loaded.directory}: no GEMM layer {name!r} in the manifest")
    out = {}
    for kind, files in meta["images"].items():
        fname = files["hex"]
        entry = loaded.manifest["files"][fname]
        path = Path(loaded.directory) / fname
        out[kind] = images.parse_hex(path.read_bytes(), int(entry["word_bits"]),
                                     int(entry["words"]), str(path))
    return out


def row_chunks(cfg: AccelConfig, m: int, k: int) -> list[tuple[int, int]]:
    """Row ranges of a GEMM whose activations fit the activation buffer one range at a
    time (the weights stay loaded: one command per range)."""
    tiles = cfg.act_depth // k
    if tiles < 1:
        raise SqaccelError(f"K = {k}: one row tile needs {k} activation words, the buffer "
                           f"holds {cfg.act_depth}")
    step = tiles * cfg.rows
    return [(r, min(m, r + step)) for r in range(0, m, step)]


def layer_batches(cfg: AccelConfig, name: str, words: dict[str, list[int]], x: torch.Tensor,
                  expected: torch.Tensor, relu: bool) -> list[dict]:
    """A layer as commands: the first loads the layer's image words, every one loads its
    rows' activations (``x`` [M, K]) and runs them; ``expected`` is [M, N]."""
    from sqaccel.sw import images

    m, k = x.shape
    batches = []
    for r0, r1 in row_chunks(cfg, m, k):
        load = dict(words) if not batches else {}
        load["act"] = images.activation_words(x[r0:r1], cfg)
        what = f"layer {name!r}" + (f" (rows {r0}..{r1 - 1} of {m})" if (r0, r1) != (0, m)
                                    else "")
        batches.append({"load": load, "commands": [
            command_entry(cfg, what, expected[r0:r1], k=k, relu=relu, row_offset=r0)]})
    return batches


@dataclass
class LayerRun:
    """One GEMM layer of an images folder, ready to run: the config, the layer's image
    words, its GEMM input X [M, K] and the golden model's output [M, N]."""

    cfg: AccelConfig
    name: str
    words: dict[str, list[int]]
    x: torch.Tensor
    expected: torch.Tensor
    relu: bool

    def batches(self) -> list[dict]:
        return layer_batches(self.cfg, self.name, self.words, self.x, self.expected, self.relu)


def reference_inputs(loaded) -> torch.Tensor:
    """The integer network inputs that export stored in the manifest."""
    ref = loaded.manifest.get("reference")
    if not ref:
        raise SqaccelError(f"{loaded.directory}: the manifest stores no reference inputs")
    return torch.tensor(ref["inputs"], dtype=torch.int64).reshape(ref["inputs_shape"])


def layer_runs(images, layers: Sequence[str] | None = None,
               x_int: torch.Tensor | None = None) -> list[LayerRun]:
    """GEMM layers ``layers`` (default: all) of the network in ``images`` (a folder, or
    ``sw.images.load``'s result) when the network's input is ``x_int`` (integer codes;
    default: the reference inputs stored at export). The folder is read once."""
    from sqaccel.sw import images as sw_images

    loaded = images if isinstance(images, sw_images.LoadedImages) else sw_images.load(images)
    net = loaded.network
    if layers is None:
        layers = [la.name for la in net.gemm_layers()]
    x = reference_inputs(loaded) if x_int is None else arith.as_i64(x_int)
    out = []
    for name in layers:
        ops = net.operands(name, x)
        out.append(LayerRun(net.cfg, name, layer_image_words(loaded, name), ops.x, ops.out,
                            ops.relu))
    return out


def layer_run(images_dir: str | Path, layer: str, x_int: torch.Tensor | None = None) -> LayerRun:
    """Layer ``layer`` of the network in ``images_dir`` (see ``layer_runs``)."""
    return layer_runs(images_dir, [layer], x_int)[0]


def run_layer_runs(runs: Sequence[LayerRun], seed: int, waves: bool | None = None
                   ) -> CosimResult:
    """Run layers one after the other in one simulation (each loads its own words)."""
    if not runs or any(r.cfg != runs[0].cfg for r in runs):
        raise SqaccelError("layer runs: need at least one, all for the same config")
    job = {"batches": [b for r in runs for b in r.batches()], "ready_prob": 1.0}
    return run_accel_job(runs[0].cfg, job, "run_gemms", seed, "layers", waves)


def run_layers(images_dir: str | Path, layers: Sequence[str] | None = None,
               x_int: torch.Tensor | None = None, seed: int | None = None,
               waves: bool | None = None) -> CosimResult:
    """``run_layer`` for several layers (default: every GEMM layer) in one simulation."""
    seed = seed_from_env() if seed is None else seed
    return run_layer_runs(layer_runs(images_dir, layers, x_int), seed, waves)


def run_layer(images_dir: str | Path, layer: str, x_int: torch.Tensor | None = None,
              seed: int | None = None, waves: bool | None = None) -> CosimResult:
    """Run one GEMM layer of an exported network on the RTL: its weights, step tables,
    biases and requant words from the image files, its input computed by the golden model
    from ``x_int``; every result word compared with the golden model's output. Raises
    CosimFailure naming the layer, the output index, the expected and the actual value."""
    return run_layers(images_dir, [layer], x_int, seed, waves)


@dataclass
class NetworkRun:
    """What ``run_network`` measured: the RTL's classes and the simulation's cost."""

    predictions: list[int]
    logits: list[list[int]]
    layers: dict[str, dict]  # per GEMM layer: commands, cycles, host words, result words
    sim_cycles: int
    wall_s: float
    result: CosimResult


def run_network(images_dir: str | Path, x_int: torch.Tensor, seed: int | None = None,
                waves: bool | None = None) -> NetworkRun:
    """The whole network of ``images_dir`` on the RTL for the integer inputs ``x_int``
    (a batch: the images share the GEMMs' M dimension, so each layer's words load once).
    GEMM layers run on the RTL, the steps between them in the golden model's integer code
    on the RTL's outputs; every step's output must equal the golden model's."""
    from sqaccel.sw import images

    seed = seed_from_env() if seed is None else seed
    loaded = images.load(images_dir)
    cfg = loaded.network.cfg
    x = arith.as_i64(x_int)
    build_dir = accel_build_dir(cfg)
    report = build_dir / "jobs" / f"network-report-{os.getpid()}.json"
    report.unlink(missing_ok=True)
    job = {"images": str(Path(images_dir).resolve()), "inputs": x.flatten().tolist(),
           "shape": list(x.shape), "report": str(report), "ready_prob": 1.0}
    try:
        result = run_accel_job(cfg, job, "run_network", seed, "network", waves)
        r = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    return NetworkRun(r["predictions"], r["logits"], r["layers"], r["sim_cycles"],
                      r["wall_s"], result)


def digits_images(cfg: AccelConfig | None = None, bits: int = 4, seed: int = 0,
                  out_dir: Path | None = None) -> Path:
    """Memory images of the quantised digits CNN for ``cfg`` (SQ weights on the shift-add
    PE, uniform on the multiplier PE), exported as ``sqaccel export`` does; kept in the
    build folder and re-exported when missing or unreadable."""
    from sqaccel.sw import images
    from sqaccel.sw.actquant import one_thread
    from sqaccel.sw.golden import build_pipeline, digits_eval_data
    from sqaccel.sw.qweight import PE_OF_METHOD
    from sqaccel.sw.train import load_or_train_digits

    cfg = cfg or AccelConfig()
    method = {pe: m for m, pe in PE_OF_METHOD.items()}[cfg.pe]
    out = Path(out_dir or build_root() / f"images-digits-{method}{bits}-s{seed}-"
                                         f"{_digest(cfg.to_dict())}")
    if (out / images.MANIFEST).is_file():
        try:
            images.load(out, cfg)
            return out
        except SqaccelError:
            pass
    model = load_or_train_digits(seed=seed, cache_dir=REPO / "build" / "models")
    x_cal, (x_test, _) = digits_eval_data(seed=seed)
    with one_thread():
        net = build_pipeline(model, method, bits, x_cal, cfg).network
        ref = net.quantize_input(x_test[:16])
    info = {"model": "digits_cnn", "dataset": "digits", "seed": seed, "method": method,
            "bits": bits}
    return images.export(net, out, reference_inputs=ref, info=info)


def digits_test_inputs(images_dir: str | Path, count: int, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` digits test images as the network's integer inputs, and their
    labels."""
    from sqaccel.sw import images
    from sqaccel.sw.golden import digits_eval_data

    net = images.load(images_dir).network
    _, (x_test, y_test) = digits_eval_data(seed=seed)
    if not 1 <= count <= x_test.shape[0]:
        raise SqaccelError(f"{count} test images asked for, the split has {x_test.shape[0]}")
    return net.quantize_input(x_test[:count]), y_test[:count]
