"""The worklist's HTML: plain server-rendered pages and forms, no script.

Every value from the history (patient and resource ids, reasons, evidence displays, notes, a
coordinator's text, even trial ids) is HTML-escaped: it is untrusted input. Patients appear by
their FHIR resource id only, as in the report's default mode: the history holds no names,
identifiers or birth dates. The one stylesheet is inline, allowed by its hash in the
Content-Security-Policy (security.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from fhir_cohort.history.db import RecordedAnswer, RunInfo
from fhir_cohort.history.decisions import (
    CONTACT_STATUSES,
    DECISIONS,
    FLAG_NEW,
    Decision,
    DecisionLogEntry,
    Worklist,
    WorklistEntry,
)

__all__ = [
    "FormValues",
    "Notice",
    "label",
    "patient_page",
    "patient_path",
    "stylesheet",
    "trial_path",
    "trials_page",
    "worklist_page",
]

_PASS = frozenset({"met", "clear"})
_FAIL = frozenset({"not_met", "excluded"})
_QUEUE_TITLES = {
    "review": ("Review queue", "a chart review is due: the engine says review, more "
               "information is needed, or new evidence arrived after a decision"),
    "candidate": ("Candidates", "eligible by the criteria, not decided yet"),
    "decided": ("Decided", "a coordinator's decision holds (or only a contact status is kept)"),
}  # fmt: skip


@functools.cache
def stylesheet() -> str:
    return resources.files("fhir_cohort.review").joinpath("review.css").read_text("utf-8")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def label(value: str | None) -> str:
    """A stored value as words: ``needs_information`` -> ``needs information``."""
    return (value or "").replace("_", " ")


def trial_path(trial_id: str) -> str:
    return f"/trials/{quote(trial_id, safe='')}"


def patient_path(trial_id: str, patient_id: str) -> str:
    return f"{trial_path(trial_id)}/patients/{quote(patient_id, safe='')}"


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{stylesheet()}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


_PSEUDONYMOUS = (
    '<p class="mode" id="identifier-mode">Pseudonymous: patients appear by row number and '
    "FHIR resource id only; the history holds no names, identifiers or birth dates. The pages "
    "still show patient data: this server answers only the browser that opened its address.</p>"
)

_FOOTER = (
    "<footer>fhir-cohort review: served from the screening history on this computer only "
    "(127.0.0.1); no external requests. A decision supports, and does not replace, the "
    "investigator's eligibility assessment.</footer>"
)


def _run_facts(run: RunInfo, previous: RunInfo | None) -> str:
    rows = [
        ("run", f"{run.run_id}, as of {run.as_of}"),
        ("data cut", run.data_cut or "not recorded"),
        ("criteria", f"{run.trial_version or ''} ({len(run.criterion_ids)} criteria)".strip()),
        ("patients", f"{run.patients}: eligible {run.eligible}, review {run.review}, "
                     f"ineligible {run.ineligible}"),
        ("compared with", f"run {previous.run_id}, as of {previous.as_of}" if previous
         else "nothing: the trial's first run in this history"),
    ]  # fmt: skip
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="facts">{items}</dl>'


def trials_page(runs: Sequence[RunInfo]) -> str:
    """The trials in the history, each with its latest run."""
    rows = "".join(
        f'<tr><td><a href="{_e(trial_path(r.trial_id))}">{_e(r.trial_id)}</a></td>'
        f"<td>{_e(r.trial_title)}</td><td>{_e(r.as_of)}</td><td>{r.run_id}</td>"
        f"<td>{r.eligible}</td><td>{r.review}</td></tr>"
        for r in runs
    )
    body = (
        '<header class="top"><div class="eyebrow">fhir-cohort review</div>'
        "<h1>Chart-review worklists</h1></header>"
        "<section><h2>Trials in this history</h2><table><thead><tr><th>Trial</th><th>Title</th>"
        "<th>Latest as-of</th><th>Run</th><th>Eligible</th><th>Review</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>{_FOOTER}"
    )
    return _document("fhir-cohort review", body)


def _status(status: str) -> str:
    return f'<span class="badge st-{_e(status)}">{_e(status)}</span>'


def _flags(entry: WorklistEntry) -> str:
    out = []
    if entry.new:
        out.append(f'<span class="badge flag-new" data-flag="new">{_e(FLAG_NEW)}</span>')
    if entry.re_review:
        which = ", ".join(entry.re_review_criteria)
        out.append(
            '<span class="badge flag-re-review" data-flag="re-review">re-review: new evidence'
            f"</span><small>{_e(which)}</small>"
        )
    return "".join(out)


def _entry_row(trial_id: str, row: int, e: WorklistEntry) -> str:
    d = e.decision
    decision = label(d.decision) if d and d.decision else ""
    if d and d.reason:
        decision += f": {d.reason}"
    flagged = ' class="flagged"' if e.re_review else ""
    return (
        f'<tr{flagged} data-patient="{_e(e.patient_id)}" data-queue="{_e(e.queue)}" '
        f'data-flags="{_e(" ".join(f.split(":")[0] for f in e.flags))}">'
        f'<td class="num">{row}</td>'
        f'<td><a href="{_e(patient_path(trial_id, e.patient_id))}">'
        f"<code>{_e(e.patient_id)}</code></a></td>"
        f"<td>{_status(e.status)}</td><td>{_flags(e)}</td>"
        f'<td class="decision">{_e(decision) or "—"}</td>'
        f'<td class="contact">{_e(label(e.contact_status))}</td>'
        f"<td>{_e(d.note) if d and d.note else ''}</td>"
        f'<td class="reasons">{_e(e.reasons)}</td></tr>'
    )


def worklist_page(work: Worklist, previous: RunInfo | None) -> str:
    """A run's worklist: the review queue, the undecided candidates, the decided patients."""
    run = work.run
    rows = {e.patient_id: i for i, e in enumerate(work.entries, 1)}
    since = f" since {previous.as_of}" if previous else ""
    new = sum(e.new for e in work.entries)
    cards = "".join(
        f'<div class="card card-{cls}"><div class="num">{n}</div><div class="lbl">{_e(text)}'
        "</div></div>"
        for cls, n, text in (
            ("review", len(work.queue), "in the review queue"),
            ("candidate", len(work.candidates), "candidates not decided"),
            ("decided", len(work.decided), "decided"),
            ("new", new, f"new{since}"),
        )
    )
    sections = []
    for queue, entries in (
        ("review", work.queue),
        ("candidate", work.candidates),
        ("decided", work.decided),
    ):
        title, hint = _QUEUE_TITLES[queue]
        body = "".join(_entry_row(run.trial_id, rows[e.patient_id], e) for e in entries)
        table = (
            '<table class="worklist"><thead><tr><th>#</th><th>Patient (FHIR id)</th>'
            "<th>Status</th><th>Flags</th>"
            "<th>Decision</th><th>Contact</th><th>Note</th><th>Open or failed criteria</th>"
            f"</tr></thead><tbody>{body}</tbody></table>"
            if entries
            else '<p class="empty">nobody</p>'
        )
        sections.append(
            f'<section id="queue-{queue}"><h2>{_e(title)}<span class="sub">{len(entries)}: '
            f"{_e(hint)}</span></h2>{table}</section>"
        )
    body = (
        f'<header class="top"><div class="eyebrow"><a href="/">fhir-cohort review</a></div>'
        f"<h1>{_e(run.trial_id)} chart-review worklist<span>{_e(run.trial_title)}</span></h1>"
        f"{_run_facts(run, previous)}</header>{_PSEUDONYMOUS}"
        f'<div class="cards">{cards}</div>{"".join(sections)}{_FOOTER}'
    )
    return _document(f"{run.trial_id} worklist", body)


