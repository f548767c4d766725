"""Several trials of one pass share the per-patient rows and look-ups (engine.evaluate.Prepared),
and the era and lab tables read what the evaluation kept: neither may change any output.

Every shipped trial on the demo hospital, read once with the union of what they need (as
screen_many reads it): answers, evidence, status and the detail tables must equal those of a
trial evaluated on its own, with nothing shared.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.evaluate import Prepared, evaluate
from fhir_cohort.engine.read import read_tables
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import DEMO_DATA, detail_tables
from fhir_cohort.requirements import Requirements, requirements
from tests.conftest import DEMO_AS_OF

SHIPPED = [
    default_criteria_path(),
    *sorted((default_criteria_path().parent / "trials").glob("*.yaml")),
]


@pytest.fixture(scope="module")
def demo(terminology: Any) -> tuple[list[Any], Any]:
    trials = [load_criteria(p) for p in SHIPPED]
    needs = Requirements.union_of(requirements(t, terminology) for t in trials)
    tables, _ = read_tables(
        open_source(DEMO_DATA),
        relevant=needs.codes,
        medication_words=needs.medication_names,
        workers=1,
    )
    return trials, tables


def test_shared_rows_and_kept_details_change_no_output(terminology: Any, demo: Any) -> None:
    trials, tables = demo
    assert len(trials) >= 3
    shared = Prepared(tables, terminology, DEMO_AS_OF, keep=True)
    used_kept = 0
    for trial in trials:
        alone = evaluate(trial, tables, terminology, DEMO_AS_OF)
        together = evaluate(trial, tables, terminology, DEMO_AS_OF, shared)
        for name in ("answers", "evidence", "status"):
            pd.testing.assert_frame_equal(getattr(alone, name), getattr(together, name))
        assert shared.ctx.kept is not None
        used_kept += bool(shared.ctx.kept._by_node)
        fresh = detail_tables(trial, tables, terminology, DEMO_AS_OF)
        kept = detail_tables(trial, tables, terminology, DEMO_AS_OF, shared)
        for a, b in zip(fresh, kept, strict=True):
            pd.testing.assert_frame_equal(a, b)
        assert not shared.ctx.kept._by_node  # read once, then freed
    # NCT06038474's medication and positivity queries at least were read from the evaluation.
    assert used_kept >= 1
    eras, labs = detail_tables(trials[0], tables, terminology, DEMO_AS_OF, shared)
    assert len(eras) and len(labs)  # the comparison above compared real rows
