"""Fixtures for the HTML report tests: the demo screening and a headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.results import ScreeningResult
from tests.prerequisites import skip_unless_ci

DEMO_AS_OF = date(2026, 11, 24)
# scripts/install_browser.sh installs it there; FHIR_COHORT_CHROMIUM names another binary.
CHROMIUM = Path(os.environ.get("FHIR_COHORT_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def demo_result() -> ScreeningResult:
    """The bundled demo hospital screened at the documented as-of date."""
    from fhir_cohort.pipeline import screen

    return screen(as_of=DEMO_AS_OF)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never `playwright install`: no downloads)."""
    if not CHROMIUM.exists():
        skip_unless_ci(f"{CHROMIUM} is missing: run scripts/install_browser.sh (as root)")
    try:
        from playwright import sync_api
    except ImportError:
        skip_unless_ci("playwright is not installed (test extra)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
