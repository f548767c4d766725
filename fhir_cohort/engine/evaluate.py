"""criteria x tables x S -> answers, evidence, status (pure, partitionable by patient).

The tidy tables are turned once into per-patient lists of plain namedtuples (no pandas in the
per-patient loop), then every criterion's rule (engine/rules.py) is evaluated per patient.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fhir_cohort.criteria.language import ObservationQuery, walk
from fhir_cohort.criteria.models import Trial
from fhir_cohort.engine import medication
from fhir_cohort.engine.evaluators import Context, Outcome, PatientData
from fhir_cohort.engine.evaluators.common import Kept, TerminologyLike
from fhir_cohort.engine.labs import read_tests
from fhir_cohort.engine.queries.patient import birth_key
from fhir_cohort.engine.rules import Scope, Shortcut, evaluate_criterion, leaves
from fhir_cohort.engine.sharing import KeyUses
from fhir_cohort.engine.tables import (
    CONDITION_COLUMNS,
    MEDICATION_COLUMNS,
    OBSERVATION_COLUMNS,
    PATIENT_COLUMNS,
    Tables,
)

ANSWER_COLUMNS = ("patient_id", "criterion_id", "answer", "reason")
EVIDENCE_COLUMNS = (
    "patient_id",
    "criterion_id",
    "resource_type",
    "resource_id",
    "system",
    "code",
    "display",
    "date",
    "value",
    "note",
)
STATUS_COLUMNS = ("patient_id", "status", "reasons")
INCLUSION_ANSWERS = ("met", "not_met", "unknown")
EXCLUSION_ANSWERS = ("clear", "excluded", "review")
FAILING = frozenset({"not_met", "excluded"})
PASSING = frozenset({"met", "clear"})

_DATE_COLUMNS = {
    "patients": ("deceased_date", "deceased_high"),
    "conditions": (
        "onset_date",
        "onset_high",
        "abatement_date",
        "abatement_high",
        "recorded_date",
        "recorded_high",
    ),
    "medications": ("start", "end", "start_late", "end_early"),
    "observations": ("date", "date_high"),
}
_BOOL_COLUMNS = {"deceased", "has_abatement", "do_not_perform"}
# The Patient fields other than the id and birthDate, as a tuple (Prepared.patient_key).
_PATIENT_REST = itemgetter(
    *(i for i, c in enumerate(PATIENT_COLUMNS) if c not in ("patient_id", "birth_date_raw")),
    slice(0, 0),  # always a tuple, whatever the number of fields
)


@dataclass
class EvaluationResult:
    answers: pd.DataFrame
    evidence: pd.DataFrame
    status: pd.DataFrame


# --------------------------------------------------------------------------- table -> rows


def _clean(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def to_date(v: Any) -> dt.date | None:
    """date, datetime/Timestamp or ISO string (partial: first day) -> date; else None."""
    v = _clean(v)
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    s = str(v).strip()
    try:
        if len(s) >= 10:
            return dt.date.fromisoformat(s[:10])
        if len(s) == 7:
            return dt.date(int(s[:4]), int(s[5:7]), 1)
        if len(s) == 4:
            return dt.date(int(s), 1, 1)
    except ValueError:
        return None
    return None


def _to_bool(v: Any) -> bool | None:
    v = _clean(v)
    if v is None:
        return None
    if isinstance(v, str):
        return v.strip().lower() == "true"
    return bool(v)


def frame_rows(df: pd.DataFrame, columns: tuple[str, ...], table: str) -> list[Any]:
    """DataFrame -> list of namedtuples with None for missing, dates as date, bools as bool."""
    row_type = namedtuple(f"{table.title()}Row", columns)  # type: ignore[misc]
    n = len(df)
    if n == 0:
        return []
    cols: list[list[Any]] = []
    dates = set(_DATE_COLUMNS.get(table, ()))
    for c in columns:
        if c not in df.columns:
            cols.append([None] * n)
            continue
        if df[c].dtype == "str" and c not in dates and c not in _BOOL_COLUMNS:
            cols.append(_text_values(df[c]))
            continue
        values = df[c].tolist()
        if c in dates:
            values = [to_date(v) for v in values]
        elif c in _BOOL_COLUMNS:
            values = [_to_bool(v) for v in values]
        elif c == "patient_id":
            values = [None if _clean(v) is None else str(v) for v in values]
        else:
            col = df[c].astype(object)
            values = col.where(col.notna(), None).tolist()
        cols.append(values)
    return [row_type(*vals) for vals in zip(*cols, strict=True)]


def _text_values(column: pd.Series) -> list[str | None]:
    """A text column's values, missing ones None, each distinct text one Python string: most
    columns hold a few values (codes, statuses, genders) that would otherwise be a string
    object per row (about 35 MiB of the rows at 100,000 patients)."""
    codes, uniques = pd.factorize(column)
    texts = np.empty(len(uniques) + 1, dtype=object)
    texts[:-1] = uniques.tolist()
    texts[-1] = None  # code -1: missing
    return texts[codes].tolist()


def _by_patient(rows: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(r.patient_id, []).append(r)
    return out


class Prepared:
    """What every trial screened from one read shares (trial-independent, only read): the
    tables as per-patient rows, and the terminology look-ups memoised in one Context for S.

    Built once per read, it saves each further trial (and the analysts' era and lab tables)
    the conversion of the tables into rows and the value-set membership look-ups. With
    ``keep``, an evaluation also keeps what the era and lab tables show (:class:`Kept`), so
    :func:`medication_eras` and :func:`lab_results` read it instead of evaluating again."""

    def __init__(
        self, tables: Tables, terminology: TerminologyLike, as_of: dt.date, keep: bool = False
    ) -> None:
        self.tables = tables
        self.ctx = Context(terminology, as_of)
        if keep:
            self.ctx.kept = Kept()
        self.patients = frame_rows(tables.patients, PATIENT_COLUMNS, "patients")
        self.conditions = _by_patient(
            frame_rows(tables.conditions, CONDITION_COLUMNS, "conditions")
        )
        self.medications = _by_patient(
            frame_rows(tables.medications, MEDICATION_COLUMNS, "medications")
        )
        self.observations = _by_patient(
            frame_rows(tables.observations, OBSERVATION_COLUMNS, "observations")
        )
        self._patient_by_id: dict[str, Any] | None = None
        # birthDate as read -> birth_key at S (patient_key)
        self._births: dict[Any, Any] = {}
        self._med_sets: dict[tuple[Any, ...], frozenset[str]] = {}
        # patient id -> table -> every value set holding a coding of the patient's rows of it
        self._coded: dict[str, dict[str, frozenset[str]]] = {}
        self._interned: dict[Any, Any] = {}
        # What several trials of one pass ask identically (share): key -> trials still to
        # read it; the outcomes per patient and the detail frames are kept until the last.
        self._share_uses = KeyUses()
        self._shared_outcomes: dict[str, dict[str, Outcome]] = {}
        self._shared_frames: dict[str, pd.DataFrame] = {}

    def share(self, keys_per_trial: Iterable[Iterable[str]]) -> None:
        """Keep, for this pass, the outcomes of criteria (and the detail tables of queries)
        that more than one trial asks identically (:func:`same_key`): each is evaluated for
        a patient once, however many trials ask it."""
        self._share_uses = KeyUses(keys_per_trial)

    @property
    def sharing(self) -> bool:
        """Whether some criterion or detail table is still shared by trials to come."""
        return bool(self._share_uses)

    def shared_outcomes(self, key: str) -> dict[str, Outcome] | None:
        """patient id -> outcome of the shared criterion ``key`` (None: not shared)."""
        if key not in self._share_uses:
            return None
        return self._shared_outcomes.setdefault(key, {})

    def shared_frame(self, key: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The detail table ``key``, computed by the first trial that asks for it."""
        if key not in self._share_uses:
            return compute()
        got = self._shared_frames.get(key)
        if got is None:
            got = self._shared_frames[key] = compute()
        return got

    def done_with(self, keys: Iterable[str]) -> None:
        """A trial has read ``keys``: free what no later trial of the pass asks for."""
        for key in self._share_uses.done_with(keys):
            self._shared_outcomes.pop(key, None)
            self._shared_frames.pop(key, None)

    def coded(self, pid: str) -> dict[str, frozenset[str]]:
        """For each table in which ``pid`` has rows: every value set holding a coding of them
        (medications: or one of their agents, matched by coding or by name). Computed once per
        pass: a query whose value sets are all outside it reads none of the rows (the no-rows
        shortcut). Equal answers are stored once (most patients share one)."""
        hit = self._coded.get(pid)
        if hit is None:
            memberships = self.ctx.memberships
            got: dict[str, frozenset[str]] = {}
            for table, by_pid in (
                ("conditions", self.conditions),
                ("observations", self.observations),
            ):
                rows = by_pid.get(pid)
                if rows:
                    vs = frozenset().union(*{memberships(r.system, r.code) for r in rows})
                    got[table] = self._interned.setdefault(vs, vs)
            rows = self.medications.get(pid)
            if rows:
                vs = frozenset().union(*map(self._medication_sets, rows))
                got["medications"] = self._interned.setdefault(vs, vs)
            key = tuple(got.items())
            hit = self._coded[pid] = self._interned.setdefault(key, got)
        return hit

    def _medication_sets(self, row: Any) -> frozenset[str]:
        """medication.row_value_sets, once per coding and text."""
        key = (row.system, row.code, row.text, row.display)
        hit = self._med_sets.get(key)
        if hit is None:
            hit = self._med_sets[key] = medication.row_value_sets(row, self.ctx)
        return hit

    def patient_key(self, p: Any) -> tuple[Any, ...]:
        """The Patient row ``p`` as the patient query reads it, its id left out: the birthDate
        as :func:`birth_key` (the ages at S), every other field as it is."""
        raw = p.birth_date_raw
        try:
            born = self._births[raw]
        except KeyError:
            born = self._births[raw] = birth_key(raw, self.ctx.as_of)
        return born, _PATIENT_REST(p)

    def patient(self, pid: str) -> Any:
        """The Patient row of ``pid`` (the last of several, as a dict built from rows keeps)."""
        if self._patient_by_id is None:
            self._patient_by_id = {p.patient_id: p for p in self.patients}
        return self._patient_by_id.get(pid)

    def fits(self, tables: Tables, terminology: TerminologyLike, as_of: dt.date) -> bool:
        """Whether this was prepared from these very tables, terminology and S."""
        ctx = self.ctx
        return self.tables is tables and ctx.terminology is terminology and ctx.as_of == as_of


def prepare(
    tables: Tables,
    terminology: TerminologyLike,
    as_of: dt.date,
    prepared: Prepared | None = None,
    keep: bool = False,
) -> Prepared:
    """``prepared`` when it was built from these tables, terminology and S; else a new one."""
    if prepared is not None and prepared.fits(tables, terminology, as_of):
        return prepared
    return Prepared(tables, terminology, as_of, keep)


def same_key(what: str, node: Any, define: dict[str, Any]) -> str:
    """What a criterion's outcome (``what``: its kind) or a query's detail table (``what``:
    the table) depends on besides the patient's rows and S: the node as data and the trial's
    definitions (reached through refs and window anchors; all of them, to be safe). Two trials
    with equal keys get equal answers for every patient (the engine is a pure function)."""
    defs = ",".join(f"{k!r}:{define[k].model_dump_json()}" for k in sorted(define))
    return f"{what}|{node.model_dump_json()}|{{{defs}}}"


def criterion_keys(trial: Trial) -> list[str]:
    """:func:`same_key` of each criterion of ``trial``, in order."""
    define = dict(trial.define)
    return [same_key(c.kind, c.rule, define) for c in trial.criteria]


# --------------------------------------------------------------------------- evaluate


def patient_status(
    trial: Trial, outcomes: list[Outcome], ids: list[str] | None = None
) -> tuple[str, str]:
    """(status, reasons) from one patient's outcomes in criteria order (``ids``: the
    criteria's ids, when the caller has them)."""
    # one pass over the outcomes (it runs for every patient of every trial)
    failing = False
    passing = True
    parts: list[str] = []
    for cid, o in zip(ids or [c.id for c in trial.criteria], outcomes, strict=True):
        answer = o.answer
        if answer not in PASSING:
            passing = False
            failing = failing or answer in FAILING
            parts.append(f"{cid}: {answer}: {o.reason}")
        if o.notes:
            parts.extend(f"{cid}: {note}" for note in o.notes)
    status = "ineligible" if failing else "eligible" if passing else "review"
    return status, "; ".join(parts)


def evaluate(
    trial: Trial,
    tables: Tables,
    terminology: TerminologyLike,
    as_of: dt.date,
    prepared: Prepared | None = None,
    shortcut: bool = True,
) -> EvaluationResult:
    """Answer every criterion for every patient in ``tables.patients``. ``prepared``: the rows
    and look-ups of these tables shared with other trials (:func:`prepare`). ``shortcut``
    False evaluates every criterion for every patient (the tests' reference for the no-rows
    shortcut)."""
    prep = prepare(tables, terminology, as_of, prepared)
    ctx = prep.ctx
    patients = prep.patients
    conditions, medications, observations = prep.conditions, prep.medications, prep.observations
    define = dict(trial.define)
    # A criterion (or a query in it) that reads only some tables (and the listed patient
    # fields) has, for a patient with none of those rows it can read (none, or none in its
    # value sets), an outcome computed once per key of those fields.
    rows_shortcut = Shortcut(define) if shortcut else None
    # A criterion none of whose queries can read a row of the patient (each keyed by the
    # shortcut) answers from the Patient row alone: its outcome is computed once per
    # Prepared.patient_key and copied, the patient id put into its Patient evidence; a
    # patient with no such row at all copies all its outcomes and its status at once.
    criteria = trial.criteria
    crit_reads = [_row_reads([crit.rule], define) for crit in criteria] if shortcut else None
    # id(coded) -> (coded, per criterion: reads none of these rows, all of them do)
    free_of: dict[int, tuple[Any, tuple[bool, ...], bool]] = {}
    whole: dict[tuple[Any, ...], _Template] = {}
    parts: dict[tuple[int, tuple[Any, ...]], tuple[Outcome, str]] = {}
    crit_ids = [crit.id for crit in criteria]
    n_crit = len(crit_ids)
    # Criteria another trial of the pass asks identically: a patient's outcome evaluated
    # once (Prepared.share); None where not shared.
    keys = criterion_keys(trial) if prep.sharing else []
    stores = [prep.shared_outcomes(k) for k in keys] if keys else [None] * n_crit
    # Answers column by column (8 per patient): a tuple per answer cost more than the frame.
    a_pid: list[str] = []
    a_crit: list[str] = []
    a_answer: list[str] = []
    a_reason: list[str] = []
    evidence: list[tuple[Any, ...]] = []
    status: list[tuple[str, str, str]] = []
    # Reasons repeat (155 distinct answer reasons and 191 status reasons among 100,000
    # patients): one string each, not one per patient evaluated.
    texts: dict[str, str] = {}
    seen: set[str] = set()
    for p in patients:
        pid = p.patient_id
        if pid is None or pid in seen:
            continue
        seen.add(pid)
        coded = prep.coded(pid)
        free: tuple[bool, ...] = ()
        all_free = False
        pkey: tuple[Any, ...] = ()
        if crit_reads is not None:
            hit = free_of.get(id(coded))
            if hit is None or hit[0] is not coded:
                flags = tuple(r is not None and _reads_none(coded, r) for r in crit_reads)
                hit = free_of[id(coded)] = (coded, flags, all(flags))
            free, all_free = hit[1], hit[2]
            if True in free:
                pkey = prep.patient_key(p)
            if all_free:
                tpl = whole.get(pkey)
                if tpl is not None:
                    a_pid.extend([pid] * n_crit)
                    a_crit.extend(crit_ids)
                    a_answer.extend(tpl.answers)
                    a_reason.extend(tpl.reasons)
                    _copy_evidence(evidence, tpl.evidence, tpl.pid, pid)
                    status.append((pid, tpl.status, tpl.status_reasons))
                    continue
        n_evidence = len(evidence)
        scope: Scope | None = None
        outcomes: list[Outcome] = []
        for i, crit in enumerate(criteria):
            got = parts.get((i, pkey)) if free and free[i] else None
            if got is None:
                store = stores[i]
                o = store.get(pid) if store is not None else None
                if o is None:
                    if scope is None:
                        data = PatientData(
                            p,
                            conditions.get(pid, []),
                            medications.get(pid, []),
                            observations.get(pid, []),
                            coded,
                        )
                        scope = Scope(ctx, data, define, rows_shortcut)
                    o = evaluate_criterion(crit, scope)
                    if store is not None:
                        store[pid] = o  # this patient's own outcome: its evidence is its own
                if free and free[i]:
                    parts[(i, pkey)] = (o, pid)
                if o.evidence:
                    evidence.extend((pid, crit.id, *e) for e in o.evidence)
            else:
                o = got[0]
                if o.evidence:
                    _copy_evidence(
                        evidence, [(got[1], crit.id, *e) for e in o.evidence], got[1], pid
                    )
            outcomes.append(o)
            a_pid.append(pid)
            a_crit.append(crit.id)
            a_answer.append(o.answer)
            a_reason.append(texts.setdefault(o.reason, o.reason))
        st, reasons = patient_status(trial, outcomes, crit_ids)
        reasons = texts.setdefault(reasons, reasons)
        status.append((pid, st, reasons))
        if all_free:
            whole[pkey] = _Template(
                pid,
                tuple(o.answer for o in outcomes),
                tuple(o.reason for o in outcomes),
                evidence[n_evidence:],
                st,
                reasons,
            )
    if keys:
        prep.done_with(keys)
    # Each frame built and its rows freed before the next (the peak of the evaluation).
    columns = [a_pid, a_crit, a_answer, a_reason]
    answers = _frame(columns, ANSWER_COLUMNS, CATEGORICAL_ANSWER_COLUMNS)
    del columns, a_pid, a_crit, a_answer, a_reason
    # column by column as the answers (the rows freed first): pandas' from_records turned
    # every text into a Python-checked string one by one
    ev_columns = [list(c) for c in zip(*evidence, strict=True)] if evidence else []
    del evidence
    evidence_frame = _frame(ev_columns, EVIDENCE_COLUMNS)
    del ev_columns
    return EvaluationResult(
        answers=answers,
        evidence=evidence_frame,
        status=pd.DataFrame.from_records(status, columns=list(STATUS_COLUMNS)),
    )


class _Template(NamedTuple):
    """One patient's outcomes, for the patients with the same Patient fields and no row the
    trial reads: the evidence rows as that patient got them (``pid``: its id)."""

    pid: str
    answers: tuple[str, ...]
    reasons: tuple[str, ...]
    evidence: list[tuple[Any, ...]]
    status: str
    status_reasons: str


def _copy_evidence(
    out: list[tuple[Any, ...]], rows: list[tuple[Any, ...]], was: str, pid: str
) -> None:
    """Evidence rows of patient ``was`` as patient ``pid``'s (its Patient evidence named)."""
    for e in rows:
        if e[3] == was and e[2] == "Patient":
            out.append((pid, e[1], e[2], pid, *e[4:]))
        else:
            out.append((pid, *e[1:]))


def _row_reads(rules: list[Any], define: dict[str, Any]) -> dict[str, frozenset[str] | None] | None:
    """table -> the value sets of its rows any query of ``rules`` can read (None: any row),
    through definitions and window anchors, as each query type registers them (``reads``);
    None when a query the shortcut cannot key (or one keyed on patient fields) or an unknown
    node type is met: then it is always evaluated. The patient query is left out: the
    outcome is keyed on the whole Patient row (Prepared.patient_key)."""
    from fhir_cohort.engine.queries import REGISTRY

    out: dict[str, frozenset[str] | None] = {}
    for n in leaves(rules, define):
        if n.type in ("chart_review", "patient"):
            continue
        qt = REGISTRY.get(n.type)
        got = None if qt is None else qt.reads(n)
        if got is None or got[1]:
            return None
        for table in got[0]:
            had = out.get(table, frozenset())
            out[table] = None if had is None or got[2] is None else had | got[2]
    return out


def _reads_none(coded: dict[str, frozenset[str]], row_reads: dict[str, Any]) -> bool:
    """Whether a patient with these coded rows (Prepared.coded) has none the trial reads."""
    for table, wanted in row_reads.items():
        got = coded.get(table)
        if got is not None and (wanted is None or not wanted.isdisjoint(got)):
            return False
    return True


# Answer columns of few distinct values (criteria, answers, a few thousand reasons among
# 800,000 answers at 100,000 patients) are categorical: as strings the reasons alone held
# 78 MiB of Arrow until the outputs were written (docs/benchmarks.md, session 15).
CATEGORICAL_ANSWER_COLUMNS: frozenset[str] = frozenset({"criterion_id", "answer", "reason"})


def _frame(
    columns: list[list[Any]], names: tuple[str, ...], categorical: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """The frame ``DataFrame.from_records`` builds from the rows these columns hold (same
    dtypes, but the ``categorical`` columns as categories of the same values, text columns
    converted by Arrow), one column converted at a time, each list emptied once converted."""
    if not columns or not columns[0]:
        return pd.DataFrame.from_records([], columns=list(names))
    out: dict[str, Any] = {}
    for name, values in zip(names, columns, strict=True):
        column = _categories(values) if name in categorical else _text_series(values)
        if column is None:
            column = pd.DataFrame({name: values})[name]
        out[name] = column.rename(name)
        values.clear()
    return pd.DataFrame(out, copy=False)


def _text_series(values: list[Any]) -> pd.Series | None:
    """``values`` as pandas' text column, when every one is a str (what pandas infers then:
    its ``str`` dtype, Arrow-backed), converted by Arrow in C: a fifth of pandas' time for the
    800,000 answers of 100,000 patients. None for anything else (a missing value, a date, a
    number): pandas infers those."""
    import pyarrow as pa

    try:
        arrow = pa.array(values, pa.large_string())
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if arrow.null_count:
        return None
    series = pd.Series(pd.array(arrow, dtype="str"))
    if series.dtype != "str":  # a pandas without the Arrow-backed str dtype: its own way
        return None
    return series


def _categories(values: list[Any]) -> pd.Series | None:
    """``values`` as a categorical Series with text categories in order of appearance
    (missing values stay missing); None when some value is not text."""
    codes, uniques = pd.factorize(pd.Index(values, dtype=object))
    if not all(isinstance(u, str) for u in uniques):
        return None
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype="str")))


