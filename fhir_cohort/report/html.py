"""report.html: one self-contained page a recruitment coordinator can read offline.

Everything the page needs (CSS, a few lines of JavaScript, the funnel chart as inline SVG) is
inside the file, so it opens from ``file://`` with no network. Every value that comes from the
data (ids, displays, notes, reasons, even the trial title) is HTML-escaped: FHIR data is
untrusted input.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from fhir_cohort.files import private_writer
from fhir_cohort.results import ScreeningResult

REPORT_NAME = "report.html"
# Several trials in one pass: OUT/index.html links OUT/<trial id>/report.html.
INDEX_NAME = "index.html"

# Answers that pass, fail, or need a person (inclusion / exclusion spellings).
PASS_ANSWERS = frozenset({"met", "clear"})
FAIL_ANSWERS = frozenset({"not_met", "excluded"})
OPEN_ANSWERS = frozenset({"unknown", "review"})

# Only shown with show_identifiers=True, and only if the patients table carries it.
IDENTIFIER_COLUMN = "identifier"

_SHORT_SYSTEMS: dict[str, str] = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation": "interpretation",
}
# "system|code" tokens inside evidence values, e.g. an interpretation code.
_TOKEN = re.compile(r"(https?://[^\s|,;]+)\|([^\s,;]+)")


def write_report(
    result: ScreeningResult, path: str | Path, *, show_identifiers: bool = False
) -> Path:
    """Write ``result`` as one self-contained HTML page at ``path`` (mode 0600, atomically).

    By default patients appear only as a pseudonymous row number and their FHIR resource id;
    ``show_identifiers=True`` adds business identifiers where the tables hold them. Names and
    birth dates are never shown. Returns ``path``.
    """
    target = Path(path)
    page = render_report(result, show_identifiers=show_identifiers)
    with private_writer(target) as fh:
        fh.write(page)
    return target


def render_report(result: ScreeningResult, *, show_identifiers: bool = False) -> str:
    """The report page as a string (see :func:`write_report`)."""
    ids = tuple(result.criterion_ids) or tuple(
        result.run.get("criteria", {}).get("criterion_ids", ())
    )
    criteria = _criteria_info(result.attrition, ids)
    candidates = _candidates(result, ids)
    common = _common_notes(candidates, ids)
    trial = result.run.get("trial", {}) or {}
    title = f"{_text(trial.get('id')) or 'Screening'} screening report"
    body = "\n".join(
        (
            _header(result, trial, show_identifiers),
            _summary(result),
            _changes_section(result, candidates),
            _funnel_section(result.attrition, candidates),
            _candidates_section(result, candidates, criteria, common, show_identifiers),
            _review_section(candidates, criteria),
            _footer(result),
        )
    )
    return _fill(
        _asset("report.html"),
        {
            "title": _e(title),
            "css": _asset("report.css"),
            "script": _asset("report.js"),
            "body": body,
        },
    )


def write_index(results: Mapping[str, ScreeningResult], path: str | Path) -> Path:
    """Write the index page of a multi-trial screen at ``path`` (0600, atomically): one row
    per trial with its counts and a link to ``<trial id>/report.html`` beside it."""
    target = Path(path)
    page = render_index(results)
    with private_writer(target) as fh:
        fh.write(page)
    return target


def render_index(results: Mapping[str, ScreeningResult]) -> str:
    """The index page as a string (see :func:`write_index`). Counts only: no patient data."""
    first = next(iter(results.values()), None)
    run = first.run if first is not None else {}
    where, when = _data_cut(run)
    # Recorded in a screening history: what changed per trial since its previous run there.
    recorded = any(r.run.get("history") for r in results.values())
    rows = []
    for trial_id, result in results.items():
        trial = result.run.get("trial", {}) or {}
        counts = _status_counts(result)
        href = f"{quote(str(trial_id), safe='')}/{REPORT_NAME}"
        rows.append(
            f'<tr data-trial="{_e(trial_id)}">'
            f'<td><a href="{_e(href)}">{_e(trial_id)}</a></td>'
            f"<td>{_e(trial.get('title'))}</td><td>{_e(trial.get('version'))}</td>"
            f'<td class="n">{len(result.patients)}</td>'
            + "".join(
                f'<td class="n" data-count="{s}">{counts[s]}</td>'
                for s in ("eligible", "review", "ineligible")
            )
            + (f'<td class="n">{_e(_index_changes(result.run))}</td>' if recorded else "")
            + "</tr>"
        )
    facts = "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(v) or '—'}</dd>"
        for k, v in (
            ("Data source", where),
            ("Data cut", when or "not recorded (files on disk)"),
            ("As-of date", _text(run.get("as_of"))),
        )
    )
    body = (
        '<header class="top"><div class="eyebrow">Clinical-trial screening · '
        f"{len(results)} trials in one pass · as of {_e(run.get('as_of'))}</div>"
        "<h1>Screening index <span>one report per trial; every patient's status in every "
        f'trial in <a href="trials.csv">trials.csv</a></span></h1></header>'
        f'<section id="summary"><dl class="facts">{facts}</dl></section>'
        '<section id="trials"><h2>Trials</h2><div class="scroll">'
        '<table class="grid trials-table"><thead><tr><th>Trial</th><th>Title</th>'
        "<th>Criteria version</th><th>Patients</th><th>Eligible</th><th>Needs review</th>"
        "<th>Ineligible</th>"
        + ("<th>Since the previous run</th>" if recorded else "")
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        "</section>"
        "<footer><p>Generated by fhir-cohort. This page makes no network requests. It "
        "supports, and does not replace, the investigator's eligibility assessment.</p>"
        "</footer>"
    )
    return _fill(
        _asset("report.html"),
        {"title": "Screening index", "css": _asset("report.css"), "script": "", "body": body},
    )


def _index_changes(run: dict[str, Any]) -> str:
    """A trial's changes since its previous run, as one index cell."""
    record = run.get("history") or {}
    if not record:
        return ""
    if record.get("previous_run_id") is None:
        return "first run"
    c = record.get("changes") or {}
    return (
        f"since {_text(record.get('previous_as_of'))}: {int(c.get('new_candidate', 0))} new, "
        f"{int(c.get('status_changed', 0))} changed status, "
        f"{int(c.get('no_longer_in_source', 0))} gone"
    )


