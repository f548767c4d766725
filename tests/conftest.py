"""Suite-wide fixtures. Scenario data lives in tests/data/; the demo hospital in the package."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from hypothesis import settings

from tests.prerequisites import skip_unless_ci

# No per-example deadline: CI machines are shared and slow examples are not failures here.
# Derandomised in CI so a red run can be reproduced exactly.
settings.register_profile("fhir-cohort", deadline=None, print_blob=True)
settings.register_profile("ci", parent=settings.get_profile("fhir-cohort"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "fhir-cohort")

# The real FHIR server fixtures (sekmet-fhir), usable from every test package; the check that
# the run changed no tracked file; the session's headless Chromium (report and worklist tests).
pytest_plugins = ["tests.conftest_server", "tests.tracked_files", "tests.browser"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Spark tests first. Under ``--dist worksteal`` the first worker gets the head of the
    collection and runs it itself (idle workers steal from the tails of queues), so the Spark
    tests share one worker's JVM and its Python workers' warm-up, and start at once instead of
    lengthening the run's end. A stable sort: the rest keep their order."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/spark/"))


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SYNTHEA_13 = SHARED / "data" / "synthea-bulk-13"
DEMO_AS_OF = date(2026, 11, 24)


def require_shared(path: Path) -> Path:
    """A path under ../shared: skipped visibly outside CI, a failure under CI=true."""
    if path.exists():
        return path
    skip_unless_ci(f"../shared/{path.relative_to(SHARED)} is not beside the checkout")


@pytest.fixture(scope="session")
def synthea13() -> Path:
    return require_shared(SYNTHEA_13)
