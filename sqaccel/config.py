"""The one configuration object of the project.

The generator (``sqaccel.hw``), the golden model (``sqaccel.sw``) and the testbenches
(``sqaccel.sim``) all read widths, tables and shift sets from here; nothing below repeats
them. ``docs/arithmetic.md`` is the prose form of what this module computes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from sqaccel.errors import SqaccelError

SUPPORTED_ACT_BITS = (4, 8)
SUPPORTED_WEIGHT_BITS = (2, 3, 4)
PE_KINDS = ("shift", "mult")
STEP_TABLE_MODES = ("layer", "channel")

# Requantisation multiplier and shift widths (docs/arithmetic.md, "Requantisation").
REQUANT_M_BITS = 16
REQUANT_S_BITS = 6
REQUANT_S_MIN = 1
REQUANT_S_MAX = (1 << REQUANT_S_BITS) - 1


# The largest value of every size, checked before any work (docs/commands.md, "Limits"):
# beyond them generation takes minutes and gigabytes, or no FPGA the flow targets holds
# the result.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "rows": (1, 32),
    "cols": (1, 32),
    "k_max": (1, 1 << 16),
    "act_depth": (1, 1 << 20),
    "weight_depth": (1, 1 << 20),
    "n_max": (1, 4096),
}
# The universal set: terms, exponents per term, the largest exponent.
MAX_TERMS = 4
MAX_TERM_EXPONENTS = 8
MAX_EXPONENT = 15
CONFIG_FIELDS = ("rows", "cols", "act_bits", "weight_bits", "k_max", "pe", "mult_cols",
                 "step_tables", "universal", "act_depth", "weight_depth", "n_max")


class ConfigError(SqaccelError):
    """A configuration the toolchain or the hardware cannot honour."""


def _shown(v) -> str:
    """A value and its JSON type, for messages: ``True (a boolean)``, ``'8' (a string)``."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", tuple: "a list", dict: "an object", type(None): "null"}
    return f"{v!r} ({kind.get(type(v), type(v).__name__)})"


def is_int(v) -> bool:
    """A true integer: not a boolean, not a float that happens to be whole."""
    return type(v) is int


