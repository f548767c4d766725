"""A patient's row in patients.csv can be explained from evidence.csv alone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pandas as pd
import pytest

from fhir_cohort.pipeline import DEMO_DATA, screen
from fhir_cohort.synth.codes import NO_RECORD_ANSWERS


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("out")
    screen(DEMO_DATA, as_of=date(2026, 11, 24), out_dir=out)
    read = lambda name: pd.read_csv(out / name, dtype=str, keep_default_na=False)  # noqa: E731
    return read("patients.csv"), read("evidence.csv")


def test_every_answer_has_evidence_unless_nothing_was_on_record(outputs) -> None:
    patients, evidence = outputs
    backed = set(zip(evidence["patient_id"], evidence["criterion_id"], strict=True))
    for row in patients.itertuples(index=False):
        assert (row.patient_id, "age") in backed  # the Patient resource itself
        for cid, empty_answer in NO_RECORD_ANSWERS.items():
            if (row.patient_id, cid) not in backed:
                assert getattr(row, cid) == empty_answer, (row.patient_id, cid)


def test_evidence_points_at_real_resources(outputs) -> None:
    _, evidence = outputs
    ids: set[tuple[str, str]] = set()
    for path in Path(DEMO_DATA).glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            res = orjson.loads(line)
            ids.add((res["resourceType"], res["id"]))
    cited = evidence[evidence["resource_type"] != ""]
    missing = {
        (t, i) for t, i in zip(cited["resource_type"], cited["resource_id"], strict=True)
    } - ids
    assert missing == set()


def test_review_and_ineligible_rows_carry_their_reasons(outputs) -> None:
    patients, _ = outputs
    not_eligible = patients[patients["status"] != "eligible"]
    assert (not_eligible["reasons"] != "").all()
