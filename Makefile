# Everything a fresh clone needs: `make example`, `make test`.
# Needs python3 (3.11+) and a Rust toolchain; Postgres is found or embedded.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed

.PHONY: example test lint build build-release bench clean

example: build
	$(PY) examples/nested_etl.py

# Engine tests (cargo) and Python tests (pytest), in one fresh database.
test: build
	$(PY) tests/_testdb.py sh -c 'cargo test --quiet && $(PY) -m pytest -q'

lint: build
	cargo clippy --all-targets --quiet -- -D warnings
	cargo clippy --all-targets --features python --quiet -- -D warnings
	cargo fmt --check
	$(PY) -m mypy
	$(PY) -m mypy.stubtest durable._core

build: $(STAMP)
	$(VENV)/bin/maturin develop --quiet

build-release: $(STAMP)
	$(VENV)/bin/maturin develop --quiet --release

bench: build-release
	$(PY) bench/steps.py
	$(PY) bench/queue.py

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --group dev
	touch $(STAMP)

clean:
	rm -rf $(VENV) target
