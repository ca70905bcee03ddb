"""Weight quantisers: allowed levels, MSE behaviour, hardware encodings, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sqaccel.arith import decode_mult_weights, decode_shift_weights
from sqaccel.config import UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw.quantizers import (
    CLIP_RATIOS,
    METHODS,
    apot_magnitudes,
    make_quantizer,
    pot_magnitudes,
    uniform_magnitudes,
)
from sqaccel.sw.sq_search import search_channels, search_tensor


def laplace(shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5
    return (-torch.sign(u) * torch.log1p(-2 * u.abs()) * 0.05).to(torch.float32)


def mse(qw, w: torch.Tensor) -> float:
    return float(((qw.dequantize().double() - w.double()) ** 2).mean())


def decode_sq(qw) -> torch.Tensor:
    out = qw.out_channels
    tables = qw.step_tables()
    if not qw.per_channel:
        tables = tables.expand(out, -1)
    codes = qw.codes().reshape(out, -1).T
    return decode_shift_weights(codes, tables, qw.bits, qw.universal).T.reshape(qw.w_int.shape)


def test_level_sets() -> None:
    assert uniform_magnitudes(4) == tuple(range(8))
    assert pot_magnitudes(2) == (0, 1)
    assert pot_magnitudes(3) == (0, 1, 2, 4)
    assert pot_magnitudes(4) == (0, 1, 2, 4, 8, 16, 32, 64)
    assert apot_magnitudes(4) == (0, 1, 2, 3, 4, 6, 8, 10)  # method.md section 6
    assert np.allclose(np.array(apot_magnitudes(4)) / 10, [0, .1, .2, .3, .4, .6, .8, 1])
    assert apot_magnitudes(3) == (0, 1, 2, 4)
    assert apot_magnitudes(2) == (0, 1)
    for bits in (2, 3, 4):  # a sign and a (b-1)-bit index
        for mags in (pot_magnitudes(bits), apot_magnitudes(bits), uniform_magnitudes(bits)):
            assert len(mags) <= 1 << (bits - 1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("per_channel", [False, True])
def test_outputs_take_only_allowed_levels(method: str, bits: int, per_channel: bool) -> None:
    w = laplace((6, 5, 3, 3), seed=bits)
    qw = make_quantizer(method, bits, per_channel).quantize(w)
    assert qw.method == method and qw.bits == bits and qw.per_channel == per_channel
    assert qw.w_int.dtype == torch.int64 and qw.w_int.shape == w.shape
    assert qw.scale.dtype == torch.float64 and qw.scale.shape == (6,)
    assert (qw.scale > 0).all()
    if not per_channel:
        assert (qw.scale == qw.scale[0]).all()
    deq = qw.dequantize()
    for c in range(6):
        if method == "sq":
            subset = qw.subsets[c if per_channel else 0]
            allowed = {qw.universal.int_magnitudes[m] for m in subset}
        else:
            allowed = set(
                {"uniform": uniform_magnitudes, "pot": pot_magnitudes, "apot": apot_magnitudes}[
                    method
                ](bits)
            )
        got = set(qw.w_int[c].abs().unique().tolist())
        assert got <= allowed, (c, got, allowed)
        # dequantised values are exactly scale times an allowed integer
        levels = torch.tensor(sorted(allowed), dtype=torch.float64) * qw.scale[c]
        vals = deq[c].double().abs().reshape(-1, 1)
        assert torch.isclose(vals, levels.to(torch.float32).double().reshape(1, -1),
                             rtol=1e-6, atol=0).any(dim=1).all()
    # quantisation is sign-preserving: no weight changes sign
    assert ((qw.w_int * torch.sign(w).to(torch.int64)) >= 0).all()


def test_uniform_range_and_eight_bits() -> None:
    w = laplace((8, 64), seed=1)
    for bits in (2, 3, 4, 8):
        qw = make_quantizer("uniform", bits).quantize(w)
        assert int(qw.w_int.abs().max()) <= (1 << (bits - 1)) - 1
        assert torch.equal(decode_mult_weights(qw.codes(), bits), qw.w_int)
    assert mse(make_quantizer("uniform", 8).quantize(w), w) < mse(
        make_quantizer("uniform", 4).quantize(w), w
    )


def test_uniform_matches_a_plain_clip_search() -> None:
    w = laplace((4, 50), seed=2).double()
    qw = make_quantizer("uniform", 3).quantize(w)
    a, best = w.abs().numpy(), None
    for r in CLIP_RATIOS:
        step = r * a.max() / 3
        u = a / step
        # round half toward zero: floor(u + 0.5) unless exactly halfway
        q = np.minimum(np.where(u - np.floor(u) > 0.5, np.ceil(u), np.floor(u)), 3)
        err = float(np.mean((a - q * step) ** 2))
        if best is None or err < best[0]:
            best = (err, q * np.sign(w.numpy()), step)
    assert np.array_equal(qw.w_int.numpy(), best[1].astype(np.int64))
    assert np.allclose(qw.scale.numpy(), best[2], rtol=1e-12)
    assert qw.info["clip_ratio"] < 1.0  # the search clipped the Laplacian tail


def test_mse_search_beats_no_clipping() -> None:
    w = laplace((16, 256), seed=3)
    for method in ("uniform", "pot", "apot"):
        qw = make_quantizer(method, 3).quantize(w)
        step = float(w.abs().max()) / max(qw.info["magnitudes"])
        mags = torch.tensor(qw.info["magnitudes"], dtype=torch.float64) * step
        noclip = mags[(w.double().abs().unsqueeze(-1) - mags).abs().argmin(-1)]
        assert mse(qw, w) <= float(((noclip - w.double().abs()) ** 2).mean())


def test_sq_beats_uniform_on_laplacian() -> None:
    w = laplace((32, 128), seed=4)
    sq = mse(make_quantizer("sq", 3).quantize(w), w)
    uniform = mse(make_quantizer("uniform", 3).quantize(w), w)
    assert sq < 0.9 * uniform, (sq, uniform)


@pytest.mark.parametrize("per_channel", [False, True])
def test_sq_matches_its_search(per_channel: bool) -> None:
    w = laplace((5, 40), seed=5)
    qw = make_quantizer("sq", 4, per_channel).quantize(w)
    w64 = w.double().numpy()
    results = search_channels(w64, 4) if per_channel else [search_tensor(w64, 4)]
    assert qw.subsets == [r.members for r in results]
    u = UniversalSet()
    for c in range(5):
        r = results[c if per_channel else 0]
        top = max(u.int_magnitudes[m] for m in r.members)
        assert float(qw.scale[c]) == pytest.approx(r.max_abs * r.alpha / top, rel=1e-15)
    # the dequantised error is the search's reported error
    for c, r in enumerate(results):
        rows = w64[c] if per_channel else w64
        deq = (qw.w_int.double() * qw.scale.reshape(-1, 1)).numpy()
        deq = deq[c] if per_channel else deq
        assert np.linalg.norm(rows - deq) / r.max_abs == pytest.approx(r.l2, rel=1e-9)
    assert qw.info["candidates"] == 6435


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("per_channel", [False, True])
def test_sq_codes_and_step_tables_round_trip(bits: int, per_channel: bool) -> None:
    w = laplace((4, 3, 3, 3), seed=10 + bits)
    w[0, 0, 0, 0] = 0.0  # a zero weight codes too
    qw = make_quantizer("sq", bits, per_channel).quantize(w)
    tables = qw.step_tables()
    assert tables.shape == ((4 if per_channel else 1), 1 << (bits - 1))
    codes = qw.codes()
    assert int(codes.min()) >= 0 and int(codes.max()) < 1 << bits
    assert torch.equal(decode_sq(qw), qw.w_int)


def test_sq_non_default_universal_set() -> None:
    u = UniversalSet(((0, 1, 2), (1, 3)))
    w = laplace((3, 40), seed=6)
    for per_channel in (False, True):
        qw = make_quantizer("sq", 3, per_channel, universal=u).quantize(w)
        assert qw.universal == u
        assert torch.equal(decode_sq(qw), qw.w_int)
        assert set(qw.w_int.abs().unique().tolist()) <= set(u.int_magnitudes)


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_output_channel(method: str) -> None:
    w = laplace((3, 30), seed=7)
    w[1] = 0.0
    qw = make_quantizer(method, 3, per_channel=True).quantize(w)
    assert (qw.w_int[1] == 0).all() and float(qw.scale[1]) > 0
    assert (qw.dequantize()[1] == 0).all()
    if method == "sq":
        assert torch.equal(decode_sq(qw), qw.w_int)


def test_names() -> None:
    assert make_quantizer("sq", 4).name == "sq-w4-tensor"
    assert make_quantizer("uniform", 8, per_channel=True).name == "uniform-w8-channel"
    assert {make_quantizer(m, 3).name for m in METHODS} == {
        "uniform-w3-tensor", "pot-w3-tensor", "apot-w3-tensor", "sq-w3-tensor"
    }


@pytest.mark.parametrize(
    "w,match",
    [
        (torch.tensor([[1.0, float("nan")]]), "NaN or Inf"),
        (torch.tensor([[1.0, float("inf")]]), "NaN or Inf"),
        (torch.tensor([[-float("inf"), 2.0]]), "NaN or Inf"),
        (torch.zeros(4, 3), "all zero"),
        (torch.zeros(0, 3), "empty"),
        (torch.tensor(1.5), "scalar"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_bad_weights(w: torch.Tensor, match: str, method: str, per_channel: bool) -> None:
    q = make_quantizer(method, 3, per_channel)
    with pytest.raises(SqaccelError, match=match):
        q.quantize(w)


@pytest.mark.parametrize(
    "method,bits",
    [("sq", 1), ("sq", 5), ("sq", 8), ("pot", 8), ("apot", 8), ("apot", 1), ("uniform", 1),
     ("uniform", 5), ("uniform", 16), ("sq", 3.0), ("uniform", "4")],
)
def test_bad_bits(method: str, bits) -> None:
    with pytest.raises(SqaccelError, match="bits must be one of"):
        make_quantizer(method, bits)


def test_unknown_method_and_small_universal_set() -> None:
    with pytest.raises(SqaccelError, match="unknown quantisation method 'lsq'"):
        make_quantizer("lsq", 4)
    with pytest.raises(SqaccelError, match="fewer than the 8 levels"):
        make_quantizer("sq", 4, universal=UniversalSet(((0, 1, 2),)))
