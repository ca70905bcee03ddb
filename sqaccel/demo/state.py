"""The demo's settings and the state its steps hand on, typed."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
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


class Background:
    """A step's work in a process of its own while the demo goes on: ``fn(*args)`` (a
    module-level function; the process is spawned, so it shares nothing with the demo)
    prints to ``log`` and writes its result where the step reads it. The step collects it
    in its place in the sequence; an interrupted demo stops it."""

    def __init__(self, fn: Callable, args: tuple, log: Path):
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_in_background, args=(fn, args, str(self.log)),
                                   daemon=True)
        self.process.start()

    def wait(self, say: Callable[[str], None]) -> None:
        """Waits for the work, then shows what it printed; one error if it failed."""
        self.process.join()
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            say(line)
        if self.process.exitcode != 0:
            raise SqaccelError(f"the step's background process failed (exit "
                               f"{self.process.exitcode}); its output is in {self.log}")

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _in_background(fn: Callable, args: tuple, log: str) -> None:
    import signal
    import sys
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the demo, which stops us
    with open(log, "w", buffering=1) as out:
        sys.stdout = sys.stderr = out
        try:
            fn(*args)
        except SqaccelError as e:
            print(f"error: {e}")
            sys.exit(2)
        except Exception:  # noqa: BLE001 - shown in the log the demo points to
            traceback.print_exc()
            sys.exit(1)


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
    background: dict[str, Background] = field(default_factory=dict)  # step name -> its work

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
