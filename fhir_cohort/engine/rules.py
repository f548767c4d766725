"""Rule trees -> three-valued results; a criterion's kind alone maps them to words.

Groups use Kleene logic: ``all`` is false if any part is false, else unknown if any is
unknown, else true; ``any`` is the dual; ``not`` keeps unknown; ``at_least n`` is true with n
true parts and unknown while the unknown parts could still make n. A criterion's kind then
names the value: inclusion true/false/unknown -> met/not_met/unknown, exclusion ->
excluded/clear/review. No evaluator returns words, so a mislabelled kind cannot invert a
query's meaning (an exclusion is excluded exactly when its rule is true).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData

WORDS: dict[str, dict[bool | None, str]] = {
    "inclusion": {True: "met", False: "not_met", None: "unknown"},
    "exclusion": {True: "excluded", False: "clear", None: "review"},
}

Span = tuple[dt.date, dt.date]


@dataclass
class Result:
    """One expression's answer for one patient."""

    value: bool | None
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    # Review notes that do not change the answer.
    notes: list[str] = field(default_factory=list)
    # Date ranges of the qualifying records (a window anchored on this expression reads them).
    events: list[Span] = field(default_factory=list)


class Scope:
    """What an evaluator may read for one patient: terminology look-ups and S (``ctx``), the
    patient's rows (``data``) and the trial's definitions, each evaluated at most once."""

    def __init__(
        self,
        ctx: Context,
        data: PatientData,
        define: dict[str, Any],
        shortcut: Shortcut | None = None,
    ) -> None:
        self.ctx = ctx
        self.data = data
        self.define = define
        # The evaluation's no-rows shortcut (engine/evaluate.py), for a scope with a patient.
        self.shortcut = shortcut
        self._memo: dict[str, Result] = {}

    @property
    def as_of(self) -> dt.date:
        return self.ctx.as_of

    def definition(self, name: str) -> Result:
        hit = self._memo.get(name)
        if hit is None:
            hit = self._memo[name] = evaluate_expr(self.define[name], self)
        return hit


def _join(parts: list[str]) -> str:
    return "; ".join(dict.fromkeys(p for p in parts if p))


def _group(node: Any, scope: Scope) -> Result:
    parts = [evaluate_expr(c, scope) for c in node.of]
    values = [p.value for p in parts]
    n_true = sum(v is True for v in values)
    n_unknown = sum(v is None for v in values)
    if node.type == "all":
        value = False if False in values else (None if n_unknown else True)
    elif node.type == "any":
        value = True if n_true else (None if n_unknown else False)
    else:  # at_least
        value = True if n_true >= node.n else (None if n_true + n_unknown >= node.n else False)
    if value is False and node.type == "all":
        reason = _join([p.reason for p in parts if p.value is False])
    elif value is None:
        reason = _join([p.reason for p in parts if p.value is None])
        if node.type == "at_least":
            reason = f"{n_true} of {node.n} met, {n_unknown} unknown: {reason}"
    elif value is True:
        reason = _join([p.reason for p in parts if p.value is True])
        if node.type == "at_least":
            reason = f"{n_true} of {len(parts)} (at least {node.n}): {reason}"
    else:
        reason = _join([p.reason for p in parts])
        if node.type == "at_least":
            reason = f"{n_true} of {node.n} met: {reason}"
    return Result(
        value,
        reason,
        _merged_evidence(parts, value),
        [n for p in parts if p.value is True for n in p.notes],
        [e for p in parts if p.value is True for e in p.events],
    )


def _merged_evidence(parts: list[Result], value: bool | None) -> list[Evidence]:
    """The parts' evidence with each record once: a record several parts read (one condition
    query per rule of a shorthand) keeps the note of the first part that gave the group's
    value, so it reads as the deciding part saw it."""
    out: list[Evidence] = []
    seen: set[Any] = set()
    for p in [*(p for p in parts if p.value is value), *(p for p in parts if p.value is not value)]:
        for e in p.evidence:
            key = (
                (e.resource_type, e.resource_id, e.system, e.code, e.value) if e.resource_id else e
            )
            if key not in seen:
                seen.add(key)
                out.append(e)
    return out


def evaluate_expr(node: Any, scope: Scope) -> Result:
    """The three-valued result of one expression for the patient in ``scope``."""
    shortcut = scope.shortcut
    if shortcut is not None:
        key = shortcut.key(node, scope.data)
        if key is not None:
            hit = shortcut.results.get(key)
            if hit is None:
                hit = shortcut.results[key] = _evaluate(node, scope)
            # A copy: callers amend the result they get.
            return Result(
                hit.value, hit.reason, list(hit.evidence), list(hit.notes), list(hit.events)
            )
    return _evaluate(node, scope)


def _evaluate(node: Any, scope: Scope) -> Result:
    kind = node.type
    if kind in ("all", "any", "at_least"):
        res = _group(node, scope)
    elif kind == "not":
        inner = evaluate_expr(node.of, scope)
        value = None if inner.value is None else not inner.value
        res = Result(value, f"not ({inner.reason})", inner.evidence, [], [])
    elif kind == "chart_review":
        note = node.note or node.reason or "confirm in chart"
        return Result(None, note, [Evidence("", "", None, None, None, None, None, note)])
    elif kind == "ref":
        res = scope.definition(node.name)
        res = Result(res.value, res.reason, list(res.evidence), list(res.notes), res.events)
    else:
        res = _registry()[kind].evaluate(node, scope)
    if node.reason and res.value is not False and kind not in QUERY_OWN_REASON:
        res.reason = node.reason
    if node.note and res.value is True:
        res.notes.append(node.note)
        res.evidence.append(Evidence("", "", None, None, None, None, None, node.note))
    return res


