"""report.html in a real browser: Debian's headless Chromium, driven by Playwright.

Opens the demo report from file:// with every non-file request blocked, checks the funnel and
the candidate table against the result, opens a drill-down, and saves the screenshot the README
shows plus test artefacts in tmp/artifacts/ (gitignored). The README's docs/img/report.png is a
tracked file: only `make screenshot` (FHIR_COHORT_UPDATE_SCREENSHOT=1) rewrites it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cohort.report.html import write_report
from fhir_cohort.results import ScreeningResult

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "report.png"
ARTIFACTS = REPO / "tmp" / "artifacts"
SCREENSHOT_HEIGHT = 1400
MAX_SCREENSHOT_BYTES = 400_000

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that refuses (and records) any request that is not a local file."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.external_requests = []  # type: ignore[attr-defined]
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]

    def block(route: Any) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            pg.external_requests.append(url)
            route.abort()

    pg.route("**/*", block)
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))

    def on_dialog(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="module")
def demo_report(demo_result: ScreeningResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(demo_result, tmp_path_factory.mktemp("report") / "report.html")


def test_funnel_renders_the_attrition_numbers(
    page: Any, demo_report: Path, demo_result: ScreeningResult
) -> None:
    page.goto(demo_report.as_uri())
    steps = page.locator("svg.funnel g.funnel-step")
    expected = demo_result.attrition["remaining"].astype(int).tolist()
    assert steps.count() == len(expected)
    shown = [int(t) for t in steps.locator("tspan.count").all_text_contents()]
    assert shown == expected
    # Bars are drawn, and their lengths follow the numbers (the funnel only narrows).
    widths = [steps.nth(i).locator("rect").bounding_box()["width"] for i in range(len(expected))]
    assert all(w > 0 for w, n in zip(widths, expected, strict=True) if n > 0)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] / widths[0] == pytest.approx(expected[-1] / expected[0], rel=0.02)
    counts = demo_result.status_counts()
    result_row = page.locator("svg.funnel g.funnel-result")
    assert int(result_row.get_attribute("data-eligible")) == counts["eligible"]
    assert int(result_row.get_attribute("data-review")) == counts["review"]
    for key in ("eligible", "review", "ineligible"):
        card = page.locator(f'.card[data-count="{key}"] .num')
        assert int(card.inner_text()) == counts[key]
    assert page.external_requests == []
    assert page.errors == []


def test_candidate_table_and_drill_down(
    page: Any, demo_report: Path, demo_result: ScreeningResult
) -> None:
    page.goto(demo_report.as_uri())
    counts = demo_result.status_counts()
    rows = page.locator("table.candidates-table tr.candidate")
    assert rows.count() == counts["eligible"] + counts["review"]
    assert page.locator("tr.candidate.status-eligible").count() == counts["eligible"]
    assert page.locator("tr.candidate.status-review").count() == counts["review"]
    # Evidence is collapsed until asked for.
    assert page.locator("tr.evidence:visible").count() == 0

    candidates = demo_result.candidates()
    review = candidates[candidates["status"] == "review"].iloc[0]
    row_number = int(candidates.index[candidates["patient_id"] == review["patient_id"]][0]) + 1
    row = page.locator(f"tr#p-{row_number}")
    assert row.get_attribute("data-patient") == review["patient_id"]
    drill = page.locator(f"tr#ev-{row_number}")
    assert not drill.is_visible()
    row.locator("button.toggle").click()
    assert drill.is_visible()
    assert row.locator("button.toggle").get_attribute("aria-expanded") == "true"
    ev = demo_result.evidence
    mine = ev[ev["patient_id"] == review["patient_id"]]
    assert len(mine) > 0
    text = drill.inner_text()
    for rid in mine["resource_id"].dropna():
        if rid:
            assert rid in text
    shown_groups = drill.locator(".ev-group").evaluate_all(
        "els => els.map(e => e.dataset.criterion)"
    )
    assert shown_groups == [c for c in demo_result.criterion_ids if c in set(mine["criterion_id"])]
    # Only that patient's drill-down opened; clicking again closes it.
    assert page.locator("tr.evidence:visible").count() == 1
    row.locator("button.toggle").click()
    assert not drill.is_visible()

    # A review-queue link jumps to the row and opens its evidence.
    link = page.locator("#review a.plink").first
    target = int(link.get_attribute("data-row"))
    link.click()
    assert page.locator(f"tr#ev-{target}").is_visible()
    assert page.url.endswith(f"#p-{target}")
    assert page.external_requests == []
    assert page.errors == []


def test_screenshot_for_the_readme(page: Any, demo_report: Path) -> None:
    page.goto(demo_report.as_uri())
    page.wait_for_load_state("load")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": 0, "y": 0, "width": 1280, "height": SCREENSHOT_HEIGHT}
    png = page.screenshot(full_page=True, clip=clip, type="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) < MAX_SCREENSHOT_BYTES, f"screenshot is {len(png)} bytes"
    if os.environ.get("FHIR_COHORT_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(png)
    (ARTIFACTS / "report.png").write_bytes(png)
    # The whole page with one drill-down open, for a person looking at a CI run.
    page.locator("tr.candidate.status-review button.toggle").first.click()
    page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)
    (ARTIFACTS / "report.html").write_bytes(demo_report.read_bytes())
    assert page.errors == []


def test_hostile_data_runs_no_script(
    page: Any, demo_result: ScreeningResult, tmp_path: Path
) -> None:
    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    evidence = demo_result.evidence.copy()
    evidence["display"] = evil
    patients = demo_result.patients.copy()
    patients["reasons"] = patients["reasons"].astype(str) + evil
    hostile = ScreeningResult(
        patients=patients,
        evidence=evidence,
        attrition=demo_result.attrition,
        run={**demo_result.run, "trial": {"id": evil, "title": evil, "version": evil}},
        criterion_ids=demo_result.criterion_ids,
    )
    report = write_report(hostile, tmp_path / "report.html")
    page.goto(report.as_uri())
    page.locator("tr.candidate button.toggle").first.click()
    page.wait_for_timeout(200)
    assert page.dialogs == []
    assert page.locator("main img").count() == 0
    assert evil in page.locator("tr.evidence.open").inner_text()
    assert page.external_requests == []
