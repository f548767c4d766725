"""The criteria language: domain queries and groups as plain data (docs/criteria.md).

A rule criterion holds one expression. An expression is a group (``all``, ``any``, ``not``,
``at_least``), a ``chart_review``, a ``ref`` to a trial-level definition, or a domain query
over one kind of record (``patient``, ``condition``, ``procedure``, ``observation``,
``medication``). Every expression answers true / false / unknown (three-valued, Kleene); the
criterion's ``kind`` alone maps that to words (engine/rules.py). The same ``type`` tag
discriminates every node, so an error names the key path, e.g. ``criteria[3].rule.of[1].
within.days``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cohort.terminology.forms import NON_SYSTEMIC_WORDS

_VS: dict[str, Any] = {"value_set_ref": True}


def vs_list(*default: str) -> Any:
    """A list-of-value-set-ids field with a default."""
    return Field(default_factory=lambda: list(default), json_schema_extra=_VS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- record rules


class LabRules(_Model):
    """How a lab result reads as positive / negative / equivocal (spec I4 precedence)."""

    interpretation_positive: list[str] = vs_list("interpretation_positive")
    interpretation_negative: list[str] = vs_list("interpretation_negative")
    interpretation_equivocal: list[str] = vs_list("interpretation_equivocal")
    result_positive: list[str] = vs_list("result_positive")
    result_negative: list[str] = vs_list("result_negative")
    result_equivocal: list[str] = vs_list("result_equivocal")
    positive_strings: list[str] = Field(
        default_factory=lambda: ["positive", "detected", "reactive", "present"]
    )
    negative_strings: list[str] = Field(
        default_factory=lambda: ["negative", "not detected", "non-reactive", "absent"]
    )
    equivocal_strings: list[str] = Field(
        default_factory=lambda: ["equivocal", "borderline", "indeterminate", "trace"]
    )
    counted_statuses: list[str] = Field(
        default_factory=lambda: ["final", "amended", "corrected", "preliminary"]
    )


class ConditionStatusRules(_Model):
    """Which Condition records count and when one is active at S (spec "Which records count")."""

    ignored_verification_statuses: list[str] = Field(
        default_factory=lambda: ["refuted", "entered-in-error"]
    )
    unconfirmed_statuses: list[str] = Field(
        default_factory=lambda: ["provisional", "differential", "unconfirmed"]
    )
    active_clinical_statuses: list[str] = Field(
        default_factory=lambda: ["active", "recurrence", "relapse"]
    )
    # Not active at S even without an abatement date (v1.1). A clinicalStatus in neither list
    # is read like an absent one: the abatement decides.
    inactive_clinical_statuses: list[str] = Field(
        default_factory=lambda: ["inactive", "remission", "resolved"]
    )
    # A record whose abatement lies after S was still active at S (reproducible past screening).
    abatement_after_as_of_is_active: bool = True
    # Procedure rows (status kept as "procedure:<status>") that never count.
    ignored_procedure_statuses: list[str] = Field(
        default_factory=lambda: ["entered-in-error", "not-done"]
    )
    # Procedure rows with these statuses count as "active" for rules that require activity.
    active_procedure_statuses: list[str] = Field(default_factory=lambda: ["in-progress"])


class MedicationStatusRules(_Model):
    """Which medication records count, per resource type (spec "Which records count")."""

    statement_ignored_statuses: list[str] = Field(
        default_factory=lambda: ["entered-in-error", "not-taken", "intended"]
    )
    request_ignored_statuses: list[str] = Field(
        default_factory=lambda: ["cancelled", "entered-in-error", "draft"]
    )
    request_ignored_intents: list[str] = Field(default_factory=lambda: ["proposal"])
    request_ignore_do_not_perform: bool = True
    dispense_counted_statuses: list[str] = Field(default_factory=lambda: ["completed"])
    dispense_count_missing_status: bool = True
    administration_counted_statuses: list[str] = Field(
        default_factory=lambda: ["completed", "in-progress"]
    )
    administration_count_missing_status: bool = True


# --------------------------------------------------------------------------- windows


class Window(_Model):
    """A span of time relative to an anchor: S (the screening date) or another query's event.

    ``days`` / ``months`` / ``years`` (one of them) before the anchor, or after it with
    ``after: true``; both ends inclusive. Nothing after S is ever read. A partial date that
    straddles an end is unknown; ``undated`` says how a record with no date counts.
    """

    days: int | None = Field(default=None, ge=0)
    months: int | None = Field(default=None, ge=0)
    years: int | None = Field(default=None, ge=0)
    # "as_of", or the name of a trial-level definition (``define``): its event date.
    anchor: str = "as_of"
    anchor_event: Literal["latest", "earliest"] = "latest"
    after: bool = False
    undated: Literal["outside", "inside", "unknown"] = "outside"

    @model_validator(mode="after")
    def _one_length(self) -> Window:
        given = [n for n in ("days", "months", "years") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a window needs exactly one of days, months, years")
        if self.after and self.anchor == "as_of":
            raise ValueError("after: true needs an anchor other than as_of (nothing after S)")
        return self


# --------------------------------------------------------------------------- nodes


class _Node(_Model):
    # Text used for the answer when this node decides it (default: generated).
    reason: str | None = None
    # A review note added to the status reasons when this node is true (answer unchanged).
    note: str | None = None


class _Query(_Node):
    """Fields every domain query has."""

    # possible: a match is only unknown (a "review" rule, e.g. a headache within 90 days).
    match: Literal["definite", "possible"] = "definite"
    # The answer when no record qualifies at all.
    missing: Literal["false", "unknown"] = "false"
    within: Window | None = None
    # At least this many qualifying records (distinct resources).
    min_count: int = Field(default=1, ge=1)


class PatientQuery(_Query):
    type: Literal["patient"]
    min_age: int | None = None
    max_age: int | None = None
    # True when the recorded administrative gender is one of these (unknown gender: unknown).
    sexes: list[str] | None = None
    # True unless the recorded gender is one of these (unknown gender: true).
    sexes_not: list[str] | None = None
    # A patient deceased on or before S answers false.
    deceased_is_false: bool = True

    @model_validator(mode="after")
    def _one_record(self) -> PatientQuery:
        # One record with no date: a window or a count would silently mean nothing.
        if self.within is not None:
            raise ValueError("a patient query has no window (within)")
        if self.min_count != 1:
            raise ValueError("a patient query has no min_count")
        return self


class ConditionQuery(_Query):
    """Condition rows (and Procedure rows whose code is in the value sets, as E4 dialysis)."""

    type: Literal["condition"]
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    # Records only in these answer unknown (e.g. lupus of unspecified type).
    unknown_value_sets: list[str] = vs_list()
    # Shown in the evidence as "does not count", never counted.
    not_counted_value_sets: list[str] = vs_list()
    status_rules: ConditionStatusRules = Field(default_factory=ConditionStatusRules)
    require_active: bool = False
    # Only records whose Condition.severity has one of these "system|code" tokens.
    severity_codes: list[str] | None = None
    # Only records whose display or text names one of these classes (Roman numerals).
    named_classes: list[str] | None = None
    # The date a window reads: latest of onset and recorded date, or the onset.
    date_basis: Literal["latest", "onset"] = "latest"


class ProcedureQuery(_Query):
    type: Literal["procedure"]
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    status_rules: ConditionStatusRules = Field(default_factory=ConditionStatusRules)


class Threshold(_Model):
    """A numeric comparison with a UCUM unit: the result is converted to ``unit`` first."""

    comparator: Literal[">", ">=", "<", "<=", "=", "!="]
    value: float
    unit: str = "1"


class ObservationQuery(_Query):
    type: Literal["observation"]
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    # What the test is called in reasons ("hCG", "eGFR"); default: the result's display.
    label: str | None = None
    lab_rules: LabRules = Field(default_factory=LabRules)
    # latest / earliest: only the most recent / first qualifying result (in the window)
    # decides; any: any result.
    pick: Literal["latest", "earliest", "any"] = "any"
    # Exactly one test: result: positive, answer_value_sets (+ answer_texts), or value.
    result: Literal["positive"] | None = None
    equivocal: Literal["unknown", "false"] = "unknown"
    positive_before_window: Literal["unknown", "false"] = "unknown"
    answer_value_sets: list[str] = vs_list()
    answer_texts: list[str] = Field(default_factory=list)
    value: Threshold | None = None

    @model_validator(mode="after")
    def _one_test(self) -> ObservationQuery:
        tests = [self.result is not None, bool(self.answer_value_sets or self.answer_texts)]
        tests.append(self.value is not None)
        if sum(tests) > 1:
            raise ValueError("an observation query has one test: result, answer_*, or value")
        if self.pick != "any" and self.min_count != 1:
            raise ValueError(f"pick: {self.pick} reads one result; min_count must be 1")
        return self


class MedicationQuery(_Query):
    """Medication records (statements, requests, dispenses, administrations) of agents in the
    value sets: ``min_agents`` agents each tried for ``min_era_days`` of era inside the window,
    or (``min_era_days`` null) each with any exposure in it (engine/medication.py)."""

    type: Literal["medication"]
    # Names the query in reasons and the era table (and the one agent of class grouping).
    label: str = ""
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    # Shown in the evidence as "<value set> not counted (<not_counted_reason>)", never counted.
    not_counted_value_sets: list[str] = vs_list()
    not_counted_reason: str = ""
    # class: every agent of the value sets is one agent; moiety: one agent per active moiety
    # (salts, esters and products of one moiety are one agent).
    agent_grouping: Literal["class", "moiety"] = "moiety"
    min_agents: int = Field(default=1, ge=1)
    # Each agent tried for at least this many days of era inside the window; null: any
    # exposure in the window counts (washouts: "no anti-CD20 within 6 months").
    min_era_days: int | None = Field(default=None, ge=1)
    # Intervals with at most this many uncovered days between them merge into one era.
    persistence_gap_days: int = Field(default=30, ge=0)
    # MedicationAdministration: days one dose of an agent (by name) covers.
    coverage_per_dose_days: dict[str, int] = Field(default_factory=dict)
    default_coverage_days: int = Field(default=1, ge=1)
    systemic_only: bool = True
    non_systemic_routes: list[str] = vs_list("non_systemic_routes")
    non_systemic_forms: list[str] = vs_list("non_systemic_forms")
    non_systemic_words: list[str] = Field(default_factory=lambda: list(NON_SYSTEMIC_WORDS))
    # Records of unknown duration are re-run as lasting to S; met then -> unknown.
    unknown_duration_runs_to_as_of: bool = True
    status_rules: MedicationStatusRules = Field(default_factory=MedicationStatusRules)


class ChartReview(_Node):
    """Always unknown: what structured data cannot say (a human reads the chart)."""

    type: Literal["chart_review"]
    note: str | None = None


class Ref(_Node):
    """The trial-level definition ``name`` (``Trial.define``)."""

    type: Literal["ref"]
    name: str


class AllOf(_Node):
    type: Literal["all"]
    of: list[Expr] = Field(min_length=1)


class AnyOf(_Node):
    type: Literal["any"]
    of: list[Expr] = Field(min_length=1)


class Not(_Node):
    type: Literal["not"]
    of: Expr


class AtLeast(_Node):
    type: Literal["at_least"]
    n: int = Field(ge=1)
    of: list[Expr] = Field(min_length=1)

    @model_validator(mode="after")
    def _n_fits(self) -> AtLeast:
        if self.n > len(self.of):
            raise ValueError(f"at_least n={self.n} but only {len(self.of)} expressions")
        return self


Expr = Annotated[
    PatientQuery
    | ConditionQuery
    | ProcedureQuery
    | ObservationQuery
    | MedicationQuery
    | ChartReview
    | Ref
    | AllOf
    | AnyOf
    | Not
    | AtLeast,
    Field(discriminator="type"),
]

QUERY_TYPES: tuple[str, ...] = ("patient", "condition", "procedure", "observation", "medication")
GROUP_TYPES: tuple[str, ...] = ("all", "any", "not", "at_least")
EXPR_TYPES: tuple[str, ...] = (*QUERY_TYPES, "chart_review", "ref", *GROUP_TYPES)

for _m in (AllOf, AnyOf, Not, AtLeast):
    _m.model_rebuild()


def children(node: Any) -> list[Any]:
    """The sub-expressions of a node (none for a query)."""
    of = getattr(node, "of", None)
    if of is None:
        return []
    return list(of) if isinstance(of, list) else [of]


def walk(node: Any) -> list[Any]:
    """The node and every node under it, depth first, in order."""
    out = [node]
    for c in children(node):
        out.extend(walk(c))
    return out
