"""screen(): source -> tables -> answers -> outputs. The one function the CLI calls."""

from __future__ import annotations

import hashlib
import platform
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fhir_cohort import __version__, remote
from fhir_cohort.criteria import (
    Trial,
    check_value_sets,
    default_criteria_path,
    load_criteria,
    value_set_ids,
)
from fhir_cohort.criteria.language import walk
from fhir_cohort.engine.evaluate import (
    EvaluationResult,
    attrition,
    evaluate,
    lab_results,
    medication_eras,
    rule_queries,
)
from fhir_cohort.engine.read import ReadReport, read_tables
from fhir_cohort.engine.tables import Tables, records_without_patient
from fhir_cohort.errors import OptionError, SourceError
from fhir_cohort.fhir.client import strip_query
from fhir_cohort.fhir.references import recorded_base
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.files import prepare_out_dir
from fhir_cohort.progress import Progress, ProgressCallback, no_progress
from fhir_cohort.remote import ServerOptions, is_url
from fhir_cohort.report.html import REPORT_NAME, write_report
from fhir_cohort.report.outputs import (
    candidate_group,
    patients_table,
    sort_evidence,
    unmapped_table,
    write_outputs,
)
from fhir_cohort.requirements import requirements
from fhir_cohort.results import ScreeningResult
from fhir_cohort.terminology import Terminology

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"


