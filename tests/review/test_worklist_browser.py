"""The chart-review worklist in a real browser (Debian's headless Chromium, Playwright), end to
end over three weekly screens of a small hospital, in this process:

1. week 1: screen; sign in with the printed address; record decisions and contact statuses
   through the forms; two browser sessions on one patient: the second save is a visible
   conflict and writes nothing;
2. week 2: two candidates get a pregnancy record (ineligible), one of them declined in week 1;
3. week 3: those records are corrected (entered-in-error), so both are candidates again, and a
   patient decided eligible in week 1 gets a pregnancy record: decisions kept, the changed
   patient back in the review queue flagged, the declined patient not "new", the other one
   new.

A second test signs in to a small recorded history and posts the decision form from pages of
other origins.

The README's docs/img/worklist.png is a tracked file: only `make screenshot`
(FHIR_COHORT_UPDATE_SCREENSHOT=1) rewrites it; every run leaves a copy in tmp/artifacts/.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.history import open_history
from fhir_cohort.review.server import ReviewServer
from fhir_cohort.synth.generator import PatientRecord, build_scenario
from fhir_cohort.synth.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "worklist.png"
ARTIFACTS = REPO / "tmp" / "artifacts"
MAX_SCREENSHOT_BYTES = 400_000
TRIAL = "NCT06038474"
WEEKS = (date(2026, 11, 10), date(2026, 11, 17), date(2026, 11, 24))
WHO = "ana.coordinator"

pytestmark = pytest.mark.slow


def _pregnancy(patient_id: str, onset: date, verification: str = "confirmed") -> dict[str, Any]:
    """A pregnancy Condition (SNOMED CT 127364007 Primigravida, in the trial's pregnancy value
    set); the same id each week, so a correction replaces it."""
    system = "http://terminology.hl7.org/CodeSystem/condition-"
    return {
        "resourceType": "Condition",
        "id": f"pregnancy-{patient_id}",
        "subject": {"reference": f"Patient/{patient_id}"},
        "clinicalStatus": {"coding": [{"system": system + "clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": system + "ver-status", "code": verification}]},
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "127364007",
                    "display": "Primigravida (finding)",
                }
            ]
        },
        "onsetDateTime": onset.isoformat(),
    }


class Hospital:
    """Seven scenario patients of the synthetic hospital (built once at week 1's date) and the
    week's extra records, one Bundle file per week."""

    def __init__(self, folder: Path) -> None:
        by_status: dict[str, list[PatientRecord]] = defaultdict(list)
        for scenario in SCENARIOS:
            record = build_scenario(scenario, WEEKS[0])
            by_status[record.status].append(record)
        female = [r for r in by_status["eligible"] if r.resources[0].get("gender") == "female"]
        self.kept, self.changed, self.declined, self.returning = female[:4]
        self.ruled_out, self.open = by_status["review"][:2]
        self.outside = by_status["ineligible"][0]
        self.records = [
            self.kept,
            self.changed,
            self.declined,
            self.returning,
            self.ruled_out,
            self.open,
            self.outside,
        ]
        self.folder = folder

    def id(self, name: str) -> str:
        return getattr(self, name).patient_id

    def bundle(self, week: int) -> Path:
        onset, both = date(2026, 11, 14), ("declined", "returning")
        extra = {
            0: [],
            1: [_pregnancy(self.id(n), onset) for n in both],
            2: [
                *(
                    _pregnancy(self.id(n), onset, "entered-in-error")
                    for n in ("declined", "returning")
                ),
                _pregnancy(self.id("changed"), date(2026, 11, 20)),
            ],
        }[week]
        entries = [{"resource": r} for rec in self.records for r in rec.resources]
        entries += [{"resource": r} for r in extra]
        path = self.folder / f"week{week + 1}.json"
        path.write_text(
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
        )
        return path


def _screen(hospital: Hospital, history: Path, week: int) -> None:
    from fhir_cohort.pipeline import screen

    screen(source=hospital.bundle(week), as_of=WEEKS[week], history=history, workers=1)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A browser context whose pages may reach 127.0.0.1 only (anything else is aborted and
    recorded), with console errors (a CSP violation is one) recorded."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.external = []
    ctx.errors = []

    def route(r: Any) -> None:
        if r.request.url.startswith("http://127.0.0.1:"):
            r.continue_()
        else:
            ctx.external.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    ctx.on("weberror", lambda e: ctx.errors.append(str(e.error)))
    # The conflict (409) is an answer the test asks for; Chromium reports every 4xx document
    # as a console error.
    expected = "the server responded with a status of 4"
    ctx.on(
        "console",
        lambda m: m.type == "error" and expected not in m.text and ctx.errors.append(m.text),
    )
    try:
        yield ctx
    finally:
        ctx.close()


def _row(page: Any, patient_id: str) -> Any:
    return page.locator(f'tr[data-patient="{patient_id}"]')


def _save(page: Any, decision: str, contact: str, note: str = "", reason: str = "") -> None:
    """Fill the decision form (a fresh one: the text fields only when given) and save."""
    page.check(f'input[name="decision"][value="{decision}"]')
    page.select_option("#contact_status", contact)
    for selector, text in (("#reason", reason), ("#note", note)):
        if text:
            page.fill(selector, text)
    with page.expect_navigation():
        page.click("form.decision button[type=submit]")


def _open(page: Any, patient_id: str) -> None:
    with page.expect_navigation():
        _row(page, patient_id).locator("a").click()


def test_the_worklist_keeps_decisions_across_screens_and_flags_new_evidence(
    browser: Any, context: Any, tmp_path: Path
) -> None:
    hospital = Hospital(tmp_path)
    history = tmp_path / "history.sqlite"
    _screen(hospital, history, 0)
    with ReviewServer(history, reviewer=WHO) as server:
        page = context.new_page()
        page.goto(server.url)
        assert page.url == f"{server.origin}/trials/{TRIAL}"  # token spent, left the URL
        queue, candidates = page.locator("#queue-review"), page.locator("#queue-candidate")
        for name in ("ruled_out", "open"):
            assert queue.locator(f'tr[data-patient="{hospital.id(name)}"]').count() == 1
        for name in ("kept", "changed", "declined", "returning"):
            assert candidates.locator(f'tr[data-patient="{hospital.id(name)}"]').count() == 1
        assert _row(page, hospital.id("outside")).count() == 0  # ineligible: not listed
        assert page.locator("[data-flag]").count() == 0  # a trial's first run: nothing new

        # Decisions and contact statuses through the forms.
        _open(page, hospital.id("kept"))
        with open_history(history, create=False) as h:
            criteria = h.runs(TRIAL)[-1].criterion_ids
        assert page.locator("#answers tbody tr").count() == len(criteria)  # each, with evidence
        assert page.locator("#answers .evidence li").count() > 0
        _save(page, "eligible", "attempt_1", note="voicemail left")
        assert page.inner_text("#notice") == "Saved (version 1)."
        for name, contact in (("changed", "enrolled"), ("declined", "declined")):
            page.goto(f"{server.origin}/trials/{TRIAL}/patients/{hospital.id(name)}")
            _save(page, "eligible", contact)
        page.goto(f"{server.origin}/trials/{TRIAL}/patients/{hospital.id('ruled_out')}")
        _save(page, "ineligible", "do_not_contact", reason="SLE not confirmed by a specialist")
        assert "Saved" in page.inner_text("#notice")

        # Two sessions on one patient: the second save names a stale version.
        second = browser.new_context(storage_state=context.storage_state())
        try:
            other = second.new_page()
            target = f"{server.origin}/trials/{TRIAL}/patients/{hospital.id('open')}"
            page.goto(target)
            other.goto(target)
            _save(page, "needs_information", "not_contacted", note="ask for the biopsy report")
            _save(other, "eligible", "attempt_1", note="looks fine")
            notice = other.inner_text("#notice")
            assert notice.startswith("Not saved: this patient was saved by someone else")
            assert other.is_checked('input[name="decision"][value="eligible"]')
            assert other.input_value('input[name="version"]') == "1"  # a resave overwrites
            assert "needs information" in other.inner_text("#saved-decision")
        finally:
            second.close()
        with open_history(history, create=False) as h:
            kept = h.decision(TRIAL, hospital.id("open"))
            assert kept is not None and (kept.decision, kept.version) == ("needs_information", 1)
            assert kept.note == "ask for the biopsy report"  # the other session wrote nothing
            assert {e.changed_by for e in h.decision_log(TRIAL)} == {WHO}

        # Weeks 2 and 3, screened while the server runs: it shows the latest run.
        _screen(hospital, history, 1)
        _screen(hospital, history, 2)
        page.goto(f"{server.origin}/trials/{TRIAL}")
        changed = page.locator(f'#queue-review tr[data-patient="{hospital.id("changed")}"]')
        assert changed.get_attribute("data-flags") == "re-review"
        assert changed.locator(".decision").inner_text() == "eligible"  # kept, to be re-reviewed
        decided = page.locator("#queue-decided")
        for name, decision, contact in (
            ("kept", "eligible", "attempt 1"),
            ("declined", "eligible", "declined"),
            ("ruled_out", "ineligible: SLE not confirmed by a specialist", "do not contact"),
        ):
            row = decided.locator(f'tr[data-patient="{hospital.id(name)}"]')
            assert row.locator(".decision").inner_text() == decision, name
            assert row.locator(".contact").inner_text() == contact, name
        # ineligible last week, a candidate again: new, unless the patient declined
        assert _row(page, hospital.id("declined")).get_attribute("data-flags") == ""
        returning = page.locator(f'#queue-candidate tr[data-patient="{hospital.id("returning")}"]')
        assert returning.get_attribute("data-flags") == "new"
        assert page.locator('[data-flag="new"]').count() == 1
        assert page.locator(f'#queue-review tr[data-patient="{hospital.id("open")}"]').count()
        _screenshot(page)

        # The flagged patient's page: the new record behind the changed answer, the audit log.
        _open(page, hospital.id("changed"))
        answer = page.locator('#answers tr[data-criterion="pregnancy_lactation"]')
        assert "new evidence" in answer.inner_text()
        assert f"Condition/pregnancy-{hospital.id('changed')}" in answer.inner_text()
        log = page.locator("#audit-log tbody tr")
        assert log.count() == 2 and WHO in log.first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "worklist-patient.png"), full_page=True)
        assert context.external == [] and context.errors == []


