# `make run` and `make test` are all a new user needs; both create the environment first.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.forgetless-installed

.PHONY: setup run test test-fast bench lint clean

setup: $(STAMP)

# torch goes in first from TORCH_SPEC, so the package's own `torch>=2.1` is already satisfied and pip
# never pulls a second (CUDA) build. The stamp makes setup idempotent; editing pyproject.toml re-runs it.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,ray,tensorboard]"
	touch $(STAMP)

run: setup
	$(VENV)/bin/forgetless compare --benchmark split-digits --scenario class \
		--methods finetune,ewc,lwf,replay,icarl,joint --seeds 0,1,2 --jobs 2 --out runs/demo --overwrite

test: setup
	$(PY) -m pytest

# the unit tests only: no real-MNIST integration test (about a third of the suite's time)
test-fast: setup
	$(PY) -m pytest -m "not mnist"

bench: setup
	$(PY) bench/run_bench.py

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) runs build src/*.egg-info