@dataclass(frozen=True)
class UniversalSet:
    """The universal set U of SQ magnitudes, as one exponent set per term.

    A magnitude is ``sum_t 2**-e_t / T`` with ``e_t`` drawn from ``exponents[t]`` or absent
    (the term is off). The default is the paper's set: T = 2, {0, 1, 3} and {0, 2, 4},
    which gives 15 distinct magnitudes.
    """

    exponents: tuple[tuple[int, ...], ...] = ((0, 1, 3), (0, 2, 4))

    def __post_init__(self) -> None:
        where = "config: universal.exponents"
        if not isinstance(self.exponents, tuple | list) or not self.exponents:
            raise ConfigError(f"{where} must be a list of 1 to {MAX_TERMS} terms, got "
                              f"{_shown(self.exponents)}")
        if len(self.exponents) > MAX_TERMS:
            raise ConfigError(f"{where}: {len(self.exponents)} terms, at most {MAX_TERMS}")
        for t, exps in enumerate(self.exponents):
            if not isinstance(exps, tuple | list) or not exps:
                raise ConfigError(f"{where}: term {t} must be a list of 1 to "
                                  f"{MAX_TERM_EXPONENTS} exponents, got {_shown(exps)}")
            if len(exps) > MAX_TERM_EXPONENTS:
                raise ConfigError(f"{where}: term {t} has {len(exps)} exponents, at most "
                                  f"{MAX_TERM_EXPONENTS}")
            for e in exps:
                if not is_int(e) or not 0 <= e <= MAX_EXPONENT:
                    raise ConfigError(f"{where}: term {t}: an exponent must be an integer in "
                                      f"0..{MAX_EXPONENT}, got {_shown(e)}")
            if len(set(exps)) != len(exps):
                raise ConfigError(f"universal set: term {t} repeats an exponent: {exps}")

    @property
    def terms(self) -> int:
        return len(self.exponents)

    @cached_property
    def max_exponent(self) -> int:
        return max(max(e) for e in self.exponents)

    @cached_property
    def shift_sets(self) -> tuple[tuple[int, ...], ...]:
        """Left-shift amounts per term: exponent e becomes shift ``max_exponent - e``."""
        return tuple(tuple(self.max_exponent - e for e in exps) for exps in self.exponents)

    @cached_property
    def selector_bits(self) -> tuple[int, ...]:
        """Bits of each term's selector; selector value ``len(set)`` means the term is off."""
        return tuple(max(1, math.ceil(math.log2(len(s) + 1))) for s in self.shift_sets)

    @cached_property
    def scale(self) -> int:
        """Integer magnitude = real magnitude * scale (32 for the default set)."""
        return self.terms * (1 << self.max_exponent)

    @cached_property
    def _members(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        # Generation order: term 0 major, the last term minor, each term's exponents in the
        # order given and "off" last; the first occurrence of a value keeps its selectors.
        # That order is the candidate pool's order and so decides ties in the search.
        seen: dict[int, tuple[int, ...]] = {}
        choices = [list(range(len(s) + 1)) for s in self.shift_sets]

        def walk(t: int, sel: tuple[int, ...]) -> None:
            if t == self.terms:
                value = sum(
                    1 << self.shift_sets[i][s]
                    for i, s in enumerate(sel)
                    if s < len(self.shift_sets[i])
                )
                seen.setdefault(value, sel)
                return
            for s in choices[t]:
                walk(t + 1, sel + (s,))

        walk(0, ())
        return tuple(seen.items())

    @cached_property
    def int_magnitudes(self) -> tuple[int, ...]:
        """The members as integers (real magnitude * ``scale``), in generation order."""
        return tuple(v for v, _ in self._members)

    @cached_property
    def selectors(self) -> tuple[tuple[int, ...], ...]:
        """Per member, the shift selector of each term (``len(set)`` = off)."""
        return tuple(s for _, s in self._members)

    @cached_property
    def magnitudes(self) -> tuple[float, ...]:
        """The members as real magnitudes in [0, 1], in generation order."""
        return tuple(v / self.scale for v in self.int_magnitudes)

    @property
    def size(self) -> int:
        return len(self._members)

    @cached_property
    def max_int_magnitude(self) -> int:
        return max(self.int_magnitudes)

    @cached_property
    def step_entry_bits(self) -> int:
        return sum(self.selector_bits)

    def step_entry(self, member: int) -> int:
        """The step-table word of universal-set member ``member``: term 0 in the low bits."""
        word, pos = 0, 0
        for sel, bits in zip(self.selectors[member], self.selector_bits, strict=True):
            word |= sel << pos
            pos += bits
        return word

    def decode_step_entry(self, word: int) -> int:
        """Integer magnitude selected by a step-table word; refuses a selector out of range."""
        value, pos = 0, 0
        for t, bits in enumerate(self.selector_bits):
            sel = (word >> pos) & ((1 << bits) - 1)
            pos += bits
            if sel > len(self.shift_sets[t]):
                raise ConfigError(
                    f"step entry {word:#x}: term {t} selector {sel} is outside its shift set "
                    f"{self.shift_sets[t]} (+off)"
                )
            if sel < len(self.shift_sets[t]):
                value += 1 << self.shift_sets[t][sel]
        if word >> pos:
            raise ConfigError(f"step entry {word:#x} is wider than {pos} bits")
        return value

    def to_dict(self) -> dict:
        return {"exponents": [list(e) for e in self.exponents]}

    @classmethod
    def from_dict(cls, d) -> UniversalSet:
        if not isinstance(d, dict) or set(d) != {"exponents"}:
            raise ConfigError(f"config: universal must be an object with one key, "
                              f"'exponents', got {_shown(d)}")
        exps = d["exponents"]
        if isinstance(exps, list) and all(isinstance(e, list) for e in exps):
            exps = tuple(tuple(e) for e in exps)
        return cls(exps)


def bits_for_unsigned(value: int) -> int:
    return max(1, int(value).bit_length())


@dataclass(frozen=True)
class AccelConfig:
    """Array shape, arithmetic widths and buffer sizes of one accelerator build."""

    rows: int = 8
    cols: int = 8
    act_bits: int = 8
    weight_bits: int = 4
    k_max: int = 1024
    pe: str = "shift"
    # Shift-add arrays only: columns 0..mult_cols-1 multiply the decoded SQ magnitude in a
    # multiplier (a DSP block) instead of shifting; the images and results do not change.
    mult_cols: int = 0
    step_tables: str = "channel"
    universal: UniversalSet = field(default_factory=UniversalSet)
    # Buffer depths, in words (see docs/arithmetic.md, "Memory images").
    act_depth: int = 4096
    weight_depth: int = 4096
    n_max: int = 256

    def __post_init__(self) -> None:
        # The schema: every field's type and range; the message names the field, the value
        # and what is allowed.
        for name, (lo, hi) in SIZE_LIMITS.items():
            v = getattr(self, name)
            if not is_int(v) or not lo <= v <= hi:
                raise ConfigError(f"config: {name} must be an integer in {lo}..{hi}, got "
                                  f"{_shown(v)}")
        for name, allowed in (("act_bits", SUPPORTED_ACT_BITS),
                              ("weight_bits", SUPPORTED_WEIGHT_BITS)):
            v = getattr(self, name)
            if not is_int(v) or v not in allowed:
                raise ConfigError(f"config: {name} must be one of "
                                  f"{', '.join(map(str, allowed))}, got {_shown(v)}")
        for name, allowed in (("pe", PE_KINDS), ("step_tables", STEP_TABLE_MODES)):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in allowed:
                raise ConfigError(f"config: {name} must be one of "
                                  f"{', '.join(repr(a) for a in allowed)}, got {_shown(v)}")
        if not is_int(self.mult_cols) or not 0 <= self.mult_cols <= self.cols:
            raise ConfigError(f"config: mult_cols must be an integer in 0..cols "
                              f"(0..{self.cols}), got {_shown(self.mult_cols)}")
        if self.mult_cols and self.pe != "shift":
            raise ConfigError(f"config: mult_cols applies to the shift-add array (pe 'shift'), "
                              f"not pe {self.pe!r}; got mult_cols {self.mult_cols}")
        if not isinstance(self.universal, UniversalSet):
            raise ConfigError(f"config: universal must be a universal set, got "
                              f"{_shown(self.universal)}")
        if self.universal.size < self.levels:
            raise ConfigError(
                f"config: the universal set has {self.universal.size} magnitudes, fewer than "
                f"the {self.levels} levels of {self.weight_bits}-bit weights"
            )

    # -- weights -----------------------------------------------------------------------
    @property
    def levels(self) -> int:
        """Step-table entries per table: 2**(b-1)."""
        return 1 << (self.weight_bits - 1)

    @property
    def index_bits(self) -> int:
        return self.weight_bits - 1

    @property
    def max_weight_int(self) -> int:
        """Largest |integer weight| either PE kind can present to the accumulator."""
        # A two's-complement b-bit code reaches -2**(b-1).
        uniform = 1 << (self.weight_bits - 1)
        return max(self.universal.max_int_magnitude, uniform)

    # -- activations and accumulator ---------------------------------------------------
    @property
    def act_max(self) -> int:
        return (1 << self.act_bits) - 1

    @property
    def max_abs_sum(self) -> int:
        """Largest |sum of K_max products|."""
        return self.k_max * self.act_max * self.max_weight_int

    @property
    def bias_max(self) -> int:
        """Bias magnitude limit: as large as the largest sum of products."""
        return self.max_abs_sum

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: |bias| + |sum| <= 2 * max_abs_sum, plus the sign."""
        return bits_for_unsigned(self.max_abs_sum + self.bias_max) + 1

    @property
    def requant_m_bits(self) -> int:
        return REQUANT_M_BITS

    @property
    def requant_s_bits(self) -> int:
        return REQUANT_S_BITS

    def with_changes(self, **changes) -> AccelConfig:
        """A copy with ``changes`` (field -> value), validated like any config."""
        if not changes:
            return self
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as e:
            raise ConfigError(f"config: {e}") from None

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["universal"] = self.universal.to_dict()
        d["derived"] = {
            "levels": self.levels,
            "acc_bits": self.acc_bits,
            "step_entry_bits": self.universal.step_entry_bits,
            "universal_int_magnitudes": list(self.universal.int_magnitudes),
            "universal_scale": self.universal.scale,
            "shift_sets": [list(s) for s in self.universal.shift_sets],
            "requant_m_bits": REQUANT_M_BITS,
            "requant_s_bits": REQUANT_S_BITS,
        }
        return d

    @classmethod
    def from_dict(cls, d) -> AccelConfig:
        """A config from its JSON form: an object of the fields (any may be left out), and
        ``derived`` (written by ``to_dict``, ignored on reading). Unknown keys are refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"config: must be a JSON object of fields, got {_shown(d)}")
        unknown = sorted(set(d) - set(CONFIG_FIELDS) - {"derived"})
        if unknown:
            raise ConfigError(f"config: unknown key {unknown[0]!r} (the fields are "
                              f"{', '.join(CONFIG_FIELDS)})")
        d = {k: v for k, v in d.items() if k != "derived"}
        if "universal" in d:
            d["universal"] = UniversalSet.from_dict(d["universal"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> AccelConfig:
        path = Path(path)
        d = read_json_file(path, "config file", ConfigError)
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def name(self) -> str:
        return (
            f"{self.rows}x{self.cols}_a{self.act_bits}_w{self.weight_bits}_{self.pe}"
            + (f"{self.mult_cols}m" if self.mult_cols else "") + f"_k{self.k_max}"
        )


def read_json_file(path: Path, what: str, error: type[Exception] = ConfigError):
    """The JSON in ``path``; a missing, unreadable or malformed file is one ``error`` that
    names the file and says ``what`` it should have been."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not a {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