def _screenshot(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(full_page=True, type="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) < MAX_SCREENSHOT_BYTES, f"screenshot is {len(png)} bytes"
    if os.environ.get("FHIR_COHORT_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(png)
    (ARTIFACTS / "worklist.png").write_bytes(png)


def test_the_browser_gets_nothing_without_the_token_and_other_origins_cannot_save(
    context: Any, tiny_history: Path
) -> None:
    """A page from another site, and one from another port of 127.0.0.1 (the same *site*
    for SameSite cookies, so the browser sends the session cookie), both post the decision
    form: the Origin check refuses both, and nothing is written."""
    with ReviewServer(tiny_history, reviewer=WHO) as server:
        page = context.new_page()
        page.goto(f"{server.origin}/trials/T-1")
        assert "not signed in" in page.inner_text("body")
        page.goto(server.url)
        assert page.url == f"{server.origin}/trials/T-1"
        target = f"{server.origin}/trials/T-1/patients/p-review"
        form = (
            f'<form method="post" action="{target}"><input type="hidden" name="decision" '
            'value="ineligible"><input type="hidden" name="reason" value="forged">'
            '<input type="hidden" name="version" value="0"><button>go</button></form>'
        )
        for attacker in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}"):
            page.route(
                f"{attacker}/attack", lambda r: r.fulfill(content_type="text/html", body=form)
            )
            page.goto(f"{attacker}/attack")
            with page.expect_navigation():
                page.click("button")
            assert "another origin" in page.inner_text("body"), attacker
        with open_history(tiny_history, create=False) as h:
            assert h.decision("T-1", "p-review") is None
        assert context.errors == []
