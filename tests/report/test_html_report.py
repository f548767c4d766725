"""report.html without a browser: self-contained, private, escaped, honest about identifiers."""

from __future__ import annotations

import json
import os
import stat
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.pipeline import DEMO_DATA
from fhir_cohort.report.html import render_report, split_reasons, write_report
from fhir_cohort.results import ScreeningResult

IDS = ("age", "sle", "autoantibody", "cns_lupus")
EVIL_DISPLAY = '<script>alert("display")</script>'
EVIL_ID = '"><img src=x onerror=alert(1)>'
EVIL_REASON = "<b onmouseover=alert(2)>bold</b>"
EVIL_TITLE = "</title><script>alert(3)</script>"


class _Collector(HTMLParser):
    """Every start tag with its attributes, for structural assertions."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    return parser


def _small_result(
    *, display: str = "Systemic lupus erythematosus", patient_id: str = "p-review"
) -> ScreeningResult:
    """Two candidates (one eligible, one review) and one ineligible patient."""
    patients = pd.DataFrame(
        [
            {
                "patient_id": "p-eligible",
                "status": "eligible",
                "age": "met",
                "sle": "met",
                "autoantibody": "met",
                "cns_lupus": "clear",
                "reasons": "",
            },
            {
                "patient_id": patient_id,
                "status": "review",
                "age": "met",
                "sle": "met",
                "autoantibody": "unknown",
                "cns_lupus": "review",
                "reasons": "autoantibody: unknown: no test within 365 days; "
                f"cns_lupus: review: headache; may re-screen {EVIL_REASON}",
            },
            {
                "patient_id": "p-out",
                "status": "ineligible",
                "age": "not_met",
                "sle": "met",
                "autoantibody": "met",
                "cns_lupus": "clear",
                "reasons": "",
            },
        ]
    )
    evidence = pd.DataFrame(
        [
            {
                "patient_id": patient_id,
                "criterion_id": "sle",
                "resource_type": "Condition",
                "resource_id": "cond-1",
                "system": "http://snomed.info/sct",
                "code": "55464009",
                "display": display,
                "date": "2021-06-03",
                "value": "active, confirmed",
                "note": "sle: counted",
            },
            {
                "patient_id": "p-eligible",
                "criterion_id": "autoantibody",
                "resource_type": "Observation",
                "resource_id": "obs-7",
                "system": "http://loinc.org",
                "code": "5130-0",
                "display": "DNA double strand Ab",
                "date": "2026-10-25",
                "value": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation|H",
                "note": "positive (interpretation)",
            },
        ]
    )
    attrition = pd.DataFrame(
        [
            (0, "all", "", "all patients", 3, 0, 0, 0, 0, 0, 0),
            (1, "age", "inclusion", "Age 18 or older", 2, 2, 1, 0, 0, 0, 0),
            (2, "sle", "inclusion", "Systemic lupus erythematosus", 2, 3, 0, 0, 0, 0, 0),
            (3, "autoantibody", "inclusion", "Autoantibody detectable", 2, 2, 0, 1, 0, 0, 0),
            (4, "cns_lupus", "exclusion", "Active CNS lupus", 2, 0, 0, 0, 2, 0, 1),
        ],
        columns=[
            "step", "criterion_id", "kind", "title", "remaining",
            "met", "not_met", "unknown", "clear", "excluded", "review",
        ],
    )  # fmt: skip
    run = {
        "as_of": "2026-11-24",
        "started": "2026-11-24T09:00:00+00:00",
        "trial": {"id": "NCT06038474", "title": EVIL_TITLE, "version": "1.0.0"},
        "criteria": {"file": "/x/NCT06038474.yaml", "sha256": "ab" * 32, "criterion_ids": IDS},
        "source": {"kind": "disk", "path": "/data/export"},
        "skipped": {"Observation": 2},
    }
    return ScreeningResult(
        patients=patients, evidence=evidence, attrition=attrition, run=run, criterion_ids=IDS
    )


def test_demo_report_is_self_contained(demo_result: ScreeningResult, tmp_path: Path) -> None:
    page = write_report(demo_result, tmp_path / "report.html").read_text(encoding="utf-8")
    parsed = _parse(page)
    loaders = {"img", "iframe", "object", "embed", "link", "video", "audio", "source", "base"}
    assert not [t for t, _ in parsed.tags if t in loaders]
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, tag
        for name in ("href", "xlink:href", "action", "formaction", "srcset", "poster", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("#"), f"<{tag} {name}={value!r}>"
    assert "@import" not in page
    assert "url(" not in page
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert scripts == [{}], "one inline script, nothing loaded"
    csp = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


def test_report_is_owner_only_even_over_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o644)
    written = write_report(_small_result(), target)
    assert written == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p.name for p in target.parent.iterdir() if p.name != "report.html"]


def test_untrusted_strings_are_escaped() -> None:
    page = render_report(_small_result(display=EVIL_DISPLAY, patient_id=EVIL_ID))
    for raw in (EVIL_DISPLAY, EVIL_ID, EVIL_REASON, EVIL_TITLE):
        assert raw not in page
    assert "&lt;script&gt;alert(&quot;display&quot;)&lt;/script&gt;" in page
    assert "&lt;b onmouseover=alert(2)&gt;bold&lt;/b&gt;" in page
    parsed = _parse(page)
    assert [t for t, _ in parsed.tags].count("script") == 1
    assert "img" not in [t for t, _ in parsed.tags]
    handlers = [(t, k) for t, a in parsed.tags for k in a if k.lower().startswith("on")]
    assert handlers == []
    # The hostile id is still shown, as text, where the patient is listed.
    assert EVIL_ID in "".join(parsed.text)
    candidates = [a for t, a in parsed.tags if t == "tr" and "candidate" in (a.get("class") or "")]
    assert [a["data-patient"] for a in candidates] == ["p-eligible", EVIL_ID]


def test_pseudonymous_mode_is_the_default_and_says_so() -> None:
    result = _small_result()
    result.patients["identifier"] = ["MRN-111", "MRN-222", "MRN-333"]
    page = render_report(result)
    assert 'data-mode="pseudonymous"' in page
    assert "Pseudonymous mode" in page
    assert "MRN-111" not in page and "MRN-222" not in page


def test_identifiers_mode_shows_identifiers_where_the_table_has_them() -> None:
    result = _small_result()
    result.patients["identifier"] = ["MRN-111", "MRN-222", "MRN-333"]
    page = render_report(result, show_identifiers=True)
    assert 'data-mode="identifiers"' in page
    assert "MRN-111" in page and "MRN-222" in page
    assert "MRN-333" not in page, "ineligible patients are not listed"


def test_identifiers_mode_without_identifiers_says_there_are_none() -> None:
    page = render_report(_small_result(), show_identifiers=True)
    assert 'data-mode="identifiers"' in page
    assert "hold no patient identifiers" in page


def test_demo_report_never_shows_names_or_birth_dates(demo_result: ScreeningResult) -> None:
    page = render_report(demo_result, show_identifiers=True)
    candidates = set(demo_result.candidates()["patient_id"])
    checked = 0
    with open(DEMO_DATA / "Patient.000.ndjson", encoding="utf-8") as fh:
        for line in fh:
            patient = json.loads(line)
            if patient["id"] not in candidates:
                continue
            checked += 1
            if patient.get("birthDate"):
                assert patient["birthDate"] not in page, patient["id"]
            for name in patient.get("name", []):
                for part in [name.get("family", ""), *name.get("given", [])]:
                    if len(part) >= 4 and part not in patient["id"] and part != "Scenario":
                        assert part not in page, patient["id"]
    assert checked == len(candidates) > 0


def test_demo_report_content_matches_the_result(demo_result: ScreeningResult) -> None:
    page = render_report(demo_result)
    parsed = _parse(page)
    counts = demo_result.status_counts()
    rows = [a for t, a in parsed.tags if t == "tr" and "candidate" in (a.get("class") or "")]
    assert len(rows) == counts["eligible"] + counts["review"]
    statuses = [a["data-status"] for a in rows]
    assert statuses == sorted(statuses, key=["eligible", "review"].index)
    assert [int(a["data-row"]) for a in rows] == list(range(1, len(rows) + 1))
    steps = [a for t, a in parsed.tags if t == "g" and a.get("class") == "funnel-step"]
    assert [int(a["data-remaining"]) for a in steps] == demo_result.attrition["remaining"].astype(
        int
    ).tolist()
    cards = {a["data-count"]: a for t, a in parsed.tags if t == "div" and "data-count" in a}
    assert set(cards) == {"patients", "eligible", "review", "ineligible", "skipped"}
    # Every review patient is in the review queue; every candidate's evidence is in the page.
    review_ids = set(demo_result.candidates().query("status == 'review'")["patient_id"])
    queued = {
        int(a["data-row"]) for t, a in parsed.tags if t == "a" and "plink" in (a.get("class") or "")
    }
    assert {a["data-patient"] for a in rows if int(a["data-row"]) in queued} == review_ids
    ev = demo_result.evidence
    for rid in ev[ev["patient_id"].isin(set(demo_result.candidates()["patient_id"]))][
        "resource_id"
    ].dropna():
        if rid:
            assert f"<code>{rid}</code>" in page
    assert demo_result.run["criteria"]["sha256"][:12] in page


def test_data_cut_shows_the_export_transaction_time() -> None:
    result = _small_result()
    result.run["source"] = {
        "kind": "server",
        "url": "https://fhir.example.org/R4",
        "fetch": {"strategy": "bulk", "export": {"transactionTime": "2026-11-20T03:00:00Z"}},
    }
    page = render_report(result)
    assert "2026-11-20T03:00:00Z (export transactionTime)" in page
    assert "FHIR server https://fhir.example.org/R4" in page
    assert 'href="https' not in page


def test_data_cut_falls_back_to_fetch_start() -> None:
    result = _small_result()
    fetch = {"started_at": "2026-11-21T01:02"}
    result.run["source"] = {"kind": "server", "url": "u", "fetch": fetch}
    assert "2026-11-21T01:02 (fetch started)" in render_report(result)


def test_notes_shared_by_every_passing_candidate_are_shown_once(
    demo_result: ScreeningResult,
) -> None:
    page = render_report(demo_result)
    note = "Active symptoms despite therapy cannot be read from structured data"
    passing = (demo_result.candidates()["therapy"] == "met").sum()
    assert passing > 1
    # As an open point (banner and rows use the same list item) it appears once, in the banner.
    assert page.count(f"<li><span class='cid'>therapy</span> {note}") == 1
    banner = page[page.index("common-notes") :]
    assert banner.index(note) < banner.index('class="candidate')


def test_review_queue_groups_by_open_criterion_and_reason() -> None:
    page = render_report(_small_result())
    parsed = _parse(page)
    groups = {
        a["data-criterion"]: int(a["data-size"])
        for t, a in parsed.tags
        if t == "div" and a.get("class") == "rq-group"
    }
    assert groups == {"autoantibody": 1, "cns_lupus": 1}
    assert "no test within 365 days" in page
    # The "; " inside the cns_lupus reason does not split it into two points.
    assert "headache; may re-screen" in page


_ident = st.from_regex(r"[a-z][a-z_]{0,9}", fullmatch=True)
_reason = st.text(alphabet="abc xyz:,.()<>&\"'-", min_size=1, max_size=30).filter(
    lambda s: s == s.strip() and ";" not in s
)


@given(st.lists(st.tuples(_ident, _reason), min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_split_reasons_round_trips(items: list[tuple[str, str]]) -> None:
    ids = [cid for cid, _ in items]
    # A reason that itself starts "<other id>: " after "; " would be ambiguous by design.
    joined = "; ".join(f"{cid}: {text}" for cid, text in items)
    assert split_reasons(joined, ids) == {cid: [text] for cid, text in items}


def test_split_reasons_keeps_semicolons_inside_a_reason() -> None:
    text = "cns_lupus: review: headache; may re-screen when resolved; sle: unknown: x"
    assert split_reasons(text, ["cns_lupus", "sle"]) == {
        "cns_lupus": ["review: headache; may re-screen when resolved"],
        "sle": ["unknown: x"],
    }
    assert split_reasons("", ["sle"]) == {}
    assert split_reasons("free text", ["sle"]) == {"": ["free text"]}


@pytest.mark.parametrize("empty", [None, float("nan"), pd.NA, ""])
def test_missing_evidence_cells_render_empty(empty: object) -> None:
    result = _small_result()
    result.evidence.loc[0, "display"] = empty
    page = render_report(result)
    assert ">nan<" not in page and ">None<" not in page and "&lt;NA&gt;" not in page


def test_a_screening_without_candidates_still_renders(tmp_path: Path) -> None:
    result = _small_result()
    result.patients["status"] = "ineligible"
    result.evidence = result.evidence.iloc[0:0]
    page = write_report(result, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No eligible or review patients." in page
    assert "No patients need review." in page
    assert 'class="candidate' not in page