def attrition(result: EvaluationResult, trial: Trial) -> pd.DataFrame:
    """All patients, then each criterion in order: patients remaining and per-answer counts.

    A patient remains while none of its answers so far is not_met / excluded.
    """
    answer_cols = [*INCLUSION_ANSWERS, *EXCLUSION_ANSWERS]
    ids = [c.id for c in trial.criteria]
    ans = result.answers
    patients = pd.Index(pd.unique(pd.concat([result.status["patient_id"], ans["patient_id"]])))
    columns = list(dict.fromkeys(ids))
    texts, matrix = _answer_matrix(ans, patients, columns)
    # still in after criterion k <=> no not_met / excluded among criteria 1..k
    failing = [code for code, text in enumerate(texts) if text in FAILING]
    still_in = np.cumsum(np.isin(matrix, failing), axis=1) == 0
    rows: list[dict[str, Any]] = [
        {
            "step": 0,
            "criterion_id": "all",
            "kind": "",
            "title": "all patients",
            "remaining": len(patients),
            **dict.fromkeys(answer_cols, 0),
        }
    ]
    for i, crit in enumerate(trial.criteria, start=1):
        j = columns.index(crit.id)
        given = matrix[:, j]
        found = np.bincount(given[given >= 0], minlength=len(texts)).tolist()
        counts = dict(zip(texts, found, strict=True))
        rows.append(
            {
                "step": i,
                "criterion_id": crit.id,
                "kind": crit.kind,
                "title": crit.title,
                "remaining": int(still_in[:, j].sum()),
                **{a: int(counts.get(a, 0)) for a in answer_cols},
            }
        )
    return pd.DataFrame(
        rows, columns=["step", "criterion_id", "kind", "title", "remaining", *answer_cols]
    )


