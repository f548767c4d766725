"""What a trial needs from the data, in one place (docs/architecture.md, "What a trial needs").

:func:`requirements` walks a trial's rule trees (through ``define`` references and window
anchors) and asks each query type's registration (``QueryType.requires``) what its node reads.
The result feeds every consumer that used to derive it on its own: the reader's line filter
(codes and medication names), the REST funnel (entry query, Observation codes, resource
types), the bulk ``$export`` request (types and ``_typeFilter``) and ``fhir-cohort
requirements``. Requirements of several trials screened in one pass are their
:meth:`Requirements.union`.

Every value set a node references (every field marked ``value_set_ref``) is read without the
query type having to list it, so a new query type cannot make the reader drop its records.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_cohort.criteria.language import children

LOINC = "http://loinc.org"

# Resource types a medication query reads (the Medication a request references included).
MEDICATION_RESOURCE_TYPES: tuple[str, ...] = (
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    "Medication",
)

__all__ = [
    "MEDICATION_RESOURCE_TYPES",
    "Needs",
    "Requirements",
    "requirements",
    "value_sets_of",
]


def _union_opt(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if a is None or b is None:
        return None
    return tuple(sorted(set(a) | set(b)))


@dataclass(frozen=True)
class Requirements:
    """What screening one trial (or several, by :meth:`union`) reads from the data.

    - ``resource_types``: FHIR types the criteria read (Patient always).
    - ``value_sets``: every value set id the criteria use; ``codes``: their (system, code)
      pairs, expanded through the terminology (the reader keeps records coded in these).
    - ``medication_value_sets`` / ``medication_names``: agent value sets of medication
      queries and the lower-case names the terminology recognises in medication text for
      them (a medication coded by nothing relevant is kept when its text names one).
    - ``observation_value_sets`` / ``observation_tokens``: value sets of observation queries
      and their LOINC ``system|code`` search tokens (REST funnel and bulk ``_typeFilter``).
    - ``entry_value_sets`` / ``entry_tokens``: the funnel's entry query: a patient with no
      Condition coded in these answers ``not_met`` to an inclusion (so is ineligible);
      None when no inclusion says so (then only ``--strategy full`` or bulk can fetch).
    - ``lookback_days``: the earliest record date that can matter, in days before S (months
      and years counted long); None: the whole history. Informational: nothing filters on
      it, since an open-ended record (a medication still taken, an active condition) that
      started long before can still count.
    - ``patient_fields``: columns of the patients table the criteria read.
    """

    trials: tuple[str, ...] = ()
    resource_types: frozenset[str] = frozenset({"Patient"})
    value_sets: frozenset[str] = frozenset()
    codes: frozenset[tuple[str, str]] = frozenset()
    medication_value_sets: frozenset[str] = frozenset()
    medication_names: frozenset[str] = frozenset()
    observation_value_sets: frozenset[str] = frozenset()
    observation_tokens: tuple[str, ...] = ()
    entry_value_sets: tuple[str, ...] | None = None
    entry_tokens: tuple[str, ...] | None = None
    lookback_days: int | None = 0
    patient_fields: frozenset[str] = frozenset()

    @classmethod
    def of(cls, trials: Any, terminology: Any) -> Requirements:
        """The requirements of a trial, or the union of several (``fhir_cohort.Requirements``
        is the public name: the package attribute ``requirements`` is this module)."""
        if isinstance(trials, (list, tuple)):
            return cls.union_of(requirements(t, terminology) for t in trials)
        return requirements(trials, terminology)

    def union(self, other: Requirements) -> Requirements:
        """What screening both in one pass reads. The entry query is the union of both entry
        queries (a patient in neither is ineligible for both), None when either has none."""
        lookback = (
            None
            if self.lookback_days is None or other.lookback_days is None
            else max(self.lookback_days, other.lookback_days)
        )
        return Requirements(
            trials=tuple(dict.fromkeys((*self.trials, *other.trials))),
            resource_types=self.resource_types | other.resource_types,
            value_sets=self.value_sets | other.value_sets,
            codes=self.codes | other.codes,
            medication_value_sets=self.medication_value_sets | other.medication_value_sets,
            medication_names=self.medication_names | other.medication_names,
            observation_value_sets=self.observation_value_sets | other.observation_value_sets,
            observation_tokens=tuple(
                sorted(set(self.observation_tokens) | set(other.observation_tokens))
            ),
            entry_value_sets=_union_opt(self.entry_value_sets, other.entry_value_sets),
            entry_tokens=_union_opt(self.entry_tokens, other.entry_tokens),
            lookback_days=lookback,
            patient_fields=self.patient_fields | other.patient_fields,
        )

    @classmethod
    def union_of(cls, parts: Iterable[Requirements]) -> Requirements:
        """The union of one or more requirements (several trials in one pass)."""
        items = list(parts)
        if not items:
            raise ValueError("union_of needs at least one Requirements")
        return functools.reduce(cls.union, items)

    def codes_by_system(self) -> dict[str, frozenset[str]]:
        """System -> codes of :attr:`codes`."""
        out: dict[str, set[str]] = {}
        for system, code in self.codes:
            out.setdefault(system, set()).add(code)
        return {s: frozenset(c) for s, c in sorted(out.items())}

    def to_json(self, *, codes: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (code counts per system; the codes themselves with ``codes``)."""
        by_system = self.codes_by_system()
        return {
            "trials": list(self.trials),
            "resource_types": sorted(self.resource_types),
            "value_sets": sorted(self.value_sets),
            "codes_by_system": {s: sorted(c) if codes else len(c) for s, c in by_system.items()},
            "medication_value_sets": sorted(self.medication_value_sets),
            "medication_names": sorted(self.medication_names)
            if codes
            else len(self.medication_names),
            "observation_value_sets": sorted(self.observation_value_sets),
            "observation_tokens": list(self.observation_tokens)
            if codes
            else len(self.observation_tokens),
            "entry": None
            if self.entry_value_sets is None
            else {
                "resource_type": "Condition",
                "value_sets": list(self.entry_value_sets),
                "tokens": list(self.entry_tokens or ()) if codes else len(self.entry_tokens or ()),
            },
            "lookback_days": self.lookback_days,
            "patient_fields": sorted(self.patient_fields),
        }


