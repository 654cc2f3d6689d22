# copyjob: make demo | make test | make bench | make lint
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: venv demo test lint bench system-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/copyjob demo --dir demo

system-deps:
	bash scripts/install-system-deps.sh
	ls .cache/kafka/lib/kafka_2.13-*.jar >/dev/null 2>&1 || mvn -q -B -f tests/services/kafka/pom.xml \
	    dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.cache/kafka/lib -DincludeScope=runtime  # kafka jars

# Two workers: most tests wait on servers and processes, not the CPU; a module's tests stay on one worker.
test: system-deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: system-deps venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