def _answer_matrix(
    answers: pd.DataFrame, patients: pd.Index, ids: list[str]
) -> tuple[list[str], np.ndarray]:
    """Per patient (``patients``' order) and criterion (``ids``', distinct) the code of the
    patient's first answer to it in ``answers`` (-1: none or missing), and the answer texts the
    codes stand for: what a pivot of the answers gives, as a matrix of integers instead of a
    frame of 800,000 rows' worth of index (the attrition's peak at 100,000 patients)."""
    matrix = np.full((len(patients), len(ids)), -1, dtype=np.int64)
    if len(answers) == 0 or not ids:
        return [], matrix
    row = patients.get_indexer(answers["patient_id"]).astype(np.int64)
    col = pd.Index(ids).get_indexer(answers["criterion_id"])
    code, uniques = pd.factorize(answers["answer"])
    ok = np.flatnonzero((row >= 0) & (col >= 0))
    cell = row[ok] * len(ids) + col[ok]
    _, first = np.unique(cell, return_index=True)  # the first answer of each cell, as kept
    matrix.reshape(-1)[cell[first]] = code[ok[first]]
    return uniques.tolist(), matrix


def rule_queries(trial: Trial, query_type: str) -> list[tuple[str, Any]]:
    """(criterion id, query) of every ``query_type`` query in the criteria's rule trees, in
    order; a query of a definition is listed under each criterion that uses it."""
    out: list[tuple[str, Any]] = []
    for crit in trial.criteria:
        todo, seen = [crit.rule], set()
        while todo:
            for node in walk(todo.pop(0)):
                anchor = getattr(getattr(node, "within", None), "anchor", "as_of")
                for name in (getattr(node, "name", None) if node.type == "ref" else None, anchor):
                    if name and name != "as_of" and name not in seen:
                        seen.add(name)
                        todo.append(trial.define[name])
                if node.type == query_type:
                    out.append((crit.id, node))
    return out


