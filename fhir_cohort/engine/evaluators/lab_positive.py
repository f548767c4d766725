"""I4-style criterion: a positive result of a test in a value set within a lookback."""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.models import LabPositiveCriterion
from fhir_cohort.engine.evaluators.common import (
    Context,
    Outcome,
    PatientData,
    iso,
    within,
)
from fhir_cohort.engine.labs import (
    NEGATIVE,
    POSITIVE,
    Reading,
    observation_evidence,
    observation_high,
    read_tests,
)


def evaluate_lab_positive(crit: LabPositiveCriterion, ctx: Context, data: PatientData) -> Outcome:
    tests, ev = read_tests(crit.value_sets, crit.lab_rules, ctx, data.observations)
    in_l: list[tuple[Any, Reading]] = []
    before: list[tuple[Any, Reading]] = []
    # A partial date straddling the start of L or S itself cannot place the result (v1.1).
    unsure: list[tuple[Any, Reading]] = []
    for row, reading in tests:
        hit = within(row.date, ctx.as_of, crit.lookback_days, observation_high(row))
        (in_l if hit else before if hit is False else unsure).append((row, reading))
    for row, reading in in_l:
        ev.append(observation_evidence(row, reading, f"{reading.result} ({reading.rule})"))
    for row, reading in unsure:
        ev.append(
            observation_evidence(
                row,
                reading,
                f"{reading.result} ({reading.rule}), "
                "partial date straddles the lookback or as-of date",
            )
        )
    for row, reading in before:
        where = "undated" if row.date is None else f"before lookback of {crit.lookback_days} days"
        ev.append(observation_evidence(row, reading, f"{reading.result} ({reading.rule}), {where}"))
    pos_l = [r for r, x in in_l if x.result == POSITIVE]
    if pos_l:
        return Outcome(
            "met", f"positive {pos_l[0].display or pos_l[0].code} on {iso(pos_l[0].date)}", ev
        )
    if any(x.result == POSITIVE for _, x in unsure):
        return Outcome(
            "unknown",
            "positive with a partial date that may lie outside the "
            f"{crit.lookback_days}-day lookback",
            ev,
        )
    if any(x.result == POSITIVE for _, x in before):
        return Outcome("unknown", f"positive only before the {crit.lookback_days}-day lookback", ev)
    if in_l and all(x.result == NEGATIVE for _, x in in_l + unsure):
        return Outcome("not_met", f"tested within {crit.lookback_days} days, all negative", ev)
    if in_l:
        return Outcome(
            "unknown", f"no positive within {crit.lookback_days} days, equivocal results only", ev
        )
    if unsure:
        return Outcome(
            "unknown", f"no test surely within {crit.lookback_days} days (partial dates)", ev
        )
    return Outcome("unknown", f"no test within {crit.lookback_days} days", ev)
