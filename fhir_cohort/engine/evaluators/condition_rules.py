"""E1/E2/E4-style exclusion: Condition (and Procedure) records matching rules; worst answer wins.

A rule with ``require_active: false`` and ``within_days`` reads Procedure rows by date window:
a Procedure performed within the window counts whatever its status, except the statuses the
criterion's ``status_rules.ignored_procedure_statuses`` drop (e.g. E4 dialysis, spec v1.1).
"""

from __future__ import annotations

from typing import Any

from fhir_cohort.criteria.models import ConditionRule, ConditionRulesCriterion, ConditionStatusRules
from fhir_cohort.engine.evaluators.common import (
    Context,
    Evidence,
    Outcome,
    PatientData,
    condition_active,
    condition_date,
    condition_evidence,
    condition_ignored,
    condition_state,
    condition_unconfirmed,
    within,
)
from fhir_cohort.engine.evaluators.lupus_class import names_class_in

RANK = {"clear": 0, "review": 1, "excluded": 2}


def match_rule(
    row: Any,
    rule: ConditionRule,
    rules: ConditionStatusRules,
    ctx: Context,
    undated_within: bool,
) -> tuple[str | None, str]:
    """(answer or None, note) of one rule for one record already known to be in its value set."""
    if rule.severity_codes is not None:
        sev = set(row.severity_codes or ())
        if not sev & set(rule.severity_codes):
            return None, "severity not " + ", ".join(rule.severity_codes)
    if rule.named_classes is not None and not names_class_in(row.display, rule.named_classes):
        # Only the coding's display is in the table: Condition.code.text is not flattened.
        return None, "no class " + "/".join(rule.named_classes) + " named"
    if rule.require_active and not condition_active(row, rules, ctx.as_of):
        return None, "inactive"
    if rule.within_days is not None:
        d = (
            condition_date(row)
            if rule.date_basis == "latest"
            else (row.onset_date or row.recorded_date)
        )
        if d is None and not undated_within:
            return None, "undated"
        if d is not None and not within(d, ctx.as_of, rule.within_days):
            return None, f"older than {rule.within_days} days"
    answer = rule.answer
    if answer == "excluded" and condition_unconfirmed(row, rules):
        return "review", f"{row.verification_status}: {rule.reason}"
    return answer, rule.reason


def evaluate_rules_on_rows(
    rules_list: list[ConditionRule],
    status_rules: ConditionStatusRules,
    undated_within: bool,
    ctx: Context,
    rows: list[Any],
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
            answer, note = match_rule(row, rule, status_rules, ctx, undated_within)
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


def evaluate_condition_rules(
    crit: ConditionRulesCriterion, ctx: Context, data: PatientData
) -> Outcome:
    worst, reasons, evidence = evaluate_rules_on_rows(
        crit.rules, crit.status_rules, crit.undated_counts_as_within, ctx, data.conditions
    )
    if worst == "clear":
        why = "no matching active record" + (" (inactive or old records shown)" if evidence else "")
        return Outcome("clear", why, evidence)
    return Outcome(worst, "; ".join(reasons), evidence)
