"""Chart-review decisions and recruitment status, kept in the screening history across runs.

A coordinator records per trial and patient a **decision** (``eligible``, ``ineligible`` with
a reason, ``needs_information``, or none yet), a **contact status** and a note. Each save
names the version it read (``expected_version``, 0 for a patient without a decision): a save
over a newer version raises :class:`~fhir_cohort.errors.DecisionConflict` and writes nothing,
so two coordinators editing one patient never lose an update. Each save writes the decision
and one ``decision_log`` row per changed field (who, when, previous value, value) in one
transaction.

A decision holds across later runs unless an answer changed on **new evidence** since it was
made: then the patient is back in the review queue, flagged ``re-review: new evidence``
(:meth:`DecisionStore.worklist`, docs/history.md "Decisions"). Declined and do-not-contact
patients are never flagged new.

The methods are :class:`~fhir_cohort.history.History`'s (this mixin); standard library only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fhir_cohort.errors import DecisionConflict, DecisionError

if TYPE_CHECKING:
    import contextlib

    from fhir_cohort.history.db import RunInfo, _AnswerSets

__all__ = [
    "CANDIDATE_STATUSES",
    "CONTACT_STATUSES",
    "DECISIONS",
    "DECISION_FIELDS",
    "FLAG_NEW",
    "FLAG_RE_REVIEW",
    "KEEP",
    "NOT_NEW_CONTACT_STATUSES",
    "QUEUES",
    "WORKLIST_COLUMNS",
    "Decision",
    "DecisionLogEntry",
    "DecisionStore",
    "Worklist",
    "WorklistEntry",
]

DECISIONS: Final = ("eligible", "ineligible", "needs_information")
CONTACT_STATUSES: Final = (
    "not_contacted",
    "attempt_1",
    "attempt_2",
    "attempt_3",
    "could_not_reach",
    "declined",
    "enrolled",
    "do_not_contact",
)
# A patient who said no (or must not be called) is never offered again as a "new" candidate.
NOT_NEW_CONTACT_STATUSES: Final = frozenset({"declined", "do_not_contact"})
# The fields a save sets and the log records, in this order.
DECISION_FIELDS: Final = ("decision", "reason", "contact_status", "note")
CANDIDATE_STATUSES: Final = frozenset({"eligible", "review"})
# review: a chart review is due (engine "review" undecided, needs_information, re-review);
# candidate: eligible by the engine, undecided; decided: a decision holds (or only a contact
# status is kept for a non-candidate).
QUEUES: Final = ("review", "candidate", "decided")
FLAG_NEW: Final = "new"
FLAG_RE_REVIEW: Final = "re-review: new evidence"
WORKLIST_COLUMNS: Final = (
    "patient_id",
    "status",
    "queue",
    "flags",
    "decision",
    "decision_reason",
    "contact_status",
    "note",
    "decided_by",
    "decided_at",
    "version",
    "re_review_criteria",
    "reasons",
)
_MAX_TEXT = 4000  # a reason or note is a sentence or a paragraph, not a document
_STATUS_RANK = {"review": 0, "eligible": 1, "ineligible": 2}
_PASSING = frozenset({"met", "clear"})


class _Keep:
    """The default of :meth:`DecisionStore.save_decision`'s fields: keep the saved value."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(frozen=True)
