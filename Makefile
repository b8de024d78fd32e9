# Two commands on a fresh machine:
#   make demo   - set up .venv (first time) and run the end-to-end demo
#   make test   - set up .venv (first time) and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trt_edge-installed

.PHONY: setup demo test test-gpu test-tensorrt bench typecheck clean

setup: $(STAMP)

$(STAMP): setup.py scripts/setup_env.sh scripts/install_trt_stubs.py $(wildcard scripts/requirements/*.txt)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/trt-edge demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

test-gpu: setup
	$(PY) -m pytest -q -m gpu tests

test-tensorrt: setup
	$(PY) -m pytest -q -m tensorrt tests

typecheck: setup
	$(PY) -m mypy --follow-imports=silent trt_edge/build trt_edge/runtime

bench: setup
	$(PY) benchmarks/bench_passes.py
	$(PY) benchmarks/bench_runner_threads.py

clean:
	rm -rf $(VENV) build *.egg-info .cache
