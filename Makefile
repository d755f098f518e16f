# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := .venv-bench
PYTEST_ARGS ?=

.PHONY: setup demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark environment: smartset plus the peer libraries it is measured against.
# The peers are never runtime dependencies of smartset.
$(BENCH_VENV)/.installed: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[torch]' -r benchmarks/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	@set -e; for script in benchmarks/[!_]*.py; do \
		echo "== $$script"; $(BENCH_VENV)/bin/python $$script; done

bench-quick: $(BENCH_VENV)/.installed
	@set -e; for script in benchmarks/[!_]*.py; do \
		echo "== $$script --quick"; $(BENCH_VENV)/bin/python $$script --quick; done

clean:
	rm -rf demo-workspace .pytest_cache
