"""The cosimulation's comparisons fail when they must: a wrong expected word, a wrong step
table given to the model or a wrong weight decoding makes the run raise CosimFailure naming
the layer (or GEMM, or PE), the output index, the expected and the actual value."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from sqaccel import abi
from sqaccel.config import AccelConfig
from sqaccel.sim import checker, gemm_level, network_level, pe_level
from sqaccel.sim.runner import CosimFailure
from sqaccel.sw import images

# -- the checker alone ---------------------------------------------------------------------


def test_result_words_round_trip():
    cfg = AccelConfig(rows=2, cols=4)
    y = torch.randint(-(1 << 20), 1 << 20, (5, 7))
    words = abi.result_words(y, cfg)
    assert torch.equal(checker.results_to_matrix(words, 5, 7, cfg), y)
    assert checker.result_mismatches(y, words, cfg) == ([], len(words) * cfg.cols)


def test_a_wrong_lane_is_named_by_its_output_index():
    cfg = AccelConfig(rows=2, cols=4)
    y = torch.arange(5 * 7).reshape(5, 7) - 9
    words = abi.result_words(y, cfg)
    # word 5*1 + 3 is column tile 1, row 3; lane 2 is column 6.
    bad = list(words)
    bad[8] ^= 1 << (2 * cfg.acc_bits)
    mism, total = checker.result_mismatches(y, bad, cfg, row_offset=100)
    assert total == 10 * 4 and len(mism) == 1
    want = int(y[3, 6])
    assert mism[0] == checker.Mismatch("m=103, n=6", want, want ^ 1, "word 8, lane 2")
    msg = checker.report("layer 'x'", mism, total)
    assert "layer 'x': 1 of 40 output values differ" in msg
    assert f"output [m=103, n=6] (word 8, lane 2): expected {want}, got {want ^ 1}" in msg


def test_padding_lanes_and_word_counts_are_checked():
    cfg = AccelConfig(rows=2, cols=4)
    y = torch.ones(3, 5, dtype=torch.int64)
    words = abi.result_words(y, cfg)
    bad = list(words)
    bad[4] |= 1 << (3 * cfg.acc_bits)  # column tile 1, lane 3 = column 7 >= N
    mism, _ = checker.result_mismatches(y, bad, cfg)
    assert [m.index for m in mism] == ["m=1, n=7 (padding lane)"]
    mism, _ = checker.result_mismatches(y, words[:-1], cfg)
    assert mism[0].index == "result word count" and (mism[0].expected, mism[0].actual) == (6, 5)
    with pytest.raises(checker.CheckFailure, match="5 result words, a 3x5 output has 6"):
        checker.results_to_matrix(words[:-1], 3, 5, cfg)


def test_tensor_and_trace_checks():
    a = torch.zeros(2, 3, 4, dtype=torch.int64)
    b = a.clone()
    b[1, 2, 3] = -5
    with pytest.raises(checker.CheckFailure, match=r"step 'pool': 1 of 24 .*\n  output "
                       r"\[1, 2, 3\]: expected 0, got -5"):
        checker.check_tensor("step 'pool'", a, b)
    with pytest.raises(checker.CheckFailure, match="shape"):
        checker.check_tensor("step 'pool'", a, b[0])
    mism = checker.trace_mismatches([1, 2, 3], [1, 2, 4])
    assert mism == [checker.Mismatch("cycle 2", 3, 4)]
    # Cycles before ``start`` (an accumulator not yet loaded) are not compared.
    assert checker.trace_mismatches([9, 2, 3], [1, 2, 4], start=1) == mism
    many = [checker.Mismatch(f"cycle {i}", i, i + 1) for i in range(20)]
    assert f"... and {20 - checker.REPORT_LIMIT} more" in checker.report("PE 0", many, 20)


# -- the checker inside a cosimulation -----------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return network_level.network_images("digits")


def test_a_corrupted_expected_word_fails_naming_layer_index_and_values(digits):
    x = images.reference_inputs(images.load(digits))[:1]
    (lr,) = network_level.layer_runs(digits, ["2"], x)
    m_idx, n_idx = 37, 21
    true = int(lr.expected[m_idx, n_idx])
    wrong = lr.expected.clone()
    wrong[m_idx, n_idx] = true + 1 if true < lr.cfg.act_max else true - 1
    with pytest.raises(CosimFailure) as info:
        network_level.run_layer_runs([dataclasses.replace(lr, expected=wrong)], seed=1)
    msg = str(info.value)
    print(msg)
    assert "layer '2'" in msg and "1 of" in msg
    assert re.search(rf"output \[m={m_idx}, n={n_idx}\] \(word \d+, lane \d+\): expected "
                     rf"{int(wrong[m_idx, n_idx])}, got {true}", msg)


def test_a_wrong_step_table_given_to_the_model_fails(digits):
    """The RTL gets the true tables, the model one changed entry: the outputs that use that
    entry differ, and the report names them."""
    cfg = images.load(digits).network.cfg
    cases = gemm_level.random_gemm_cases(cfg, 3, seed=5)
    name, g = cases[0]
    assert g.tables is not None
    model_g = dataclasses.replace(g, tables=g.tables.clone())
    col = 0
    index = int(g.codes[0, col]) & (cfg.levels - 1)  # the entry row k=0 of column 0 uses
    u = cfg.universal
    old = int(g.tables[col, index])
    model_g.tables[col, index] = next(u.step_entry(i) for i in range(u.size)
                                      if u.step_entry(i) != old)
    expected = [model_g.output(cfg)] + [h.output(cfg) for _, h in cases[1:]]
    assert not torch.equal(expected[0], g.output(cfg))
    with pytest.raises(CosimFailure) as info:
        gemm_level.run_gemms(cfg, cases, seed=1, expected=expected)
    msg = str(info.value)
    print(msg)
    assert "1 of 3 commands differ" in msg and name in msg
    truth = g.output(cfg)
    bad = torch.nonzero(expected[0] != truth)
    r, c = (int(v) for v in bad[0])
    assert f"output [m={r}, n={c}]" in msg
    assert f"expected {int(expected[0][r, c])}, got {int(truth[r, c])}" in msg


def test_a_wrong_weight_decoding_in_the_pe_model_fails():
    cfg = pe_level.PE_BENCH_CONFIGS[4]
    with pytest.raises(CosimFailure) as info:
        pe_level.run_pe(2000, seed=3, model_offset={"pe": 4, "operand": 3, "delta": 1})
    msg = str(info.value)
    print(msg)
    assert f"PE 4 ({pe_level.pe_label(cfg)})" in msg
    assert re.search(r"output \[cycle \d+\]: expected -?\d+, got -?\d+", msg)
