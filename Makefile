# Everything a fresh clone needs: `make example`, `make test`, `make test-all`.
# Needs python3 (3.11+) and a Rust toolchain; Postgres is found or embedded.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed

WHEEL_STAMP := $(VENV)/.wheel-deps-installed
# maturin finds zig as `python3 -m ziglang`, with the python3 on PATH: the venv's.
WITH_VENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

.PHONY: example test test-rest test-all browser lint build build-release bench bench-suite wheel wheel-aarch64 wheel-check clean

example: build
	$(PY) examples/nested_etl.py

# The tiers (markers in pyproject.toml). The fast tier, `make test`: the
# engine's tests (cargo) and every Python test (pytest) not marked slow
# (storms, soaks, own Postgres clusters, long crash tests), browser or timing
# (a wall-clock bound a busy machine can miss). `make test-rest` runs just
# those; `make test-all` both. Each run has a fresh database of its own.
FAST := not slow and not browser and not timing

test: build
	$(PY) tests/_testdb.py sh -c 'cargo test --quiet && $(PY) -m pytest -q -m "$(FAST)"'

test-rest: build browser
	$(PY) tests/_testdb.py $(PY) -m pytest -q -m "not ($(FAST))"

test-all: test test-rest

# The browser tests (tests/test_ui.py) drive Debian's chromium through
# Playwright: installed here when it is missing and this can (root, apt-get);
# else those tests skip, saying why.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt-get) for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium: the browser tests will skip"; \
	fi

# The engine knows nothing of Python: it builds without the python feature
# (the first clippy), and no engine file names pyo3 or that feature.
lint: build
	@! grep -rnE 'pyo3|feature *= *"python"' rust/engine || { echo "rust/engine must not use pyo3 or the python feature"; exit 1; }
	cargo clippy --all-targets --quiet -- -D warnings
	cargo clippy --all-targets --features python --quiet -- -D warnings
	cargo fmt --check
	$(PY) -m mypy
	$(PY) -m mypy.stubtest durable._core

# The extension is python/durable/_core.abi3.so. An older build's
# _core.cpython-*.so would be imported before it: removed first.
build: $(STAMP)
	rm -f python/durable/_core.cpython-*.so
	$(VENV)/bin/maturin develop --quiet

build-release: $(STAMP)
	rm -f python/durable/_core.cpython-*.so
	$(VENV)/bin/maturin develop --quiet --release

bench: build-release
	$(PY) bench/steps.py
	$(PY) bench/queued.py

# The side-by-side suite (doc/performance.md): durable against DBOS, awa-pg and
# raw asyncpg on one Postgres; installs the peers itself, in bench/.venv-peers.
# Options through SUITE, e.g. make bench-suite SUITE="--quick --runs 1" or
# SUITE="--only W3,W4 --runs 3".
SUITE ?=
bench-suite: build-release
	$(PY) bench/suite.py $(SUITE)

# The release wheel and the sdist, into dist/: one abi3 wheel (cp311-abi3, for
# every CPython >= 3.11) tagged manylinux_2_17, linked by zig against glibc
# 2.17's symbols (a plain link on this glibc fails maturin's manylinux check).
wheel: $(WHEEL_STAMP)
	rm -rf dist
	$(WITH_VENV) maturin build --quiet --release --zig --compatibility manylinux2014 --out dist
	$(WITH_VENV) maturin sdist --out dist
	ls -l dist

# The same for 64-bit ARM Linux: needs the Rust standard library for that
# target (`rustup target add aarch64-unknown-linux-gnu`).
wheel-aarch64: $(WHEEL_STAMP)
	$(WITH_VENV) maturin build --quiet --release --zig --compatibility manylinux2014 \
		--target aarch64-unknown-linux-gnu --out dist

# Builds the wheel and the sdist, installs each in a fresh venv with no Rust
# on PATH and runs the example against it (an embedded Postgres).
wheel-check:
	.ci/wheel-check

$(WHEEL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --group wheel
	touch $(WHEEL_STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --group dev
	touch $(STAMP)

clean:
	rm -rf $(VENV) target dist
