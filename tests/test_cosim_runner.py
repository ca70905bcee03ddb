"""The cosimulation runner passes a correct design and fails a failing test."""

from pathlib import Path

import pytest

from sqaccel.sim.runner import CosimFailure, fst_supported, logs_to, read_results, run_cocotb

FIXTURES = Path(__file__).parent / "fixtures"


def _run(tmp_path: Path, offset: int, waves: bool = False):
    return run_cocotb(
        sources=[FIXTURES / "cosim_adder.v"],
        toplevel="cosim_adder",
        test_module="cosim_adder_tb",
        build_dir=tmp_path / "build",
        env={"COSIM_ADDER_OFFSET": str(offset)},
        python_path=[FIXTURES],
        waves=waves,
    )


def test_runner_passes_a_correct_design(tmp_path):
    result = _run(tmp_path, 0)
    assert [c.name for c in result.cases] == ["adds"]
    assert not result.failed


def test_runner_fails_when_a_cocotb_test_fails(tmp_path):
    with pytest.raises(CosimFailure, match=r"1 of 1 tests failed\nadds: .*got"):
        _run(tmp_path, 1)


def test_missing_results_file_is_a_failure(tmp_path):
    with pytest.raises(CosimFailure, match="no results file"):
        read_results(tmp_path / "absent.xml")


def test_waves_are_written_and_named(tmp_path, capsys):
    _run(tmp_path, 0, waves=True)
    dump = tmp_path / "build" / ("dump.fst" if fst_supported() else "dump.vcd")
    assert dump.is_file() and dump.stat().st_size > 0
    if dump.suffix == ".vcd":
        assert "cosim_adder" in dump.read_text()
    assert f"waveform: {dump}" in capsys.readouterr().err


def test_logs_go_to_files_and_a_failure_names_them(tmp_path):
    with logs_to(tmp_path / "logs"), pytest.raises(CosimFailure) as e:
        _run(tmp_path, 1)
    sim_log = tmp_path / "logs" / "cosim_adder.sim.log"
    assert f"(log: {sim_log})" in str(e.value)
    assert "adds" in sim_log.read_text() and (tmp_path / "logs" / "cosim_adder.build.log").is_file()
