"""What changed between two runs of one trial in the history (docs/history.md).

Per patient, compared with the older run:

- ``new_candidate``: eligible or review now, and absent or ineligible before;
- ``status_changed``: in both runs with another status (eligible <-> review, a candidate
  turned ineligible);
- ``answer_changed``: a candidate in both with the same status, and an answer changed;
- ``evidence_changed``: a candidate in both with the same answers, and the records behind one
  changed (another hash: a new lab, a corrected date);
- ``no_longer_in_source``: in the older run, not in the newer (deleted or merged).

A patient whose answers changed has one row per changed criterion (with the old and new
answer, the new reason and the new evidence); any other change has one row without a
criterion. New patients who are ineligible are only counted (``new_patients``). Standard
library only; :meth:`Diff.frame` builds the pandas table changes.csv is written from.

Chart-review decisions are an overlay (decisions.py): each row carries the patient's current
``decision`` and ``contact_status``, and a patient whose contact status is ``declined`` or
``do_not_contact`` is never a ``new_candidate`` (counted in ``withheld`` instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_cohort.history.db import History, RunInfo
from fhir_cohort.history.decisions import NOT_NEW_CONTACT_STATUSES

__all__ = ["CHANGES_COLUMNS", "CHANGE_KINDS", "Change", "Diff", "diff_runs", "evidence_text"]

CHANGE_KINDS: tuple[str, ...] = (
    "new_candidate",
    "status_changed",
    "answer_changed",
    "evidence_changed",
    "no_longer_in_source",
)
CHANGES_COLUMNS: tuple[str, ...] = (
    "change",
    "patient_id",
    "previous_status",
    "status",
    "criterion_id",
    "previous_answer",
    "answer",
    "reason",
    "evidence",
    "decision",
    "contact_status",
)
_CANDIDATE = frozenset({"eligible", "review"})


@dataclass(frozen=True)
class Change:
    """One row of changes.csv."""

    change: str
    patient_id: str
    previous_status: str
    status: str
    criterion_id: str = ""
    previous_answer: str = ""
    answer: str = ""
    reason: str = ""
    evidence: str = ""
    decision: str = ""  # the current chart-review decision, if any
    contact_status: str = ""  # the current contact status, if one was saved

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(getattr(self, c) for c in CHANGES_COLUMNS)


@dataclass
class Diff:
    """The changes from run ``old`` to run ``new`` (``old`` None: the trial's first run)."""

    old: RunInfo | None
    new: RunInfo
    changes: list[Change] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # patients per change kind
    new_patients: int = 0  # in the source now, not in the older run (any status)
    # would be new candidates, but declined or do-not-contact: not listed as new
    withheld: int = 0

    @property
    def criteria_changed(self) -> bool:
        """The two runs used different criteria files (another hash or criterion list):
        answers are compared for the criteria both have."""
        return self.old is not None and (
            self.old.criteria_sha256 != self.new.criteria_sha256
            or self.old.criterion_ids != self.new.criterion_ids
        )

    def frame(self) -> Any:
        """changes.csv as a DataFrame (``CHANGES_COLUMNS``)."""
        import pandas as pd

        return pd.DataFrame([c.as_tuple() for c in self.changes], columns=list(CHANGES_COLUMNS))

    def summary(self) -> str:
        """One line for the CLI summary."""
        if self.old is None:
            return f"history: run {self.new.run_id}, the first of {self.new.trial_id} in it"
        c = self.counts
        parts = [
            f"{c.get('new_candidate', 0)} new candidates",
            f"{c.get('status_changed', 0)} status changes",
            f"{c.get('answer_changed', 0)} with changed answers",
            f"{c.get('evidence_changed', 0)} with changed evidence",
            f"{c.get('no_longer_in_source', 0)} no longer in the source",
        ]
        note = "; criteria changed" if self.criteria_changed else ""
        if self.withheld:
            note += f"; {self.withheld} declined or do-not-contact patients not listed as new"
        return (
            f"since {self.old.as_of} (run {self.old.run_id} -> {self.new.run_id}): "
            + ", ".join(parts)
            + note
        )

    def as_record(self, path: str) -> dict[str, Any]:
        """For run.json: where the history is, this run's id and what changed."""
        return {
            "path": path,
            "run_id": self.new.run_id,
            "previous_run_id": self.old.run_id if self.old else None,
            "previous_as_of": self.old.as_of if self.old else None,
            "criteria_changed": self.criteria_changed,
            "changes": {k: self.counts.get(k, 0) for k in CHANGE_KINDS},
            "new_patients": self.new_patients,
            "withheld_declined": self.withheld,
            "file": "changes.csv",
        }


def evidence_text(rows: Sequence[dict[str, str]]) -> str:
    """Evidence records as one cell: ``Type/id code display date value (note)``, joined by
    `` | ``."""
    parts = []
    for r in rows:
        ref = "/".join(x for x in (r.get("resource_type"), r.get("resource_id")) if x)
        words = [ref, r.get("code"), r.get("display"), r.get("date"), r.get("value")]
        text = " ".join(w for w in words if w)
        parts.append(f"{text} ({r['note']})" if r.get("note") else text)
    return " | ".join(parts)


def diff_runs(history: History, old_id: int | None, new_id: int) -> Diff:
    """The changes from run ``old_id`` to run ``new_id`` (``old_id`` None: none, the first
    run). Runs of two different trials are compared too (by patient id), but the screen only
    compares a trial with its own previous run."""
    new = history.run(new_id)
    if old_id is None:
        return Diff(old=None, new=new)
    old = history.run(old_id)
    conn = history.conn
    sets = history._answer_sets()
    statuses: dict[str, tuple[str, str]] = {}  # pid -> (old, new): "" for absent
    changed: dict[str, list[tuple[str, str, str, str, bytes | None, bool]]] = {}
    # Candidates in either run only: a patient ineligible in both is no change to list.
    for pid, before, now, old_set, old_ev, new_set, new_ev in conn.execute(
        "SELECT p.patient_id, o.status, n.status, o.answer_set_id, o.evidence, "
        "n.answer_set_id, n.evidence FROM run_patients n "
        "JOIN patients p ON p.patient_key = n.patient_key "
        "LEFT JOIN run_patients o ON o.run_id = ? AND o.patient_key = n.patient_key "
        "WHERE n.run_id = ? AND (n.status IN ('eligible', 'review') "
        "OR o.status IN ('eligible', 'review'))",
        (old_id, new_id),
    ):
        statuses[pid] = (before or "", now)
        if before is None or (old_set, old_ev) == (new_set, new_ev):
            continue  # new in the source, or the same answers on the same records
        was = {cid: (answer, digest) for cid, answer, _, digest in sets.answers(old_set, old_ev)}
        for cid, answer, reason, digest in sets.answers(new_set, new_ev):
            if cid in was and was[cid] != (answer, digest):
                before_answer, before_digest = was[cid]
                changed.setdefault(pid, []).append(
                    (cid, before_answer, answer, reason, digest, before_digest == digest)
                )
    new_patients = conn.execute(
        "SELECT count(*) FROM run_patients n WHERE n.run_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM run_patients o WHERE o.run_id = ? AND o.patient_key = n.patient_key)",
        (new_id, old_id),
    ).fetchone()[0]
    removed = [
        (pid, status)
        for pid, status in conn.execute(
            "SELECT p.patient_id, o.status FROM run_patients o "
            "JOIN patients p ON p.patient_key = o.patient_key WHERE o.run_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM run_patients n WHERE n.run_id = ? AND n.patient_key = o.patient_key)",
            (old_id, new_id),
        )
    ]
    order = {cid: i for i, cid in enumerate(new.criterion_ids)}
    decided = {d.patient_id: d for d in history.decisions(new.trial_id)}
    changes: list[Change] = []
    counts = dict.fromkeys(CHANGE_KINDS, 0)
    withheld = 0
    for pid in sorted(statuses):
        before, now = statuses[pid]
        d = decided.get(pid)
        overlay = (d.decision or "", d.contact_status) if d else ("", "")
        rows = sorted(changed.get(pid, []), key=lambda r: order.get(r[0], len(order)))
        if before == now:
            answers = [r for r in rows if r[1] != r[2]]
            kind = "answer_changed" if answers else "evidence_changed"
            rows = answers or rows
            if not rows:
                continue
        else:
            kind = "new_candidate" if before in ("", "ineligible") else "status_changed"
            if kind == "new_candidate" and overlay[1] in NOT_NEW_CONTACT_STATUSES:
                withheld += 1  # said no, or must not be called: never offered as new
                continue
            # a status change is explained by the answers that changed, not by new records
            # behind an unchanged answer
            rows = [r for r in rows if r[1] != r[2]]
        counts[kind] += 1
        if not rows:
            changes.append(Change(kind, pid, before, now, *[""] * 5, *overlay))
            continue
        for cid, old_answer, new_answer, reason, digest, _ in rows:
            changes.append(
                Change(
                    kind,
                    pid,
                    before,
                    now,
                    cid,
                    old_answer,
                    new_answer,
                    reason,
                    evidence_text(history.evidence_rows(digest)),
                    *overlay,
                )
            )
    for pid, status in sorted(removed):
        counts["no_longer_in_source"] += 1
        d = decided.get(pid)
        overlay = (d.decision or "", d.contact_status) if d else ("", "")
        changes.append(Change("no_longer_in_source", pid, status, "", *[""] * 5, *overlay))
    rank = {k: i for i, k in enumerate(CHANGE_KINDS)}
    changes.sort(key=lambda c: rank[c.change])  # stable: patient, then criterion order kept
    return Diff(
        old=old,
        new=new,
        changes=changes,
        counts=counts,
        new_patients=new_patients,
        withheld=withheld,
    )