def medication_eras(
    query: Any,
    tables: Tables,
    terminology: TerminologyLike,
    as_of: dt.date,
    define: dict[str, Any] | None = None,
    prepared: Prepared | None = None,
) -> pd.DataFrame:
    """Era table of one medication query (patient_id, requirement = the query's label, agent,
    value_set, start, end, days in its window); ``define``: the trial's definitions, for a
    window anchored on one; ``prepared``: as for :func:`evaluate`."""
    from fhir_cohort.engine.queries.medication import bounds

    prep = prepare(tables, terminology, as_of, prepared)
    ctx = prep.ctx
    anchored = query.within is not None and query.within.anchor != "as_of"
    kept = ctx.kept.of(query) if ctx.kept is not None else {}
    wanted = frozenset([*query.value_sets, *query.not_counted_value_sets])
    rows: list[tuple[Any, ...]] = []
    for pid, mrows in prep.medications.items():
        hit = kept.get(pid)
        if hit is not None:  # the evaluation's own rows for this patient's window
            rows.extend(hit)
            continue
        if wanted.isdisjoint(prep.coded(pid).get("medications", ())):
            continue  # no row the query counts (era_rows would find none)
        if anchored:
            data = PatientData(
                prep.patient(pid),
                prep.conditions.get(pid, []),
                mrows,
                prep.observations.get(pid, []),
            )
        else:
            data = PatientData(None, [], mrows, [])
        w = bounds(query, Scope(ctx, data, define or {}))
        if w is not None:
            rows.extend(medication.era_rows(query, pid, mrows, ctx, w))
    return medication.era_frame(rows)