def _resolve_trial(criteria: str | Path | Trial | None) -> tuple[Trial, dict[str, Any]]:
    if isinstance(criteria, Trial):
        return criteria, {"file": None, "sha256": None}
    path = Path(criteria) if criteria is not None else default_criteria_path()
    trial = load_criteria(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return trial, {"file": str(path), "sha256": digest}


def relevant_codes(trial: Trial, terminology: Terminology) -> set[tuple[str, str]]:
    """Every (system, code) a criterion of ``trial`` can use: the reader keeps only these."""
    return set(requirements(trial, terminology).codes)


def screen_tables(
    trial: Trial, tables: Tables, terminology: Terminology, as_of: date
) -> tuple[EvaluationResult, Any]:
    """Evaluate ``tables`` (pure: no I/O). Returns the evaluation and its attrition table."""
    result = evaluate(trial, tables, terminology, as_of)
    return result, attrition(result, trial)


def positive_tests(trial: Trial) -> list[tuple[str, Any]]:
    """(criterion id, query) of every observation query reading positivity, in order (a
    query used twice in one criterion is listed once)."""
    out: list[tuple[str, Any]] = []
    for c in trial.criteria:
        for node in walk(c.rule):
            positive = node.type == "observation" and node.result == "positive"
            if positive and (c.id, node) not in out:
                out.append((c.id, node))
    return out


def detail_tables(
    trial: Trial, tables: Tables, terminology: Terminology, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Medication eras of the trial's medication queries (one table per query, with its
    ``criterion_id``; ``requirement`` is the query's label) and lab readings of its observation
    queries with ``result: positive``, for analysts."""
    define = dict(trial.define)
    eras = [
        medication_eras(q, tables, terminology, as_of, define).assign(criterion_id=cid)
        for cid, q in rule_queries(trial, "medication")
    ]
    labs = [
        lab_results(c, tables, terminology, as_of).assign(criterion_id=cid)
        for cid, c in positive_tests(trial)
    ]
    return (
        pd.concat(eras, ignore_index=True) if eras else pd.DataFrame(columns=["criterion_id"]),
        pd.concat(labs, ignore_index=True) if labs else pd.DataFrame(columns=["criterion_id"]),
    )


def screen(
    source: str | Path | None = None,
    *,
    criteria: str | Path | Trial | None = None,
    as_of: date | None = None,
    out_dir: str | Path | None = None,
    strict: bool = False,
    validate: bool = False,
    workers: int | None = None,
    progress: ProgressCallback = no_progress,
    terminology: Terminology | None = None,
    server: ServerOptions | None = None,
    show_identifiers: bool = False,
    publish_group: bool = False,
    unmapped_text: bool = False,
    allow_empty: bool = False,
    base_url: str | None = None,
) -> ScreeningResult:
    """Screen every patient of ``source`` against a trial's criteria.

    ``source`` is a Bulk Data export folder, a Bundle file or a folder of Bundles (default: the
    bundled synthetic demo hospital), or the base URL of a FHIR R4 server: then what the
    criteria need is fetched first (``server`` options: strategy, cache folder, auth, ...) into
    an NDJSON snapshot, which is screened like any folder. ``criteria`` is a criteria file or
    a loaded :class:`~fhir_cohort.criteria.Trial` (default: NCT06038474). ``as_of`` is the screening
    date S (default: today). With ``out_dir`` the outputs (CSV files, group.json, run.json and
    report.html) are written there, owner-only; ``show_identifiers`` puts patient identifiers
    in the report (default: pseudonymous row numbers and FHIR ids). ``publish_group`` writes
    the candidate Group back to the source server (created, or updated in place on re-runs).
    The codes of records that matched no value set are counted into ``result.unmapped``
    (``unmapped.csv``); ``unmapped_text`` also lists free-text-only medications by their text.
    A disk source in which no Patient is found (an empty file or Bundle, a folder of non-FHIR
    JSON) raises :class:`SourceError` unless ``allow_empty``.
    Absolute references resolve only against the source's own base: the server URL, the base
    a Bulk export or snapshot folder recorded, and ``base_url`` (docs/architecture.md).

    >>> result = screen(as_of=date(2026, 11, 24))
    >>> list(result.patients.columns[:3])
    ['patient_id', 'status', 'age']
    >>> set(result.patients["status"]) <= {"eligible", "review", "ineligible"}
    True
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    if out_dir is not None:  # before any work: an unusable folder must not fail at the end
        prepare_out_dir(out_dir, "out_dir")
    as_of = as_of or date.today()
    trial, criteria_info = _resolve_trial(criteria)
    terminology = terminology or Terminology.load()
    check_value_sets(trial, terminology)
    if base_url is not None and not is_url(base_url):
        raise OptionError("--base-url must be an http(s) URL")

    fetch_record: dict[str, Any] | None = None
    client = None
    if publish_group and not is_url(source):
        raise SourceError("publishing the candidate Group needs a FHIR server --source")
    if is_url(source):
        options = server or ServerOptions()
        if out_dir is not None:
            default_cache = Path(out_dir) / "snapshot"
        else:
            default_cache = Path(tempfile.mkdtemp(prefix="fhir-cohort-snapshot-"))
        client = remote.build_client(str(source), options)
        src_path, fetch_record = remote.fetch(
            str(source),
            trial,
            terminology,
            options,
            default_cache=default_cache,
            progress=progress,
            client=client,
            run_key={"as_of": as_of.isoformat()},
        )
    else:
        src_path = Path(source) if source is not None else DEMO_DATA
    t_fetch = time.perf_counter()
    disk = open_source(src_path)
    bases = [base_url, recorded_base(src_path), str(source) if is_url(source) else None]
    # What the criteria read (fhir_cohort/requirements.py): the reader keeps only these.
    needs = requirements(trial, terminology)
    tables, report = read_tables(
        disk,
        relevant=needs.codes,
        medication_words=needs.medication_names,
        strict=strict,
        validate=validate,
        workers=workers,
        progress=progress,
        unmapped_text=unmapped_text,
        base_urls=bases,
    )
    if fetch_record is None and not allow_empty:
        report.require_resources(str(src_path))
    unmapped_rows = report.unmapped.rows()
    t_read = time.perf_counter()
    progress(Progress("evaluate", 0, total=len(tables.patients), unit="patients"))
    evaluation, attrition_table = screen_tables(trial, tables, terminology, as_of)
    progress(Progress("evaluate", len(tables.patients), total=len(tables.patients)))
    t_eval = time.perf_counter()

    ids = tuple(c.id for c in trial.criteria)
    patients = patients_table(evaluation.answers, evaluation.status, ids)
    evidence = sort_evidence(evaluation.evidence, ids)
    group = candidate_group(
        patients, trial_id=trial.id, trial_version=trial.version, as_of=as_of, evidence=evidence
    )
    run = _run_record(
        trial=trial,
        criteria_info=criteria_info,
        criterion_ids=ids,
        terminology=terminology,
        source=src_path,
        as_of=as_of,
        report=report,
        started=started,
        timings={
            "fetch": t_fetch - t0,
            "read": t_read - t_fetch,
            "evaluate": t_eval - t_read,
        },
        patients=patients,
    )
    # Records of patients with no Patient resource are not screened: say how many (v1.1).
    run["records_without_patient"] = records_without_patient(tables)
    run["unmapped"] = {
        "file": "unmapped.csv",
        "free_text_listed": unmapped_text,
        "per_type": report.unmapped.summary(unmapped_rows),
    }
    if fetch_record is not None:
        # The data cut: the export's transactionTime, or when the search fetch started.
        export = fetch_record.get("export") or {}
        run["data_cut"] = export.get("transactionTime") or fetch_record.get("started_at")
        run["source"] = {
            "kind": "server",
            "url": strip_query(str(source)),
            "snapshot": str(src_path),
            "fetch": fetch_record,
        }
    if publish_group and client is not None:
        run["published_group"] = remote.publish_group(client, group)
    eras, labs = detail_tables(trial, tables, terminology, as_of)
    result = ScreeningResult(
        patients=patients,
        evidence=evidence,
        attrition=attrition_table,
        run=run,
        group=group,
        criterion_ids=ids,
        eras=eras,
        labs=labs,
        unmapped=unmapped_table(unmapped_rows),
    )
    if out_dir is not None:
        run["timings_seconds"]["total"] = round(time.perf_counter() - t0, 3)
        result.paths = write_outputs(
            Path(out_dir),
            patients=patients,
            evidence=evidence,
            attrition=attrition_table,
            group=group,
            run=run,
            eras=eras,
            labs=labs,
            unmapped=result.unmapped,
        )
        write_report(result, result.paths.out_dir / REPORT_NAME, show_identifiers=show_identifiers)
    if fetch_record is not None:
        # done: a re-run fetches fresh data unless told to reuse this snapshot
        remote.snapshot_used(src_path, fetch_record)
    return result


def _run_record(
    *,
    trial: Trial,
    criteria_info: dict[str, Any],
    criterion_ids: tuple[str, ...],
    terminology: Terminology,
    source: Path,
    as_of: date,
    report: ReadReport,
    started: datetime,
    timings: dict[str, float],
    patients: Any,
) -> dict[str, Any]:
    used = sorted(value_set_ids(trial))
    read = report.as_dict()
    return {
        "tool": {"name": "fhir-cohort", "version": __version__},
        "started": started.isoformat(timespec="seconds"),
        "as_of": as_of.isoformat(),
        "source": {"kind": "disk", "path": str(source)},
        "trial": {"id": trial.id, "title": trial.title, "version": trial.version},
        "criteria": {**criteria_info, "criterion_ids": list(criterion_ids)},
        "value_sets": {
            vs: {"url": terminology.value_set(vs).url, "version": terminology.value_set(vs).version}
            for vs in used
        },
        "counts": {
            "patients": len(patients),
            "status": {
                s: int((patients["status"] == s).sum())
                for s in ("eligible", "review", "ineligible")
            },
        },
        "lines": read["lines"],
        "read": read["read"],
        "skipped": read["skipped"],
        "errors": read["errors"],
        "errors_truncated": read["errors_truncated"],
        "invalid_utf8": read["invalid_utf8"],
        "workers": read["workers"],
        # One copy per resource (engine/dedup.py) and references that did not resolve.
        "duplicates": read["duplicates"],
        "unresolved_references": read["unresolved_references"],
        "files": read["files"],
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
