"""Several trials in one pass (issue 10 item 4): `screen --criteria a --criteria b` reads the data
once and writes, per trial, what a single-trial run writes, plus trials.csv and index.html.

Runs in-process through the CLI entry point (``main``) on the demo hospital; the single-trial
runs it is compared with go through ``screen()``, the function a one-criteria CLI run calls.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from fhir_cohort import MultiScreeningResult, screen, screen_many
from fhir_cohort.cli import EXIT_CRITERIA, EXIT_OK, EXIT_USAGE, main
from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.errors import OptionError
from fhir_cohort.remote import bulk_request
from fhir_cohort.report.outputs import FORMULA_STARTS, trials_table, write_trials
from fhir_cohort.terminology import Terminology
from tests.conftest import DEMO_AS_OF

SHIPPED = default_criteria_path()
AS_OF = DEMO_AS_OF.isoformat()
# What a trial's folder holds; each must be byte-identical to the single-trial run's.
SAME_FILES = (
    "patients.csv",
    "evidence.csv",
    "attrition.csv",
    "group.json",
    "changes.csv",
    "worklist.csv",
)
ALL_FILES = (*SAME_FILES, "unmapped.csv", "run.json", "report.html")
# The variant drops the autoantibody and CNS criteria: the union read then keeps Observations
# and Conditions the variant alone would not read, which must not change its answers.
VARIANT_ID = "VARIANT-30"


def write_variant(folder: Path, trial_id: str = VARIANT_ID, **changes: object) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data["id"] = trial_id
    data["title"] = "Variant <b>& co</b>"  # must reach index.html escaped
    data["criteria"] = [
        dict(c, min_years=30) if c["id"] == "age" else c
        for c in data["criteria"]
        if c["id"] not in ("autoantibody", "cns_lupus")
    ]
    data.update(changes)
    path = folder / f"{trial_id.lower()}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One two-trial CLI run and the two single-trial runs it must equal."""
    tmp = tmp_path_factory.mktemp("many")
    variant = write_variant(tmp)
    multi = tmp / "multi"
    argv = ["screen", "-q", "--as-of", AS_OF, "--out", str(multi)]
    rc = main([*argv, "--criteria", str(SHIPPED), "--criteria", str(variant)])
    assert rc == EXIT_OK
    singles = {}
    for trial_id, criteria in (("NCT06038474", SHIPPED), (VARIANT_ID, variant)):
        singles[trial_id] = tmp / f"single-{trial_id}"
        # each in a history of its own, as the CLI run records each trial (a first run each)
        history = tmp / f"history-{trial_id}.sqlite"
        screen(criteria=criteria, as_of=DEMO_AS_OF, out_dir=singles[trial_id], history=history)
    return {"multi": multi, "variant": variant, **singles}


def test_each_trial_folder_holds_what_its_single_run_writes(runs: dict[str, Path]) -> None:
    multi = runs["multi"]
    assert sorted(p.name for p in multi.iterdir()) == sorted(
        ["NCT06038474", VARIANT_ID, "trials.csv", "index.html"]
    )
    for trial_id in ("NCT06038474", VARIANT_ID):
        folder = multi / trial_id
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for name in ALL_FILES:
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        single = runs[trial_id]
        assert {p.name for p in folder.iterdir()} == {p.name for p in single.iterdir()}
        for name in SAME_FILES:
            assert (folder / name).read_bytes() == (single / name).read_bytes(), (trial_id, name)
        run = json.loads((folder / "run.json").read_text())
        assert run["trial"]["id"] == trial_id
        assert run["one_pass"]["trials"] == ["NCT06038474", VARIANT_ID]
    # The shipped trial keeps its demo answers; the variant's differ (it is another trial).
    counts = json.loads((multi / "NCT06038474" / "run.json").read_text())["counts"]["status"]
    assert counts == {"eligible": 84, "review": 48, "ineligible": 364}
    variant = json.loads((multi / VARIANT_ID / "run.json").read_text())["counts"]["status"]
    assert variant != counts


