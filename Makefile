# Two commands do everything on a fresh machine (Python 3.11+, Java 17+, Maven, Rust/cargo):
#   make demo   - local Kafka + PostgreSQL, 200k events, the example pipeline until drained
#   make test   - the whole test suite against real Kafka, PostgreSQL and Ray
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test test-latest bench lint lock clean

# Installs exactly requirements.lock (every package, pip and the build tools included), then
# the project and native/ (the codecs, a Rust extension built by maturin: needs cargo) on top,
# without resolving anything again.
NATIVE = native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs native/src/*/*.rs) native/veltrix_codec.pyi
$(BIN)/.installed: requirements.lock pyproject.toml $(NATIVE)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "requirements.lock is \
	for Python 3.11+ (ipykernel and pandas of the dev tools need it): make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pip install -q --no-deps --no-build-isolation ./native
	$(BIN)/pip check
	touch $@

demo: $(BIN)/.installed
	$(BIN)/veltrix-ray demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/pipeline.py

# The lock, resolved anew from pyproject.toml's ranges (with the dev and local extras) for
# every platform and Python 3.11+: `make lock`, then `make test` before committing it.
lock:
	$(PYTHON) -m pip install -q 'uv>=0.9'
	$(PYTHON) -m uv pip compile pyproject.toml requirements-build.in --extra dev --extra local \
		--universal --python-version 3.11 --upgrade --custom-compile-command 'make lock' \
		-o requirements.lock

# Drift on purpose: the unit tests against the newest versions the ranges allow, in a
# separate virtualenv, after listing every package whose version differs from the lock.
LATEST = .venv-latest
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip maturin setuptools
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[dev,local]'
	PATH="$(abspath $(LATEST)/bin):$$PATH" $(LATEST)/bin/pip install -q --no-build-isolation ./native
	$(LATEST)/bin/python scripts/lock_drift.py requirements.lock
	$(LATEST)/bin/python -m pytest -q -m unit

lint: $(BIN)/.installed
	$(BIN)/ruff check veltrix_ray tests benchmarks scripts && $(BIN)/mypy
	cargo fmt --check --manifest-path native/Cargo.toml && cargo clippy --quiet --all-targets --manifest-path native/Cargo.toml -- -D warnings

clean:
	-$(BIN)/veltrix-ray local down --wipe
	rm -rf $(VENV) $(LATEST)
