"""E3-style exclusion: pregnancy (condition, status answer, hCG, positive test code) or lactation
(condition, breastfeeding-status answer); a recent delivery (Condition or Procedure) is review."""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.models import ConditionRule, PregnancyLactationCriterion
from fhir_cohort.engine.evaluators.common import (
    Context,
    Evidence,
    Outcome,
    PatientData,
    after_as_of,
    within,
)
from fhir_cohort.engine.evaluators.condition_rules import RANK, evaluate_rules_on_rows
from fhir_cohort.engine.evaluators.lab_positive import (
    observation_evidence,
    observation_high,
    read_tests,
)
from fhir_cohort.engine.labs import EQUIVOCAL, POSITIVE


def _condition_rules(crit: PregnancyLactationCriterion) -> list[ConditionRule]:
    """The condition half of E3 expressed as condition rules (same active/verification logic)."""
    return [
        # The spec dates a pregnancy by its onset: an old pregnancy recorded late is not new.
        ConditionRule(
            value_sets=crit.pregnancy_value_sets,
            answer="excluded",
            within_days=crit.pregnancy_onset_within_days,
            date_basis="onset",
            reason=f"active pregnancy with onset within {crit.pregnancy_onset_within_days} days",
        ),
        ConditionRule(
            value_sets=crit.lactation_value_sets, answer="excluded", reason="active lactation"
        ),
        # Delivery: a Condition or a Procedure (SNOMED CT, ICD-10-PCS); a Procedure counts
        # unless its status is one that never counts (not-done, entered-in-error).
        ConditionRule(
            value_sets=crit.delivery_value_sets,
            answer="review",
            within_days=crit.delivery_within_days,
            require_active=False,
            reason=crit.delivery_reason,
        ),
        # v1.1: a positive pregnancy test coded as a diagnosis (Z32.01), dated by the test.
        ConditionRule(
            value_sets=crit.pregnancy_test_positive_value_sets,
            answer="excluded",
            within_days=crit.pregnancy_test_within_days,
            date_basis="onset",
            require_active=False,
            reason=f"positive pregnancy test (diagnosis code) within "
            f"{crit.pregnancy_test_within_days} days",
        ),
        ConditionRule(
            value_sets=crit.phase_unspecified_value_sets,
            answer="review",
            within_days=crit.phase_unspecified_within_days,
            date_basis="onset",
            require_active=False,
            reason=crit.phase_unspecified_reason,
        ),
    ]


def _not_counted(crit: PregnancyLactationCriterion, ctx: Context, row: Any) -> Evidence | None:
    """Evidence for a status/answer Observation that does not count: its status, or dated
    after S (under every reading of a partial date)."""
    if row.status is not None and row.status not in crit.lab_rules.counted_statuses:
        return observation_evidence(row, None, f"status {row.status}")
    if after_as_of(row.date, ctx.as_of, observation_high(row)) is True:
        return observation_evidence(row, None, "after as-of date")
    return None


def _breastfeeding_answer(crit: PregnancyLactationCriterion, ctx: Context, row: Any) -> bool:
    """Whether a breastfeeding-status row answers "breastfeeding" (code, boolean or text).

    An Observation coded with a lactation finding itself (e.g. 866041003 Mother currently
    breastfeeding) states it, unless its value says no.
    """
    if not ctx.first_vs(crit.breastfeeding_status_value_sets, row.system, row.code):
        return not (row.value_type == "boolean" and row.value_string == "false")
    if ctx.token_in(crit.breastfeeding_status_breastfeeding_value_sets, row.value_codes):
        return True
    if row.value_codes and row.value_type != "boolean":
        return False  # coded with another answer (not breastfeeding, unknown)
    text = " ".join(str(row.value_string or "").lower().split())
    return text in {t.lower() for t in crit.breastfeeding_answer_texts}


def _breastfeeding_status(
    crit: PregnancyLactationCriterion, ctx: Context, rows: list[Any]
) -> tuple[list[tuple[str, str]], list[Evidence]]:
    found: list[tuple[str, str]] = []
    evidence: list[Evidence] = []
    days = crit.breastfeeding_status_within_days
    status_or_finding = [*crit.breastfeeding_status_value_sets, *crit.lactation_value_sets]
    for row in rows:
        if not ctx.first_vs(status_or_finding, row.system, row.code):
            continue
        if (skipped := _not_counted(crit, ctx, row)) is not None:
            evidence.append(skipped)
            continue
        value = ",".join(row.value_codes or ()) or row.value_string
        recent = within(row.date, ctx.as_of, days, observation_high(row))
        if not _breastfeeding_answer(crit, ctx, row):
            evidence.append(evidence_with_value(row, value, "not breastfeeding"))
        elif row.date is None:
            evidence.append(evidence_with_value(row, value, "review: undated breastfeeding"))
            found.append(("review", "undated breastfeeding status"))
        elif recent:
            evidence.append(evidence_with_value(row, value, "excluded: breastfeeding"))
            found.append(("excluded", f"breastfeeding status within {days} days"))
        elif recent is None:
            # A partial date straddling the window cannot decide: review (v1.1).
            evidence.append(
                evidence_with_value(
                    row, value, "review: breastfeeding, partial date straddles the window"
                )
            )
            found.append(
                ("review", f"breastfeeding status, date too imprecise to place within {days} days")
            )
        else:
            evidence.append(
                evidence_with_value(row, value, f"breastfeeding answer older than {days} days")
            )
    return found, evidence


