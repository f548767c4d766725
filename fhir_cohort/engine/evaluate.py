"""criteria x tables x S -> answers, evidence, status (pure, partitionable by patient).

The tidy tables are turned once into per-patient lists of plain namedtuples (no pandas in the
per-patient loop), then every criterion's rule (engine/rules.py) is evaluated per patient.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    # What evaluate knows of ``answers``: (that very frame, its patients, the criterion ids):
    # it is laid out patient by patient, criteria in order, one answer each, so attrition
    # reads its answer codes as a matrix instead of indexing 800,000 rows by text.
    _layout: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)


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
        # read it; the criteria's answer columns and the detail frames are kept until the last.
        self._share_uses = KeyUses()
        self._shared_columns: dict[str, _Column] = {}
        self._shared_frames: dict[str, pd.DataFrame] = {}
        # The patients evaluated (the first row of each id, in order) and their patient_key.
        self._unique: tuple[list[Any], list[str]] | None = None
        self._patient_key_ids: list[int] | None = None
        # Every distinct (answer, reason, *notes) an outcome of this read had: its code is its
        # index (the answer columns hold codes; most of 800,000 answers share a few hundred).
        self.outcome_values: list[tuple[Any, ...]] = []
        self._outcome_codes: dict[tuple[Any, ...], int] = {}

    def share(self, keys_per_trial: Iterable[Iterable[str]]) -> None:
        """Keep, for this pass, the outcomes of criteria (and the detail tables of queries)
        that more than one trial asks identically (:func:`same_key`): each is evaluated for
        a patient once, however many trials ask it."""
        self._share_uses = KeyUses(keys_per_trial)

    @property
    def sharing(self) -> bool:
        """Whether some criterion or detail table is still shared by trials to come."""
        return bool(self._share_uses)

    def is_shared(self, key: str) -> bool:
        """Whether a later trial of the pass asks ``key`` too (keep what it gets)."""
        return key in self._share_uses

    def shared_column(self, key: str) -> _Column | None:
        """The answer column of the shared criterion ``key``, once a trial has made it."""
        return self._shared_columns.get(key) if key in self._share_uses else None

    def keep_column(self, key: str, column: _Column) -> None:
        """Keep ``column`` for the later trials that ask ``key`` (none: not kept)."""
        if key in self._share_uses:
            self._shared_columns[key] = column

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
            self._shared_columns.pop(key, None)
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

    def unique_patients(self) -> tuple[list[Any], list[str]]:
        """The Patient rows evaluated, the first of each id (rows without an id left out),
        and their ids, in the table's order: the same for every trial of the read."""
        if self._unique is None:
            seen: set[str] = set()
            people: list[Any] = []
            pids: list[str] = []
            for p in self.patients:
                pid = p.patient_id
                if pid is None or pid in seen:
                    continue
                seen.add(pid)
                people.append(p)
                pids.append(pid)
            self._unique = (people, pids)
        return self._unique

    def patient_key_ids(self) -> list[int]:
        """Per patient of :meth:`unique_patients`, a number for its :meth:`patient_key`
        (equal keys, equal numbers; a criterion reading no row answers alike for them)."""
        if self._patient_key_ids is None:
            ids: dict[tuple[Any, ...], int] = {}
            self._patient_key_ids = [
                ids.setdefault(key, len(ids))
                for key in map(self.patient_key, self.unique_patients()[0])
            ]
        return self._patient_key_ids

    def outcome_code(self, o: Outcome) -> int:
        """The code of ``o``'s answer, reason and notes in :attr:`outcome_values`."""
        key = (o.answer, o.reason, *o.notes)
        code = self._outcome_codes.get(key)
        if code is None:
            code = self._outcome_codes[key] = len(self.outcome_values)
            self.outcome_values.append(key)
        return code

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


def _status_of(ids: Iterable[str], values: Iterable[tuple[Any, ...]]) -> tuple[str, str]:
    """(status, reasons) from one patient's (answer, reason, *notes) in criteria order."""
    failing = False
    passing = True
    parts: list[str] = []
    for cid, (answer, reason, *notes) in zip(ids, values, strict=True):
        if answer not in PASSING:
            passing = False
            failing = failing or answer in FAILING
            parts.append(f"{cid}: {answer}: {reason}")
        if notes:
            parts.extend(f"{cid}: {note}" for note in notes)
    status = "ineligible" if failing else "eligible" if passing else "review"
    return status, "; ".join(parts)


def patient_status(
    trial: Trial, outcomes: list[Outcome], ids: list[str] | None = None
) -> tuple[str, str]:
    """(status, reasons) from one patient's outcomes in criteria order (``ids``: the
    criteria's ids, when the caller has them)."""
    ids = ids or [c.id for c in trial.criteria]
    return _status_of(ids, ((o.answer, o.reason, *o.notes) for o in outcomes))


