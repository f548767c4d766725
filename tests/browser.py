"""One headless Chromium per test session (a pytest plugin, registered in tests/conftest.py):
Debian's /usr/bin/chromium driven by Playwright, for the report and the worklist tests.

Never `playwright install` (it downloads from Playwright's own servers): scripts/install_browser.sh
installs Debian's package. Without it the tests skip visibly; under CI=true they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prerequisites import skip_unless_ci

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