# --------------------------------------------------------------------------------------------
# Data shaping


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    kind: str  # inclusion | exclusion


@dataclass(frozen=True)
class Candidate:
    row: int  # pseudonymous row number, 1-based, in report order
    patient_id: str
    status: str
    answers: dict[str, str]
    reasons: dict[str, list[str]]  # criterion id -> reason texts
    identifier: str
    # Evidence rows as dicts, in evidence.csv order: plain Python, since a pandas filter per
    # candidate and criterion cost seconds per report (1,000 small frames on a 20k hospital).
    evidence: tuple[dict[str, Any], ...]


def _text(value: Any) -> str:
    """A cell as display text: missing values (None, NaN, pandas NA) are empty."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _e(value: Any) -> str:
    return escape(_text(value), quote=True)


def _criteria_info(attrition: pd.DataFrame, ids: Sequence[str]) -> dict[str, Criterion]:
    info: dict[str, Criterion] = {}
    if {"criterion_id", "title", "kind"} <= set(attrition.columns):
        for rec in attrition.itertuples(index=False):
            cid = _text(rec.criterion_id)
            info[cid] = Criterion(cid, _text(rec.title) or cid, _text(rec.kind))
    return {cid: info.get(cid, Criterion(cid, cid, "")) for cid in ids}


def split_reasons(reasons: str, criterion_ids: Iterable[str]) -> dict[str, list[str]]:
    """Split a patients.csv ``reasons`` cell ("crit: text; crit: text") by criterion.

    Reason texts may themselves contain "; ", so a split happens only where a known criterion id
    follows. Text before the first criterion id is kept under "".

    >>> split_reasons("age: unknown: no date; cns: review: headache; re-screen", ["age", "cns"])
    {'age': ['unknown: no date'], 'cns': ['review: headache; re-screen']}
    """
    ids = sorted({c for c in criterion_ids if c}, key=len, reverse=True)
    out: dict[str, list[str]] = defaultdict(list)
    if not reasons:
        return {}
    if not ids:
        return {"": [reasons]}
    alternation = "|".join(re.escape(c) for c in ids)
    pattern = re.compile(rf"(?:^|; )({alternation}): ")
    matches = list(pattern.finditer(reasons))
    if not matches:
        return {"": [reasons]}
    if matches[0].start() > 0:
        out[""].append(reasons[: matches[0].start()])
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(reasons)
        out[m.group(1)].append(reasons[m.end() : end])
    return dict(out)


def _candidates(result: ScreeningResult, ids: Sequence[str]) -> list[Candidate]:
    patients = result.patients
    order = {"eligible": 0, "review": 1}
    cand = patients[patients["status"].isin(list(order))]
    # Eligible first, then review; within each, the table's own (deterministic) order.
    cand = cand.assign(_rank=cand["status"].map(order)).sort_values("_rank", kind="stable")
    # Only candidates' evidence is shown: group that, not the whole population's.
    ev = result.evidence
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if len(ev):
        ev = ev[ev["patient_id"].isin(set(cand["patient_id"]))]
        for record in ev.to_dict("records"):
            by_patient[_text(record.get("patient_id"))].append(record)
    out: list[Candidate] = []
    for row, rec in enumerate(cand.to_dict("records"), start=1):
        pid = _text(rec.get("patient_id"))
        out.append(
            Candidate(
                row=row,
                patient_id=pid,
                status=_text(rec.get("status")),
                answers={cid: _text(rec.get(cid)) for cid in ids},
                reasons=split_reasons(_text(rec.get("reasons")), ids),
                identifier=_text(rec.get(IDENTIFIER_COLUMN)),
                evidence=tuple(by_patient.get(pid, ())),
            )
        )
    return out


def _common_notes(candidates: Sequence[Candidate], ids: Sequence[str]) -> list[tuple[str, str]]:
    """Notes that every candidate passing a criterion carries (e.g. "confirm in chart").

    Shown once above the table instead of on dozens of rows; notes on open criteria, and notes
    only some passing candidates have, stay on their rows.
    """
    order = {cid: i for i, cid in enumerate(ids)}
    common: list[tuple[str, str]] = []
    for cid in ids:
        passing = [c for c in candidates if c.answers.get(cid) in PASS_ANSWERS]
        if len(passing) < 2:
            continue
        shared = set(passing[0].reasons.get(cid, ()))
        for c in passing[1:]:
            shared &= set(c.reasons.get(cid, ()))
        common.extend((cid, text) for text in sorted(shared))
    return sorted(common, key=lambda n: (order.get(n[0], len(order)), n[1]))


def _data_cut(run: dict[str, Any]) -> tuple[str, str]:
    """(where the data came from, when it was cut) from run.json's source record."""
    source = run.get("source", {}) or {}
    if source.get("kind") == "server":
        where = f"FHIR server {_text(source.get('url'))}"
    else:
        where = _text(source.get("path")) or "unknown source"
    when = _find_key(source, "transactionTime")
    label = "export transactionTime"
    if not when:
        when = _find_key(source, "started_at")
        label = "fetch started"
    return where, (f"{when} ({label})" if when else "")


