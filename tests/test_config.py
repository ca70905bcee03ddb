"""The one config object: the universal set, its integers and step words, derived widths."""

import json

import pytest

from sqaccel.arith import choose_requant, off_entry
from sqaccel.config import AccelConfig, ConfigError, UniversalSet


def test_default_universal_set_is_the_papers():
    u = UniversalSet()
    assert u.size == 15
    # method.md section 2, in generation order (term 1 major, off last, first occurrence).
    assert u.int_magnitudes == (32, 20, 17, 16, 24, 12, 9, 8, 18, 6, 3, 2, 4, 1, 0)
    assert sorted(u.magnitudes, reverse=True) == [
        1, 3 / 4, 5 / 8, 9 / 16, 17 / 32, 1 / 2, 3 / 8, 9 / 32, 1 / 4, 3 / 16, 1 / 8,
        3 / 32, 1 / 16, 1 / 32, 0,
    ]
    assert u.shift_sets == ((4, 3, 1), (4, 2, 0))
    assert u.scale == 32
    assert u.step_entry_bits == 4


def test_step_words_decode_to_their_magnitudes():
    u = UniversalSet()
    for member, value in enumerate(u.int_magnitudes):
        assert u.decode_step_entry(u.step_entry(member)) == value
    assert u.decode_step_entry(off_entry(u)) == 0


def test_non_default_universal_set():
    u = UniversalSet(((0, 1, 2, 3, 4),))
    assert u.terms == 1 and u.scale == 16
    assert u.int_magnitudes == (16, 8, 4, 2, 1, 0)
    assert u.selector_bits == (3,)
    for member, value in enumerate(u.int_magnitudes):
        assert u.decode_step_entry(u.step_entry(member)) == value
    with pytest.raises(ConfigError, match="selector 6 is outside"):
        u.decode_step_entry(6)


@pytest.mark.parametrize("bad", [
    dict(rows=0), dict(cols=-1), dict(act_bits=6), dict(weight_bits=5), dict(pe="dsp"),
    dict(step_tables="row"), dict(k_max=0),
])
def test_impossible_configs_are_refused(bad):
    with pytest.raises(ConfigError, match="config: "):
        AccelConfig(**bad)


def test_accumulator_width_covers_the_worst_case():
    for a in (4, 8):
        for b in (2, 3, 4):
            cfg = AccelConfig(act_bits=a, weight_bits=b, k_max=1024)
            worst = cfg.k_max * cfg.act_max * cfg.max_weight_int + cfg.bias_max
            assert worst <= 2 ** (cfg.acc_bits - 1) - 1
    assert AccelConfig().acc_bits == 25


def test_config_round_trips_through_json(tmp_path):
    cfg = AccelConfig(rows=4, cols=2, act_bits=4, weight_bits=3, pe="mult")
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert AccelConfig.load(path) == cfg
    assert json.loads(path.read_text())["derived"]["acc_bits"] == cfg.acc_bits
    with pytest.raises(ConfigError, match="not found"):
        AccelConfig.load(tmp_path / "absent.json")


@pytest.mark.parametrize("scale", [1e-6, 3.3e-3, 0.5, 0.999999, 1.0, 7.25, 1234.5])
def test_requant_multiplier_is_within_contract(scale):
    m, s = choose_requant(scale)
    assert 2**15 <= m < 2**16 and 1 <= s <= 63
    assert abs(m / 2**s - scale) / scale <= 2**-16


def test_requant_multiplier_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="outside 1..63"):
        choose_requant(1e30)
    with pytest.raises(ConfigError, match="finite and > 0"):
        choose_requant(float("nan"))
