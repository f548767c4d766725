"""Pydantic models of a criteria file: every number, window, code list and switch of a trial.

The engine reads only these models; nothing trial-specific lives in code. Fields that name
value sets carry ``json_schema_extra={"value_set_ref": True}`` so that
:func:`fhir_cohort.criteria.io.check_value_sets` can find every reference generically.
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


# --------------------------------------------------------------------------- shared parts


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


# --------------------------------------------------------------------------- criteria


class _CriterionBase(_Model):
    id: str = Field(min_length=1)
    kind: Literal["inclusion", "exclusion"]
    title: str
    description: str = ""


class AgeCriterion(_CriterionBase):
    type: Literal["age"]
    min_years: int | None = 18
    max_years: int | None = None
    # A patient deceased on or before S fails this criterion (spec I1).
    deceased_is_not_met: bool = True


class ConditionPresentCriterion(_CriterionBase):
    type: Literal["condition_present"]
    value_sets: list[str] = Field(json_schema_extra=_VS)
    unknown_value_sets: list[str] = vs_list()
    # Listed in the evidence as "does not count" (e.g. drug-induced or cutaneous lupus).
    not_counted_value_sets: list[str] = vs_list()
    require_active: bool = False
    status_rules: ConditionStatusRules = Field(default_factory=ConditionStatusRules)


class MedicationRequirement(_Model):
    label: str
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    # Joined to value_sets only when the criterion's boolean field named by enabled_by is true.
    optional_value_sets: list[str] = vs_list()
    enabled_by: Literal["count_antimalarials"] | None = None
    agent_grouping: Literal["class", "moiety"] = "moiety"
    min_agents: int = Field(default=1, ge=1)


class MedicationHistoryCriterion(_CriterionBase):
    type: Literal["medication_history"]
    window_months: int = Field(default=24, ge=0)
    persistence_gap_days: int = Field(default=30, ge=0)
    min_era_days: int = Field(default=84, ge=1)
    requirements: list[MedicationRequirement] = Field(min_length=1)
    count_antimalarials: bool = False
    coverage_per_dose_days: dict[str, int] = Field(
        default_factory=lambda: {
            "rituximab": 182,
            "cyclophosphamide": 30,
            "belimumab": 28,
            "anifrolumab": 28,
        }
    )
    default_coverage_days: int = Field(default=1, ge=1)
    systemic_only: bool = True
    non_systemic_routes: list[str] = vs_list("non_systemic_routes")
    non_systemic_forms: list[str] = vs_list("non_systemic_forms")
    # Whole words/phrases (a trailing * matches any word ending) in route/form text, RxNorm
    # product name, display or text that mark local use. Transdermal is systemic: not listed.
    non_systemic_words: list[str] = Field(
        default_factory=lambda: list(NON_SYSTEMIC_WORDS)  # terminology/forms.py keeps the list
    )
    # Records of unknown duration are re-run as lasting to S; met then -> unknown (spec I3.5).
    unknown_duration_runs_to_as_of: bool = True
    status_rules: MedicationStatusRules = Field(default_factory=MedicationStatusRules)
    review_note: str = (
        "Active symptoms despite therapy cannot be read from structured data: confirm in chart"
    )

    @model_validator(mode="after")
    def _switches_exist(self) -> MedicationHistoryCriterion:
        for i, req in enumerate(self.requirements):
            if req.optional_value_sets and req.enabled_by is None:
                raise ValueError(
                    f"requirements[{i}].optional_value_sets needs enabled_by (a switch name)"
                )
        return self

    def active_value_sets(self, req: MedicationRequirement) -> list[str]:
        """The requirement's value sets with its optional ones joined when its switch is on."""
        if req.enabled_by is not None and bool(getattr(self, req.enabled_by)):
            return [*req.value_sets, *req.optional_value_sets]
        return list(req.value_sets)


class LabPositiveCriterion(_CriterionBase):
    type: Literal["lab_positive"]
    value_sets: list[str] = Field(json_schema_extra=_VS)
    lookback_days: int = Field(default=365, ge=0)
    lab_rules: LabRules = Field(default_factory=LabRules)