class _Column(NamedTuple):
    """One criterion's answers for every patient of the read (Prepared.unique_patients'
    order): each as its code in Prepared.outcome_values, and its evidence rows (patient id,
    criterion id, *Evidence) in patient order with each row's patient index."""

    codes: list[int]
    rows: list[tuple[Any, ...]]
    positions: Any  # numpy int64, one per row
    criterion_id: str

    def as_criterion(self, cid: str) -> _Column:
        """The same answers under criterion id ``cid``."""
        if cid == self.criterion_id:
            return self
        rows = [(r[0], cid, *r[2:]) for r in self.rows]
        return _Column(self.codes, rows, self.positions, cid)


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
    define = dict(trial.define)
    # A criterion (or a query in it) that reads only some tables (and the listed patient
    # fields) has, for a patient with none of those rows it can read (none, or none in its
    # value sets), an outcome computed once per key of those fields.
    rows_shortcut = Shortcut(define) if shortcut else None
    # A criterion none of whose queries can read a row of the patient (each keyed by the
    # shortcut) answers from the Patient row alone: its outcome is computed once per
    # Prepared.patient_key and copied, the patient id put into its Patient evidence.
    criteria = trial.criteria
    crit_ids = [crit.id for crit in criteria]
    n_crit = len(crit_ids)
    crit_reads = [_row_reads([crit.rule], define) for crit in criteria] if shortcut else None
    pids = prep.unique_patients()[1]
    n = len(pids)
    # Criteria another trial of the pass asks identically (Prepared.share): answered once
    # for every patient, the column taken whole by the later trials (and by a later
    # criterion of this trial asked identically).
    keys = criterion_keys(trial) if prep.sharing else []
    columns: list[_Column | None] = [None] * n_crit
    same_as: list[int | None] = [None] * n_crit
    first_of: dict[str, int] = {}
    for i, key in enumerate(keys):
        got = prep.shared_column(key)
        if got is not None:
            columns[i] = got.as_criterion(crit_ids[i])
        elif key in first_of:
            same_as[i] = first_of[key]
        elif prep.is_shared(key):
            first_of[key] = i
    todo = [i for i in range(n_crit) if columns[i] is None and same_as[i] is None]
    if todo:
        made = _answer_columns(prep, trial, todo, crit_reads, rows_shortcut, define)
        for i, column in zip(todo, made, strict=True):
            columns[i] = column
            if keys:
                prep.keep_column(keys[i], column)
    for i, first in enumerate(same_as):
        if first is not None:
            columns[i] = columns[first].as_criterion(crit_ids[i])  # type: ignore[union-attr]
    if keys:
        prep.done_with(keys)
    done: list[_Column] = columns  # type: ignore[assignment]
    values = prep.outcome_values
    # A patient's status from its answers' codes: once per distinct combination (a few
    # hundred among 100,000 patients).
    by_codes: dict[tuple[int, ...], tuple[str, str]] = {}
    status: list[tuple[str, str, str]] = []
    rows = zip(*(c.codes for c in done), strict=True) if n_crit else itertools.repeat((), n)
    for pid, codes in zip(pids, rows, strict=True):
        got = by_codes.get(codes)
        if got is None:
            got = by_codes[codes] = _status_of(crit_ids, map(values.__getitem__, codes))
        status.append((pid, *got))
    # Evidence patient by patient, criteria in order, each outcome's rows in order.
    lengths = [len(c.rows) for c in done]
    evidence: list[tuple[Any, ...]] = []
    if sum(lengths):
        ordered = list(itertools.chain.from_iterable(c.rows for c in done))
        positions = np.concatenate([c.positions for c in done])
        order = np.lexsort((np.repeat(np.arange(n_crit), lengths), positions))
        evidence = list(map(ordered.__getitem__, order.tolist()))
        del ordered, positions, order
    # Each frame built and its rows freed before the next (the peak of the evaluation).
    answers = _answers_frame(pids, crit_ids, [c.codes for c in done], values)
    del columns, done
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
        _layout=(answers, pids, crit_ids),
    )


