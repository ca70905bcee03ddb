"""A corpus of bad and unusual inputs, over every command: what each must answer.

Each case runs one ``sqaccel`` command in a folder of its own, after ``setup`` has put the
files the case needs there (a user's folder, a damaged images folder, a broken config).
A case passes when the command exits with the expected status, its standard error holds
no traceback and its last line is ``sqaccel <command>: error: ...`` naming the problem
(``says``), and every file that was in the folder before is byte-identical afterwards;
a refused command leaves no new file either.

``tests/test_bad_inputs.py`` runs the corpus in-process in ``make test``. Run as a script,
this module runs it through an ``sqaccel`` executable in subprocesses and prints a table
of cases by command (to compare two versions of the tool):

    .venv/bin/python tests/bad_inputs.py [--exe PATH/TO/sqaccel]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
TIMEOUT_S = 120  # a refusal comes in seconds; a command that went to work is stopped


@dataclass
class Case:
    name: str
    argv: list[str]  # {d}: the case's folder; {images}: a valid images folder in it
    status: int
    says: str  # a piece of the last line of standard error
    setup: Callable[[Path, Path], None] | None = None  # (case folder, valid images folder)
    env: dict[str, str] = field(default_factory=dict)
    may_write: bool = False  # a successful case may add files

    @property
    def command(self) -> str:
        from sqaccel.commands import COMMANDS

        return self.argv[0] if self.argv and self.argv[0] in COMMANDS else "(none)"


# -- what the setups make --------------------------------------------------------------------


def user_folder(d: Path, name: str = "mine") -> None:
    """A folder of someone's work: sources and a thesis."""
    (d / name / "src").mkdir(parents=True)
    (d / name / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (d / name / "thesis.tex").write_text("\\documentclass{article}\n")


def a_file(d: Path, name: str = "file.txt") -> None:
    (d / name).write_text("a file, not a folder\n")


def user_model(d: Path, body: str, name: str = "net.py") -> None:
    (d / name).write_text("import torch\nfrom torch import nn\n\n" + body)


def config(d: Path, obj, name: str = "cfg.json") -> None:
    (d / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))


def copy_images(d: Path, images: Path, name: str = "images") -> Path:
    shutil.copytree(images, d / name)
    return d / name


def manifest_edit(fn: Callable[[dict], object], replace: bool = False
                  ) -> Callable[[Path, Path], None]:
    """Change the manifest of a copy of the images in place (``replace``: ``fn`` returns the
    new manifest)."""
    def setup(d: Path, images: Path) -> None:
        c = copy_images(d, images)
        m = json.loads((c / "manifest.json").read_text())
        new = fn(m)
        (c / "manifest.json").write_text(json.dumps(new if replace else m))
    return setup


def _files(m: dict, kind: str, fmt: str) -> list[str]:
    return sorted(f for f, e in m["files"].items() if e["image"] == kind and e["format"] == fmt)