@dataclass
class Needs:
    """What one node needs: the builder a query type's ``requires(node, needs)`` fills in."""

    resource_types: set[str] = field(default_factory=set)
    value_sets: set[str] = field(default_factory=set)
    medication_value_sets: set[str] = field(default_factory=set)
    observation_value_sets: set[str] = field(default_factory=set)
    patient_fields: set[str] = field(default_factory=set)
    # None: the whole history; else the days before S (see Requirements.lookback_days).
    lookback_days: int | None = 0
    # Set by a query that is false for a patient with no Condition coded in these.
    entry_value_sets: list[str] | None = None

    def resources(self, *types: str) -> None:
        self.resource_types.update(types)

    def codes(self, vs_ids: Iterable[str]) -> None:
        """Records coded in these are read (usually implied: every value set field is)."""
        self.value_sets.update(vs_ids)

    def observations(self, vs_ids: Iterable[str]) -> None:
        """Observations coded in these are read (searched for by their LOINC codes)."""
        ids = list(vs_ids)
        self.resources("Observation")
        self.codes(ids)
        self.observation_value_sets.update(ids)

    def medications(self, vs_ids: Iterable[str]) -> None:
        """Medication records of these agent value sets are read, by code or by name in text."""
        ids = list(vs_ids)
        self.resources(*MEDICATION_RESOURCE_TYPES)
        self.codes(ids)
        self.medication_value_sets.update(ids)

    def fields(self, *names: str) -> None:
        """Columns of the patients table read."""
        self.patient_fields.update(names)

    def lookback(self, days: int | None) -> None:
        """Records up to ``days`` before S can matter (None: any record)."""
        if days is None or self.lookback_days is None:
            self.lookback_days = None
        else:
            self.lookback_days = max(self.lookback_days, days)

    def window(self, within: Any) -> None:
        """The lookback of a query that counts only records dated inside ``within`` (a
        Window, or None: the whole history). A window anchored on another query's event
        reaches as far back as that event can lie: the whole history."""
        if within is None or within.anchor != "as_of":
            self.lookback(None)
            return
        self.lookback(_window_days(within))

    def entry(self, vs_ids: Iterable[str]) -> None:
        """This node is false for a patient with no Condition coded in ``vs_ids``."""
        self.entry_value_sets = list(dict.fromkeys(vs_ids))


def _window_days(within: Any) -> int:
    """A window's length in days, counted long (a month as 31 days, a year as 366)."""
    if within.days is not None:
        return int(within.days)
    if within.months is not None:
        return int(within.months) * 31
    return int(within.years) * 366


Requires = Callable[[Any, Needs], None]