def _answers_frame(
    pids: list[str], crit_ids: list[str], codes: list[list[int]], values: list[tuple[Any, ...]]
) -> pd.DataFrame:
    """The answers (patient by patient, criteria in order) from each criterion's column of
    outcome codes (``values``: what each code stands for): the frame :func:`_frame` builds
    from the rows' texts, made from integer codes (the 800,000 answers of 100,000 patients
    are never Python lists of texts)."""
    n, n_crit = len(pids), len(crit_ids)
    texts = all(isinstance(v[0], str) and isinstance(v[1], str) for v in values)
    pid_texts = None
    if n and n_crit and texts and len(set(crit_ids)) == n_crit:
        pid_texts = _text_series(pids)
    if pid_texts is None:
        return _frame(
            _answer_lists(pids, crit_ids, codes, values), ANSWER_COLUMNS, CATEGORICAL_ANSWER_COLUMNS
        )
    import pyarrow as pa

    flat = np.array(codes, dtype=np.int64).T.ravel()  # patient by patient
    arrow = pa.array(pid_texts.array).take(pa.array(np.repeat(np.arange(n), n_crit)))
    out: dict[str, Any] = {
        "patient_id": pd.Series(pd.array(arrow, dtype="str")),
        "criterion_id": _coded_categories(np.tile(np.arange(n_crit), n), crit_ids),
    }
    for name, at in (("answer", 0), ("reason", 1)):
        # each code's text as the index of its first code of equal text: equal texts, equal
        # numbers, so factorising the numbers orders the categories as the texts' would
        first: dict[str, int] = {}
        same = np.array([first.setdefault(v[at], k) for k, v in enumerate(values)], dtype=np.int64)
        out[name] = _coded_categories(same[flat], [v[at] for v in values])
    return pd.DataFrame({n: out[n].rename(n) for n in ANSWER_COLUMNS}, copy=False)


def _coded_categories(numbers: np.ndarray, texts: list[str]) -> pd.Series:
    """A categorical of ``texts[number]`` per row, categories in order of appearance (what
    :func:`_categories` makes of the texts themselves)."""
    codes, uniques = pd.factorize(numbers)
    categories = pd.Index([texts[u] for u in uniques.tolist()], dtype="str")
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories))


def _answer_lists(
    pids: list[str], crit_ids: list[str], codes: list[list[int]], values: list[tuple[Any, ...]]
) -> list[list[Any]]:
    """The answers' four columns as lists, patient by patient, criteria in order."""
    n, n_crit = len(pids), len(crit_ids)
    columns: list[list[Any]] = [[None] * (n * n_crit) for _ in ANSWER_COLUMNS]
    answer_of = [v[0] for v in values]
    reason_of = [v[1] for v in values]
    for i, column in enumerate(codes):
        columns[0][i::n_crit] = pids
        columns[1][i::n_crit] = [crit_ids[i]] * n
        columns[2][i::n_crit] = list(map(answer_of.__getitem__, column))
        columns[3][i::n_crit] = list(map(reason_of.__getitem__, column))
    return columns


def _answer_columns(
    prep: Prepared,
    trial: Trial,
    todo: list[int],
    crit_reads: list[Any] | None,
    rows_shortcut: Shortcut | None,
    define: dict[str, Any],
) -> list[_Column]:
    """The columns of the criteria ``todo`` (indexes into the trial's criteria): those that
    read no row (age, sex, chart review) once per patient key, the others patient by
    patient (one Scope per patient serves all its criteria)."""
    n = len(prep.unique_patients()[1])
    filling = {i: _Filling(n) for i in todo}
    alone = [i for i in todo if crit_reads is not None and crit_reads[i] == {}]
    rest = [i for i in todo if i not in alone]
    if rest:
        _fill_by_patient(prep, trial, rest, filling, crit_reads, rows_shortcut, define)
    for i in alone:
        _fill_by_key(prep, trial.criteria[i], filling[i], rows_shortcut, define)
    return [filling[i].column(trial.criteria[i].id) for i in todo]


class _Filling:
    """One criterion's column while it is filled, patient by patient (``j``: the patient's
    index in Prepared.unique_patients)."""

    __slots__ = ("codes", "positions", "rows")

    def __init__(self, n: int) -> None:
        self.codes = [0] * n
        self.rows: list[tuple[Any, ...]] = []
        self.positions: list[int] = []

    def own(self, j: int, pid: str, cid: str, o: Outcome, code: int) -> list[tuple[Any, ...]]:
        """Patient ``j``'s own outcome; returns its evidence rows."""
        self.codes[j] = code
        mine = [(pid, cid, *e) for e in o.evidence] if o.evidence else []
        if mine:
            self.rows.extend(mine)
            self.positions.extend([j] * len(mine))
        return mine

    def copy(self, j: int, pid: str, got: tuple[int, str, list[tuple[Any, ...]]]) -> None:
        """Another patient's outcome (``got``: code, that patient's id and evidence rows) as
        patient ``j``'s, its id put into the Patient evidence."""
        self.codes[j] = got[0]
        if got[2]:
            before = len(self.rows)
            _copy_evidence(self.rows, got[2], got[1], pid)
            self.positions.extend([j] * (len(self.rows) - before))

    def column(self, cid: str) -> _Column:
        return _Column(self.codes, self.rows, np.asarray(self.positions, dtype=np.int64), cid)


def _patient_data(prep: Prepared, p: Any, pid: str, coded: Any) -> PatientData:
    """Patient ``pid``'s rows (``p``: its Patient row) as the evaluators read them."""
    return PatientData(
        p,
        prep.conditions.get(pid, []),
        prep.medications.get(pid, []),
        prep.observations.get(pid, []),
        coded,
    )