def damage(folder: Path, how: str) -> None:
    """Damage an images folder one way: truncated, tampered, hash (the manifest's SHA-256 of
    a file changed), swapped (two layers' bias images exchanged)."""
    m = json.loads((folder / "manifest.json").read_text())
    hex_w, bin_w = _files(m, "weights", "hex")[1], _files(m, "weights", "bin")[1]
    if how == "truncated":
        data = (folder / hex_w).read_bytes()
        (folder / hex_w).write_bytes(data[: len(data) // 2])
    elif how == "tampered":
        data = bytearray((folder / bin_w).read_bytes())
        data[0] ^= 1
        (folder / bin_w).write_bytes(bytes(data))
    elif how == "hash":
        m["files"][hex_w]["sha256"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(m))
    elif how == "swapped":
        a, b = (folder / f for f in _files(m, "bias", "hex")[:2])
        ta, tb = a.read_bytes(), b.read_bytes()
        a.write_bytes(tb)
        b.write_bytes(ta)
    else:
        raise ValueError(how)


def damaged(how: str) -> Callable[[Path, Path], None]:
    def setup(d: Path, images: Path) -> None:
        damage(copy_images(d, images), how)
    return setup


def npy(d: Path, name: str, header: dict, payload: bytes) -> None:
    """A hand-made .npy file (version 1.0)."""
    text = repr(header).encode("latin1")
    text += b" " * (-(len(text) + 11) % 16) + b"\n"
    (d / name).write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload)


def floats(d: Path, name: str, values: list[float]) -> None:
    npy(d, name, {"descr": "<f8", "fortran_order": False, "shape": (len(values),)},
        struct.pack(f"<{len(values)}d", *values))


def safetensors(d: Path, name: str, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(d / name))


def digits_weights(d: Path, name: str, nan: bool = False, drop: bool = False) -> None:
    import torch

    from sqaccel.sw.models import digits_cnn

    torch.manual_seed(0)
    state = {k: v.clone() for k, v in digits_cnn().state_dict().items()}
    if nan:
        state["0.weight"][0, 0, 0, 0] = float("nan")
    if drop:
        del state["11.bias"]
    safetensors(d, name, state)


def demo_run_folder(d: Path, **files: object) -> None:
    """A demo run folder (marked as one) holding the given JSON files."""
    from sqaccel import files as sqfiles

    run = d / "run"
    run.mkdir()
    sqfiles.write_marker(run, "demo run", None)
    for name, obj in files.items():
        (run / name.replace("__", ".")).write_text(obj if isinstance(obj, str) else
                                                  json.dumps(obj))


def progress_corrupt(d: Path, images: Path) -> None:
    demo_run_folder(d, progress__json="{ this is not JSON")


def previous_output(kind: str, extra: bool = True) -> Callable[[Path, Path], None]:
    """A folder sqaccel wrote as ``kind`` (marked), with a user's file put inside later."""
    def setup(d: Path, images: Path) -> None:
        from sqaccel import files as sqfiles

        out = d / "out"
        out.mkdir()
        (out / "made.txt").write_text("written by sqaccel\n")
        sqfiles.write_marker(out, kind, ["made.txt"])
        if extra:
            (out / "notes.txt").write_text("the user's notes\n")
    return setup


def sweep_folder(d: Path, grid: dict) -> None:
    """A sweep folder (marked as one) made with ``grid``."""
    from sqaccel import files as sqfiles

    (d / "s").mkdir()
    sqfiles.write_marker(d / "s", "sweep", None)
    (d / "s" / "grid.json").write_text(json.dumps(grid))


def chain(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(d: Path, images: Path) -> None:
        for s in setups:
            s(d, images)
    return setup


def in_dir(fn: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    return lambda d, images: fn(d)


# -- the cases ---------------------------------------------------------------------------

IMG = "{d}/images"
BAD_CFGS = {
    "bool-rows": ({"rows": True}, "rows must be an integer in 1..32, got True (a boolean)"),
    "string-rows": ({"rows": "8"}, "rows must be an integer in 1..32, got '8' (a string)"),
    "float-width": ({"act_bits": 8.0}, "act_bits must be one of 4, 8, got 8.0 (a number)"),
    "fraction-exponent": ({"universal": {"exponents": [[0, 1.5], [0, 2]]}},
                          "an exponent must be an integer in 0..15, got 1.5"),
    "unknown-key": ({"rowz": 8}, "unknown key 'rowz'"),
    "a-list": ([8, 8], "must be a JSON object of fields, got [8, 8] (a list)"),
    "huge-rows": ({"rows": 1000}, "rows must be an integer in 1..32, got 1000"),
    "not-json": ("{rows: 8", "not valid JSON"),
    "zero-depth": ({"act_depth": 0}, "act_depth must be an integer in 1..1048576, got 0"),
    "pe-number": ({"pe": 3}, "pe must be one of 'shift', 'mult', got 3 (an integer)"),
    "mult-cols-past-cols": ({"cols": 4, "mult_cols": 5},
                            "mult_cols must be an integer in 0..cols (0..4), got 5"),
    "mult-cols-on-mult": ({"pe": "mult", "mult_cols": 2},
                          "mult_cols applies to the shift-add array (pe 'shift')"),
}


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name, argv, status, says, setup=None, env=None, may_write=False):
        out.append(Case(name, argv, status, says, setup, env or {}, may_write))

    # -- search
    add("search/missing-file", ["search", "--weights", "{d}/w.npy", "--bits", "3"], 2,
        "w.npy: weights file not found")
    add("search/folder", ["search", "--weights", "{d}", "--bits", "3"], 2,
        "weights file not found")
    add("search/pickled-npy", ["search", "--weights", "{d}/w.npy", "--bits", "3"], 2,
        "not a readable .npy array",
        in_dir(lambda d: npy(d, "w.npy", {"descr": "|O", "fortran_order": False,
                                         "shape": (1,)}, b"\x80\x04N.")))
    add("search/nan", ["search", "--weights", "{d}/w.npy", "--bits", "3"], 2, "NaN",
        in_dir(lambda d: floats(d, "w.npy", [0.1, float("nan"), 0.3])))
    add("search/truncated-npy", ["search", "--weights", "{d}/w.npy", "--bits", "3"], 2,
        "not a readable .npy array",
        in_dir(lambda d: (floats(d, "x.npy", [0.1, 0.2, 0.3]),
                          (d / "w.npy").write_bytes((d / "x.npy").read_bytes()[:-9]))))
    add("search/corrupt-safetensors", ["search", "--weights", "{d}/w.safetensors", "--bits",
        "3"], 2, "not a readable .safetensors file",
        in_dir(lambda d: (d / "w.safetensors").write_bytes(b"\xff" * 40)))
    add("search/two-tensors", ["search", "--weights", "{d}/m.safetensors", "--bits", "3"], 2,
        "name one with --tensor", in_dir(lambda d: digits_weights(d, "m.safetensors")))
    add("search/no-such-tensor", ["search", "--weights", "{d}/m.safetensors", "--tensor",
        "conv9.weight", "--bits", "3"], 2, "no tensor named 'conv9.weight'",
        in_dir(lambda d: digits_weights(d, "m.safetensors")))
    add("search/bits", ["search", "--weights", "{d}/w.npy", "--bits", "5"], 2,
        "argument --bits: invalid choice")
    add("search/text-file", ["search", "--weights", "{d}/file.txt", "--bits", "3"], 2,
        "expected a .npy or .safetensors file", in_dir(a_file))
    add("search/bad-config", ["search", "--weights", "{d}/w.npy", "--bits", "3", "--config",
        "{d}/cfg.json"], 2, BAD_CFGS["bool-rows"][1],
        in_dir(lambda d: (floats(d, "w.npy", [0.1, 0.2]), config(d, BAD_CFGS["bool-rows"][0]))))

    # -- quantize
    add("quantize/unknown-model", ["quantize", "--model", "vgg99"], 2,
        "'vgg99': not a built-in network")
    add("quantize/resnet-without-weights", ["quantize", "--model", "resnet18"], 2,
        "resnet18 needs --weights FILE")
    add("quantize/missing-weights", ["quantize", "--weights", "{d}/none.safetensors"], 2,
        "weights file not found")
    add("quantize/corrupt-weights", ["quantize", "--weights", "{d}/w.safetensors"], 2,
        "not a readable safetensors file",
        in_dir(lambda d: (d / "w.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}junk")))
    add("quantize/pickle-weights", ["quantize", "--weights", "{d}/w.pt"], 2,
        "not a weights-only torch state dict",
        in_dir(lambda d: (d / "w.pt").write_bytes(
            b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system"
            b"\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.")))
    add("quantize/nan-weights", ["quantize", "--weights", "{d}/w.safetensors"], 2,
        "0.weight holds NaN or Inf",
        in_dir(lambda d: digits_weights(d, "w.safetensors", nan=True)))
    add("quantize/wrong-keys", ["quantize", "--weights", "{d}/w.safetensors"], 2,
        "keys do not match", in_dir(lambda d: digits_weights(d, "w.safetensors", drop=True)))
    add("quantize/data-folder-without-calib", ["quantize", "--data", "{d}"], 2,
        "calib: missing sub-folder")
    add("quantize/data-of-another-shape", ["quantize", "--data", "mnist5k"], 2,
        "images of shape (1, 28, 28), but digits takes (1, 8, 8)")
    add("quantize/batch-zero", ["quantize", "--batch-size", "0"], 2,
        "argument --batch-size: a count is a whole number >= 1, got '0'")
    add("quantize/crop-zero", ["quantize", "--crop", "0"], 2, "argument --crop: a size")
    add("quantize/resize-negative", ["quantize", "--resize", "-3"], 2, "argument --resize")
    add("quantize/seed-negative", ["quantize", "--seed", "-1"], 2,
        "argument --seed: a seed is a whole number >= 0")
    add("quantize/sq-8bit", ["quantize", "--method", "sq", "--bits", "8"], 2, "8")
    add("quantize/cache-is-file", ["quantize", "--retrain", "--cache-dir", "{d}/file.txt"], 2,
        "file.txt: exists and is not a folder", in_dir(a_file))
    add("quantize/empty-image-folder", ["quantize", "--model", "resnet18", "--weights",
        "{d}/w.safetensors", "--data", "{d}/data"], 2, "no class folders",
        in_dir(lambda d: ((d / "data").mkdir(), safetensors(d, "w.safetensors", {}))))
    add("quantize/data-is-file", ["quantize", "--model", "resnet18", "--weights",
        "{d}/w.safetensors", "--data", "{d}/file.txt"], 2, "file.txt: not a folder",
        in_dir(lambda d: (a_file(d), safetensors(d, "w.safetensors", {}))))

    # -- export
    add("export/user-folder", ["export", "--out", "{d}/mine"], 2,
        "mine: a folder sqaccel did not write", in_dir(user_folder))
    add("export/out-is-file", ["export", "--out", "{d}/file.txt"], 2,
        "file.txt: exists and is not a folder", in_dir(a_file))
    add("export/read-only-place", ["export", "--out", "/sys/sqaccel-images"], 2,
        "/sys/sqaccel-images")
    add("export/old-images-with-user-file", ["export", "--out", "{d}/out"], 2,
        "holds 'notes.txt', which sqaccel did not write there", previous_output("images"))
    add("export/verilog-folder", ["export", "--out", "{d}/out"], 2,
        "holds sqaccel's verilog output, not images", previous_output("verilog", extra=False))
    for key, (cfg, says) in BAD_CFGS.items():
        add(f"export/config-{key}", ["export", "--out", "{d}/img", "--config", "{d}/cfg.json"],
            2, says, in_dir(lambda d, cfg=cfg: config(d, cfg)))
    add("export/config-is-folder", ["export", "--out", "{d}/img", "--config", "{d}"], 2,
        "a folder, not a config file")
    add("export/weights-do-not-fit", ["export", "--out", "{d}/img", "--weight-depth", "64"],
        2, "does not fit the array")
    add("export/k-max-too-small", ["export", "--out", "{d}/img", "--k-max", "100"], 2,
        "K = 144 exceeds K_max = 100")
    add("export/rows-1000", ["export", "--out", "{d}/img", "--rows", "1000"], 2,
        "rows must be an integer in 1..32, got 1000")
    add("export/bits-over-array", ["export", "--out", "{d}/img", "--bits", "4",
        "--weight-bits", "2"], 2, "--bits 4 exceeds the array's 2-bit weights")
    add("export/method-against-config", ["export", "--out", "{d}/img", "--config",
        "{d}/cfg.json", "--method", "sq"], 2, "runs uniform weights, not sq",
        in_dir(lambda d: config(d, {"pe": "mult"})))
    add("export/calib-zero", ["export", "--out", "{d}/img", "--calib-samples", "0"], 2,
        "argument --calib-samples")
    add("export/act-bits-5", ["export", "--out", "{d}/img", "--act-bits", "5"], 2,
        "act_bits must be one of 4, 8, got 5")
    add("export/cache-is-file", ["export", "--out", "{d}/img", "--retrain", "--cache-dir",
        "{d}/file.txt"], 2, "file.txt: exists and is not a folder", in_dir(a_file))

    # -- models and data (export and perf share the resolver)
    to = ["--out", "{d}/img"]
    add("export/model-unknown", ["export", *to, "--model", "resnet99"], 2,
        "not a built-in network")
    add("export/model-file-missing", ["export", *to, "--model", "{d}/none.py:net",
        "--weights", "{d}/w.safetensors"], 2, "none.py not found")
    add("export/model-no-function", ["export", *to, "--model", "{d}/net.py:other",
        "--weights", "{d}/w.safetensors"], 2, "defines no function 'other'",
        in_dir(lambda d: user_model(d, "def net():\n    return nn.Linear(64, 10)\n")))
    add("export/model-import-fails", ["export", *to, "--model", "{d}/net.py:net",
        "--weights", "{d}/w.safetensors"], 2, "importing",
        in_dir(lambda d: user_model(d, "raise RuntimeError('broken on purpose')\n")))
    add("export/model-syntax-error", ["export", *to, "--model", "{d}/net.py:net",
        "--weights", "{d}/w.safetensors"], 2, "SyntaxError",
        in_dir(lambda d: user_model(d, "def net(:\n")))
    add("export/model-not-a-module", ["export", *to, "--model", "{d}/net.py:net",
        "--weights", "{d}/w.safetensors"], 2, "returned a int, not a torch.nn.Module",
        in_dir(lambda d: user_model(d, "def net():\n    return 3\n")))
    add("export/model-function-raises", ["export", *to, "--model", "{d}/net.py:net",
        "--weights", "{d}/w.safetensors"], 2, "net() failed",
        in_dir(lambda d: user_model(d, "def net():\n    return 1 / 0\n")))
    add("export/model-needs-weights", ["export", *to, "--model", "{d}/net.py:net"], 2,
        "needs --weights", in_dir(lambda d: user_model(
            d, "def net():\n    return nn.Linear(64, 10)\n")))
    add("export/retrain-user-model", ["export", *to, "--model", "{d}/net.py:net",
        "--retrain"], 2, "only the built-in networks", in_dir(lambda d: user_model(
            d, "def net():\n    return nn.Linear(64, 10)\n")))
    add("export/imagenet-resnet", ["export", *to, "--model", "resnet18"], 2,
        "are for sqaccel quantize")
    add("export/data-unknown", ["export", *to, "--data", "cifar"], 2, "cifar")
    add("export/weights-wrong-model", ["export", *to, "--model", "resnet20", "--weights",
        "{d}/w.safetensors"], 2, "keys do not match", in_dir(
            lambda d: digits_weights(d, "w.safetensors")))

    # -- perf
    add("perf/neither", ["perf"], 2, "give an images folder or --model")
    add("perf/both", ["perf", IMG, "--model", "digits"], 2, "one of the two",
        lambda d, i: copy_images(d, i))
    add("perf/images-with-config", ["perf", IMG, "--rows", "4"], 2,
        "carries its own network and config", lambda d, i: copy_images(d, i))
    add("perf/model-does-not-fit", ["perf", "--model", "digits", "--k-max", "100"], 2,
        "K = 144 exceeds K_max = 100")
    add("perf/missing", ["perf", "{d}/none"], 2, "images folder not found")
    add("perf/user-folder", ["perf", "{d}/mine"], 2, "manifest.json: not found",
        in_dir(user_folder))
    add("perf/tampered", ["perf", IMG], 2, ".bin", damaged("tampered"))
    add("perf/batch-zero", ["perf", IMG, "--batch", "0"], 2, "argument --batch")
    add("perf/fmax-negative", ["perf", IMG, "--fmax", "-5"], 2, "argument --fmax")
    add("perf/synth-missing", ["perf", IMG, "--synth", "{d}/r.json"], 2,
        "synthesis report not found", lambda d, i: copy_images(d, i))
    add("perf/synth-not-a-report", ["perf", IMG, "--synth", "{d}/file.txt"], 2,
        "not a synthesis report.json", chain(lambda d, i: copy_images(d, i), in_dir(a_file)))
    add("perf/synth-wrong-types", ["perf", IMG, "--synth", "{d}/cfg.json"], 2,
        "not a synthesis report.json", chain(lambda d, i: copy_images(d, i), in_dir(
            lambda d: config(d, {"fmax_mhz": "fast", "resources": {"logic_cells": 1}}))))

    # -- verify-images
    add("verify/missing", ["verify-images", "{d}/none"], 2, "images folder not found")
    add("verify/user-folder", ["verify-images", "{d}/mine"], 2, "manifest.json: not found",
        in_dir(user_folder))
    add("verify/manifest-not-json", ["verify-images", IMG], 1, "not valid JSON",
        chain(lambda d, i: copy_images(d, i),
              in_dir(lambda d: (d / "images" / "manifest.json").write_text("{"))))
    add("verify/manifest-a-list", ["verify-images", IMG], 1, "not an sqaccel-images manifest",
        manifest_edit(lambda m: [m], replace=True))
    add("verify/manifest-format", ["verify-images", IMG], 1, "not an sqaccel-images manifest",
        manifest_edit(lambda m: m.update(format="other")))
    add("verify/steps-not-list", ["verify-images", IMG], 1, "'steps' is not a list",
        manifest_edit(lambda m: m.update(steps={"a": 1})))
    add("verify/words-a-string", ["verify-images", IMG], 1, "has a non-integer size",
        manifest_edit(lambda m: next(iter(m["files"].values())).update(words="many")))
    add("verify/file-traversal", ["verify-images", IMG], 1, "is not a plain name",
        manifest_edit(lambda m: m["files"].update({"../../etc/passwd": {}})))
    for how in ("truncated", "tampered", "hash", "swapped"):
        add(f"verify/{how}", ["verify-images", IMG], 1, ".hex" if how != "tampered" else
            ".bin", damaged(how))
    add("verify/reference-removed", ["verify-images", IMG], 1, "no reference record",
        manifest_edit(lambda m: m.pop("reference")))
    add("verify/reference-removed-structural", ["verify-images", IMG, "--structural"], 0, "",
        manifest_edit(lambda m: m.pop("reference")))
    add("verify/config-field-type", ["verify-images", IMG], 1,
        "rows must be an integer in 1..32, got '8' (a string)",
        manifest_edit(lambda m: m["config"].update(rows="8")))
    add("verify/config-too-small", ["verify-images", IMG], 1, "does not fit the array",
        manifest_edit(lambda m: m["config"].update(weight_depth=64)))
    add("verify/other-config", ["verify-images", IMG, "--config", "{d}/cfg.json"], 1,
        "images built for config",
        chain(lambda d, i: copy_images(d, i), in_dir(lambda d: config(d, {"pe": "mult"}))))
    add("verify/samples-zero", ["verify-images", IMG, "--samples", "0"], 2,
        "argument --samples", lambda d, i: copy_images(d, i))

    # -- verilog
    add("verilog/user-folder", ["verilog", "--out", "{d}/mine"], 2,
        "mine: a folder sqaccel did not write", in_dir(user_folder))
    add("verilog/images-is-out", ["verilog", "--images", IMG, "--out", IMG], 2,
        "inside the input", lambda d, i: copy_images(d, i))
    add("verilog/out-inside-images", ["verilog", "--images", IMG, "--out", IMG + "/v"], 2,
        "inside the input", lambda d, i: copy_images(d, i))
    for how in ("truncated", "tampered", "hash", "swapped"):
        add(f"verilog/images-{how}", ["verilog", "--images", IMG, "--out", "{d}/v"], 2,
            ".hex" if how != "tampered" else ".bin", damaged(how))
    add("verilog/rows-1000", ["verilog", "--rows", "1000", "--out", "{d}/v"], 2,
        "rows must be an integer in 1..32, got 1000")
    add("verilog/cols-zero", ["verilog", "--cols", "0", "--out", "{d}/v"], 2,
        "cols must be an integer in 1..32, got 0")
    add("verilog/cols-33", ["verilog", "--cols", "33", "--out", "{d}/v"], 2,
        "cols must be an integer in 1..32, got 33")
    add("verilog/config-bool", ["verilog", "--config", "{d}/cfg.json", "--out", "{d}/v"], 2,
        BAD_CFGS["bool-rows"][1], in_dir(lambda d: config(d, BAD_CFGS["bool-rows"][0])))
    add("verilog/config-missing", ["verilog", "--config", "{d}/none.json", "--out", "{d}/v"],
        2, "config file not found")
    add("verilog/out-is-file", ["verilog", "--out", "{d}/file.txt"], 2,
        "exists and is not a folder", in_dir(a_file))
    add("verilog/images-for-mult", ["verilog", "--pe", "mult", "--images", IMG, "--out",
        "{d}/v"], 2, "images built for pe = 'shift'", lambda d, i: copy_images(d, i))
    add("verilog/old-output-with-user-file", ["verilog", "--out", "{d}/out"], 2,
        "holds 'notes.txt'", previous_output("verilog"))
    add("verilog/under-a-file", ["verilog", "--out", "/dev/null/v"], 2, "/dev/null")
    add("verilog/read-only-place", ["verilog", "--out", "/sys/sqaccel-v"], 2,
        "/sys/sqaccel-v")

    # -- report
    run_ok = {"run__json": {"seed": 0}}
    add("report/out-is-run", ["report", "--run", "{d}/run", "--out", "{d}/run"], 2,
        "inside the input", in_dir(lambda d: demo_run_folder(d, **run_ok)))
    add("report/out-inside-run", ["report", "--run", "{d}/run", "--out", "{d}/run/r"], 2,
        "inside the input", in_dir(lambda d: demo_run_folder(d, **run_ok)))
    add("report/user-folder", ["report", "--run", "{d}/run", "--out", "{d}/mine"], 2,
        "mine: a folder sqaccel did not write",
        in_dir(lambda d: (demo_run_folder(d, **run_ok), user_folder(d))))
    add("report/no-run", ["report", "--run", "{d}/none", "--out", "{d}/r"], 2,
        "no run.json")
    add("report/run-json-list", ["report", "--run", "{d}/run", "--out", "{d}/r"], 2,
        "run.json: not a file this report reads: the file is not an object",
        in_dir(lambda d: demo_run_folder(d, run__json=[1, 2])))
    add("report/run-json-broken", ["report", "--run", "{d}/run", "--out", "{d}/r"], 2,
        "run.json: not valid JSON", in_dir(lambda d: demo_run_folder(d, run__json="{")))
    add("report/accuracy-wrong-shape", ["report", "--run", "{d}/run", "--out", "{d}/r"], 2,
        "accuracy.json: not a file this report reads: runs is not a list",
        in_dir(lambda d: demo_run_folder(d, **run_ok,
                                         accuracy__json={"fp_accuracy": 99.0, "runs": 5})))
    add("report/synth-wrong-shape", ["report", "--run", "{d}/run", "--out", "{d}/r"], 2,
        "synth.json: not a file this report reads: no [0].label",
        in_dir(lambda d: demo_run_folder(d, **run_ok, synth__json=[{"cells": 1}])))
    add("report/out-is-file", ["report", "--run", "{d}/run", "--out", "{d}/file.txt"], 2,
        "exists and is not a folder",
        in_dir(lambda d: (demo_run_folder(d, **run_ok), a_file(d))))

    # -- cosim
    add("cosim/missing", ["cosim", "{d}/none"], 2, "images folder not found")
    add("cosim/unknown-layer", ["cosim", IMG, "--layer", "3"], 2, "no GEMM layer '3'",
        lambda d, i: copy_images(d, i))
    add("cosim/network-zero", ["cosim", IMG, "--network", "0"], 2, "argument --network")
    add("cosim/network-too-many", ["cosim", IMG, "--network", "100000"], 2,
        "100000 test images asked for, the split has 540", lambda d, i: copy_images(d, i))
    add("cosim/seed-env", ["cosim", IMG, "--layer", "11"], 2, "SQACCEL_SEED='abc'",
        lambda d, i: copy_images(d, i), env={"SQACCEL_SEED": "abc"})
    add("cosim/seed-negative", ["cosim", IMG, "--seed", "-5"], 2, "argument --seed")
    add("cosim/log-dir-is-file", ["cosim", IMG, "--layer", "11", "--seed", "1", "--log-dir",
        "{d}/file.txt"], 2, "file.txt: exists and is not a folder",
        chain(lambda d, i: copy_images(d, i), in_dir(a_file)))
    add("cosim/build-dir-is-file", ["cosim", IMG, "--layer", "11", "--seed", "1"], 2,
        "file.txt: exists and is not a folder",
        chain(lambda d, i: copy_images(d, i), in_dir(a_file)),
        env={"SQACCEL_COSIM_BUILD": "{d}/file.txt"})
    add("cosim/build-dir-user-folder", ["cosim", IMG, "--layer", "11", "--seed", "1"], 2,
        "mine: a folder sqaccel did not write",
        chain(lambda d, i: copy_images(d, i), in_dir(user_folder)),
        env={"SQACCEL_COSIM_BUILD": "{d}/mine"})
    add("cosim/images-truncated", ["cosim", IMG, "--layer", "11"], 2, ".hex",
        damaged("truncated"))

    # -- synth
    add("synth/out-is-file", ["synth", "--design", "pe", "--out", "{d}/file.txt"], 2,
        "exists and is not a folder", in_dir(a_file))
    add("synth/user-folder", ["synth", "--design", "pe", "--out", "{d}/mine"], 2,
        "mine: a folder sqaccel did not write", in_dir(user_folder))
    add("synth/rows-1000", ["synth", "--rows", "1000", "--out", "{d}/s"], 2,
        "rows must be an integer in 1..32, got 1000")
    add("synth/target", ["synth", "--target", "xc7", "--out", "{d}/s"], 2,
        "argument --target: invalid choice")
    add("synth/design", ["synth", "--design", "cpu", "--out", "{d}/s"], 2,
        "argument --design: invalid choice")
    add("synth/freq-negative", ["synth", "--freq", "-5", "--out", "{d}/s"], 2,
        "argument --freq")
    add("synth/run-name", ["synth", "--design", "pe", "--name", "../up", "--out", "{d}/s"], 2,
        "run name '../up' must be letters, digits and _.+-")
    add("synth/config-string", ["synth", "--config", "{d}/cfg.json", "--out", "{d}/s"], 2,
        BAD_CFGS["string-rows"][1], in_dir(lambda d: config(d, BAD_CFGS["string-rows"][0])))

    # -- sweep
    def grid(obj) -> Callable[[Path, Path], None]:
        return in_dir(lambda d: config(d, obj, "g.json"))

    pe = {"design": "pe", "pe": "shift", "dsp": False}
    sweep = ["sweep", "{d}/g.json", "--out", "{d}/s"]
    add("sweep/missing-grid", sweep, 2, "g.json: grid file not found")
    add("sweep/grid-not-json", sweep, 2, "g.json: not valid JSON", grid("{points: []"))
    add("sweep/grid-unknown-key", sweep, 2, "unknown key 'pointz'", grid({"pointz": [pe]}))
    add("sweep/no-points", sweep, 2, "points must be a non-empty list", grid({"points": []}))
    add("sweep/design", sweep, 2, "points[0]: design must be one of",
        grid({"points": [{"design": "cpu"}]}))
    add("sweep/rows-1000", sweep, 2,
        "points[0]: config: rows must be an integer in 1..32, got 1000",
        grid({"points": [{"rows": 1000}]}))
    add("sweep/dsp-string", sweep, 2, "points[0]: dsp must be true or false, got 'no'",
        grid({"points": [{"dsp": "no"}]}))
    add("sweep/same-name", sweep, 2, "two points are named 'pe-shift-nodsp'",
        grid({"points": [pe, pe]}))
    add("sweep/seed-negative", sweep, 2, "a seed must be a whole number >= 0, got -1",
        grid({"seeds": [-1], "points": [pe]}))
    add("sweep/target", sweep, 2, "target must be one of ecp5, ice40, got 'xc7'",
        grid({"target": "xc7", "points": [pe]}))
    add("sweep/largest-with-rows", sweep, 2, "largest finds rows and cols",
        grid({"points": [{"largest": True, "rows": 8}]}))
    add("sweep/fill-dsp-fixed-size", sweep, 2, "points[0]: fill_dsp applies to a largest array",
        grid({"points": [{"fill_dsp": True, "rows": 4, "cols": 4}]}))
    add("sweep/fill-dsp-mult", sweep, 2, "fill_dsp finds mult_cols of a shift-add array",
        grid({"points": [{"fill_dsp": True, "largest": True, "pe": "mult"}]}))
    add("sweep/network-missing", sweep, 2, "images folder", grid({"points": [pe],
        "networks": {"digits": "nowhere"}}))
    add("sweep/workers-zero", [*sweep, "--workers", "0"], 2, "argument --workers")
    add("sweep/user-folder", ["sweep", "{d}/g.json", "--out", "{d}/mine"], 2,
        "mine: a folder sqaccel did not write", chain(grid({"points": [pe]}),
                                                     in_dir(user_folder)))
    add("sweep/out-is-file", ["sweep", "{d}/g.json", "--out", "{d}/file.txt"], 2,
        "exists and is not a folder", chain(grid({"points": [pe]}), in_dir(a_file)))
    add("sweep/another-grid", sweep, 2, "a sweep of another grid",
        chain(grid({"points": [pe]}), in_dir(lambda d: sweep_folder(d, {"seeds": [7]}))))

    # -- demo
    add("demo/user-folder", ["demo", "--out", "{d}/mine", "--report", "{d}/r"], 2,
        "mine: a folder sqaccel did not write", in_dir(user_folder))
    add("demo/out-is-file", ["demo", "--out", "{d}/file.txt", "--report", "{d}/r"], 2,
        "exists and is not a folder", in_dir(a_file))
    add("demo/progress-corrupt", ["demo", "--out", "{d}/run", "--report", "{d}/r",
        "--cache-dir", "{d}/models", "--until", "data"], 2,
        "progress.json: not a readable progress record", progress_corrupt)
    add("demo/until", ["demo", "--out", "{d}/run", "--until", "nothing"], 2,
        "--until: unknown step 'nothing'")
    add("demo/skip", ["demo", "--skip", "export"], 2, "argument --skip: invalid choice")
    add("demo/cosim-images-zero", ["demo", "--cosim-images", "0"], 2,
        "argument --cosim-images")
    add("demo/config-list", ["demo", "--config", "{d}/cfg.json", "--out", "{d}/run"], 2,
        BAD_CFGS["a-list"][1], in_dir(lambda d: config(d, BAD_CFGS["a-list"][0])))
    add("demo/report-inside-run", ["demo", "--out", "{d}/run", "--report", "{d}/run/r"], 2,
        "inside the input")
    add("demo/cache-is-file", ["demo", "--out", "{d}/run", "--report", "{d}/r",
        "--cache-dir", "{d}/file.txt"], 2, "file.txt: exists and is not a folder",
        in_dir(a_file))

    # -- the command line itself
    add("cli/no-command", [], 2, "the following arguments are required: COMMAND")
    add("cli/unknown-command", ["compile"], 2, "argument COMMAND: invalid choice")
    return out


# -- running a case --------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fill(text: str, d: Path) -> str:
    return text.replace("{d}", str(d))


@dataclass
class Outcome:
    status: int | None  # None: the command raised (a traceback)
    err: str

    def verdict(self, case: Case, before: dict, after: dict) -> list[str]:
        """What is wrong with this outcome (empty: the case passes)."""
        bad = []
        if self.status is None or TRACEBACK in self.err:
            return ["a traceback"]
        if self.status != case.status:
            bad.append(f"exit {self.status}, expected {case.status}")
        last = self.err.strip().splitlines()[-1] if self.err.strip() else ""
        head = ("sqaccel: error: " if case.command == "(none)"
                else f"sqaccel {case.command}: error: ")
        if case.status in (1, 2) and not last.startswith(head):
            bad.append(f"last line {last!r} is not '{head}...'")
        if case.says and case.says not in last:
            bad.append(f"{case.says!r} not in {last!r}")
        lost = [f for f, h in before.items() if after.get(f) != h]
        if lost:
            bad.append(f"changed or lost: {lost[:3]}")
        new = sorted(set(after) - set(before))
        if new and not (case.may_write and self.status == 0):
            bad.append(f"wrote {new[:3]}")
        return bad


def run_subprocess(exe: str, case: Case, d: Path) -> Outcome:
    import os

    env = {**os.environ, **{k: fill(v, d) for k, v in case.env.items()}}
    try:
        proc = subprocess.run([exe, *(fill(a, d) for a in case.argv)], cwd=d, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:  # it went to work instead of refusing
        return Outcome(-1, f"still running after {TIMEOUT_S} s")
    return Outcome(proc.returncode, proc.stderr)


def make_images(folder: Path, exe: str | None = None) -> Path:
    """A valid images folder (the digits network, SQ W4) to copy into cases."""
    argv = ["export", "--out", str(folder / "images"), "--cache-dir", str(folder / "models")]
    if exe:
        subprocess.run([exe, *argv], cwd=folder, check=True, capture_output=True)
    else:
        from sqaccel import cli

        assert cli.main(argv) == 0
    return folder / "images"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exe", default=str(Path(sys.executable).with_name("sqaccel")),
                   help="the sqaccel executable to run the cases with")
    args = p.parse_args(argv)
    by_cmd: dict[str, list[int]] = {}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), args.exe)
        for i, case in enumerate(cases()):
            d = Path(tmp) / f"case{i}"
            d.mkdir()
            if case.setup:
                case.setup(d, images)
            before = snapshot(d)
            out = run_subprocess(args.exe, case, d)
            bad = out.verdict(case, before, snapshot(d))
            row = by_cmd.setdefault(case.command, [0, 0, 0])
            row[0] += 1
            row[1] += not bad
            row[2] += bad == ["a traceback"]
            if bad:
                failures.append(f"{case.name}: {'; '.join(bad)}")
    print(f"{'command':<15} {'cases':>5} {'pass':>5} {'traceback':>9}")
    for cmd, (n, ok, tb) in sorted(by_cmd.items()):
        print(f"{cmd:<15} {n:>5} {ok:>5} {tb:>9}")
    total = [sum(r[i] for r in by_cmd.values()) for i in range(3)]
    print(f"{'all':<15} {total[0]:>5} {total[1]:>5} {total[2]:>9}")
    for f in failures:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