def _find_key(obj: Any, key: str) -> str:
    if isinstance(obj, dict):
        if obj.get(key):
            return _text(obj[key])
        for v in obj.values():
            found = _find_key(v, key)
            if found:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key)
            if found:
                return found
    return ""


def _status_counts(result: ScreeningResult) -> dict[str, int]:
    counts = result.patients["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in ("eligible", "review", "ineligible")}


def _skipped(run: dict[str, Any]) -> int:
    skipped = run.get("skipped") or {}
    if isinstance(skipped, dict):
        return sum(int(v) for v in skipped.values() if isinstance(v, int | float))
    return int(skipped) if isinstance(skipped, int) else 0


# --------------------------------------------------------------------------------------------
# Sections


def _header(result: ScreeningResult, trial: dict[str, Any], show_identifiers: bool) -> str:
    tid = _e(trial.get("id")) or "Screening"
    if show_identifiers:
        has_ids = IDENTIFIER_COLUMN in result.patients.columns
        detail = (
            "patient identifiers are shown beside the row number and FHIR id."
            if has_ids
            else "this screening's tables hold no patient identifiers, so patients appear by "
            "row number and FHIR resource id only."
        )
        mode = (
            '<p class="mode mode-ids" id="identifier-mode" data-mode="identifiers">'
            f"<strong>Identifiers mode</strong> (--show-identifiers): {detail} "
            "Names and birth dates are never shown. Handle this file as patient data.</p>"
        )
    else:
        mode = (
            '<p class="mode" id="identifier-mode" data-mode="pseudonymous">'
            "<strong>Pseudonymous mode</strong>: patients appear by row number and FHIR "
            "resource id only; no names, identifiers or birth dates. The file still holds "
            "clinical details: keep it private.</p>"
        )
    return (
        '<header class="top">'
        '<div class="eyebrow">Clinical-trial screening report · as of '
        f"{_e(result.run.get('as_of'))}</div>"
        f"<h1>{tid} <span>{_e(trial.get('title'))}</span></h1>"
        f"{mode}"
        '<nav><a href="#summary">Summary</a>'
        + ('<a href="#changes">What changed</a>' if result.run.get("history") else "")
        + '<a href="#funnel">Funnel</a>'
        '<a href="#candidates">Candidates</a><a href="#review">Review queue</a></nav>'
        "</header>"
    )


def _summary(result: ScreeningResult) -> str:
    run = result.run
    counts = _status_counts(result)
    total = len(result.patients)
    skipped = _skipped(run)
    cards = [
        ("patients", "Patients screened", total),
        ("eligible", "Eligible", counts["eligible"]),
        ("review", "Needs review", counts["review"]),
        ("ineligible", "Ineligible", counts["ineligible"]),
        ("skipped", "Skipped resources", skipped),
    ]
    card_html = "".join(
        f'<div class="card card-{key}" data-count="{key}"><div class="num">{n}</div>'
        f'<div class="lbl">{label}</div></div>'
        for key, label, n in cards
    )
    where, when = _data_cut(run)
    criteria = run.get("criteria", {}) or {}
    trial = run.get("trial", {}) or {}
    sha = _text(criteria.get("sha256"))
    crit_file = Path(_text(criteria.get("file"))).name if criteria.get("file") else ""
    tool = run.get("tool", {}) or {}
    rows = [
        ("Data source", where),
        ("Data cut", when or "not recorded (files on disk)"),
        ("As-of date", _text(run.get("as_of"))),
        (
            "Criteria",
            " · ".join(
                x
                for x in (
                    f"version {_text(trial.get('version'))}" if trial.get("version") else "",
                    crit_file,
                    f"sha256 {sha[:12]}" if sha else "",
                )
                if x
            ),
        ),
        (
            "Screened",
            " · ".join(
                x
                for x in (
                    _text(run.get("started")),
                    f"{_text(tool.get('name'))} {_text(tool.get('version'))}".strip(),
                )
                if x
            ),
        ),
    ]
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v) or '—'}</dd>" for k, v in rows)
    return (
        '<section id="summary"><h2>Run summary</h2>'
        f'<div class="cards">{card_html}</div>'
        f'<dl class="facts">{facts}</dl></section>'
    )