@dataclass(frozen=True)
class FormValues:
    """What the decision form shows: the saved decision, or what the coordinator sent."""

    decision: str = ""
    reason: str = ""
    contact_status: str = "not_contacted"
    note: str = ""
    version: int = 0

    @classmethod
    def of(cls, d: Decision | None) -> FormValues:
        if d is None:
            return cls()
        return cls(d.decision or "", d.reason or "", d.contact_status, d.note or "", d.version)


@dataclass(frozen=True)
class Notice:
    """A message above the form: ``saved``, ``conflict`` or ``error``."""

    kind: str
    title: str
    text: str = ""


def _form(trial_id: str, patient_id: str, values: FormValues) -> str:
    choices = [("", "not decided"), *((d, label(d)) for d in DECISIONS)]
    radios = "".join(
        f'<label><input type="radio" name="decision" value="{_e(v)}"'
        f"{' checked' if v == values.decision else ''}> {_e(text)}</label>"
        for v, text in choices
    )
    options = "".join(
        f'<option value="{_e(c)}"{" selected" if c == values.contact_status else ""}>'
        f"{_e(label(c))}</option>"
        for c in CONTACT_STATUSES
    )
    return (
        f'<form class="decision" method="post" action="{_e(patient_path(trial_id, patient_id))}">'
        f'<input type="hidden" name="version" value="{values.version}">'
        f"<fieldset><legend>Decision</legend>{radios}</fieldset>"
        '<fieldset><legend><label for="reason">Reason</label></legend>'
        '<input type="text" id="reason" name="reason" maxlength="4000" '
        f'value="{_e(values.reason)}"><div class="hint">required for ineligible: which '
        "criterion, and why</div></fieldset>"
        '<fieldset><legend><label for="contact_status">Contact status</label></legend>'
        f'<select id="contact_status" name="contact_status">{options}</select></fieldset>'
        '<fieldset><legend><label for="note">Note</label></legend>'
        f'<textarea id="note" name="note" maxlength="4000">{_e(values.note)}</textarea>'
        '</fieldset><button type="submit">Save</button></form>'
    )


