# Two commands matter: `make demo` and `make test`. Both set up .venv first (Python >= 3.11).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_AS_OF := 2026-11-24

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## demo: set up, then screen the bundled synthetic hospital into out/demo
demo: $(STAMP)
	$(BIN)/fhir-cohort screen --as-of $(DEMO_AS_OF) --out out/demo

## test: set up (Python packages, Debian's chromium for the report test), lint, run every test
## (the suite starts a real FHIR server on 127.0.0.1)
test: $(STAMP)
	./scripts/install_browser.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/screen_ndjson.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