_CHANGE_LABELS = {
    "new_candidate": "New candidate",
    "status_changed": "Status changed",
    "answer_changed": "Answer changed",
    "evidence_changed": "New evidence",
    "no_longer_in_source": "No longer in the source",
}


def _changes_section(result: ScreeningResult, candidates: Sequence[Candidate]) -> str:
    """What changed since the trial's previous run in the screening history: counts, then
    one row per change (changes.csv). Nothing when the run was not recorded in a history."""
    record = result.run.get("history")
    if not record:
        return ""
    if record.get("previous_run_id") is None:
        return (
            '<section id="changes"><h2>What changed</h2><p class="hint">The first run of this '
            "trial in the screening history: the next screen will list what changed since "
            f"this one (run {_e(record.get('run_id'))}).</p></section>"
        )
    since = _e(record.get("previous_as_of"))
    counts = record.get("changes") or {}
    cards = "".join(
        f'<div class="card card-change" data-change="{_e(kind)}"><div class="num">'
        f'{int(counts.get(kind, 0))}</div><div class="lbl">{_e(label)}</div></div>'
        for kind, label in _CHANGE_LABELS.items()
    )
    rows_by_pid = {c.patient_id: c.row for c in candidates}
    changes = result.changes if result.changes is not None else pd.DataFrame()
    body: list[str] = []
    for rec in changes.to_dict("records"):
        pid = _text(rec.get("patient_id"))
        row = rows_by_pid.get(pid)
        who = (
            f'<a class="plink" href="#p-{row}" data-row="{row}">#{row}</a> <code>{_e(pid)}</code>'
            if row
            else f"<code>{_e(pid)}</code>"
        )
        before, now = _text(rec.get("previous_status")), _text(rec.get("status"))
        answers = ""
        if _text(rec.get("criterion_id")):
            answers = (
                f"<span class='cid'>{_e(rec.get('criterion_id'))}</span> "
                f"{_answer_pill(_text(rec.get('previous_answer')))} → "
                f"{_answer_pill(_text(rec.get('answer')))}"
            )
        body.append(
            f'<tr class="change" data-change="{_e(rec.get("change"))}" data-patient="{_e(pid)}">'
            f"<td>{_e(_CHANGE_LABELS.get(_text(rec.get('change')), rec.get('change')))}</td>"
            f"<td class='pid'>{who}</td>"
            f"<td>{_e(before) or '—'} → {_e(now) or '—'}</td>"
            f"<td>{answers}</td><td>{_e(rec.get('reason'))}</td>"
            f"<td class='points'>{_e(rec.get('evidence'))}</td></tr>"
        )
    if not body:
        body.append('<tr><td colspan="6">Nothing changed.</td></tr>')
    note = (
        '<p class="note">The criteria changed between the two runs: answers are compared for '
        "the criteria both runs have.</p>"
        if record.get("criteria_changed")
        else ""
    )
    note += _decisions_note(record)
    return (
        f'<section id="changes"><h2>New since {since} <span class="sub">compared with run '
        f"{_e(record.get('previous_run_id'))} of the screening history "
        f"({int(record.get('new_patients') or 0)} patients new in the source)</span></h2>"
        f'{note}<div class="cards">{cards}</div>'
        '<div class="scroll"><table class="grid changes-table"><thead><tr><th>Change</th>'
        "<th>Patient (FHIR id)</th><th>Status</th><th>Criterion</th><th>Reason</th>"
        f"<th>New evidence</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        "</section>"
    )


