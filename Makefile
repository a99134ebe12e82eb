# Two commands do everything on a fresh machine (Python 3.10+, Java 17+, Maven):
#   make demo   - local Kafka + PostgreSQL, 200k events, the example pipeline until drained
#   make test   - the whole test suite against real Kafka, PostgreSQL and Ray
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,local]'
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
