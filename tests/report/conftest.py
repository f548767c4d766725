"""Fixtures for the HTML report tests: the demo screening (the headless Chromium is
tests/browser.py's session fixture)."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_cohort.results import ScreeningResult

DEMO_AS_OF = date(2026, 11, 24)


@pytest.fixture(scope="session")
def demo_result() -> ScreeningResult:
    """The bundled demo hospital screened at the documented as-of date."""
    from fhir_cohort.pipeline import screen

    return screen(as_of=DEMO_AS_OF)