def _decisions_note(record: dict[str, Any]) -> str:
    """The chart-review overlay's counts: decided patients back for re-review, declined or
    do-not-contact patients not listed as new (docs/history.md "Decisions")."""
    parts = []
    if record.get("re_review"):
        parts.append(
            f"{int(record['re_review'])} decided patients are back in the review queue: an "
            "answer changed on new evidence (re-review)"
        )
    if record.get("withheld_declined"):
        parts.append(
            f"{int(record['withheld_declined'])} patients who declined or must not be contacted "
            "would be new candidates: not listed"
        )
    if not parts:
        return ""
    return '<p class="hint decisions-note">' + _e("; ".join(parts)) + " (worklist.csv).</p>"


def _funnel_section(attrition: pd.DataFrame, candidates: Sequence[Candidate]) -> str:
    if attrition.empty:
        return '<section id="funnel"><h2>Attrition funnel</h2><p>No attrition table.</p></section>'
    return (
        '<section id="funnel"><h2>Attrition funnel</h2>'
        '<p class="hint">Patients still in the running after each criterion, in the trial\'s '
        "order. A patient stays while every answer so far is met/clear or still open "
        "(unknown/review).</p>"
        '<div class="funnel-grid">'
        f'<div class="chart">{funnel_svg(attrition, candidates)}</div>'
        f'<div><h3 class="table-title">Attrition table</h3>{_attrition_table(attrition)}</div>'
        "</div></section>"
    )


