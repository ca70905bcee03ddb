"""The cosimulation runner passes a correct design and fails a failing test."""

from pathlib import Path

import pytest

from sqaccel.sim.runner import CosimFailure, read_results, run_cocotb

FIXTURES = Path(__file__).parent / "fixtures"


def _run(tmp_path: Path, offset: int):
    return run_cocotb(
        sources=[FIXTURES / "cosim_adder.v"],
        toplevel="cosim_adder",
        test_module="cosim_adder_tb",
        build_dir=tmp_path / "build",
        env={"COSIM_ADDER_OFFSET": str(offset)},
        python_path=[FIXTURES],
        waves=False,
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
