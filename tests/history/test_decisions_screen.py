"""Decisions across two weekly screens, through the CLI entry point in-process, on seven
patients of the demo hospital: the decisions are kept, the decided patients whose answers
changed on new evidence are back in the review queue, a declined patient is not offered as new
(changes.csv, the summary, report.html), the engine's answers are untouched; then the
decisions CSV export and import."""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort import load_results
from fhir_cohort.cli import EXIT_DATA, EXIT_OK
from fhir_cohort.history import WORKLIST_COLUMNS, open_history
from fhir_cohort.history.db import HISTORY_NAME
from fhir_cohort.history.transfer import DECISIONS_CSV_COLUMNS
from fhir_cohort.report.outputs import restore_frame
from tests.cli_main import run_main

DEMO = Path(__file__).resolve().parents[2] / "fhir_cohort" / "demo_data"
TRIAL = "NCT06038474"
WEEK1, WEEK2 = "2026-11-10", "2026-11-24"
PATIENTS = {
    "s-preg-status-pregnant",  # eligible -> ineligible on a record dated 2026-11-14
    "s-preg-hcg-equivocal",  # eligible -> review on a record dated 2026-11-14
    "s-eligible-statements",  # eligible both weeks
    "s-eligible-male",  # a minor in week 1 (birth date corrected after), declined
    "s-eligible-requests",  # a minor in week 1 (birth date corrected after): new
    "s-preg-delivery-recent",  # review both weeks
    "s-age-17",  # ineligible both weeks
}
MINORS_IN_WEEK1 = {"s-eligible-male", "s-eligible-requests"}
DECIDED = "2026-11-11"
DECISIONS = {
    "s-preg-status-pregnant": {"decision": "eligible", "contact_status": "attempt_1"},
    "s-preg-hcg-equivocal": {"decision": "ineligible", "reason": "hCG equivocal, repeat"},
    "s-eligible-statements": {"decision": "eligible", "contact_status": "enrolled"},
    "s-eligible-male": {"contact_status": "declined", "note": '=HYPERLINK("x")'},
    "s-preg-delivery-recent": {"decision": "needs_information", "note": "delivery date?"},
}


def _source(dest: Path, *, minors: bool) -> Path:
    """The seven patients' records of the demo hospital (shared resources, Medication, kept);
    ``minors``: MINORS_IN_WEEK1 born in 2015, as a data error corrected the next week."""
    dest.mkdir(parents=True)
    for f in sorted(DEMO.glob("*.ndjson")):
        keep = []
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["resourceType"] == "Patient":
                if r["id"] not in PATIENTS:
                    continue
                if minors and r["id"] in MINORS_IN_WEEK1:
                    line = json.dumps({**r, "birthDate": "2015-01-01"})
            else:
                ref = (r.get("subject") or r.get("patient") or {}).get("reference")
                if ref is not None and ref.removeprefix("Patient/") not in PATIENTS:
                    continue
            keep.append(line)
        (dest / f.name).write_text("\n".join(keep) + "\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("decided")
    first = run_main(
        [
            "screen",
            "-q",
            "--source",
            str(_source(root / "export-1", minors=True)),
            "--as-of",
            WEEK1,
            "--out",
            str(root / WEEK1),
        ]
    )
    assert first.returncode == EXIT_OK, first.stderr
    with open_history(root / HISTORY_NAME, create=False) as history:
        for pid, fields in DECISIONS.items():
            history.save_decision(
                TRIAL, pid, who="coordinator", expected_version=0, when=DECIDED, **fields
            )  # type: ignore[arg-type]
    second = run_main(
        [
            "screen",
            "--source",
            str(_source(root / "export-2", minors=False)),
            "--as-of",
            WEEK2,
            "--out",
            str(root / WEEK2),
        ]
    )
    assert second.returncode == EXIT_OK, second.stderr
    return {"root": root, "stdout": second.stdout, "history": root / HISTORY_NAME}


def _csv(path: Path) -> pd.DataFrame:
    return restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False))


def test_decisions_are_kept_and_new_evidence_sends_them_back(weeks: dict[str, object]) -> None:
    root, stdout = weeks["root"], weeks["stdout"]
    assert isinstance(root, Path) and isinstance(stdout, str)
    out = root / WEEK2
    # the engine's answers are as without decisions (the demo's expected answers at WEEK2)
    expected = pd.read_csv(DEMO / "expected.csv", dtype=str).drop(columns="scenario")
    expected = expected[expected["patient_id"].isin(PATIENTS)].sort_values("patient_id")
    patients = _csv(out / "patients.csv").sort_values("patient_id")
    assert (
        patients[list(expected.columns)]
        .reset_index(drop=True)
        .equals(expected.reset_index(drop=True))
    )
    work = _csv(out / "worklist.csv").set_index("patient_id")
    assert list(work.reset_index().columns) == list(WORKLIST_COLUMNS)
    rr = "re-review: new evidence"
    got = {
        pid: (r["status"], r["queue"], r["flags"], r["decision"], r["contact_status"])
        for pid, r in work.iterrows()
    }
    assert got == {
        "s-preg-status-pregnant": ("ineligible", "review", rr, "eligible", "attempt_1"),
        "s-preg-hcg-equivocal": ("review", "review", rr, "ineligible", "not_contacted"),
        "s-preg-delivery-recent": ("review", "review", "", "needs_information", "not_contacted"),
        "s-eligible-requests": ("eligible", "candidate", "new", "", "not_contacted"),
        "s-eligible-male": ("eligible", "candidate", "", "", "declined"),
        "s-eligible-statements": ("eligible", "decided", "", "eligible", "enrolled"),
    }
    assert work.loc["s-preg-status-pregnant", "re_review_criteria"] == "pregnancy_lactation"
    assert work.loc["s-eligible-male", "note"] == '=HYPERLINK("x")'  # quoted in the file
    assert "'=HYPERLINK" in (out / "worklist.csv").read_text()
    assert work.loc["s-preg-hcg-equivocal", "decision_reason"] == "hCG equivocal, repeat"
    # changes.csv: the declined patient is not a new candidate; rows carry the decisions
    changes = _csv(out / "changes.csv")
    new = changes[changes["change"] == "new_candidate"]
    assert list(new["patient_id"]) == ["s-eligible-requests"]
    assert "s-eligible-male" not in set(changes["patient_id"])
    moved = changes[changes["patient_id"] == "s-preg-status-pregnant"].iloc[0]
    assert (moved["change"], moved["decision"], moved["contact_status"]) == (
        "status_changed",
        "eligible",
        "attempt_1",
    )
    record = json.loads((out / "run.json").read_text())["history"]
    assert (record["re_review"], record["withheld_declined"], record["review_queue"]) == (2, 1, 3)
    assert record["changes"]["new_candidate"] == 1
    assert f"since {WEEK1} (run 1): 1 new candidates" in stdout
    assert (
        "decisions: 2 decided patients back for re-review (new evidence), 1 declined or "
        "do-not-contact patients not listed as new, 3 in the review queue (worklist.csv)"
    ) in stdout
    page = (out / "report.html").read_text()
    assert 'data-patient="s-eligible-requests"' in page
    assert 'data-change="new_candidate" data-patient="s-eligible-male"' not in page
    assert "would be new candidates: not listed" in page
    loaded = load_results(out)
    assert loaded.worklist is not None and len(loaded.worklist) == len(work)
    assert loaded.worklist["version"].tolist() == [
        int(v) for v in _csv(out / "worklist.csv")["version"]
    ]
    # the first week's worklist: nothing new, nothing to re-review; the declined minor absent
    first = _csv(root / WEEK1 / "worklist.csv")
    assert set(first["flags"]) == {""} and "s-eligible-male" not in set(first["patient_id"])


@pytest.fixture
def history(weeks: dict[str, object], tmp_path: Path) -> Path:
    """A copy of the two weeks' history, for a test to change."""
    source = weeks["history"]
    assert isinstance(source, Path)
    copy = tmp_path / HISTORY_NAME
    shutil.copyfile(source, copy)
    return copy


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _import(history: Path, file: Path, *extra: str) -> tuple[int, str, str]:
    done = run_main(
        [
            "decisions",
            "import",
            "--history",
            str(history),
            "--trial",
            TRIAL,
            str(file),
            "--who",
            "importer",
            *extra,
        ]
    )
    return done.returncode, done.stdout, done.stderr


def test_export_and_import_round_trip(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "decisions.csv"
    done = run_main(
        ["decisions", "export", "--history", str(history), "--trial", TRIAL, "--out", str(out)]
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = _rows(out)
    assert list(rows[0]) == list(DECISIONS_CSV_COLUMNS)
    assert sorted(r["patient_id"] for r in rows) == sorted(DECISIONS)
    male = next(r for r in rows if r["patient_id"] == "s-eligible-male")
    assert male["note"] == '\'=HYPERLINK("x")' and male["version"] == "1"  # formula quoted
    # the file as exported: nothing to save
    assert _import(history, out) == (EXIT_OK, f"{out}: 5 rows checked; saved 0, 5 unchanged\n", "")
    # edited in a spreadsheet: one decision, one contact status, and a patient added
    for r in rows:
        if r["patient_id"] == "s-preg-status-pregnant":
            r["decision"], r["note"] = "ineligible", "reviewed"
            r["reason"] = "pregnant (Observation of 2026-11-14)"
        if r["patient_id"] == "s-eligible-male":
            r["contact_status"] = "do_not_contact"
    rows.append({c: "" for c in DECISIONS_CSV_COLUMNS} | {"patient_id": "s-age-17"})
    rows[-1].update(decision="ineligible", reason="17", decided_at="2026-11-20")
    edited = _write(tmp_path / "edited.csv", rows)
    code, stdout, _stderr = _import(history, edited, "--dry-run")
    assert (code, stdout) == (EXIT_OK, f"{edited}: 6 rows checked; would save 3, 3 unchanged\n")
    with open_history(history, create=False) as h:
        assert h.decision(TRIAL, "s-age-17") is None  # a dry run saves nothing
    assert _import(history, edited)[:2] == (
        EXIT_OK,
        f"{edited}: 6 rows checked; saved 3, 3 unchanged\n",
    )
    with open_history(history, create=False) as h:
        pregnant = h.decision(TRIAL, "s-preg-status-pregnant")
        male = h.decision(TRIAL, "s-eligible-male")
        minor = h.decision(TRIAL, "s-age-17")
        assert pregnant is not None and male is not None and minor is not None
        assert (pregnant.decision, pregnant.version, pregnant.decided_by) == (
            "ineligible",
            2,
            "importer",
        )
        assert pregnant.decided_at > DECIDED  # a changed row: decided now, not at export
        assert male.note == '=HYPERLINK("x")' and male.contact_status == "do_not_contact"
        assert minor.decided_at == "2026-11-20T00:00:00+00:00"  # its own date, kept
        assert {e.changed_by for e in h.decision_log(TRIAL) if e.version and e.version > 1} == {
            "importer"
        }


def test_a_bad_or_stale_file_imports_nothing(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "decisions.csv"
    run_main(
        ["decisions", "export", "--history", str(history), "--trial", TRIAL, "--out", str(out)]
    )
    rows = _rows(out)
    # someone saves a patient after the export
    with open_history(history, create=False) as h:
        h.save_decision(TRIAL, "s-eligible-statements", note="moved", who="x", expected_version=1)
        log_before = len(h.decision_log())
    bad = [dict(r) for r in rows]
    for r in bad:
        if r["patient_id"] == "s-eligible-statements":
            r["contact_status"] = "attempt_2"  # line 2: stale (version 1, history 2)
        if r["patient_id"] == "s-preg-delivery-recent":
            r["decision"] = "maybe"  # unknown decision
        if r["patient_id"] == "s-eligible-male":
            r["contact_status"] = "called"  # unknown contact status
        if r["patient_id"] == "s-preg-hcg-equivocal":
            r["reason"] = ""  # ineligible without a reason
        if r["patient_id"] == "s-preg-status-pregnant":
            r["note"] = "a valid change, not saved either"
    extra = {c: "" for c in DECISIONS_CSV_COLUMNS}
    bad.append(extra | {"patient_id": "nobody-screened", "decision": "eligible"})
    bad.append(extra | {"patient_id": "s-eligible-male", "decision": "eligible"})  # twice
    bad.append(extra | {"patient_id": "s-age-17", "decision": "eligible", "version": "x"})
    path = _write(tmp_path / "bad.csv", bad)
    code, stdout, stderr = _import(history, path)
    assert code == EXIT_DATA and stdout == ""
    line = {r["patient_id"]: i + 2 for i, r in enumerate(bad) if r is not bad[-2]}
    for pid, message in (
        ("s-eligible-statements", "stale: the history holds version 2 of this decision"),
        ("s-preg-delivery-recent", "decision 'maybe': not one of"),
        ("s-eligible-male", "contact status 'called': not one of"),
        ("s-preg-hcg-equivocal", "decision ineligible needs a reason"),
        ("nobody-screened", "patient not screened in any run of this trial"),
        ("s-age-17", "version 'x': not a whole number"),
    ):
        assert f"bad.csv:{line[pid]}: {message}" in stderr, (pid, stderr)
    assert f"bad.csv:{len(bad)}: the same patient as line 2" in stderr
    assert "7 problems, nothing imported" in stderr
    for pid in PATIENTS | {"nobody-screened"}:  # lines, not patient ids
        assert pid not in stderr
    with open_history(history, create=False) as h:
        assert len(h.decision_log()) == log_before
        pregnant = h.decision(TRIAL, "s-preg-status-pregnant")
        assert pregnant is not None and pregnant.version == 1
    # the header is checked before any row; a trial without runs; a missing history
    (tmp_path / "cols.csv").write_text("patient_id,decison,contact_status\n")
    code, _, stderr = _import(history, tmp_path / "cols.csv")
    assert (
        code == EXIT_DATA and "cols.csv:1: columns: missing decision; unknown 'decison'" in stderr
    )
    for argv, message in (
        (["export", "--trial", "NCT0", "--out", str(tmp_path / "x.csv")], "no run of it"),
        (["import", "--trial", "NCT0", str(out)], "no run of it"),
    ):
        failed = run_main(["decisions", *argv, "--history", str(history)])
        assert failed.returncode == EXIT_DATA and message in failed.stderr
    missing = run_main(
        [
            "decisions",
            "export",
            "--history",
            str(tmp_path / "none.sqlite"),
            "--trial",
            TRIAL,
            "--out",
            str(tmp_path / "y.csv"),
        ]
    )
    assert missing.returncode == EXIT_DATA and "no screening history" in missing.stderr
    assert not (tmp_path / "none.sqlite").exists() and not (tmp_path / "y.csv").exists()