def requires_for(type_name: str) -> Requires:
    """The ``requires`` of a query type: its registration's, else the shared table's
    (engine/queries/requires.py) for types whose module does not name one yet."""
    from fhir_cohort.engine.queries import REGISTRY
    from fhir_cohort.engine.queries.requires import REQUIRES

    qt = REGISTRY.get(type_name)
    fn = qt.requires if qt is not None else None
    if fn is None:
        fn = REQUIRES.get(type_name)
    if fn is None:
        raise KeyError(f"query type {type_name!r} has no requirements registered")
    return fn


def value_sets_of(node: Any) -> list[str]:
    """Every value set a node names (its fields marked ``value_set_ref``, nested ones too)."""
    from fhir_cohort.criteria.io import _value_set_refs

    return list(dict.fromkeys(vs for _, vs in _value_set_refs(node, "")))


def _leaf(node: Any, needs: Needs) -> None:
    if node.type == "chart_review":
        return
    needs.codes(value_sets_of(node))
    requires_for(node.type)(node, needs)


def _entry(node: Any, define: dict[str, Any]) -> list[str] | None:
    """Value sets such that ``node`` is false for a patient with no Condition coded in them,
    or None. ``all`` takes its first part that has one; ``any`` / ``at_least`` the union when
    every part has one (no record in the union: every part false)."""
    if node.type == "ref":
        return _entry(define[node.name], define)
    if node.type == "all":
        for c in node.of:
            got = _entry(c, define)
            if got is not None:
                return got
        return None
    if node.type in ("any", "at_least"):
        out: list[str] = []
        for c in node.of:
            got = _entry(c, define)
            if got is None:
                return None
            out.extend(got)
        return list(dict.fromkeys(out))
    if node.type in ("not", "chart_review"):
        return None
    needs = Needs()
    requires_for(node.type)(node, needs)
    return needs.entry_value_sets


def needs_of(trial: Any) -> tuple[Needs, list[str] | None]:
    """(what the trial's rule trees read, the entry value sets): no terminology needed."""
    define = dict(trial.define)
    needs = Needs()
    needs.resources("Patient")
    todo = [c.rule for c in reversed(trial.criteria)]
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        # A definition is read once, whether used by ref or as a window anchor.
        used = [node.name] if node.type == "ref" else []
        anchor = getattr(getattr(node, "within", None), "anchor", "as_of")
        if anchor != "as_of":
            used.append(anchor)
        for name in used:
            if name not in seen:
                seen.add(name)
                todo.append(define[name])
        if node.type == "ref":
            continue
        kids = children(node)
        if kids:
            todo.extend(reversed(kids))
            continue
        _leaf(node, needs)
    entry = None
    for c in trial.criteria:
        if c.kind == "inclusion":
            entry = _entry(c.rule, define)
            if entry is not None:
                break
    return needs, entry


def _medication_names(terminology: Any, vs_ids: frozenset[str]) -> frozenset[str]:
    """Names in medication text the terminology maps to an agent of ``vs_ids``."""
    if not vs_ids:
        return frozenset()
    out = set()
    for name in terminology.medication_names():
        for m in terminology.agents_for_text(name):
            if terminology.agent_value_sets(m.agent) & vs_ids:
                out.add(name)
                break
    return frozenset(out)


def requirements(trial: Any, terminology: Any) -> Requirements:
    """What screening ``trial`` reads, codes expanded through ``terminology``.

    >>> from fhir_cohort.criteria import load_criteria, default_criteria_path
    >>> from fhir_cohort.terminology import Terminology
    >>> req = requirements(load_criteria(default_criteria_path()), Terminology.load())
    >>> sorted(req.resource_types)[:3]
    ['Condition', 'Medication', 'MedicationAdministration']
    >>> req.entry_value_sets
    ('sle', 'lupus_unspecified')
    """
    needs, entry = needs_of(trial)
    med_sets = frozenset(needs.medication_value_sets)
    obs_sets = frozenset(needs.observation_value_sets)
    return Requirements(
        trials=(trial.id,),
        resource_types=frozenset(needs.resource_types),
        value_sets=frozenset(needs.value_sets),
        codes=frozenset(terminology.codes(sorted(needs.value_sets))),
        medication_value_sets=med_sets,
        medication_names=_medication_names(terminology, med_sets),
        observation_value_sets=obs_sets,
        observation_tokens=tuple(terminology.search_tokens(sorted(obs_sets), system=LOINC)),
        entry_value_sets=None if entry is None else tuple(entry),
        entry_tokens=None if entry is None else tuple(terminology.search_tokens(entry)),
        lookback_days=needs.lookback_days,
        patient_fields=frozenset(needs.patient_fields),
    )
