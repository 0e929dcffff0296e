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

# System packages (root + apt): lz4 headers for `masec sim --waves` (Verilator's FST writer) and
# ccache, which masec hands to Verilator's makefile so every build reuses the compiled runtime;
# tclsh (Debian `tcl`), which runs the emitted Vivado scripts with stubbed commands in the tests;
# chromium, which renders the HTML report headless in its test.
install-system:
	@if command -v apt-get >/dev/null; then \
	  missing=""; \
	  echo '#include <lz4.h>' | cc -E -x c - >/dev/null 2>&1 || missing="$$missing liblz4-dev"; \
	  command -v ccache >/dev/null || missing="$$missing ccache"; \
	  command -v tclsh >/dev/null || missing="$$missing tcl"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    apt-get install -y -q $$missing || (apt-get update -q && apt-get install -y -q $$missing) \
	      || echo "note: could not install$$missing (optional: waves / faster builds / TCL tests)"; \
	  fi; \
	else echo "note: no apt-get; install liblz4-dev and ccache by hand for --waves and faster builds"; fi

ensure:
	@$(PYTHON) -c "import torch, cocotb, verilator, jinja2, networkx, rich, pytest, hypothesis, xdist, pyosys, masec, cocotbext.axi, fusesoc" 2>/dev/null \
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
