"""Test oracle: the ``condition_rules`` evaluator as it was before the criteria language; the
condition_rules expansion into condition queries is checked against it record by record
(tests/engine/queries/test_condition.py).

A rule with ``require_active: false`` and ``within_days`` reads Procedure rows by date window:
a Procedure performed within the window counts whatever its status, except the statuses the
criterion's ``status_rules.ignored_procedure_statuses`` drop (e.g. E4 dialysis, spec v1.1).
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.models import ConditionRule, ConditionStatusRules
from fhir_cohort.engine.evaluators.common import (
    Context,
    Evidence,
    condition_active,
    condition_evidence,
    condition_ignored,
    condition_span,
    condition_state,
    condition_uncertain_at,
    condition_unconfirmed,
    within,
)
from fhir_cohort.engine.roman_classes import names_class_in

RANK = {"clear": 0, "review": 1, "excluded": 2}


def match_rule(
    row: Any,
    rule: ConditionRule,
    rules: ConditionStatusRules,
    ctx: Context,
    undated_within: bool,
    birth_raw: str | None = None,
) -> tuple[str | None, str]:
    """(answer or None, note) of one rule for one record already known to be in its value set.

    A check a partial date or an undated abatement cannot decide (three-valued None) turns an
    `excluded` into `review` (spec v1.1); a check that fails drops the rule.
    """
    if rule.severity_codes is not None:
        sev = set(row.severity_codes or ())
        if not sev & set(rule.severity_codes):
            return None, "severity not " + ", ".join(rule.severity_codes)
    if rule.named_classes is not None and not any(
        names_class_in(t, rule.named_classes) for t in (row.display, row.code_text) if t
    ):
        return None, "no class " + "/".join(rule.named_classes) + " named"
    unsure: list[str] = []
    if (note := condition_uncertain_at(row, ctx.as_of)) is not None:
        unsure.append(note)
    if rule.require_active:
        active = condition_active(row, rules, ctx.as_of, birth_raw)
        if active is False:
            return None, "inactive"
        if active is None:
            unsure.append("activity at as-of date unknown")
    if rule.within_days is not None:
        when = condition_span(row, rule.date_basis)
        if when is None and not undated_within:
            return None, "undated"
        if when is not None:
            hit = within(when[0], ctx.as_of, rule.within_days, when[1])
            if hit is False:
                return None, f"older than {rule.within_days} days"
            if hit is None:
                unsure.append(f"partial date straddles the {rule.within_days}-day window")
    answer = rule.answer
    if answer == "excluded" and condition_unconfirmed(row, rules):
        return "review", f"{row.verification_status}: {rule.reason}"
    if unsure:
        return ("review" if answer == "excluded" else answer), f"{rule.reason} ({unsure[0]})"
    return answer, rule.reason


def evaluate_rules_on_rows(
    rules_list: list[ConditionRule],
    status_rules: ConditionStatusRules,
    undated_within: bool,
    ctx: Context,
    rows: list[Any],
    birth_raw: str | None = None,
) -> tuple[str, list[str], list[Evidence]]:
    """Worst answer, the reasons that gave it (in rule order), and evidence."""
    worst = "clear"
    reasons: list[tuple[int, str, str]] = []  # (rule index, answer, reason)
    evidence: list[Evidence] = []
    rule_sets = [frozenset(r.value_sets) for r in rules_list]
    union = frozenset().union(*rule_sets)
    for row in rows:
        members = ctx.memberships(row.system, row.code)
        if union.isdisjoint(members):
            continue
        hits = [(i, r) for i, r in enumerate(rules_list) if not rule_sets[i].isdisjoint(members)]
        state = condition_state(row)
        ignored = condition_ignored(row, status_rules, ctx.as_of)
        if ignored is not None:
            evidence.append(condition_evidence(row, ignored, state))
            continue
        best: tuple[int, str, str] | None = None
        misses: list[str] = []
        for i, rule in hits:
            answer, note = match_rule(row, rule, status_rules, ctx, undated_within, birth_raw)
            if answer is None:
                misses.append(note)
            elif best is None or RANK[answer] > RANK[best[1]]:
                best = (i, answer, note)
        if best is None:
            evidence.append(condition_evidence(row, misses[0] if misses else "not counted", state))
            continue
        evidence.append(condition_evidence(row, f"{best[1]}: {best[2]}", state))
        reasons.append(best)
        if RANK[best[1]] > RANK[worst]:
            worst = best[1]
    chosen: list[str] = []
    for _, answer, reason in sorted(reasons):
        if answer == worst and reason not in chosen:
            chosen.append(reason)
    return worst, chosen, evidence
