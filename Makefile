# Two commands do everything on a fresh machine (Python 3.10+, Java 17+, Maven, Rust/cargo):
#   make demo   - local Kafka + PostgreSQL, 200k events, the example pipeline until drained
#   make test   - the whole test suite against real Kafka, PostgreSQL and Ray
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test bench lint clean

# native/: the Avro codec, a Rust extension built by maturin (needs cargo, see rustup.rs)
$(BIN)/.installed: pyproject.toml native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs) native/veltrix_codec.pyi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,local]'
	$(BIN)/pip install -q ./native
	touch $@

demo: $(BIN)/.installed
	$(BIN)/veltrix-ray demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/pipeline.py

lint: $(BIN)/.installed
	$(BIN)/ruff check veltrix_ray tests benchmarks && $(BIN)/mypy

clean:
	-$(BIN)/veltrix-ray local down --wipe
	rm -rf $(VENV)
