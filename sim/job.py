"""The testbench job format: what the host side hands a cocotb test module, and what the
network test hands back.

The host (``sqaccel.sim.levels``) builds a job, writes it as JSON (``write``) and names it
in the environment variable ``SQACCEL_COSIM_JOB`` for the simulator; the cocotb module reads
it back (``read``). Both sides use these classes and nothing else, so the format is written
down once. Integer tensors travel as ``{"shape": [...], "values": [...]}``.

- ``PEJob``: the PE bench (level 1): each PE's config, its input word's field widths, its
  latency and operand format, the cycle counts and the seed.
- ``MultJob``: the multiplier bench (``hw/dsp.py``): each multiplier's operand and product
  shapes, the
  latency, the cycle count, the seed.
- ``AccelJob``: the accelerator top (levels 2-4): ``batches`` of buffer loads and commands,
  each command with the output it must produce, its cycle count and a timeout; or a
  ``network``: every step in order, GEMM steps with their image words and commands, the
  steps between them with their parameters, each with the golden model's output.
- ``NetworkReport``: what the network test measured (the RTL's logits, per-layer cycles).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sqaccel import files
from sqaccel.errors import SqaccelError

JOB_ENV = "SQACCEL_COSIM_JOB"


def tensor_to_json(t) -> dict:
    t = torch.as_tensor(t).to(torch.int64)
    return {"shape": list(t.shape), "values": t.flatten().tolist()}


def tensor_from_json(d: dict) -> torch.Tensor:
    return torch.tensor(d["values"], dtype=torch.int64).reshape(d["shape"])


@dataclass
class Command:
    """One command: its fields (m, n, k, relu and the base addresses), where its output sits
    in its layer's (``group``, ``row_offset``, ``col_offset`` within the group), its
    expected output [M, N] (None where the network test gets it from its step), its cycle
    count (hw.timing), a timeout in cycles, and the ranges of the layer's image words to
    load before it (``load``: kind -> [first, end); network steps)."""

    name: str
    fields: dict
    cycles: int
    timeout: int
    row_offset: int = 0
    col_offset: int = 0
    group: int = 0
    expected: dict | None = None
    load: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> Command:
        return cls(**d)


@dataclass
class Batch:
    """Buffer words to load (buffer name -> words from address 0), then commands."""

    load: dict[str, list[int]]
    commands: list[Command]

    @classmethod
    def from_json(cls, d: dict) -> Batch:
        return cls(d["load"], [Command.from_json(c) for c in d["commands"]])


@dataclass
class NetworkStep:
    """One step of a network: ``op`` "gemm" (run on the array) or a host step; ``params``
    its manifest record; ``inputs`` the steps (or "input") it reads; ``expected`` the
    golden output ([M, N] for a GEMM step, the step's tensor otherwise). A GEMM step also
    carries its image words and its commands (one per row range that fits the activation
    buffer)."""

    op: str
    name: str
    params: dict
    inputs: list[str]
    expected: dict
    words: dict[str, list[int]] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict) -> NetworkStep:
        d = dict(d)
        d["commands"] = [Command.from_json(c) for c in d.get("commands", [])]
        return cls(**d)


@dataclass
class PEJob:
    configs: list[dict]
    stim_widths: list[list[int]]  # per PE: the fields of its part of the input word
    labels: list[str]
    latency: int  # cycles from a PE's operands to its accumulator showing them
    bias_delay: int  # cycles from a `first` operand to the PE reading its bias
    operand: dict  # shift PE weight operand: {"sign_bit": ..., "step_offset": ...}
    cycles: int
    chunk: int
    seed: int
    model_offset: dict | None = None

    @classmethod
    def from_json(cls, d: dict) -> PEJob:
        return cls(**d)


@dataclass
class MultJob:
    # Per multiplier: a width, a signed, b width, b signed, product width, product signed.
    shapes: list[list[int]]
    latency: int  # cycles from the operands to their product
    cycles: int
    seed: int
    model_offset: int = 0  # added to multiplier 0's expected products (checker tests)

    @classmethod
    def from_json(cls, d: dict) -> MultJob:
        return cls(**d)


@dataclass
class AccelJob:
    config: dict
    seed: int
    format: str  # path of the build's format.json
    ready_prob: float = 1.0
    batches: list[Batch] = field(default_factory=list)
    network_input: dict | None = None
    network: list[NetworkStep] = field(default_factory=list)
    report: str | None = None  # where the network test writes its NetworkReport

    @classmethod
    def from_json(cls, d: dict) -> AccelJob:
        d = dict(d)
        d["batches"] = [Batch.from_json(b) for b in d.get("batches", [])]
        d["network"] = [NetworkStep.from_json(s) for s in d.get("network", [])]
        return cls(**d)


@dataclass
class NetworkReport:
    logits: dict
    layers: dict[str, dict]  # per GEMM step: M, K, N, commands, cycles, host/result words
    sim_cycles: int
    wall_s: float

    @classmethod
    def from_json(cls, d: dict) -> NetworkReport:
        return cls(**d)


def write(job: PEJob | MultJob | AccelJob | NetworkReport, path: str | Path) -> Path:
    return files.write_text(path, json.dumps(asdict(job)))


def _load(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SqaccelError(f"{path}: not a readable job file ({e})") from None


def read_pe_job() -> PEJob:
    return PEJob.from_json(_load(os.environ[JOB_ENV]))


def read_mult_job() -> MultJob:
    return MultJob.from_json(_load(os.environ[JOB_ENV]))


def read_accel_job() -> AccelJob:
    return AccelJob.from_json(_load(os.environ[JOB_ENV]))


def read_report(path: str | Path) -> NetworkReport:
    return NetworkReport.from_json(_load(path))