LAB_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "resource_id",
    "system",
    "code",
    "display",
    "date",
    "status",
    "result",
    "rule",
    "value",
)


def lab_results(
    criterion: ObservationQuery,
    tables: Tables,
    terminology: TerminologyLike,
    as_of: dt.date,
    prepared: Prepared | None = None,
) -> pd.DataFrame:
    """Every counted test of ``criterion`` (an observation query reading positivity) dated on
    or before S, with its reading (positive /
    negative / equivocal) and the rule that decided it, for notebooks. ``prepared``: as for
    :func:`evaluate`."""
    prep = prepare(tables, terminology, as_of, prepared)
    ctx = prep.ctx
    kept = ctx.kept.of(criterion) if ctx.kept is not None else {}
    wanted = frozenset(criterion.value_sets)
    out: list[tuple[Any, ...]] = []
    for pid, rows in prep.observations.items():
        tests = kept.get(pid)
        if tests is None:
            if wanted.isdisjoint(prep.coded(pid).get("observations", ())):
                continue  # no test of the query's value sets (read_tests would find none)
            tests, _ = read_tests(criterion.value_sets, criterion.lab_rules, ctx, rows)
        for row, reading in tests:
            out.append(
                (
                    pid,
                    row.resource_id,
                    row.system,
                    row.code,
                    row.display,
                    row.date,
                    row.status,
                    reading.result,
                    reading.rule,
                    reading.value,
                )
            )
    return pd.DataFrame.from_records(out, columns=list(LAB_COLUMNS))
