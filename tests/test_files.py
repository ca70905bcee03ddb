"""The one atomic writer: complete files and folders or none, the old output kept until the
new one is in place, modes from the umask; a shared build folder used by one process at a
time."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from sqaccel import files


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(saved)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_files_and_folders_follow_the_umask(tmp_path, umask):
    for mask, fmode, dmode in ((0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                               (0o002, 0o664, 0o775)):
        umask(mask)
        f = files.write_text(tmp_path / f"f{mask:o}.txt", "x")
        assert mode(f) == fmode
        with files.staged_folder(tmp_path / f"d{mask:o}", "test") as d:
            (d / "a").write_text("a")
        assert mode(tmp_path / f"d{mask:o}") == dmode
        assert mode(tmp_path / f"d{mask:o}" / "a") == fmode


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    f = files.write_text(tmp_path / "out.json", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_with(f, broken)
    assert f.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_an_interrupted_folder_keeps_the_old_one(tmp_path):
    out = tmp_path / "out"
    with files.staged_folder(out, "test") as d:
        (d / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), files.staged_folder(out, "test") as d:
        (d / "a").write_text("new")
        raise KeyboardInterrupt
    assert (out / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with files.staged_folder(out, "test") as d:
        (d / "b").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [files.MARKER, "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_if_changed_keeps_the_time_stamp(tmp_path):
    f = files.write_text(tmp_path / "v.v", "module m; endmodule\n")
    os.utime(f, (1_000_000, 1_000_000))
    files.write_if_changed(f, "module m; endmodule\n")
    assert os.stat(f).st_mtime == 1_000_000
    files.write_if_changed(f, "module n; endmodule\n")
    assert os.stat(f).st_mtime != 1_000_000 and "n;" in f.read_text()


def test_only_a_folder_the_toolchain_wrote_is_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(files.OutputError, match="mine: a folder sqaccel did not write"):
        with files.staged_folder(mine, "images") as d:
            (d / "a").write_text("a")
    with files.staged_folder(tmp_path / "out", "images") as d:
        (d / "a").write_text("a")
    with pytest.raises(files.OutputError, match="holds sqaccel's images output, not verilog"):
        files.check_replaceable(tmp_path / "out", "verilog")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(files.OutputError, match="holds 'notes.txt'"):
        files.check_replaceable(tmp_path / "out", "images")
    files.check_replaceable(tmp_path / "out", "images", force=True)
    with pytest.raises(files.OutputError, match="inside the input"):
        files.check_outside(tmp_path / "out" / "v", {"--images": tmp_path / "out"})
    assert (mine / "thesis.tex").read_text() == "years of work"


HOLD = """
import sys
from pathlib import Path
from sqaccel import files
with files.exclusive(Path(sys.argv[1])):
    print("inside", flush=True)
"""


def test_a_second_process_waits_for_the_build_folder(tmp_path):
    build = tmp_path / "accel-8x8"
    with files.exclusive(build):
        other = subprocess.Popen([sys.executable, "-c", HOLD, str(build)],
                                 stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=3)  # blocked while this process holds the folder
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out == "inside\n"
    assert [p.name for p in tmp_path.iterdir()] == [".accel-8x8.lock"]  # nothing else made