def evaluate_pregnancy_lactation(
    crit: PregnancyLactationCriterion, ctx: Context, data: PatientData
) -> Outcome:
    gender = data.patient.gender
    if gender is not None and str(gender) in crit.applies_to_sexes_not:
        return Outcome("clear", f"not applicable (sex {gender})")
    # Pregnancy onset: a record without a date cannot be placed, so it goes to review
    # through undated_counts_as_within=False + the explicit check below.
    worst, reasons, evidence = evaluate_rules_on_rows(
        _condition_rules(crit),
        crit.status_rules,
        False,
        ctx,
        data.conditions,
        data.patient.birth_date_raw,
    )
    found: list[tuple[str, str]] = [(worst, r) for r in reasons]
    if any(ev.note == "undated" for ev in evidence):
        found.append(("review", "undated pregnancy or delivery record"))
    # Pregnancy status answers.
    obs_ev: list[Evidence] = []
    for row in data.observations:
        if not ctx.first_vs(crit.pregnancy_status_value_sets, row.system, row.code):
            continue
        if (skipped := _not_counted(crit, ctx, row)) is not None:
            obs_ev.append(skipped)
            continue
        pregnant = ctx.token_in(crit.pregnancy_status_pregnant_value_sets, row.value_codes)
        recent = within(
            row.date, ctx.as_of, crit.pregnancy_status_within_days, observation_high(row)
        )
        value = ",".join(row.value_codes or ()) or row.value_string
        if pregnant and recent:
            obs_ev.append(evidence_with_value(row, value, "excluded: pregnancy status pregnant"))
            found.append(
                (
                    "excluded",
                    f"pregnancy status pregnant within {crit.pregnancy_status_within_days} days",
                )
            )
        elif pregnant and recent is None:
            # A partial date straddling the window (or S) cannot decide: review (v1.1).
            obs_ev.append(
                evidence_with_value(
                    row, value, "review: pregnant answer, partial date straddles the window"
                )
            )
            found.append(
                (
                    "review",
                    "pregnancy status pregnant, date too imprecise to place "
                    f"within {crit.pregnancy_status_within_days} days",
                )
            )
        else:
            note = (
                (f"pregnant answer older than {crit.pregnancy_status_within_days} days")
                if pregnant
                else "not pregnant"
            )
            obs_ev.append(evidence_with_value(row, value, note))
    tests, skipped = read_tests(crit.hcg_value_sets, crit.lab_rules, ctx, data.observations)
    obs_ev.extend(skipped)
    for row, reading in tests:
        recent = within(row.date, ctx.as_of, crit.hcg_within_days, observation_high(row))
        if reading.result == POSITIVE and recent:
            obs_ev.append(observation_evidence(row, reading, "excluded: positive hCG"))
            found.append(("excluded", f"positive hCG within {crit.hcg_within_days} days"))
        elif reading.result == POSITIVE and recent is None:
            obs_ev.append(
                observation_evidence(
                    row, reading, "review: positive hCG, partial date straddles the window"
                )
            )
            found.append(
                (
                    "review",
                    f"positive hCG, date too imprecise to place within {crit.hcg_within_days} days",
                )
            )
        elif (
            reading.result == EQUIVOCAL
            and recent is not False
            and crit.hcg_equivocal_answer == "review"
        ):
            # v1.1: equivocal, or quantitative with no reference range to read it against.
            what = (
                "hCG with no reference range"
                if reading.rule == "no reference range"
                else "equivocal hCG"
            )
            obs_ev.append(observation_evidence(row, reading, f"review: {what}"))
            found.append(("review", f"{what} within {crit.hcg_within_days} days"))
        else:
            note = reading.result + (
                ""
                if recent
                else f", older than {crit.hcg_within_days} days"
                if recent is False
                else ", partial date straddles window"
            )
            obs_ev.append(observation_evidence(row, reading, note))
    bf_found, bf_ev = _breastfeeding_status(crit, ctx, data.observations)
    found.extend(bf_found)
    obs_ev.extend(bf_ev)
    evidence.extend(obs_ev)
    worst = max((a for a, _ in found), key=RANK.__getitem__, default="clear")
    if worst == "clear":
        return Outcome("clear", "no pregnancy or lactation on record", evidence)
    chosen = list(dict.fromkeys(r for a, r in found if a == worst))
    return Outcome(worst, "; ".join(chosen), evidence)


def evidence_with_value(row: object, value: str | None, note: str) -> Evidence:
    ev = observation_evidence(row, None, note)
    return ev._replace(value=value)
