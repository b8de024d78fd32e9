# Two commands on a fresh machine:
#   make demo   - set up .venv (first time) and run the end-to-end demo
#   make test   - set up .venv (first time) and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trt_edge-installed

.PHONY: setup demo test test-gpu test-tensorrt test-avx2 bench typecheck clean

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

# The tests that run ONNX Runtime's int8 kernels, as on an AVX2-only CPU without VNNI (qemu-user
# CPU model; needs `apt-get install qemu-user`; emulated, so tens of minutes)
test-avx2: setup
	scripts/emulate_avx2.sh $(PY) -m pytest -q -p no:cacheprovider tests/quant/test_quant_qdq.py -k "int8_accuracy or scheme"

typecheck: setup
	$(PY) -m mypy --follow-imports=silent trt_edge/build trt_edge/runtime

bench: setup
	$(PY) benchmarks/bench_passes.py
	$(PY) benchmarks/bench_runner_threads.py

clean:
	rm -rf $(VENV) build *.egg-info .cache
