# Two commands matter: `make demo` and `make test`. Both set up .venv first (Python >= 3.11).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per install: the demo needs the package only; the tests add the test extra.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
DEMO_AS_OF := 2026-11-24
# Three pytest workers (pytest-xdist) on the 2-core machine: most of the suite waits on test
# servers and CLI processes, so a third worker overlaps that waiting (same clone, quiet machine,
# 2,687 tests: 493 s with 3 workers vs 570 s with 2; docs/benchmarks.md). Each worker starts its
# own test servers on their own ports; worksteal lets an idle worker take queued tests.
PYTEST_WORKERS ?= 3

.PHONY: demo test browser java lint screenshot bench clean

$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON): needs Python >= 3.11 and network access to PyPI"
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "fhir-cohort needs Python >= 3.11 (found: $$($(PYTHON) --version 2>&1));" \
			"run e.g. 'make PYTHON=python3.11 $(MAKECMDGOALS)'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing fhir-cohort and its runtime dependencies from PyPI into $(VENV)"
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing fhir-cohort with the test and spark extras from PyPI into $(VENV) (about 1.6 GB)"
	$(BIN)/python -m pip install --quiet -e ".[test,spark]"
	touch $(TEST_STAMP) $(DEMO_STAMP)

## demo: set up (Python >= 3.11, the package from PyPI), then screen the bundled synthetic
## hospital into out/demo
demo: $(DEMO_STAMP)
	$(BIN)/fhir-cohort screen --as-of $(DEMO_AS_OF) --out out/demo

## test: set up (the test and spark extras; Debian's chromium for the report test and
## Debian's OpenJDK 17 for the Spark tests, which need root, else those tests skip), lint,
## check formatting, run every test (starts real FHIR servers on 127.0.0.1)
test: $(TEST_STAMP) browser java
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# Debian's chromium for the report test; independent of the venv, so `make -j2 test` (.ci/run)
# installs both at once.
browser:
	./scripts/install_browser.sh

# Debian's Java 17 runtime for the Spark engine's tests (tests/spark); independent of the venv
# and of chromium (the script waits for the other's apt lock).
java:
	./scripts/install_java.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## screenshot: refresh the README's pictures, docs/img/report.png from the demo report and
## docs/img/worklist.png from the worklist's browser test; the only command that writes them
screenshot: $(TEST_STAMP) browser
	FHIR_COHORT_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest -p no:cacheprovider -q \
		tests/report/test_html_browser.py::test_screenshot_for_the_readme \
		tests/review/test_worklist_browser.py

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/screen_ndjson.py

clean:
	rm -rf $(VENV) out tmp .pytest_cache .ruff_cache
