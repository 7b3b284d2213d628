# Two entry points (see README.md):
#   make serve  -- set everything up and run the daemon on embedded defaults
#   make test   -- set everything up and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup serve test bench clean

$(BIN)/stembridge: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# constraints.txt pins torch so pip never swaps in a multi-GB CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/stembridge

serve: setup
	$(BIN)/stembridge serve

test: setup
	./scripts/install-system-deps.sh
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/bench_separation.py

clean:
	rm -rf $(VENV) *.egg-info
