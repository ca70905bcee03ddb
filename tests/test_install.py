"""A plain (non-editable) install works from any folder: ``pip install`` of the project's
wheel into a fresh virtual environment, then ``sqaccel verilog`` and ``sqaccel export`` from
an empty folder elsewhere. They write only under that folder, and the environment's
site-packages is byte for byte what the install left.

The fresh environment gets the project's dependencies from this one (a ``.pth`` line):
nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_COPY = shutil.ignore_patterns(".venv", "build", ".git", "__pycache__", "*.egg-info",
                                   ".pytest_cache", ".ruff_cache", "sim_build")


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(base / "wheel"), str(src)], base)
    (wheel,) = (base / "wheel").glob("sqaccel-*.whl")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], base)
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    base).stdout.strip())
    # The dependencies come from this environment; its own sqaccel (an editable install, a
    # finder that a plain path entry does not load) stays out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(py), "-m", "pip", "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)], base)
    return venv, site, src


def test_plain_install_runs_from_another_folder(installed, tmp_path):
    venv, site, src = installed
    sqaccel = venv / "bin" / "sqaccel"
    where = run([str(venv / "bin" / "python"), "-c", "import sqaccel; print(sqaccel.__file__)"],
                tmp_path).stdout.strip()
    assert Path(where).is_relative_to(site)  # the installed copy, not the source tree
    before_site, before_src = snapshot(site), snapshot(src)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQACCEL_")}
    env.pop("YOWASP_CACHE_DIR", None)
    run([str(sqaccel), "verilog", "--out", "v"], work, env)
    run([str(sqaccel), "export", "--out", "img"], work, env)
    run([str(sqaccel), "verify-images", "img"], work, env)
    # Everything written is under the working folder; the install and the source are
    # untouched.
    # (export loads the committed weights from the install: no model cache is written)
    assert {p.parts[0] for p in (Path(f) for f in snapshot(work))} == {"v", "img"}
    assert (work / "v" / "sqaccel_top.v").is_file()
    assert (work / "img" / "manifest.json").is_file()
    assert snapshot(site) == before_site
    assert snapshot(src) == before_src
    # The package data is there: the board's pin file, the lint waivers, the weights.
    pins = run([str(venv / "bin" / "python"), "-c",
                "from sqaccel.hw.board import ULX3S; from sqaccel.hw.verilog import WAIVERS;"
                "from sqaccel.sw.zoo import ZOO, verified_weights;"
                "print(ULX3S.constraints.is_file(), WAIVERS.is_file(),"
                " all(verified_weights(n).is_file() for n in ZOO))"], work).stdout
    assert pins.split() == ["True", "True", "True"]