def funnel_svg(attrition: pd.DataFrame, candidates: Sequence[Candidate] = ()) -> str:
    """The attrition funnel as an inline SVG of horizontal bars, numbers as text labels."""
    rows = list(attrition.itertuples(index=False))
    total = max(int(rows[0].remaining), 1) if rows else 1
    width, label_w, bar_x, bar_w = 620, 0, 0, 470
    row_h, top = 44, 6
    eligible = sum(1 for c in candidates if c.status == "eligible")
    review = sum(1 for c in candidates if c.status == "review")
    n_rows = len(rows) + (1 if candidates else 0)
    height = top + n_rows * row_h + 4
    parts = [
        f'<svg class="funnel" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" preserveAspectRatio="xMinYMin meet" '
        'xmlns="http://www.w3.org/2000/svg" aria-label="Attrition funnel">'
    ]
    prev: int | None = None
    for i, rec in enumerate(rows):
        remaining = int(rec.remaining)
        y = top + i * row_h
        cid = _text(rec.criterion_id)
        kind = _text(rec.kind) or "all"
        title = _text(rec.title) or cid
        label = title if cid == "all" else f"{int(rec.step)}. {title}"
        w = max(bar_w * remaining / total, 2 if remaining else 0)
        dropped = (prev - remaining) if prev is not None else None
        drop = f'<tspan class="drop" dx="8">−{dropped}</tspan>' if dropped else ""
        parts.append(
            f'<g class="funnel-step" data-criterion="{_e(cid)}" data-remaining="{remaining}">'
            f"<title>{_e(label)}: {remaining} remaining</title>"
            f'<text class="flabel" x="{label_w}" y="{y + 13}">{_e(_clip(label, 80))}</text>'
            f'<rect class="bar bar-{_e(kind)}" x="{bar_x}" y="{y + 19}" width="{w:.1f}" '
            f'height="20" rx="3"/>'
            f'<text class="fnum" x="{bar_x + w + 8:.1f}" y="{y + 34}">'
            f'<tspan class="count">{remaining}</tspan>{drop}</text></g>'
        )
        prev = remaining
    if candidates:
        y = top + len(rows) * row_h
        we = bar_w * eligible / total
        wr = bar_w * review / total
        parts.append(
            f'<g class="funnel-result" data-eligible="{eligible}" data-review="{review}">'
            f'<text class="flabel strong" x="{label_w}" y="{y + 13}">Candidates</text>'
            f'<rect class="bar bar-eligible" x="{bar_x}" y="{y + 19}" width="{we:.1f}" '
            'height="20" rx="3"/>'
            f'<rect class="bar bar-review" x="{bar_x + we:.1f}" y="{y + 19}" width="{wr:.1f}" '
            'height="20" rx="3"/>'
            f'<text class="fnum" x="{bar_x + we + wr + 8:.1f}" y="{y + 34}">'
            f'<tspan class="count">{eligible + review}</tspan>'
            f'<tspan class="drop" dx="8">{eligible} eligible · {review} review</tspan>'
            "</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _attrition_table(attrition: pd.DataFrame) -> str:
    head = (
        "<thead><tr><th>#</th><th>Criterion</th><th>Type</th>"
        "<th class='n'>Remaining</th>"
        "<th class='n'>Removed</th><th class='n' title='met / clear'>Pass</th>"
        "<th class='n' title='not met / excluded'>Fail</th>"
        "<th class='n' title='unknown / review'>Open</th></tr></thead>"
    )
    body: list[str] = []
    prev: int | None = None
    for rec in attrition.to_dict("records"):
        remaining = int(rec.get("remaining", 0))
        kind = _text(rec.get("kind"))

        def n(*cols: str, rec: dict[str, Any] = rec) -> int:
            return sum(int(rec.get(c, 0) or 0) for c in cols)

        if kind == "inclusion":
            ok, bad, open_ = n("met"), n("not_met"), n("unknown")
        elif kind == "exclusion":
            ok, bad, open_ = n("clear"), n("excluded"), n("review")
        else:
            ok = bad = open_ = 0
        removed = "" if prev is None else str(prev - remaining)
        cid = _text(rec.get("criterion_id"))
        first = prev is None
        label = (
            f"<td>{_e(rec.get('title'))}</td><td></td>"
            if first
            else f'<td title="{_e(rec.get("title"))}"><span class="cid">{_e(cid)}</span></td>'
            f'<td class="kind">{_e(kind)}</td>'
        )
        nums = (
            "<td></td><td></td><td></td>"
            if first
            else f"<td class='n ok'>{ok}</td><td class='n bad'>{bad}</td>"
            f"<td class='n open'>{open_}</td>"
        )
        body.append(
            f'<tr data-criterion="{_e(cid)}"><td>{_e(rec.get("step"))}</td>{label}'
            f"<td class='n strong'>{remaining}</td><td class='n'>{removed}</td>{nums}</tr>"
        )
        prev = remaining
    return (
        f'<table class="grid attrition-table">{head}<tbody>{"".join(body)}</tbody></table>'
        '<p class="hint">Pass / fail / open count every screened patient\'s answer to that '
        "criterion, not only those still remaining.</p>"
    )


def _answer_pill(answer: str) -> str:
    cls = (
        "ok"
        if answer in PASS_ANSWERS
        else "bad"
        if answer in FAIL_ANSWERS
        else "open"
        if answer in OPEN_ANSWERS
        else "none"
    )
    label = answer.replace("_", " ") if answer else "—"
    return f'<span class="pill {cls}" data-answer="{_e(answer)}">{_e(label)}</span>'


def _status_badge(status: str) -> str:
    label = {"eligible": "Eligible", "review": "Review"}.get(status, status)
    return f'<span class="badge badge-{_e(status)}">{_e(label)}</span>'


def _candidates_section(
    result: ScreeningResult,
    candidates: Sequence[Candidate],
    criteria: dict[str, Criterion],
    common: Sequence[tuple[str, str]],
    show_identifiers: bool,
) -> str:
    ids = list(criteria)
    n_el = sum(1 for c in candidates if c.status == "eligible")
    n_rv = len(candidates) - n_el
    with_ids = show_identifiers and IDENTIFIER_COLUMN in result.patients.columns
    head_cells = [
        "<th class='n'>#</th>",
        "<th>Patient (FHIR id)</th>",
        *(["<th>Identifier</th>"] if with_ids else []),
        "<th>Status</th>",
        *(
            f'<th class="crit" title="{_e(criteria[cid].kind)}: {_e(criteria[cid].title)}">'
            f"{_e(cid.replace('_', ' '))}</th>"
            for cid in ids
        ),
        "<th>Open points</th>",
        "<th></th>",
    ]
    ncols = len(head_cells)
    common_html = ""
    if common:
        items = "".join(
            f"<li><span class='cid'>{_e(cid)}</span> {_e(text)}</li>" for cid, text in common
        )
        common_html = (
            '<div class="note common-notes"><strong>To confirm for every candidate who '
            "passes the criterion:</strong>"
            f"<ul>{items}</ul></div>"
        )
    rows: list[str] = []
    last_status = ""
    shared = set(common)
    for c in candidates:
        if c.status != last_status:
            label = "Eligible" if c.status == "eligible" else "Needs review"
            count = n_el if c.status == "eligible" else n_rv
            rows.append(
                f'<tr class="group group-{_e(c.status)}"><th colspan="{ncols}">'
                f"{label} <span>({count})</span></th></tr>"
            )
            last_status = c.status
        points = [
            (cid, text)
            for cid, texts in c.reasons.items()
            for text in texts
            if not ((cid, text) in shared and c.answers.get(cid) in PASS_ANSWERS)
        ]
        points_html = "".join(
            f"<li><span class='cid'>{_e(cid)}</span> {_e(text)}</li>"
            if cid
            else f"<li>{_e(text)}</li>"
            for cid, text in points
        )
        cells = [
            f"<td class='n rownum'>{c.row}</td>",
            f"<td class='pid'><code>{_e(c.patient_id)}</code></td>",
            *([f"<td>{_e(c.identifier) or '—'}</td>"] if with_ids else []),
            f"<td>{_status_badge(c.status)}</td>",
            *(f"<td class='ans'>{_answer_pill(c.answers.get(cid, ''))}</td>" for cid in ids),
            f"<td class='points'>{f'<ul>{points_html}</ul>' if points_html else ''}</td>",
            f'<td><button type="button" class="toggle" aria-expanded="false" '
            f'aria-controls="ev-{c.row}" data-row="{c.row}">Evidence '
            f'<span class="evn">{len(c.evidence)}</span></button></td>',
        ]
        rows.append(
            f'<tr class="candidate status-{_e(c.status)}" id="p-{c.row}" data-row="{c.row}" '
            f'data-patient="{_e(c.patient_id)}" data-status="{_e(c.status)}">'
            f"{''.join(cells)}</tr>"
        )
        rows.append(
            f'<tr class="evidence" id="ev-{c.row}" data-row="{c.row}">'
            f'<td colspan="{ncols}">{_evidence_block(c, criteria)}</td></tr>'
        )
    if not candidates:
        rows.append(f'<tr><td colspan="{ncols}">No eligible or review patients.</td></tr>')
    legend = (
        '<p class="legend">'
        f"{_answer_pill('met')} / {_answer_pill('clear')} passes · "
        f"{_answer_pill('unknown')} / {_answer_pill('review')} needs a person · "
        f"{_answer_pill('not_met')} / {_answer_pill('excluded')} fails. "
        "Click <em>Evidence</em> for the records behind a row.</p>"
    )
    return (
        f'<section id="candidates"><h2>Candidates <span class="sub">{n_el} eligible, '
        f"{n_rv} to review</span></h2>{legend}{common_html}"
        '<div class="scroll"><table class="grid candidates-table">'
        f"<thead><tr>{''.join(head_cells)}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div></section>"
    )


def _short_system(system: str) -> str:
    return _SHORT_SYSTEMS.get(system, system)


def _readable_value(value: str) -> str:
    return _TOKEN.sub(lambda m: f"{_short_system(m.group(1))} {m.group(2)}", value)


def _record(row: dict[str, Any]) -> str:
    rtype, rid = _text(row.get("resource_type")), _text(row.get("resource_id"))
    if not rid:
        return _e(rtype)
    return f"{_e(rtype)}/<code>{_e(rid)}</code>" if rtype else f"<code>{_e(rid)}</code>"


def _evidence_block(c: Candidate, criteria: dict[str, Criterion]) -> str:
    if not c.evidence:
        return '<div class="ev"><p class="hint">No evidence rows for this patient.</p></div>'
    by_criterion: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in c.evidence:
        by_criterion[_text(r.get("criterion_id"))].append(r)
    groups: list[str] = []
    for cid, crit in criteria.items():
        part = by_criterion.get(cid)
        if not part:
            continue
        rows = "".join(
            "<tr>"
            f"<td class='date'>{_e(r.get('date'))}</td>"
            f"<td>{_record(r)}</td>"
            f"<td>{_e(_short_system(_text(r.get('system'))))} {_e(r.get('code'))}</td>"
            f"<td>{_e(r.get('display'))}</td>"
            f"<td>{_e(_readable_value(_text(r.get('value'))))}</td>"
            f"<td>{_e(r.get('note'))}</td>"
            "</tr>"
            for r in part
        )
        groups.append(
            f'<div class="ev-group" data-criterion="{_e(cid)}"><h4>'
            f"{_answer_pill(c.answers.get(cid, ''))} <span class='cid'>{_e(cid)}</span> "
            f"{_e(crit.title)}</h4>"
            '<table class="grid ev-table">'
            '<colgroup><col class="c-date"><col class="c-rec"><col class="c-code">'
            '<col class="c-disp"><col class="c-val"><col class="c-note"></colgroup>'
            "<thead><tr><th>Date</th><th>Record</th><th>Code</th><th>Display</th><th>Value</th>"
            "<th>Note</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
    other = sum(len(rows) for cid, rows in by_criterion.items() if cid not in criteria)
    if other:
        groups.append(f'<p class="hint">{other} evidence rows for criteria not in this report.</p>')
    return f'<div class="ev">{"".join(groups)}</div>'


def _review_section(candidates: Sequence[Candidate], criteria: dict[str, Criterion]) -> str:
    review = [c for c in candidates if c.status == "review"]
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in review:
        opened = [cid for cid in criteria if c.answers.get(cid) in OPEN_ANSWERS]
        for cid in opened:
            texts = c.reasons.get(cid) or [c.answers.get(cid, "")]
            for text in texts:
                groups[(cid, text)].append(c)
    order = {cid: i for i, cid in enumerate(criteria)}
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), order.get(kv[0][0], 0), kv[0]))
    blocks: list[str] = []
    for (cid, text), members in ordered:
        crit = criteria.get(cid, Criterion(cid, cid, ""))
        answer = members[0].answers.get(cid, "")
        # The answer is shown as a pill; the reason text usually repeats it as a prefix.
        shown = text.removeprefix(f"{answer}: ") if answer else text
        links = "".join(
            f'<li><a class="plink" href="#p-{m.row}" data-row="{m.row}">#{m.row}</a> '
            f"<code>{_e(m.patient_id)}</code></li>"
            for m in members
        )
        blocks.append(
            f'<div class="rq-group" data-criterion="{_e(cid)}" data-size="{len(members)}">'
            f'<h3><span class="rq-n">{len(members)}</span> {_answer_pill(answer)} '
            f'<span class="cid">{_e(cid)}</span> {_e(shown)}</h3>'
            f"<p class='ctitle'>{_e(crit.title)}</p>"
            f'<ul class="rq-list">{links}</ul></div>'
        )
    if not blocks:
        blocks.append("<p>No patients need review.</p>")
    return (
        '<section id="review"><h2>Review queue <span class="sub">'
        f"{len(review)} patients, grouped by the open point</span></h2>"
        '<p class="hint">A patient with several open points appears in each group. '
        "Resolve them in the chart; a patient becomes eligible when every point is cleared."
        f'</p><div class="rq">{"".join(blocks)}</div></section>'
    )


def _footer(result: ScreeningResult) -> str:
    return (
        "<footer><p>Generated by fhir-cohort from the screening outputs "
        "(patients.csv, evidence.csv, attrition.csv, run.json). "
        "This page makes no network requests. It supports, and does not replace, "
        "the investigator's eligibility assessment.</p></footer>"
    )


@functools.cache
def _asset(name: str) -> str:
    return (
        resources.files("fhir_cohort.report")
        .joinpath("templates", name)
        .read_text(encoding="utf-8")
    )


_SLOT = re.compile(r"\{\{(title|css|script|body)\}\}")


def _fill(template: str, slots: dict[str, str]) -> str:
    # One pass, so data that happens to contain "{{body}}" is never substituted again.
    return _SLOT.sub(lambda m: slots[m.group(1)], template)