# Domain queries word their own reason from node.reason (they know partial-date details).
QUERY_OWN_REASON = frozenset({"patient", "condition", "procedure", "observation", "medication"})


def evaluate_criterion(crit: Any, scope: Scope) -> Outcome:
    """A rule criterion's outcome in words of its kind."""
    res = evaluate_expr(crit.rule, scope)
    answer = WORDS[crit.kind][res.value]
    return Outcome(answer, res.reason, res.evidence, res.notes)


class Reads(NamedTuple):
    """What an expression reads, for the engine's no-rows shortcut."""

    tables: frozenset[str]
    fields: frozenset[str]  # patient fields the outcome is keyed on
    # table -> the value sets whose rows the expression can read (None: any row of the table);
    # a patient whose rows of the table are all outside them answers as one with none.
    value_sets: dict[str, frozenset[str] | None]


def leaves(nodes: Iterable[Any], define: dict[str, Any]) -> Iterator[Any]:
    """Every node of ``nodes`` that is not a group or a ref, through groups, definitions
    (each once) and the definitions windows are anchored on: what the expressions query."""
    todo, seen = list(nodes), set()
    while todo:
        n = todo.pop()
        if n.type == "ref":
            if n.name not in seen:
                seen.add(n.name)
                todo.append(define[n.name])
            continue
        anchor = getattr(getattr(n, "within", None), "anchor", "as_of")
        if anchor != "as_of" and anchor not in seen:
            seen.add(anchor)
            todo.append(define[anchor])
        of = getattr(n, "of", None)
        if of is not None:
            todo.extend(of if isinstance(of, list) else [of])
            continue
        yield n


def reads(node: Any, define: dict[str, Any]) -> Reads | None:
    """What an expression reads, through definitions; None when it reads something the
    no-rows shortcut cannot key (then it is evaluated for every patient)."""
    from fhir_cohort.engine.queries import REGISTRY

    tables: set[str] = set()
    fields: set[str] = set()
    value_sets: dict[str, frozenset[str] | None] = {}
    for n in leaves([node], define):
        if n.type == "chart_review":
            continue
        qt = REGISTRY[n.type]
        got = qt.reads(n)
        if got is None:
            return None
        tables |= got[0]
        fields |= got[1]
        for table in got[0]:
            had = value_sets.get(table, frozenset())
            value_sets[table] = None if had is None or got[2] is None else had | got[2]
    return Reads(frozenset(tables), frozenset(fields), value_sets)


class Shortcut:
    """The no-rows shortcut of one trial's evaluation. An expression answers from the rows it
    can read (:func:`reads`: rows of its tables in its value sets) and the patient fields it
    names; for a patient with no such row, it answers alike for every patient with the same
    fields, so :func:`evaluate_expr` evaluates it once per key of those fields and reuses the
    answer (for a criterion, or any part of one: the parts of a criterion that also asks a
    patient query). The patient's data must carry ``coded`` (engine.evaluate.Prepared)."""

    def __init__(self, define: dict[str, Any]) -> None:
        self.define = define
        # id(node) -> (node, ((table, value sets or None), ...), patient fields); checks None:
        # the node cannot be keyed.
        self._reads: dict[int, tuple[Any, Any, tuple[str, ...]]] = {}
        self.results: dict[tuple[int, tuple[Any, ...]], Result] = {}

    def _entry(self, node: Any) -> tuple[Any, Any, tuple[str, ...]]:
        rd = reads(node, self.define)
        if rd is None:
            entry: tuple[Any, Any, tuple[str, ...]] = (node, None, ())
        else:
            checks = tuple((t, rd.value_sets[t]) for t in sorted(rd.tables))
            entry = (node, checks, tuple(sorted(rd.fields)))
        self._reads[id(node)] = entry
        return entry

    def key(self, node: Any, data: PatientData) -> tuple[int, tuple[Any, ...]] | None:
        """``node``'s key for this patient, or None when the patient has a row it can read
        (or it cannot be keyed): then it must be evaluated."""
        entry = self._reads.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self._entry(node)
        checks = entry[1]
        if checks is None:
            return None
        coded = data.coded
        assert coded is not None
        for table, wanted in checks:
            got = coded.get(table)
            if got is not None and (wanted is None or not wanted.isdisjoint(got)):
                return None
        if not entry[2]:
            return id(node), ()
        return id(node), tuple(getattr(data.patient, f) for f in entry[2])


_REGISTRY: list[dict[str, Any]] = []


def _registry() -> dict[str, Any]:
    """engine.queries.REGISTRY (which imports this module: looked up once, late)."""
    if not _REGISTRY:
        from fhir_cohort.engine.queries import REGISTRY

        _REGISTRY.append(REGISTRY)
    return _REGISTRY[0]
