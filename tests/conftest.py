"""Suite-wide fixtures. Scenario data lives in tests/data/; the demo hospital in the package."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

# The real FHIR server fixtures (sekmet-fhir), usable from every test package.
pytest_plugins = ["tests.conftest_server"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SYNTHEA_13 = SHARED / "data" / "synthea-bulk-13"
DEMO_AS_OF = date(2026, 11, 24)


@pytest.fixture(scope="session")
def synthea13() -> Path:
    if not SYNTHEA_13.is_dir():
        pytest.skip("../shared/data/synthea-bulk-13 is not beside the checkout")
    return SYNTHEA_13
