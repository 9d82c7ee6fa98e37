# plasticollapse: `make demo` and `make test` are all a newcomer needs.
#
#   make demo     .venv with the package alone (torch, numpy, ...), then the quick demo
#   make test     .venv with the dev extras too (pytest, ruff, mypy, ray, submitit, pyarrow,
#                 lightning), ruff and mypy, then
#                 the whole test suite, and the engine tests again under NUMBA_CPU_NAME=generic
#   make install  the package alone, into .venv;  make setup  the package with its dev extras
#   make typecheck  mypy over src/plasticollapse (settings: [tool.mypy] in pyproject.toml)
#   make test-avalanche  the Avalanche adapter's tests, in an environment of their own
#
# Afterwards the command is .venv/bin/plasticollapse (or `source .venv/bin/activate`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per install: the package alone, and the package with its dev extras.
STAMP := $(VENV)/.plasticollapse-installed
DEV_STAMP := $(VENV)/.plasticollapse-dev-installed

.PHONY: install setup demo test test-avalanche lint format typecheck bench wheel clean

install: $(STAMP)

setup: $(DEV_STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS= bash scripts/setup_venv.sh
	touch $(STAMP)

# The dev install includes the package: it satisfies `install` too.
$(DEV_STAMP): pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS=dev bash scripts/setup_venv.sh
	touch $(DEV_STAMP) $(STAMP)

demo: install
	$(PY) -m plasticollapse demo

# The tests that run the compiled engine, once more under Numba's generic CPU target: a test
# whose verdict hung on the host's code generation (AVX-512 or not) would fail on every
# machine, not only on some (docs/reproducibility.md).
ENGINE_TESTS := tests/test_fast_engine.py tests/test_minibatch_engine.py tests/test_cbp.py tests/test_remedies.py \
	tests/test_fast_statistics.py tests/test_blas.py tests/test_full_batch.py

# CI runs `make test`: the habits that keep the code readable (ruff, mypy) run there too.
test: setup lint typecheck
	$(PY) -m pytest
	NUMBA_CPU_NAME=generic $(PY) -m pytest $(ENGINE_TESTS) -k "engine or cbp or fast or blas or full_batch"

# Avalanche needs torchvision, and PyPI's torchvision for the CPU torch of .venv is a CUDA build
# that fails to import beside it: the adapter's tests get an environment of their own, with a
# torch/torchvision pair that imports together (AVALANCHE_TORCH; on a CPU-only x86_64 machine
# this pair is a CUDA build of ~5.5 GB that runs on the CPU). `make test` skips those tests.
AVALANCHE_VENV ?= .venv-avalanche
AVALANCHE_TORCH ?= torch==2.14.1 torchvision==0.29.1

test-avalanche:
	test -x $(AVALANCHE_VENV)/bin/python || $(PYTHON) -m venv $(AVALANCHE_VENV)
	$(AVALANCHE_VENV)/bin/pip install -q $(AVALANCHE_TORCH)
	$(AVALANCHE_VENV)/bin/pip install -q -e '.[avalanche]' pytest
	$(AVALANCHE_VENV)/bin/python -m pytest tests/test_integration_avalanche.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks examples
	$(VENV)/bin/ruff format src tests benchmarks examples

# The files and options are pyproject.toml's [tool.mypy].
typecheck: setup
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/collapse_speed.py
	$(PY) benchmarks/online_speed.py
	$(PY) benchmarks/warmstart_speed.py

# A wheel in dist/, presets included (`plasticollapse demo` runs from it once installed).
wheel: install
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache
