"""A coordinator's two weekly screens of the demo hospital, each into a new --out folder,
through the CLI entry point in-process: the default history beside the folders, the
comparison in the summary, changes.csv, report.html and run.json, and the history / diff
commands. Several trials in one pass record each trial."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort import load_results, screen_many
from fhir_cohort.cli import EXIT_DATA, EXIT_OK, EXIT_USAGE
from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.history.db import HISTORY_NAME, open_history
from fhir_cohort.history.diff import CHANGES_COLUMNS
from fhir_cohort.report.outputs import restore_frame
from tests.cli_main import run_main

WEEK1, WEEK2 = "2026-11-10", "2026-11-24"


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("weekly")
    first = run_main(["screen", "-q", "--as-of", WEEK1, "--out", str(root / WEEK1)])
    assert first.returncode == EXIT_OK, first.stderr
    second = run_main(["-vv", "screen", "--as-of", WEEK2, "--out", str(root / WEEK2)])
    assert second.returncode == EXIT_OK, second.stderr
    return {"root": root, "second": second, "history": root / HISTORY_NAME}


def _changes(folder: Path) -> pd.DataFrame:
    path = folder / "changes.csv"
    return restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False))


def test_the_second_week_is_compared_with_the_first(weeks: dict[str, object]) -> None:
    root, second = weeks["root"], weeks["second"]
    assert isinstance(root, Path) and isinstance(second, subprocess.CompletedProcess)
    assert sorted(p.name for p in root.iterdir()) == sorted([WEEK1, WEEK2, HISTORY_NAME])
    changes = _changes(root / WEEK2)
    assert list(changes.columns) == list(CHANGES_COLUMNS)
    # the pregnancy scenarios' records dated 2026-11-14 move six eligible patients
    moved = changes[changes["change"] == "status_changed"]
    assert moved["patient_id"].nunique() == 6
    assert set(moved["criterion_id"]) == {"pregnancy_lactation"}
    assert set(moved["previous_status"]) == {"eligible"}
    assert all(e.startswith(("Observation/", "Condition/")) for e in moved["evidence"])
    counts = json.loads((root / WEEK2 / "run.json").read_text())["history"]
    assert counts["previous_run_id"] == 1 and counts["run_id"] == 2
    assert counts["previous_as_of"] == WEEK1 and counts["path"] == str(weeks["history"])
    assert counts["changes"]["status_changed"] == 6
    line = next(x for x in second.stdout.splitlines() if x.startswith("since "))
    assert line.startswith(f"since {WEEK1} (run 1): 0 new candidates, 6 status changes")
    assert "status: eligible 84, review 48, ineligible 364" in second.stdout  # answers as ever
    # -vv logs name no patient of the comparison
    assert not [pid for pid in changes["patient_id"] if pid in second.stderr]
    # the first week: no previous run, an empty changes.csv
    assert _changes(root / WEEK1).empty
    assert load_results(root / WEEK2).changes.equals(changes)


def test_report_html_says_what_is_new_since_the_previous_run(weeks: dict[str, object]) -> None:
    root = weeks["root"]
    assert isinstance(root, Path)
    page = (root / WEEK2 / "report.html").read_text()
    assert f"New since {WEEK1}" in page and 'href="#changes"' in page
    assert page.count('<tr class="change"') == len(_changes(root / WEEK2))
    assert 'data-change="status_changed"' in page
    first = (root / WEEK1 / "report.html").read_text()
    assert "The first run of this trial in the screening history" in first


def test_history_lists_the_runs_and_diff_repeats_the_comparison(
    weeks: dict[str, object],
) -> None:
    root, history = weeks["root"], str(weeks["history"])
    assert isinstance(root, Path)
    listed = run_main(["history", "--history", history])
    assert listed.returncode == EXIT_OK, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "trial", "as"] and len(lines) == 3
    assert lines[2].split()[:3] == ["2", "NCT06038474", WEEK2]
    runs = json.loads(run_main(["history", "--history", history, "--json"]).stdout)
    assert [(r["run_id"], r["as_of"], r["previous_run_id"]) for r in runs] == [
        (1, WEEK1, None),
        (2, WEEK2, 1),
    ]
    assert runs[1]["out_dir"] == str((root / WEEK2).absolute())
    assert runs[1]["criteria_sha256"] and runs[1]["tool_version"]
    diff = run_main(["diff", "1", "2", "--history", history])
    assert diff.returncode == EXIT_OK, diff.stderr
    listed_changes = [x for x in diff.stdout.splitlines() if x and not x.startswith((" ", "N"))]
    assert len(listed_changes) == len(_changes(root / WEEK2))
    assert "since 2026-11-10 (run 1 -> 2)" in diff.stdout
    for argv, message in (
        (["diff", "1", "9", "--history", history], "no run 9"),
        (["history", "--history", str(root / "none.sqlite")], "no screening history"),
    ):
        failed = run_main(argv)
        assert failed.returncode == EXIT_DATA and message in failed.stderr
    assert not (root / "none.sqlite").exists()
    both = run_main(["screen", "--history", history, "--no-history"])
    assert both.returncode == EXIT_USAGE and "not allowed with" in both.stderr


def test_several_trials_in_one_pass_record_each_trial(tmp_path: Path) -> None:
    trial = load_criteria(default_criteria_path())
    other = trial.model_copy(update={"id": "NCT06038474-copy"})
    history = tmp_path / "h.sqlite"
    many = screen_many(
        criteria=[trial, other],
        as_of=date.fromisoformat(WEEK2),
        out_dir=tmp_path / "out",
        history=history,
    )
    with open_history(history, create=False) as past:
        runs = past.runs()
    assert [r.trial_id for r in runs] == ["NCT06038474", "NCT06038474-copy"]
    assert runs[0].pass_id and runs[0].pass_id == runs[1].pass_id
    assert [r.previous_run_id for r in runs] == [None, None]  # each trial's own first run
    assert [(r.eligible, r.review, r.ineligible) for r in runs] == [(84, 48, 364)] * 2
    for tid in many:
        assert many[tid].run["history"]["run_id"] in (1, 2)
        assert (tmp_path / "out" / tid / "changes.csv").exists()
    assert "NCT06038474-copy: history: run 2" in many.summary()
    index = (tmp_path / "out" / "index.html").read_text()
    assert "<th>Since the previous run</th>" in index and index.count(">first run</td>") == 2