def _notice(notice: Notice | None) -> str:
    if notice is None:
        return ""
    text = f"<p>{_e(notice.text)}</p>" if notice.text else ""
    return (
        f'<div class="notice notice-{_e(notice.kind)}" id="notice" role="status">'
        f"<h3>{_e(notice.title)}</h3>{text}</div>"
    )


def _answer_pill(answer: str) -> str:
    cls = "ans-pass" if answer in _PASS else "ans-fail" if answer in _FAIL else "ans-open"
    return f'<span class="badge {cls}">{_e(label(answer))}</span>'


def _record(r: dict[str, str]) -> str:
    ref = "/".join(x for x in (r.get("resource_type"), r.get("resource_id")) if x)
    words = [r.get("code"), r.get("display"), r.get("date"), r.get("value")]
    text = " · ".join(_e(w) for w in words if w)
    note = f' <span class="note">({_e(r["note"])})</span>' if r.get("note") else ""
    return f"<li><code>{_e(ref)}</code> {text}{note}</li>"


def _answers(answers: Sequence[RecordedAnswer], flagged: Iterable[str]) -> str:
    flagged = set(flagged)
    rows = []
    for a in answers:
        records = "".join(_record(r) for r in a.evidence)
        evidence = f'<ul class="evidence">{records}</ul>' if records else ""
        mark = (
            ' <span class="badge flag-re-review">new evidence</span>'
            if a.criterion_id in flagged
            else ""
        )
        rows.append(
            f'<tr data-criterion="{_e(a.criterion_id)}"><td><code>{_e(a.criterion_id)}</code>'
            f"{mark}</td><td>{_answer_pill(a.answer)}</td><td>{_e(a.reason)}{evidence}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Criterion</th><th>Answer</th><th>Reason and evidence</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _log(entries: Sequence[DecisionLogEntry]) -> str:
    if not entries:
        return '<p class="empty">no decision saved yet</p>'
    rows = "".join(
        f"<tr><td>{_e(x.changed_at)}</td><td>{_e(x.changed_by)}</td>"
        f"<td>{_e('' if x.version is None else x.version)}</td><td>{_e(label(x.field))}</td>"
        f"<td>{_e(x.previous_value)}</td><td>{_e(x.value)}</td><td>{_e(x.run_id)}</td></tr>"
        for x in reversed(entries)
    )
    return (
        '<table id="audit-log"><thead><tr><th>When (UTC)</th><th>Who</th><th>Version</th>'
        "<th>Field</th><th>Before</th><th>After</th><th>Run</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def patient_page(
    work: Worklist,
    entry: WorklistEntry,
    answers: Sequence[RecordedAnswer],
    log: Sequence[DecisionLogEntry],
    values: FormValues,
    notice: Notice | None = None,
) -> str:
    """One patient: the engine's answers with their evidence, the decision form (with the
    version it was read at), and the audit log."""
    run = work.run
    d = entry.decision
    saved = (
        f"{label(d.decision) or 'not decided'}, contact {label(d.contact_status)}; version "
        f"{d.version} by {d.decided_by} at {d.decided_at}"
        if d
        else "none yet"
    )
    body = (
        f'<header class="top"><div class="eyebrow"><a href="/">fhir-cohort review</a> / '
        f'<a href="{_e(trial_path(run.trial_id))}">{_e(run.trial_id)} worklist</a></div>'
        f"<h1>Patient <code>{_e(entry.patient_id)}</code>"
        f"<span>run {run.run_id}, as of {_e(run.as_of)}</span></h1>"
        f"<p>{_status(entry.status)} queue: <strong>{_e(entry.queue)}</strong> {_flags(entry)}"
        f"</p></header>{_PSEUDONYMOUS}{_notice(notice)}"
        '<div class="columns"><div>'
        f'<section id="answers"><h2>Answers and evidence<span class="sub">run {run.run_id}'
        f"</span></h2>{_answers(answers, entry.re_review_criteria)}</section></div>"
        f'<div><section id="decision"><h2>Decision<span class="sub" id="saved-decision">'
        f"saved: {_e(saved)}</span></h2>{_form(run.trial_id, entry.patient_id, values)}"
        "</section></div></div>"
        f'<section id="log"><h2>Audit log<span class="sub">every change, newest first</span>'
        f"</h2>{_log(log)}</section>{_FOOTER}"
    )
    return _document(f"{run.trial_id} patient", body)