def _fill_by_key(
    prep: Prepared,
    crit: Any,
    filling: _Filling,
    rows_shortcut: Shortcut | None,
    define: dict[str, Any],
) -> None:
    """The column of a criterion that reads no row: evaluated for the first patient of
    each patient key, copied to the others with their id in its Patient evidence."""
    people, pids = prep.unique_patients()
    key_ids = prep.patient_key_ids()
    # key id -> (code, owner's id, owner's evidence rows)
    firsts: list[tuple[int, str, list[tuple[Any, ...]]] | None] = [None] * (
        max(key_ids, default=-1) + 1
    )
    for j, (kid, pid) in enumerate(zip(key_ids, pids, strict=True)):
        got = firsts[kid]
        if got is not None:
            filling.copy(j, pid, got)
            continue
        data = _patient_data(prep, people[j], pid, prep.coded(pid))
        o = evaluate_criterion(crit, Scope(prep.ctx, data, define, rows_shortcut))
        code = prep.outcome_code(o)
        firsts[kid] = (code, pid, filling.own(j, pid, crit.id, o, code))


def _fill_by_patient(
    prep: Prepared,
    trial: Trial,
    todo: list[int],
    filling: dict[int, _Filling],
    crit_reads: list[Any] | None,
    rows_shortcut: Shortcut | None,
    define: dict[str, Any],
) -> None:
    """The columns of the criteria ``todo``, patient by patient: a criterion that reads none
    of a patient's rows is evaluated once per patient key and copied."""
    ctx = prep.ctx
    criteria = trial.criteria
    code_of = prep.outcome_code
    people, pids = prep.unique_patients()
    key_ids = prep.patient_key_ids() if crit_reads is not None else []
    # id(coded) -> (coded, per criterion: reads none of these rows)
    free_of: dict[int, tuple[Any, tuple[bool, ...]]] = {}
    # (criterion index, patient key id) -> (code, owner's id, owner's evidence rows)
    parts: dict[tuple[int, int], tuple[int, str, list[tuple[Any, ...]]]] = {}
    for j, (p, pid) in enumerate(zip(people, pids, strict=True)):
        coded = prep.coded(pid)
        free: tuple[bool, ...] = ()
        if crit_reads is not None:
            hit = free_of.get(id(coded))
            if hit is None or hit[0] is not coded:
                flags = tuple(r is not None and _reads_none(coded, r) for r in crit_reads)
                hit = free_of[id(coded)] = (coded, flags)
            free = hit[1]
        scope: Scope | None = None
        for i in todo:
            part = (i, key_ids[j]) if free and free[i] else None
            got = parts.get(part) if part is not None else None
            if got is not None:
                filling[i].copy(j, pid, got)
                continue
            if scope is None:
                scope = Scope(ctx, _patient_data(prep, p, pid, coded), define, rows_shortcut)
            crit = criteria[i]
            o = evaluate_criterion(crit, scope)
            code = code_of(o)
            mine = filling[i].own(j, pid, crit.id, o, code)
            if part is not None:
                parts[part] = (code, pid, mine)


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
    columns = list(dict.fromkeys(ids))
    laid_out = _laid_out(result, columns)
    if laid_out is not None:
        patients, texts, matrix = laid_out
    else:
        patients = pd.Index(pd.unique(pd.concat([result.status["patient_id"], ans["patient_id"]])))
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


def _laid_out(result: EvaluationResult, ids: list[str]) -> tuple[Any, list[str], Any] | None:
    """(patients, answer texts, matrix) as :func:`_answer_matrix` gives them, read from the
    answers' categorical codes when evaluate made ``result.answers`` for these criteria
    (and nobody replaced it since); None otherwise."""
    layout = result._layout
    if layout is None or layout[0] is not result.answers or list(layout[2]) != ids:
        return None
    answer = result.answers["answer"]
    pids = layout[1]
    if not isinstance(answer.dtype, pd.CategoricalDtype) or len(answer) != len(pids) * len(ids):
        return None
    status_pids = result.status["patient_id"]
    if len(status_pids) != len(pids) or not ids:
        return None
    codes = answer.cat.codes.to_numpy().astype(np.int64)
    # the categories in order of first use, as factorising the texts orders them
    used, first = np.unique(codes, return_index=True)
    order = used[np.argsort(first)]
    renumber = np.full(len(answer.cat.categories) + 1, -1, dtype=np.int64)
    renumber[order] = np.arange(len(order))
    texts = [answer.cat.categories[c] for c in order.tolist()]
    return pd.Index(pids), texts, renumber[codes].reshape(len(pids), len(ids))


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
            data = _patient_data(prep, prep.patient(pid), pid, None)
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
