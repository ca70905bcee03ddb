"""The demo's settings and the state its steps hand on, typed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sqaccel import files
from sqaccel.config import AccelConfig
from sqaccel.errors import SqaccelError


def digest(obj) -> str:
    """A short digest of a JSON-able object (the inputs that decide a step's result)."""
    from sqaccel.imagecodec import sha256

    return sha256(json.dumps(obj, sort_keys=True).encode())[:16]


def file_digest(path: Path) -> str:
    from sqaccel.imagecodec import sha256

    return sha256(Path(path).read_bytes())[:16]


@dataclass
class DemoState:
    """What the steps leave for later steps (None until the step that sets it has run)."""

    started: str = ""
    timings: list[dict] = field(default_factory=list)
    split: object | None = None  # sw.data.Split
    test_loader: object | None = None  # its test split's DataLoader
    model: object | None = None  # the trained digits CNN (torch.nn.Module)
    model_digest: str | None = None
    layer_bits: dict[str, int] | None = None
    qweights: dict | None = None  # layer name -> sw.qweight.QuantizedWeight (search)
    net: object | None = None  # sw.intnet.IntNetwork (calibrated)
    int_accuracy: float | None = None
    images_dir: Path | None = None
    manifest_digest: str | None = None
    verilog_digest: str | None = None

    def need(self, name: str):
        """A value an earlier step sets; a clear error when that step did not run."""
        value = getattr(self, name)
        if value is None:
            raise SqaccelError(f"demo: {name} is not there: the step that makes it did not run")
        return value


@dataclass
class DemoRun:
    """One demo run: its settings and its state."""

    seed: int = 0
    out: Path = Path("build/demo")
    cache_dir: Path = Path("build/models")
    report_dir: Path = Path("build/report")
    progress: bool = True
    fresh: bool = False
    cosim_images: int = 8
    skip: frozenset[str] = frozenset()
    force: bool = False  # write into --out and --report even if sqaccel did not make them
    cfg: AccelConfig = field(default_factory=AccelConfig)
    state: DemoState = field(default_factory=DemoState)

    def say(self, msg: str) -> None:
        print(f"    {msg}", flush=True)

    def write_json(self, name: str, obj) -> Path:
        return files.write_json(self.out / name, obj)
