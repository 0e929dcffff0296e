# masec developer targets. `make demo` and `make test` install what is missing first.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
OUT    ?= out/mlp
FORMAT ?= mxint8

.PHONY: install install-system ensure demo test test-slow lint bench clean

# torch first, pinned to the CPU wheel, so nothing later pulls a CUDA build.
install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[test]"

# System headers for `masec sim --waves` (Verilator's FST writer includes lz4.h). Needs root + apt.
install-system:
	@echo '#include <lz4.h>' | cc -E -x c - >/dev/null 2>&1 \
	  || (command -v apt-get >/dev/null && (apt-get install -y -q liblz4-dev || (apt-get update -q && apt-get install -y -q liblz4-dev))) \
	  || echo "note: lz4 headers missing; masec sim --waves will ask for liblz4-dev"

ensure:
	@$(PYTHON) -c "import torch, cocotb, verilator, jinja2, networkx, rich, pytest, hypothesis, xdist, masec" 2>/dev/null \
	  || $(MAKE) install

demo: ensure
	masec compile examples/mlp/model.py --format $(FORMAT) --out $(OUT) --force
	masec sim $(OUT)

test: ensure
	$(PYTHON) -m pytest -q -n 2

test-slow: ensure
	$(PYTHON) -m pytest -q -n 2 -m slow

lint: ensure
	$(PYTHON) -m pytest -q -n 2 tests/hw_templates/test_lint_all.py

bench: ensure
	$(PYTHON) bench/formats.py
	$(PYTHON) bench/kernel_resources.py

clean:
	rm -rf out build *.egg-info
