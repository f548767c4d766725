"""Screening through the emulated EHRs (issue 11 item 4): the funnel fails fast on a
patient-scoped EHR instead of answering wrongly; a crawl of the Group answers as the on-disk
screen of the same records does, on every profile."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.errors import FhirCohortError
from fhir_cohort.pipeline import screen
from fhir_cohort.remote import STRATEGIES, ServerOptions
from tests.conftest_server import SMALL_HOSPITAL
from tests.ehr.conftest import GROUP_ID, GROUP_MEMBERS
from tests.ehr.emulator import EhrEmulator
from tests.ehr.profiles import PROFILES

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 24)


@pytest.fixture(scope="module")
def disk_rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The small hospital's records as NDJSON files, screened from disk."""
    folder = tmp_path_factory.mktemp("small-hospital-ndjson")
    by_type: dict[str, list[str]] = {}
    for entry in json.loads(SMALL_HOSPITAL.read_text())["entry"]:
        res = entry["resource"]
        by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("disk-out")
    return screen(folder, as_of=AS_OF, out_dir=out).patients


@pytest.mark.parametrize("name", ["epic", "oracle"])
def test_funnel_on_a_patient_scoped_ehr_fails_fast(
    ehr: Callable[[str], EhrEmulator], name: str, tmp_path: Path
) -> None:
    emulator = ehr(name)
    options = ServerOptions(strategy="funnel", cache_dir=tmp_path / "cache")
    with pytest.raises(FhirCohortError):
        screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    # The CapabilityStatement, and at most the refused server-wide entry search.
    assert emulator.stats.requests <= 2
    assert not (tmp_path / "out" / "patients.csv").exists()


@pytest.mark.skipif(
    "crawl" not in STRATEGIES, reason="--strategy crawl (issue 11 item 1) is not in this checkout"
)
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_auto_on_a_group_answers_as_the_disk_screen(
    ehr: Callable[[str], EhrEmulator], name: str, disk_rows: pd.DataFrame, tmp_path: Path
) -> None:
    emulator = ehr(name)
    options = ServerOptions(strategy="auto", bulk_group=GROUP_ID, cache_dir=tmp_path / "cache")
    result = screen(emulator.base_url, as_of=AS_OF, out_dir=tmp_path / "out", server=options)
    got = result.patients.set_index("patient_id").sort_index()
    want = disk_rows.set_index("patient_id").sort_index().loc[sorted(GROUP_MEMBERS)]
    pd.testing.assert_frame_equal(got.astype(str), want.astype(str))