class Decision:
    """The current decision on one patient for one trial (``version`` counts its saves)."""

    trial_id: str
    patient_id: str
    decision: str | None  # one of DECISIONS, or None: not decided
    reason: str | None  # why ineligible (required then); optional otherwise
    contact_status: str  # one of CONTACT_STATUSES
    note: str | None
    decided_by: str  # who saved this version
    decided_at: str  # when (ISO 8601, UTC): the date new evidence is compared with
    version: int  # 1 for the first save; a save names the version it read
    run_id: int | None  # the run it was made on: the answers it saw

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DecisionLogEntry:
    """One audit row: ``field`` went from ``previous_value`` to ``value`` in ``version``."""

    entry_id: int
    trial_id: str
    patient_id: str
    field: str  # one of DECISION_FIELDS, or "confirmed" (saved unchanged: re-reviewed)
    previous_value: str | None
    value: str | None
    changed_by: str
    changed_at: str
    run_id: int | None
    version: int | None  # the decision's version this save wrote (None: before schema 3)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class WorklistEntry:
    """One patient of a run's worklist: the engine's status and reasons (unchanged by any
    decision), the decision overlay and why the patient is where they are."""

    patient_id: str
    status: str  # the engine's: eligible / review / ineligible
    reasons: str  # the answers that are not met/clear: "criterion: answer: reason; ..."
    queue: str  # one of QUEUES
    decision: Decision | None
    new: bool  # a candidate now, absent or ineligible in the previous run (not declined)
    re_review: bool  # decided, and an answer changed on new evidence since
    re_review_criteria: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(f for f, on in ((FLAG_NEW, self.new), (FLAG_RE_REVIEW, self.re_review)) if on)

    @property
    def contact_status(self) -> str:
        return self.decision.contact_status if self.decision else "not_contacted"

    @property
    def version(self) -> int:
        """What a save of this patient passes as ``expected_version``."""
        return self.decision.version if self.decision else 0

    def as_row(self) -> dict[str, Any]:
        """worklist.csv's row (``WORKLIST_COLUMNS``)."""
        d = self.decision
        return {
            "patient_id": self.patient_id,
            "status": self.status,
            "queue": self.queue,
            "flags": "; ".join(self.flags),
            "decision": (d.decision or "") if d else "",
            "decision_reason": (d.reason or "") if d else "",
            "contact_status": self.contact_status,
            "note": (d.note or "") if d else "",
            "decided_by": d.decided_by if d else "",
            "decided_at": d.decided_at if d else "",
            "version": self.version,
            "re_review_criteria": "; ".join(self.re_review_criteria),
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class Worklist:
    """A run's worklist: ``entries`` sorted by queue (review, candidate, decided), re-reviews
    first, then status and patient id."""

    run: RunInfo
    previous_run_id: int | None
    entries: list[WorklistEntry] = field(default_factory=list)

    @property
    def queue(self) -> list[WorklistEntry]:
        """The review queue: patients whose chart review is due."""
        return [e for e in self.entries if e.queue == "review"]

    @property
    def candidates(self) -> list[WorklistEntry]:
        """Eligible by the engine and not decided yet."""
        return [e for e in self.entries if e.queue == "candidate"]

    @property
    def decided(self) -> list[WorklistEntry]:
        return [e for e in self.entries if e.queue == "decided"]

    def entry(self, patient_id: str) -> WorklistEntry | None:
        return next((e for e in self.entries if e.patient_id == patient_id), None)

    def by_patient(self) -> dict[str, WorklistEntry]:
        return {e.patient_id: e for e in self.entries}

    def frame(self) -> Any:
        """worklist.csv as a DataFrame (``WORKLIST_COLUMNS``)."""
        import pandas as pd

        return pd.DataFrame([e.as_row() for e in self.entries], columns=list(WORKLIST_COLUMNS))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _when(value: datetime | date | str | None) -> str:
    """A decision time as ISO 8601 UTC text (a date: its midnight UTC)."""
    if value is None:
        return _now()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DecisionError(
                f"decided_at {value!r}: not an ISO 8601 date or time (2026-11-24 or "
                "2026-11-24T09:30:00+00:00)"
            ) from None
        value = parsed
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _text(name: str, value: object) -> str | None:
    """A free-text field: stripped, empty is None, bounded."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecisionError(f"{name}: text expected, not {type(value).__name__}")
    value = value.strip()
    if len(value) > _MAX_TEXT:
        raise DecisionError(f"{name}: longer than {_MAX_TEXT} characters")
    return value or None


def check_decision(
    decision: str | None, reason: str | None, contact_status: str
) -> tuple[str | None, str | None, str]:
    """The fields validated (DecisionError names the field and the allowed values)."""
    if decision is not None and decision not in DECISIONS:
        raise DecisionError(
            f"decision {decision!r}: not one of {', '.join(DECISIONS)} (or empty: undecided)"
        )
    if contact_status not in CONTACT_STATUSES:
        raise DecisionError(
            f"contact status {contact_status!r}: not one of {', '.join(CONTACT_STATUSES)}"
        )
    if decision == "ineligible" and not reason:
        raise DecisionError("decision ineligible needs a reason (which criterion, and why)")
    return decision, reason, contact_status


class DecisionStore:
    """The decision methods of :class:`~fhir_cohort.history.History` (a mixin: ``conn``,
    ``path``, ``transaction``, ``run`` and ``evidence_rows`` are History's)."""

    conn: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
        def run(self, run_id: int) -> RunInfo: ...
        def evidence_rows(self, digest: bytes | None) -> list[dict[str, str]]: ...
        def _answer_sets(self) -> _AnswerSets: ...

    # ----------------------------------------------------------------------------------------
    # Reading

    def decision(self, trial_id: str, patient_id: str) -> Decision | None:
        """The current decision on ``patient_id`` for ``trial_id``; None: never saved
        (save it with ``expected_version=0``)."""
        found = self._decisions(trial_id, patient_id)
        return found[0] if found else None

    def decisions(self, trial_id: str) -> list[Decision]:
        """Every current decision of ``trial_id``, by patient id (patients no longer in the
        source too)."""
        return self._decisions(trial_id, None)

    def _decisions(self, trial_id: str, patient_id: str | None) -> list[Decision]:
        sql = (
            "SELECT d.trial_id, p.patient_id, d.decision, d.reason, d.contact_status, d.note, "
            "d.decided_by, d.decided_at, d.revision, d.run_id FROM decisions d "
            "JOIN patients p ON p.patient_key = d.patient_key WHERE d.trial_id = ?"
        )
        args: tuple[str, ...] = (trial_id,)
        if patient_id is not None:
            sql += " AND p.patient_id = ?"
            args += (patient_id,)
        rows = self.conn.execute(sql + " ORDER BY p.patient_id", args).fetchall()
        return [Decision(*tuple(r)) for r in rows]

    def decision_log(
        self, trial_id: str | None = None, patient_id: str | None = None
    ) -> list[DecisionLogEntry]:
        """The audit log (of ``trial_id``, of ``patient_id``), oldest first."""
        where, args = [], []
        if trial_id is not None:
            where.append("l.trial_id = ?")
            args.append(trial_id)
        if patient_id is not None:
            where.append("p.patient_id = ?")
            args.append(patient_id)
        sql = (
            "SELECT l.entry_id, l.trial_id, p.patient_id, l.field, l.previous_value, l.value, "
            "l.changed_by, l.changed_at, l.run_id, l.revision FROM decision_log l "
            "JOIN patients p ON p.patient_key = l.patient_key"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.conn.execute(sql + " ORDER BY l.entry_id", args).fetchall()
        return [DecisionLogEntry(*tuple(r)) for r in rows]

    # ----------------------------------------------------------------------------------------
    # Writing

    def save_decision(
        self,
        trial_id: str,
        patient_id: str,
        *,
        decision: str | _Keep | None = KEEP,
        reason: str | _Keep | None = KEEP,
        contact_status: str | _Keep = KEEP,
        note: str | _Keep | None = KEEP,
        who: str,
        expected_version: int,
        when: datetime | date | str | None = None,
    ) -> Decision:
        """Save the decision on ``patient_id`` for ``trial_id`` and log what changed, in one
        transaction (joins the caller's). A field left out keeps its saved value (for a first
        save: none, and ``not_contacted``). ``expected_version`` is the version the caller
        read (0: none); another raises :class:`DecisionConflict` and writes nothing. ``when``
        (default now) is the decision's time, which later evidence is compared with. A save
        that changes nothing still writes a new version ("confirmed": re-reviewed on the
        latest run, which clears a re-review flag).

        Raises :class:`DecisionError` for an unknown decision or contact status,
        ``ineligible`` without a reason, an empty ``who``, or a trial and patient that no run
        in this history screened."""
        who_text = _text("who", who)
        if not who_text:
            raise DecisionError("who: the person saving the decision is required")
        decided_at = _when(when)
        with self.transaction() as conn:
            key, run_id = self._patient_run(trial_id, patient_id, decided_at)
            current = self.decision(trial_id, patient_id)
            actual = current.version if current else 0
            if expected_version != actual:
                raise DecisionConflict(expected_version, current, actual)
            before: dict[str, Any] = (
                {f: getattr(current, f) for f in DECISION_FIELDS}
                if current
                else dict.fromkeys(DECISION_FIELDS) | {"contact_status": "not_contacted"}
            )
            given = {
                "decision": decision,
                "reason": reason,
                "contact_status": contact_status,
                "note": note,
            }
            after = {
                f: before[f] if isinstance(v, _Keep) else _text(f.replace("_", " "), v)
                for f, v in given.items()
            }
            if after["contact_status"] is None:
                after["contact_status"] = "not_contacted"
            check_decision(after["decision"], after["reason"], after["contact_status"])
            version = actual + 1
            conn.execute(
                "INSERT INTO decisions (trial_id, patient_key, decision, reason, contact_status, "
                "note, decided_by, decided_at, run_id, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?) ON CONFLICT (trial_id, patient_key) DO UPDATE SET decision = "
                "excluded.decision, reason = excluded.reason, contact_status = "
                "excluded.contact_status, note = excluded.note, decided_by = excluded.decided_by, "
                "decided_at = excluded.decided_at, run_id = excluded.run_id, revision = "
                "excluded.revision",
                (
                    trial_id,
                    key,
                    after["decision"],
                    after["reason"],
                    after["contact_status"],
                    after["note"],
                    who_text,
                    decided_at,
                    run_id,
                    version,
                ),
            )
            changed = [(f, before[f], after[f]) for f in DECISION_FIELDS if before[f] != after[f]]
            if current is None:  # the first save logs every field it sets
                changed = [
                    (f, None, after[f]) for f in DECISION_FIELDS if after[f] is not None
                ] or [("confirmed", None, None)]
            elif not changed:
                changed = [("confirmed", str(current.run_id), str(run_id))]
            logged_at = _now()
            conn.executemany(
                "INSERT INTO decision_log (trial_id, patient_key, field, previous_value, value, "
                "changed_by, changed_at, run_id, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (trial_id, key, f, old, new, who_text, logged_at, run_id, version)
                    for f, old, new in changed
                ),
            )
        saved = self.decision(trial_id, patient_id)
        assert saved is not None
        return saved

    def _patient_run(self, trial_id: str, patient_id: str, decided_at: str) -> tuple[int, int]:
        """The patient's key and the run the decision is made on: the trial's latest run with
        this patient recorded by ``decided_at`` (else its first run with the patient)."""
        rows = self.conn.execute(
            "SELECT rp.patient_key, r.run_id, r.recorded_at FROM run_patients rp "
            "JOIN runs r ON r.run_id = rp.run_id JOIN patients p ON p.patient_key = "
            "rp.patient_key WHERE r.trial_id = ? AND p.patient_id = ? ORDER BY r.run_id",
            (trial_id, patient_id),
        ).fetchall()
        if not rows:
            known = self.conn.execute(
                "SELECT 1 FROM runs WHERE trial_id = ? LIMIT 1", (trial_id,)
            ).fetchone()
            if known is None:
                raise DecisionError(f"trial {trial_id!r}: no run of it in this history")
            raise DecisionError("patient: not screened in any run of this trial in this history")
        by_then = [r for r in rows if _instant(r[2]) <= _instant(decided_at)]
        key, run_id, _ = (by_then or rows)[-1]
        return int(key), int(run_id)

    # ----------------------------------------------------------------------------------------
    # The worklist

    def worklist(self, trial_id: str, run_id: int | None = None) -> Worklist:
        """The worklist of ``run_id`` (default: the trial's latest run): its candidates
        (eligible, review), and every patient of the run with a decision or contact status,
        with the decision overlay, the queue and the flags (module docstring). Raises
        HistoryError for an unknown run; DecisionError when the trial has no run."""
        if run_id is None:
            row = self.conn.execute(
                "SELECT max(run_id) FROM runs WHERE trial_id = ?", (trial_id,)
            ).fetchone()
            if row[0] is None:
                raise DecisionError(f"trial {trial_id!r}: no run of it in this history")
            run_id = int(row[0])
        run = self.run(run_id)
        decided = {d.patient_id: d for d in self.decisions(run.trial_id)}
        previous = run.previous_run_id
        # The run's candidates and its patients with a decision row: not its other patients
        rows = self.conn.execute(
            "SELECT p.patient_id, n.status, o.status, n.answer_set_id, n.evidence "
            "FROM run_patients n JOIN patients p ON p.patient_key = n.patient_key "
            "LEFT JOIN run_patients o ON o.run_id = ? AND o.patient_key = n.patient_key "
            "WHERE n.run_id = ? AND (n.status IN ('eligible', 'review') OR n.patient_key IN "
            "(SELECT patient_key FROM decisions WHERE trial_id = ?))",
            (previous, run_id, run.trial_id),
        ).fetchall()
        sets = self._answer_sets()
        changed = self._new_evidence(run_id, [decided[r[0]] for r in rows if r[0] in decided])
        entries = []
        for pid, status, before, set_id, evidence in rows:
            d = decided.get(pid)
            withheld = d is not None and d.contact_status in NOT_NEW_CONTACT_STATUSES
            new = (
                previous is not None
                and status in CANDIDATE_STATUSES
                and before in (None, "ineligible")
                and not withheld
            )
            criteria = changed.get(pid, ())
            re_review = bool(criteria)
            entries.append(
                WorklistEntry(
                    patient_id=pid,
                    status=status,
                    reasons=_reasons(sets.answers(set_id, evidence)),
                    queue=_queue(status, d, re_review),
                    decision=d,
                    new=new,
                    re_review=re_review,
                    re_review_criteria=criteria,
                )
            )
        rank = {q: i for i, q in enumerate(QUEUES)}
        entries.sort(
            key=lambda e: (
                rank[e.queue],
                not e.re_review,
                _STATUS_RANK.get(e.status, 3),
                e.patient_id,
            )
        )
        return Worklist(run=run, previous_run_id=previous, entries=entries)

    def _new_evidence(
        self, run_id: int, decisions: Iterable[Decision]
    ) -> dict[str, tuple[str, ...]]:
        """Per decided patient, the criteria whose answer differs from the one the decision
        saw (its run's) on new evidence: a record behind the new answer that the decision's
        run did not have behind it, or dated on or after the decision's day. An answer that
        changed without a new record (a record removed, criteria edited, time passing) keeps
        the decision."""
        out: dict[str, tuple[str, ...]] = {}
        sets = self._answer_sets()
        for d in decisions:
            if d.decision is None or d.run_id is None or d.run_id == run_id:
                continue
            seen, now = (
                {cid: (answer, digest) for cid, answer, _, digest in sets.answers(*row)}
                for row in (
                    self._recorded(d.run_id, d.patient_id),
                    self._recorded(run_id, d.patient_id),
                )
            )
            criteria = [
                cid
                for cid, (answer, digest) in now.items()
                if cid in seen
                and seen[cid][0] != answer
                and _has_new_record(
                    self.evidence_rows(seen[cid][1]), self.evidence_rows(digest), d.decided_at
                )
            ]
            if criteria:
                out[d.patient_id] = tuple(criteria)
        return out

    def _recorded_row(self, run_id: int, patient_id: str) -> tuple[Any, Any] | None:
        """A patient's run_patients row in a run: (answer set id, evidence digests), or None
        when the patient is not in it."""
        return self.conn.execute(
            "SELECT rp.answer_set_id, rp.evidence FROM run_patients rp "
            "JOIN patients p ON p.patient_key = rp.patient_key "
            "WHERE rp.run_id = ? AND p.patient_id = ?",
            (run_id, patient_id),
        ).fetchone()

    def _recorded(self, run_id: int, patient_id: str) -> tuple[int | None, bytes | None]:
        """A patient's answer set and evidence digests in a run (None, None: not in it)."""
        row = self._recorded_row(run_id, patient_id)
        return (row[0], row[1]) if row else (None, None)


def _reasons(answers: Iterable[tuple[str, str, str, bytes | None]]) -> str:
    """The answers that are not met/clear, in criteria order, as patients.csv's reasons
    read (without the engine's notes, which are not stored)."""
    return "; ".join(
        f"{cid}: {answer}: {reason}" if reason else f"{cid}: {answer}"
        for cid, answer, reason, _ in answers
        if answer not in _PASSING
    )


def _record_key(row: Mapping[str, str]) -> tuple[str, ...]:
    return (row.get("resource_type", ""), row.get("resource_id", ""), row.get("date", ""))


def _has_new_record(
    old: Sequence[Mapping[str, str]], new: Sequence[Mapping[str, str]], decided_at: str
) -> bool:
    seen = {_record_key(r) for r in old}
    day = decided_at[:10]
    return any(_record_key(r) not in seen or (r.get("date") or "")[:10] >= day for r in new)


def _instant(text: str) -> datetime:
    """An ISO time as an aware UTC datetime (a naive one is UTC)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _queue(status: str, d: Decision | None, re_review: bool) -> str:
    if re_review:
        return "review"
    decision = d.decision if d else None
    if decision in ("eligible", "ineligible"):
        return "decided"
    if decision == "needs_information" or status == "review":
        return "review"
    if status == "eligible":
        return "candidate"
    return "decided"  # not a candidate: kept in the list for its contact status
