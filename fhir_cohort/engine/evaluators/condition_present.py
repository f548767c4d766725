"""I2-style criterion: a counted Condition in a value set is present on or before S."""

from __future__ import annotations

from fhir_cohort.criteria.models import ConditionPresentCriterion
from fhir_cohort.engine.evaluators.common import (
    Context,
    Evidence,
    Outcome,
    PatientData,
    condition_active,
    condition_evidence,
    condition_ignored,
    condition_state,
    condition_uncertain_at,
    condition_unconfirmed,
)


def evaluate_condition_present(
    crit: ConditionPresentCriterion, ctx: Context, data: PatientData
) -> Outcome:
    rules = crit.status_rules
    counted: list[Evidence] = []
    unknown: list[Evidence] = []
    other: list[Evidence] = []
    relevant = frozenset(crit.value_sets + crit.unknown_value_sets + crit.not_counted_value_sets)
    for row in data.conditions:
        if relevant.isdisjoint(ctx.memberships(row.system, row.code)):
            continue
        vs = ctx.first_vs(crit.value_sets, row.system, row.code)
        unk_vs = None if vs else ctx.first_vs(crit.unknown_value_sets, row.system, row.code)
        not_vs = (
            None
            if vs or unk_vs
            else ctx.first_vs(crit.not_counted_value_sets, row.system, row.code)
        )
        if not (vs or unk_vs or not_vs):
            continue
        state = condition_state(row)
        ignored = condition_ignored(row, rules, ctx.as_of)
        if ignored is not None:
            other.append(condition_evidence(row, ignored, state))
        elif not_vs is not None:
            other.append(condition_evidence(row, f"{not_vs}: does not count", state))
        elif (
            crit.require_active
            and (active := condition_active(row, rules, ctx.as_of, data.patient.birth_date_raw))
            is not True
        ):
            note = "inactive" if active is False else "activity at as-of date unknown"
            (other if active is False else unknown).append(condition_evidence(row, note, state))
        elif unk_vs is not None:
            unknown.append(condition_evidence(row, f"{unk_vs}: type unspecified", state))
        elif (uncertain := condition_uncertain_at(row, ctx.as_of)) is not None:
            unknown.append(condition_evidence(row, uncertain, state))
        elif condition_unconfirmed(row, rules):
            unknown.append(
                condition_evidence(row, f"{row.verification_status}: not confirmed", state)
            )
        else:
            counted.append(condition_evidence(row, f"{vs}: counted", state))
    if counted:
        return Outcome(
            "met",
            f"{crit.title}: {counted[0].display or counted[0].code}",
            counted + unknown + other,
        )
    if unknown:
        return Outcome(
            "unknown",
            f"{crit.title}: only unconfirmed, unspecified or uncertainly dated records",
            unknown + other,
        )
    return Outcome("not_met", f"{crit.title}: no counted record", other)
