# Two commands do all the set-up on a fresh machine (README.md):
#   make run    creates .venv if missing, installs reactor, runs `reactor serve configs/node.yaml`
#   make test   creates .venv if missing, installs with test extras, runs ruff, mypy and the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/node.yaml
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit bench test-kernel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/reactor serve $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check reactor controllers tests benchmarks .ci
	$(BIN)/ruff format --check reactor controllers tests benchmarks .ci

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# pytest exits 5 when it collects no tests: that is a failure here, a lane with
# no tests is a lane that checks nothing.
unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit tests/host $(PYTEST_ARGS)

test: lint typecheck unit

# The real-kernel lane (docs/kernel-lane.md): boots Debian's current DAMON kernel under
# qemu and runs tests/kernel inside it. Needs root and network on the first run.
KERNEL_PYTEST_ARGS ?=
test-kernel: $(VENV)/.installed-test
	$(BIN)/python .ci/kernel_lane.py run -- $(KERNEL_PYTEST_ARGS)

# Host benchmarks; each writes benchmarks/results/<name>.json and prints one summary line.
# Guest-only benchmarks (sampler_vs_damon, tiering, reclaim, damon_snapshot) run inside
# make test-kernel.
HOST_BENCHMARKS ?= controllers signals sampler daemon
bench: $(VENV)/.installed-test
	@set -e; for name in $(HOST_BENCHMARKS); do $(BIN)/python -m benchmarks.$$name; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