class ConditionRule(_Model):
    value_sets: list[str] = Field(min_length=1, json_schema_extra=_VS)
    answer: Literal["excluded", "review"]
    # Only records dated within N days before S. The date is the latest of onset and recorded
    # date ("latest"), or the onset (recorded date when there is none: "onset").
    within_days: int | None = Field(default=None, ge=0)
    date_basis: Literal["latest", "onset"] = "latest"
    require_active: bool = True
    # Only records whose Condition.severity has one of these "system|code" tokens.
    severity_codes: list[str] | None = None
    # Only records whose code display names one of these classes (Roman numerals, e.g. lupus
    # nephritis "class IV", "ISN/RPS IV-G"; spec v1.1 E1).
    named_classes: list[str] | None = None
    reason: str


class ConditionRulesCriterion(_CriterionBase):
    type: Literal["condition_rules"]
    rules: list[ConditionRule] = Field(min_length=1)
    # A record without any date counts as within within_days (cannot be ruled out).
    undated_counts_as_within: bool = True
    status_rules: ConditionStatusRules = Field(default_factory=ConditionStatusRules)


class PregnancyLactationCriterion(_CriterionBase):
    type: Literal["pregnancy_lactation"]
    applies_to_sexes_not: list[str] = Field(default_factory=lambda: ["male"])
    pregnancy_value_sets: list[str] = vs_list("pregnancy")
    pregnancy_onset_within_days: int = Field(default=300, ge=0)
    pregnancy_status_value_sets: list[str] = vs_list("pregnancy_status")
    pregnancy_status_pregnant_value_sets: list[str] = vs_list("pregnancy_status_pregnant")
    pregnancy_status_within_days: int = Field(default=30, ge=0)
    hcg_value_sets: list[str] = vs_list("hcg")
    hcg_within_days: int = Field(default=30, ge=0)
    lactation_value_sets: list[str] = vs_list("lactation")
    delivery_value_sets: list[str] = vs_list("delivery")
    delivery_within_days: int = Field(default=365, ge=0)
    delivery_reason: str = "possible lactation"
    # v1.1: a positive pregnancy test coded as a diagnosis (ICD-10-CM Z32.01) excludes.
    pregnancy_test_positive_value_sets: list[str] = vs_list("pregnancy_test_positive")
    pregnancy_test_within_days: int = Field(default=30, ge=0)
    # Obstetric codes that do not say pregnant or delivered (e.g. header O24): a human decides.
    phase_unspecified_value_sets: list[str] = vs_list("pregnancy_or_puerperium")
    phase_unspecified_within_days: int = Field(default=365, ge=0)
    phase_unspecified_reason: str = "pregnancy or puerperium, phase not coded"
    # v1.1: a lactation / breastfeeding-status Observation answering "breastfeeding" excludes.
    breastfeeding_status_value_sets: list[str] = vs_list("breastfeeding_status")
    breastfeeding_status_breastfeeding_value_sets: list[str] = vs_list(
        "breastfeeding_status_breastfeeding"
    )
    breastfeeding_status_within_days: int = Field(default=30, ge=0)
    # A valueBoolean true, or an uncoded answer with one of these texts (case-insensitive).
    breastfeeding_answer_texts: list[str] = Field(
        default_factory=lambda: ["currently breastfeeding", "breastfeeding", "yes", "true"]
    )
    # v1.1: an equivocal hCG (incl. a quantitative one with no reference range) gives review.
    hcg_equivocal_answer: Literal["review", "clear"] = "review"
    status_rules: ConditionStatusRules = Field(default_factory=ConditionStatusRules)
    lab_rules: LabRules = Field(default_factory=LabRules)


Criterion = Annotated[
    AgeCriterion
    | ConditionPresentCriterion
    | MedicationHistoryCriterion
    | LabPositiveCriterion
    | ConditionRulesCriterion
    | PregnancyLactationCriterion,
    Field(discriminator="type"),
]

CRITERION_TYPES: tuple[str, ...] = (
    "age",
    "condition_present",
    "medication_history",
    "lab_positive",
    "condition_rules",
    "pregnancy_lactation",
)


class Trial(_Model):
    id: str = Field(min_length=1)
    title: str
    version: str
    source: str
    description: str = ""
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Trial:
        seen: set[str] = set()
        for c in self.criteria:
            if c.id in seen:
                raise ValueError(f"duplicate criterion id {c.id!r}")
            seen.add(c.id)
        return self

    def criterion(self, criterion_id: str) -> Any:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)
