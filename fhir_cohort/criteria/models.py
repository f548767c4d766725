"""Pydantic models of a criteria file: every number, window, code list and switch of a trial.

The engine reads only these models; nothing trial-specific lives in code. Fields that name
value sets carry ``json_schema_extra={"value_set_ref": True}`` so that
:func:`fhir_cohort.criteria.io.check_value_sets` can find every reference generically.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from fhir_cohort.criteria.language import (
    ConditionStatusRules,
    Expr,
    LabRules,
    MedicationStatusRules,
    _Model,
    vs_list,
)
from fhir_cohort.terminology.forms import NON_SYSTEMIC_WORDS

_VS: dict[str, Any] = {"value_set_ref": True}

__all__ = [
    "ConditionStatusRules",
    "LabRules",
    "MedicationStatusRules",
]


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
    # The name of a boolean switch of the criterion (e.g. count_antimalarials).
    enabled_by: str | None = None
    agent_grouping: Literal["class", "moiety"] = "moiety"
    min_agents: int = Field(default=1, ge=1)


class MedicationHistoryCriterion(_CriterionBase):
    type: Literal["medication_history"]
    window_months: int = Field(default=24, ge=0)
    persistence_gap_days: int = Field(default=30, ge=0)
    min_era_days: int = Field(default=84, ge=1)
    requirements: list[MedicationRequirement] = Field(min_length=1)
    # Named boolean switches that requirements' enabled_by refer to (a switch not given is
    # off). In a file they may also be written as top-level keys (``count_antimalarials: false``).
    switches: dict[str, bool] = Field(default_factory=dict)
    # MedicationAdministration: days one dose of an agent (by name) covers.
    coverage_per_dose_days: dict[str, int] = Field(default_factory=dict)
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

    @model_validator(mode="before")
    @classmethod
    def _lift_switches(cls, data: Any) -> Any:
        """Top-level boolean keys named by a requirement's enabled_by are switches."""
        if not isinstance(data, dict):
            return data
        names = {
            r.get("enabled_by") if isinstance(r, dict) else getattr(r, "enabled_by", None)
            for r in data.get("requirements") or []
        }
        names.discard(None)
        lifted = {k: data[k] for k in names if k in data and k not in cls.model_fields}
        if not lifted:
            return data
        rest = {k: v for k, v in data.items() if k not in lifted}
        rest["switches"] = {**dict(data.get("switches") or {}), **lifted}
        return rest

    @model_validator(mode="after")
    def _switches_exist(self) -> MedicationHistoryCriterion:
        for i, req in enumerate(self.requirements):
            if req.optional_value_sets and req.enabled_by is None:
                raise ValueError(
                    f"requirements[{i}].optional_value_sets needs enabled_by (a switch name)"
                )
        return self

    def switch(self, name: str) -> bool:
        return bool(self.switches.get(name, False))

    def active_value_sets(self, req: MedicationRequirement) -> list[str]:
        """The requirement's value sets with its optional ones joined when its switch is on."""
        if req.enabled_by is not None and self.switch(req.enabled_by):
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


Shorthand = Annotated[
    AgeCriterion
    | ConditionPresentCriterion
    | MedicationHistoryCriterion
    | LabPositiveCriterion
    | ConditionRulesCriterion
    | PregnancyLactationCriterion,
    Field(discriminator="type"),
]


class RuleCriterion(_CriterionBase):
    """A criterion of the general language: one expression (docs/criteria.md)."""

    type: Literal["rule"] = "rule"
    rule: Expr
    # The shorthand criterion this one was expanded from, as written (files are dumped in
    # that form, and value set errors name its keys).
    written_as: Shorthand | None = None

    @property
    def shorthand(self) -> str | None:
        return self.written_as.type if self.written_as is not None else None


SHORTHAND_TYPES: tuple[str, ...] = (
    "age",
    "condition_present",
    "medication_history",
    "lab_positive",
    "condition_rules",
    "pregnancy_lactation",
)
CRITERION_TYPES: tuple[str, ...] = (*SHORTHAND_TYPES, "rule")


def _criterion_tag(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("type", "rule"))
    return str(getattr(v, "type", "rule"))


Criterion = Annotated[
    Annotated[AgeCriterion, Tag("age")]
    | Annotated[ConditionPresentCriterion, Tag("condition_present")]
    | Annotated[MedicationHistoryCriterion, Tag("medication_history")]
    | Annotated[LabPositiveCriterion, Tag("lab_positive")]
    | Annotated[ConditionRulesCriterion, Tag("condition_rules")]
    | Annotated[PregnancyLactationCriterion, Tag("pregnancy_lactation")]
    | Annotated[RuleCriterion, Tag("rule")],
    Discriminator(_criterion_tag),
]


def _references(expr: Any) -> set[str]:
    """Definition names an expression uses: refs and window anchors."""
    from fhir_cohort.criteria.language import walk

    out: set[str] = set()
    for node in walk(expr):
        if node.type == "ref":
            out.add(node.name)
        anchor = getattr(getattr(node, "within", None), "anchor", "as_of")
        if anchor != "as_of":
            out.add(anchor)
    return out


class Trial(_Model):
    """A trial's criteria. Shorthand criteria are expanded into rule criteria on load, so
    ``criteria`` holds only :class:`RuleCriterion` (criteria/shorthands.py)."""

    id: str = Field(min_length=1)
    title: str
    version: str
    source: str
    description: str = ""
    # Named expressions: used by {type: ref, name: X} and as window anchors.
    define: dict[str, Expr] = Field(default_factory=dict)
    criteria: list[Criterion] = Field(min_length=1)

    @field_validator("criteria", mode="after")
    @classmethod
    def _expand(cls, value: list[Any]) -> list[Any]:
        from fhir_cohort.criteria.shorthands import expand

        return [expand(c) for c in value]

    @model_validator(mode="after")
    def _check(self) -> Trial:
        seen: set[str] = set()
        for c in self.criteria:
            if c.id in seen:
                raise ValueError(f"duplicate criterion id {c.id!r}")
            seen.add(c.id)
        uses = {name: _references(expr) for name, expr in self.define.items()}
        for c in self.criteria:
            for ref in _references(c.rule):
                if ref not in self.define:
                    raise ValueError(f"criterion {c.id!r}: no definition {ref!r} in define")
        for name, refs in uses.items():
            for ref in refs:
                if ref not in self.define:
                    raise ValueError(f"define.{name}: no definition {ref!r} in define")
        # A definition may use others, but never itself through any chain.
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"define.{name}: refers to itself (cycle)")
            state[name] = 1
            for ref in uses[name]:
                visit(ref)
            state[name] = 2

        for name in uses:
            visit(name)
        return self

    def criterion(self, criterion_id: str) -> Any:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)