def test_trials_csv_has_every_patient_in_every_trial_with_its_single_run_status(
    runs: dict[str, Path],
) -> None:
    path = runs["multi"] / "trials.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["patient_id", "trial_id", "status", "reasons"]
    singles = {
        trial_id: pd.read_csv(runs[trial_id] / "patients.csv", dtype=str, keep_default_na=False)
        for trial_id in ("NCT06038474", VARIANT_ID)
    }
    n_patients = len(singles["NCT06038474"])
    assert len(table) == n_patients * 2
    assert not table.duplicated(["patient_id", "trial_id"]).any()
    # sorted by patient, then trials in the order given
    assert table["patient_id"].is_monotonic_increasing
    assert list(table["trial_id"][:2]) == ["NCT06038474", VARIANT_ID]
    for trial_id, single in singles.items():
        mine = table[table["trial_id"] == trial_id].set_index("patient_id")
        theirs = single.set_index("patient_id")
        assert set(mine.index) == set(theirs.index)
        assert mine["status"].to_dict() == theirs["status"].to_dict()
        assert mine["reasons"].to_dict() == theirs["reasons"].to_dict()


def test_index_links_each_report_with_its_counts(runs: dict[str, Path]) -> None:
    page = (runs["multi"] / "index.html").read_text()
    assert stat.S_IMODE((runs["multi"] / "index.html").stat().st_mode) == 0o600
    assert '<a href="trials.csv">' in page
    assert "<b>& co</b>" not in page and "&lt;b&gt;&amp; co&lt;/b&gt;" in page
    for trial_id in ("NCT06038474", VARIANT_ID):
        href = f"{trial_id}/report.html"
        assert f'<a href="{href}">' in page
        assert (runs["multi"] / href).is_file()
        counts = json.loads((runs["multi"] / trial_id / "run.json").read_text())["counts"]
        row = page.split(f'data-trial="{trial_id}"', 1)[1].split("</tr>", 1)[0]
        for status, n in counts["status"].items():
            assert f'data-count="{status}">{n}</td>' in row


def test_a_folder_of_criteria_is_every_file_in_it_sorted(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "criteria"
    folder.mkdir()
    (folder / "b-shipped.yaml").write_bytes(SHIPPED.read_bytes())
    (folder / "a-variant.yml").write_bytes(runs["variant"].read_bytes())
    (folder / "notes.txt").write_text("not criteria")
    (folder / ".hidden.yaml").write_text("not: read")
    out = tmp_path / "out"
    history = tmp_path / "h.sqlite"
    result = screen_many(criteria=folder, as_of=DEMO_AS_OF, out_dir=out, history=history)
    assert isinstance(result, MultiScreeningResult)
    assert list(result) == [VARIANT_ID, "NCT06038474"]
    assert result.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [VARIANT_ID, "NCT06038474", "index.html", "trials.csv"]
    )
    assert result[VARIANT_ID].paths is not None
    assert result[VARIANT_ID].paths.out_dir == out / VARIANT_ID
    for trial_id in result:
        for name in SAME_FILES:
            mine = (out / trial_id / name).read_bytes()
            assert mine == (runs[trial_id] / name).read_bytes(), (trial_id, name)
    assert result.status_counts().loc["NCT06038474"].tolist() == [84, 48, 364]
    assert len(result.trials) == 2 * len(result["NCT06038474"].patients)


