# plasticollapse: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.plasticollapse-installed

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_venv.sh
	touch $(STAMP)

demo: setup
	$(PY) -m plasticollapse demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: setup
	$(PY) benchmarks/collapse_speed.py
	$(PY) benchmarks/online_speed.py
	$(PY) benchmarks/warmstart_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