@pytest.mark.parametrize("twice", ["same file", "same id", "id differing in case"])
def test_two_trials_with_one_id_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], twice: str
) -> None:
    other = {
        "same file": SHIPPED,
        "same id": write_variant(tmp_path, "NCT06038474"),
        "id differing in case": write_variant(tmp_path, "nct06038474"),
    }[twice]
    out = tmp_path / "out"
    # a source that does not exist: reading anything would fail with another exit code
    argv = ["screen", "--source", str(tmp_path / "missing"), "--out", str(out)]
    rc = main([*argv, "--criteria", str(SHIPPED), "--criteria", str(other)])
    assert rc == EXIT_USAGE
    err = capsys.readouterr().err
    assert "two trials with id" in err and "NCT06038474".casefold() in err.casefold()
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("trial_id", ["../escape", "a/b", ".hidden", "snapshot", "INDEX.html"])
def test_a_trial_id_that_cannot_name_a_folder_exits_3(
    tmp_path: Path, trial_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(SHIPPED.read_text()) | {"id": trial_id}
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    argv = ["screen", "--source", str(tmp_path / "missing"), "--out", str(out)]
    assert main([*argv, "--criteria", str(SHIPPED), "--criteria", str(bad)]) == EXIT_CRITERIA
    assert "cannot name its output folder" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("strategy", ["funnel", "auto"])
def test_several_trials_from_a_server_need_full_or_bulk(
    tmp_path: Path, strategy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = write_variant(tmp_path)
    # port 9 (discard): nothing listens; the refusal comes before any request
    argv = ["screen", "--source", "http://127.0.0.1:9/fhir", "--out", str(tmp_path / "out")]
    argv += ["--strategy", strategy, "--criteria", str(SHIPPED), "--criteria", str(variant)]
    assert main(argv) == EXIT_USAGE
    assert "use --strategy full, bulk or crawl" in capsys.readouterr().err


def test_screen_with_a_list_is_screen_many(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="two trials with id"):
        screen(criteria=[SHIPPED, SHIPPED])
    with pytest.raises(OptionError, match="screen_many"):
        screen(criteria=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no criteria files"):
        screen_many(criteria=tmp_path / "empty")
    with pytest.raises(OptionError, match="no criteria"):
        screen_many(criteria=[])


def test_the_bulk_request_of_several_trials_asks_for_the_union_of_their_codes(
    tmp_path: Path,
) -> None:
    terminology = Terminology.load()
    shipped = load_criteria(SHIPPED)
    variant = load_criteria(write_variant(tmp_path))  # no autoantibody test
    [alone] = bulk_request(variant, terminology).type_filters
    [union] = bulk_request([variant, shipped], terminology).type_filters
    assert union == bulk_request(shipped, terminology).type_filters[0]
    codes = set(alone.split("=", 1)[1].split(","))
    assert codes < set(union.split("=", 1)[1].split(","))


def test_trials_csv_quotes_formula_cells_like_the_other_csvs(tmp_path: Path) -> None:
    patients = pd.DataFrame(
        {
            "patient_id": [f"{c}p" for c in sorted(FORMULA_STARTS)],
            "status": "review",
            "reasons": [f"{c}HYPERLINK(1)" for c in sorted(FORMULA_STARTS)],
        }
    )
    path = write_trials(tmp_path / "trials.csv", trials_table({"T": patients}))
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == len(FORMULA_STARTS)
    for patient_id, trial_id, status, reasons in rows:
        assert patient_id.startswith("'") and reasons.startswith("'")
        assert (trial_id, status) == ("T", "review")


def _nct02504489_scenarios(folder: Path) -> tuple[Path, Any]:
    """NCT02504489's scenario patients (its lab thresholds) as NDJSON, and their S."""
    path = Path(__file__).parents[1] / "data" / "trials" / "NCT02504489" / "scenarios.py"
    spec = importlib.util.spec_from_file_location("nct02504489_scenarios_pass", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    by_type: dict[str, list[str]] = {}
    for resources in module.resources().values():
        for r in resources:
            by_type.setdefault(r["resourceType"], []).append(json.dumps(r))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, module.AS_OF


@pytest.mark.parametrize("source", ["demo", "nct02504489_scenarios"])
def test_every_shipped_trial_in_one_pass_answers_as_screened_alone(
    source: str, tmp_path: Path
) -> None:
    """The one pass with all shipped trials gives each trial the patients, answers and evidence
    of its own screen, on the demo hospital (NCT06038474's and NCT04221477's scenario patients)
    and on NCT02504489's scenarios: the union read keeps rows a trial does not read, which
    must not change it (nor may the evaluation's shortcuts, which key on the rows each part of
    a criterion can read)."""
    folder, as_of = (None, DEMO_AS_OF) if source == "demo" else _nct02504489_scenarios(tmp_path)
    shipped = [SHIPPED, *sorted((SHIPPED.parent / "trials").glob("*.yaml"))]
    assert len(shipped) >= 3
    together = screen_many(folder, criteria=shipped, as_of=as_of)
    decided = 0
    for path in shipped:
        alone = screen(folder, criteria=path, as_of=as_of)
        trial_id = load_criteria(path).id
        pd.testing.assert_frame_equal(together[trial_id].patients, alone.patients)
        pd.testing.assert_frame_equal(together[trial_id].evidence, alone.evidence)
        pd.testing.assert_frame_equal(together[trial_id].attrition, alone.attrition)
        decided += int((alone.patients["status"] != "ineligible").sum())
    assert decided  # some patient of the source is a candidate of some trial


def test_criteria_trials_ask_alike_are_shared_and_answer_as_screened_alone(
    tmp_path: Path,
) -> None:
    """Trials of one pass that ask a criterion (or a medication or positivity query's detail
    table) identically share its evaluation: each still gets exactly its own screen's
    patients, answers, evidence, attrition and detail tables. Here the shipped trial, a copy
    under another id (every criterion shared), the variant (most shared, the age limit not)
    and the copy again after it, so a shared outcome is kept past a trial that lacks it."""
    data = yaml.safe_load(SHIPPED.read_text())
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(dict(data, id="COPY-A"), sort_keys=False))
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(dict(data, id="COPY-B"), sort_keys=False))
    variant = write_variant(tmp_path)
    order = [SHIPPED, copy, variant, again]
    together = screen_many(criteria=order, as_of=DEMO_AS_OF)
    for path in order:
        alone = screen(criteria=path, as_of=DEMO_AS_OF)
        got = together[load_criteria(path).id]
        for table in ("patients", "evidence", "attrition", "eras", "labs"):
            pd.testing.assert_frame_equal(getattr(got, table), getattr(alone, table))
    assert len(together["COPY-B"].eras) and len(together["COPY-B"].labs)


def _history_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a history but what the clock and the output folders set."""
    volatile = {"started", "recorded_at", "out_dir", "pass_id", "applied_at"}
    out = {}
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            keep = ",".join(c for c in columns if c not in volatile)
            out[table] = conn.execute(f"SELECT {keep} FROM {table} ORDER BY {keep}").fetchall()
    return out


def test_a_pass_sharing_evidence_digests_records_the_history_separate_screens_do(
    tmp_path: Path,
) -> None:
    """The history's evidence digests of a criterion trials of one pass ask identically are
    hashed once (history.db.SharedEvidence): two passes a day apart record, table for table, what
    screening each trial alone, in the same order, records. The shipped trial, a copy (every
    criterion shared), the variant (the age limit not shared), another shipped trial (none
    shared) and the copy again (its keys last asked two trials before)."""
    data = yaml.safe_load(SHIPPED.read_text())
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(dict(data, id="COPY-A"), sort_keys=False))
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(dict(data, id="COPY-B"), sort_keys=False))
    other = sorted((SHIPPED.parent / "trials").glob("*.yaml"))[0]
    order = [SHIPPED, copy, write_variant(tmp_path), other, again]
    passed, alone = tmp_path / "pass.sqlite", tmp_path / "alone.sqlite"
    for week, as_of in enumerate((DEMO_AS_OF, DEMO_AS_OF.replace(day=DEMO_AS_OF.day + 1))):
        together = screen_many(
            criteria=order, as_of=as_of, out_dir=tmp_path / f"pass-{week}", history=passed
        )
        for path in order:
            trial_id = load_criteria(path).id
            single = screen(
                criteria=path,
                as_of=as_of,
                out_dir=tmp_path / f"alone-{week}" / trial_id,
                history=alone,
            )
            pd.testing.assert_frame_equal(together[trial_id].changes, single.changes)
            pd.testing.assert_frame_equal(together[trial_id].worklist, single.worklist)
        assert _history_rows(passed) == _history_rows(alone), week
