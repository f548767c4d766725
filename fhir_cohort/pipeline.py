"""screen(): source -> tables -> answers -> outputs; screen_many(): several trials, one read.

The functions the CLI calls."""

from __future__ import annotations

import contextlib
import hashlib
import platform
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, overload

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
    Prepared,
    attrition,
    criterion_keys,
    evaluate,
    lab_results,
    medication_eras,
    prepare,
    rule_queries,
    same_key,
)
from fhir_cohort.engine.read import ReadReport, read_tables
from fhir_cohort.engine.tables import Tables, records_without_patient
from fhir_cohort.errors import CriteriaError, OptionError, SourceError
from fhir_cohort.fhir.client import strip_query
from fhir_cohort.fhir.references import recorded_base
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.files import prepare_out_dir
from fhir_cohort.memory import release_free_memory, worth_collecting
from fhir_cohort.progress import Progress, ProgressCallback, no_progress
from fhir_cohort.remote import ServerOptions, is_url
from fhir_cohort.report.html import INDEX_NAME, REPORT_NAME, write_index, write_report
from fhir_cohort.report.outputs import (
    TRIALS_NAME,
    candidate_group,
    patients_table,
    sort_details,
    sort_evidence,
    trials_table,
    unmapped_table,
    write_outputs,
    write_trials,
)
from fhir_cohort.requirements import Requirements, requirements
from fhir_cohort.results import MultiScreeningResult, ScreeningResult
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
    trial: Trial,
    tables: Tables,
    terminology: Terminology,
    as_of: date,
    prepared: Prepared | None = None,
) -> tuple[EvaluationResult, Any]:
    """Evaluate ``tables`` (pure: no I/O). Returns the evaluation and its attrition table.
    ``prepared``: the tables' rows and look-ups shared by the trials of one read."""
    result = evaluate(trial, tables, terminology, as_of, prepared)
    return result, attrition(result, trial)


def _keep_from_eligible(evaluation: Any, unsearched: Sequence[str], needs: Requirements) -> None:
    """Searches the server allowed no way to send (``unsearched``, e.g. "Observation by
    component-code") leave records of the types the trial reads possibly missing: an answer
    that looks eligible could be wrong, so it becomes ``review`` with the reason said."""
    hit_types = {u.split(" ", 1)[0] for u in unsearched} & set(needs.resource_types)
    if not hit_types:
        return
    status = evaluation.status
    eligible = status["status"] == "eligible"
    note = (
        f"fetch: the server allowed no search for {', '.join(unsearched)}; records of "
        f"{', '.join(sorted(hit_types))} may be missing, so not eligible without review"
    )
    status.loc[eligible, "status"] = "review"
    status.loc[eligible, "reasons"] = [
        f"{r}; {note}" if r else note for r in status.loc[eligible, "reasons"]
    ]


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
    trial: Trial,
    tables: Tables,
    terminology: Terminology,
    as_of: date,
    prepared: Prepared | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Medication eras of the trial's medication queries (one table per query, with its
    ``criterion_id``; ``requirement`` is the query's label) and lab readings of its observation
    queries with ``result: positive``, for analysts. ``prepared``: as for :func:`screen_tables`."""
    define = dict(trial.define)
    prep = prepare(tables, terminology, as_of, prepared)
    # a table another trial of the pass asks identically is computed once (Prepared.share)
    era_keys, lab_keys = _detail_keys(trial)
    eras = [
        prep.shared_frame(
            key, partial(medication_eras, q, tables, terminology, as_of, define, prep)
        ).assign(criterion_id=cid)
        for (cid, q), key in zip(rule_queries(trial, "medication"), era_keys, strict=True)
    ]
    labs = [
        prep.shared_frame(key, partial(lab_results, c, tables, terminology, as_of, prep)).assign(
            criterion_id=cid
        )
        for (cid, c), key in zip(positive_tests(trial), lab_keys, strict=True)
    ]
    prep.done_with([*era_keys, *lab_keys])
    if prep.ctx.kept is not None:
        prep.ctx.kept.clear()  # this trial's kept rows are read: free them
    return (
        pd.concat(eras, ignore_index=True) if eras else pd.DataFrame(columns=["criterion_id"]),
        pd.concat(labs, ignore_index=True) if labs else pd.DataFrame(columns=["criterion_id"]),
    )


def _detail_keys(trial: Trial) -> tuple[list[str], list[str]]:
    """same_key of each medication query's era table and each positivity query's lab table
    (the order of rule_queries and positive_tests): the keys trials of one pass share by."""
    define = dict(trial.define)
    return (
        [same_key("eras", q, define) for _, q in rule_queries(trial, "medication")],
        [same_key("labs", c, define) for _, c in positive_tests(trial)],
    )


def pass_keys(trial: Trial) -> list[str]:
    """Everything of ``trial`` another trial of a pass can share (Prepared.share)."""
    eras, labs = _detail_keys(trial)
    return [*criterion_keys(trial), *eras, *labs]


CriteriaSpec = str | Path | Trial
# The files a criteria folder contributes (--criteria FOLDER).
CRITERIA_SUFFIXES = (".yaml", ".yml", ".json")
# A trial's output folder is OUT/<trial id>: ids that could escape OUT, hide as dot folders or
# land on the shared files are refused when several trials share one OUT.
_SAFE_TRIAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RESERVED_NAMES = frozenset({"snapshot", TRIALS_NAME, INDEX_NAME})


def criteria_files(folder: str | Path) -> list[Path]:
    """The criteria files of ``folder`` (``*.yaml``, ``*.yml``, ``*.json``; not its
    subfolders, not dot files), sorted by name. OptionError when there is none."""
    folder = Path(folder)
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in CRITERIA_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )
    if not files:
        raise OptionError(f"{folder}: no criteria files (*.yaml, *.yml, *.json) in the folder")
    return files


def _resolve_trials(
    criteria: CriteriaSpec | Sequence[CriteriaSpec] | None,
) -> list[tuple[Trial, dict[str, Any]]]:
    """Each criteria file, folder of files or Trial, loaded; two trials with one id (folder
    names differ only in case on some file systems, so compared case-folded) are refused."""
    items: list[CriteriaSpec] = (
        [criteria]
        if isinstance(criteria, str | Path | Trial)
        else [default_criteria_path()]
        if criteria is None
        else list(criteria)
    )
    if not items:
        raise OptionError("no criteria given")
    expanded: list[CriteriaSpec] = []
    for item in items:
        if not isinstance(item, Trial) and Path(item).is_dir():
            expanded.extend(criteria_files(item))
        else:
            expanded.append(item)
    resolved = [_resolve_trial(item) for item in expanded]
    seen: dict[str, dict[str, Any]] = {}
    for trial, info in resolved:
        key = trial.id.casefold()
        if key in seen:
            where = " and ".join(
                Path(i["file"]).name if i["file"] else "a Trial object" for i in (seen[key], info)
            )
            raise OptionError(
                f"two trials with id {trial.id!r} ({where}): each trial writes OUT/<trial id>, "
                "so trial ids must differ"
            )
        seen[key] = info
    return resolved


def _check_folder_names(trials: Sequence[Trial]) -> None:
    for trial in trials:
        if not _SAFE_TRIAL_ID.fullmatch(trial.id) or trial.id.casefold() in _RESERVED_NAMES:
            raise CriteriaError(
                f"trial id {trial.id!r} cannot name its output folder: with several trials an "
                "id is letters, digits, '.', '_' or '-', starts with a letter or digit, and is "
                f"none of {sorted(_RESERVED_NAMES)}"
            )


def _union_needs(trials: Sequence[Trial], terminology: Terminology) -> Requirements:
    """What one read of the data keeps for several trials screened in one pass: the union of
    what each needs (fhir_cohort/requirements.py)."""
    return Requirements.union_of(requirements(t, terminology) for t in trials)


@dataclass
class _Pass:
    """One read of the source, shared by every trial screened from it."""

    source_path: Path
    tables: Tables
    report: ReadReport
    unmapped_rows: list[Any]
    loaded: remote.Loaded | None  # a server source: what its loader fetched (typed)
    client: Any
    timings: dict[str, float]
    # The tables as per-patient rows and the terminology look-ups, built by the first trial
    # evaluated and reused by the others (engine/evaluate.py).
    prepared: Prepared | None = None
    # The Spark engine's read (fhir_cohort.spark.engine.SparkRead): rows stay on the executors
    # and each trial is evaluated there; ``tables`` is then empty.
    spark: Any = None
    # The trials of the pass, in order (what they ask alike is evaluated once).
    trials: Sequence[Trial] = ()
    # records_without_patient(tables): the same for every trial, counted once per read
    _without_patient: dict[str, int] | None = None

    def prepare(self, terminology: Terminology, as_of: date) -> Prepared:
        before = self.prepared
        self.prepared = prepare(self.tables, terminology, as_of, before, keep=True)
        if self.prepared is not before and len(self.trials) > 1:
            # criteria and detail tables asked identically by several trials: once each
            self.prepared.share(pass_keys(t) for t in self.trials)
        return self.prepared

    def without_patient(self) -> dict[str, int]:
        if self._without_patient is None:
            self._without_patient = records_without_patient(self.tables)
        return dict(self._without_patient)


@dataclass(frozen=True)
class _Options:
    """One screening call's settings (screen's and screen_many's keyword arguments, resolved),
    passed down whole instead of as fifteen parameters at every level."""

    source: str | Path | None
    as_of: date
    out_dir: str | Path | None
    strict: bool
    validate: bool
    workers: int | None
    progress: ProgressCallback
    server: ServerOptions | None
    show_identifiers: bool
    publish_group: bool
    publish_subjects: bool
    unmapped_text: bool
    allow_empty: bool
    base_url: str | None
    spark: Any  # a SparkSession: the Spark engine (fhir_cohort.spark), else None
    started: datetime  # wall clock, for run.json
    t0: float  # perf_counter, for the timings

    @classmethod
    def begin(cls, source: str | Path | None, as_of: date | None, **settings: Any) -> _Options:
        """Stamp the start; check ``out_dir`` before any work (an unusable folder must not fail
        at the end)."""
        opts = cls(
            source=source,
            as_of=as_of or date.today(),
            started=datetime.now(UTC),
            t0=time.perf_counter(),
            **settings,
        )
        if opts.out_dir is not None:
            prepare_out_dir(opts.out_dir, "out_dir")
        return opts


def _read_once(opts: _Options, trials: Sequence[Trial], terminology: Terminology) -> _Pass:
    """Fetch (server source) and read the data once, keeping what any of ``trials`` needs."""
    loaded: remote.Loaded | None = None
    client = None
    if opts.spark is not None:
        return _read_spark(opts, trials, terminology)
    if opts.publish_group and not is_url(opts.source):
        raise SourceError("publishing the candidate Group needs a FHIR server --source")
    if opts.publish_subjects and not is_url(opts.source):
        raise SourceError("publishing ResearchSubjects needs a FHIR server --source")
    if is_url(opts.source):
        options = opts.server or ServerOptions()
        if opts.out_dir is not None:
            default_cache = Path(opts.out_dir) / "snapshot"
        else:
            default_cache = Path(tempfile.mkdtemp(prefix="fhir-cohort-snapshot-"))
        client = remote.build_client(str(opts.source), options)
        loaded = remote.fetch(
            str(opts.source),
            trials,
            terminology,
            options,
            default_cache=default_cache,
            progress=opts.progress,
            client=client,
            run_key={"as_of": opts.as_of.isoformat()},
        )
        src_path = loaded.path
    else:
        src_path = Path(opts.source) if opts.source is not None else DEMO_DATA
    t_fetch = time.perf_counter()
    disk = open_source(src_path)
    bases = [
        opts.base_url,
        recorded_base(src_path),
        str(opts.source) if is_url(opts.source) else None,
    ]
    # What the criteria read (fhir_cohort/requirements.py): the reader keeps only these.
    needs = _union_needs(trials, terminology)
    tables, report = read_tables(
        disk,
        relevant=needs.codes,
        medication_words=needs.medication_names,
        strict=opts.strict,
        validate=opts.validate,
        workers=opts.workers,
        progress=opts.progress,
        unmapped_text=opts.unmapped_text,
        base_urls=bases,
    )
    if loaded is None and not opts.allow_empty:
        report.require_resources(str(src_path))
    unmapped_rows = report.unmapped.rows()
    # the read's transient rows and worker results, before evaluating
    release_free_memory(collect=worth_collecting(len(tables.patients)))
    t_read = time.perf_counter()
    return _Pass(
        source_path=src_path,
        tables=tables,
        report=report,
        unmapped_rows=unmapped_rows,
        loaded=loaded,
        client=client,
        timings={"fetch": t_fetch - opts.t0, "read": t_read - t_fetch},
        trials=tuple(trials),
    )


def _read_spark(opts: _Options, trials: Sequence[Trial], terminology: Terminology) -> _Pass:
    """The Spark engine's read (fhir_cohort/spark/engine.py): the same line filter, parser and
    flattener on the executors; the rows stay there, partitioned by patient."""
    from fhir_cohort.spark.engine import read_spark

    if opts.publish_group or is_url(opts.source):
        raise OptionError(
            "the Spark engine reads files (a local path or a Hadoop URI such as s3a://); fetch "
            "from a FHIR server with the local engine"
        )
    t0 = time.perf_counter()
    needs = _union_needs(trials, terminology)
    source = str(opts.source) if opts.source is not None else str(DEMO_DATA)
    read = read_spark(
        opts.spark,
        source,
        relevant=needs.codes,
        medication_words=needs.medication_names,
        strict=opts.strict,
        validate=opts.validate,
        unmapped_text=opts.unmapped_text,
        base_url=opts.base_url,
    )
    if not opts.allow_empty:
        read.report.require_resources(source)
    return _Pass(
        source_path=Path(source) if "://" not in source else source,  # type: ignore[arg-type]
        tables=Tables(),
        report=read.report,
        unmapped_rows=read.report.unmapped.rows(),
        loaded=None,
        client=None,
        timings={"fetch": t0 - opts.t0, "read": time.perf_counter() - t0},
        spark=read,
    )


def _check_common(
    source: str | Path | None,
    trials: Sequence[Trial],
    terminology: Terminology,
    server: ServerOptions | None,
    base_url: str | None,
) -> None:
    for trial in trials:
        check_value_sets(trial, terminology)
    if base_url is not None and not is_url(base_url):
        raise OptionError("--base-url must be an http(s) URL")
    options = server or ServerOptions()
    strategy = options.strategy
    if len(trials) > 1 and is_url(source) and remote.plans_from_entry(options):
        # The funnel fetches only the patients with one trial's entry codes: another trial's
        # candidates would be missing, not ineligible. Whole-type pulls serve every trial.
        raise OptionError(
            f"--strategy {strategy} plans its fetch from one trial's criteria; to screen "
            f"{len(trials)} trials "
            "from a server in one pass use --strategy full, bulk or crawl"
        )


@overload
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
    publish_subjects: bool = False,
    unmapped_text: bool = False,
    allow_empty: bool = False,
    base_url: str | None = None,
    history: str | Path | None = None,
    spark: Any = None,
) -> ScreeningResult: ...


@overload
def screen(
    source: str | Path | None = None,
    *,
    criteria: Sequence[CriteriaSpec],
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
    publish_subjects: bool = False,
    unmapped_text: bool = False,
    allow_empty: bool = False,
    base_url: str | None = None,
    history: str | Path | None = None,
    spark: Any = None,
) -> MultiScreeningResult: ...


def screen(
    source: str | Path | None = None,
    *,
    criteria: CriteriaSpec | Sequence[CriteriaSpec] | None = None,
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
    publish_subjects: bool = False,
    unmapped_text: bool = False,
    allow_empty: bool = False,
    base_url: str | None = None,
    history: str | Path | None = None,
    spark: Any = None,
) -> ScreeningResult | MultiScreeningResult:
    """Screen every patient of ``source`` against a trial's criteria.

    ``source`` is a Bulk Data export folder, a Bundle file or a folder of Bundles (default: the
    bundled synthetic demo hospital), or the base URL of a FHIR R4 server: then what the
    criteria need is fetched first (``server`` options: strategy, cache folder, auth, ...) into
    an NDJSON snapshot, which is screened like any folder. ``criteria`` is a criteria file or
    a loaded :class:`~fhir_cohort.criteria.Trial` (default: NCT06038474); a list of them
    screens several trials in one pass and returns :func:`screen_many`'s result, one
    :class:`ScreeningResult` per trial. ``as_of`` is the screening
    date S (default: today). With ``out_dir`` the outputs (CSV files, group.json, run.json and
    report.html) are written there, owner-only; ``show_identifiers`` puts patient identifiers
    in the report (default: pseudonymous row numbers and FHIR ids). ``publish_group`` writes
    the candidate Group back to the source server (created, or updated in place on re-runs);
    ``publish_subjects`` writes the trial as a ResearchStudy and each candidate as a
    ResearchSubject with its recruitment status, updated in place on re-runs, patients who are
    no longer candidates included (docs/publishing.md).
    The codes of records that matched no value set are counted into ``result.unmapped``
    (``unmapped.csv``); ``unmapped_text`` also lists free-text-only medications by their text.
    A disk source in which no Patient is found (an empty file or Bundle, a folder of non-FHIR
    JSON) raises :class:`SourceError` unless ``allow_empty``.
    Absolute references resolve only against the source's own base: the server URL, the base
    a Bulk export or snapshot folder recorded, and ``base_url`` (docs/architecture.md).
    With ``history`` (a file path; the CLI's default is
    :func:`~fhir_cohort.history.default_history_path`) the run is recorded in that SQLite
    screening history and compared with the trial's previous run there: ``result.changes``
    (changes.csv), ``run["history"]`` and report.html's "new since" section
    (docs/history.md). Without it nothing is recorded.
    With ``spark`` (a ``pyspark.sql.SparkSession``) the Spark engine reads and evaluates on
    the session's executors (docs/spark.md): ``source`` is then a path or a Hadoop URI
    (``s3a://...``), and the answers and outputs are those of the local engine.

    >>> result = screen(as_of=date(2026, 11, 24))
    >>> list(result.patients.columns[:3])
    ['patient_id', 'status', 'age']
    >>> set(result.patients["status"]) <= {"eligible", "review", "ineligible"}
    True
    """
    settings = dict(
        out_dir=out_dir,
        strict=strict,
        validate=validate,
        workers=workers,
        progress=progress,
        server=server,
        show_identifiers=show_identifiers,
        publish_group=publish_group,
        publish_subjects=publish_subjects,
        unmapped_text=unmapped_text,
        allow_empty=allow_empty,
        base_url=base_url,
        spark=spark,
    )
    if not isinstance(criteria, str | Path | Trial | None):
        return screen_many(
            source,
            criteria=criteria,
            as_of=as_of,
            terminology=terminology,
            history=history,
            **settings,  # type: ignore[arg-type]
        )
    opts = _Options.begin(source, as_of, **settings)
    if isinstance(criteria, str | Path) and Path(criteria).is_dir():
        # a folder holds any number of trials: screen_many's result, not a ScreeningResult
        raise OptionError(
            f"{criteria} is a folder: screen_many() screens every criteria file in it"
        )
    [(trial, criteria_info)] = _resolve_trials(criteria)
    terminology = terminology or Terminology.load()
    _check_common(source, [trial], terminology, server, base_url)
    with _open_history(history) as past:
        shared = _read_once(opts, [trial], terminology)
        try:
            result = _screen_trial(
                opts, trial, criteria_info, shared, terminology, out_dir=out_dir, history=past
            )
        finally:
            if shared.spark is not None:
                shared.spark.close()
    if shared.loaded is not None:
        # done: a re-run fetches fresh data unless told to reuse this snapshot
        remote.snapshot_used(shared.loaded)
    return result


def _open_history(path: str | Path | None) -> Any:
    """The history to record in (opened, migrated, before any work: an unusable file must
    not fail at the end), or a context that yields None."""
    if path is None:
        return contextlib.nullcontext(None)
    from fhir_cohort.history.db import open_history

    return open_history(path)


def screen_many(
    source: str | Path | None = None,
    *,
    criteria: CriteriaSpec | Sequence[CriteriaSpec] | None = None,
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
    publish_subjects: bool = False,
    unmapped_text: bool = False,
    allow_empty: bool = False,
    base_url: str | None = None,
    history: str | Path | None = None,
    spark: Any = None,
) -> MultiScreeningResult:
    """Screen ``source`` against several trials, reading the data once.

    ``criteria`` is a list of criteria files, folders (every ``*.yaml``, ``*.yml`` and
    ``*.json`` in it, sorted by name) and :class:`~fhir_cohort.criteria.Trial` objects, or one
    of them. The source is read (or fetched: ``--strategy full`` or ``bulk`` only) once,
    keeping the union of what the trials need; each trial is then evaluated on the same tables
    exactly as :func:`screen` evaluates it alone. With ``out_dir`` each trial's outputs go to
    ``out_dir/<trial id>/`` (the files :func:`screen` writes) and ``out_dir`` gets
    ``trials.csv`` (one row per patient and trial) and ``index.html`` (a link to each report
    with its counts). Two trials with the same id raise :class:`OptionError` before any work.
    The other arguments are :func:`screen`'s.

    >>> both = screen_many(criteria=[default_criteria_path()], as_of=date(2026, 11, 24))
    >>> list(both), both["NCT06038474"].status_counts().to_dict()
    (['NCT06038474'], {'eligible': 84, 'review': 48, 'ineligible': 364})
    """
    opts = _Options.begin(
        source,
        as_of,
        out_dir=out_dir,
        strict=strict,
        validate=validate,
        workers=workers,
        progress=progress,
        server=server,
        show_identifiers=show_identifiers,
        publish_group=publish_group,
        publish_subjects=publish_subjects,
        unmapped_text=unmapped_text,
        allow_empty=allow_empty,
        base_url=base_url,
        spark=spark,
    )
    resolved = _resolve_trials(criteria)
    trials = [trial for trial, _ in resolved]
    _check_folder_names(trials)
    terminology = terminology or Terminology.load()
    _check_common(source, trials, terminology, server, base_url)
    with _open_history(history) as past:
        return _screen_pass(opts, resolved, terminology, past)


def _screen_pass(
    opts: _Options,
    resolved: list[tuple[Trial, dict[str, Any]]],
    terminology: Terminology,
    past: Any,
) -> MultiScreeningResult:
    trials = [trial for trial, _ in resolved]
    shared = _read_once(opts, trials, terminology)
    ids = [trial.id for trial in trials]
    pass_id = uuid.uuid4().hex  # the history's runs of one pass share it
    # the evidence digests of criteria several trials ask identically: hashed once
    shared_evidence = _shared_evidence(past, trials)
    # One trial after another in this process: evaluating them in forked workers doubled peak
    # memory (docs/benchmarks.md, "Several trials in one pass").
    results: dict[str, ScreeningResult] = {}
    try:
        for trial, info in resolved:
            results[trial.id] = _screen_trial(
                opts,
                trial,
                info,
                shared,
                terminology,
                out_dir=Path(opts.out_dir) / trial.id if opts.out_dir is not None else None,
                one_pass=ids,
                history=past,
                pass_id=pass_id,
                shared_evidence=shared_evidence,
            )
    finally:
        if shared.spark is not None:
            shared.spark.close()
    table = trials_table({tid: r.patients for tid, r in results.items()})
    multi = MultiScreeningResult(results=results, trials=table)
    if opts.out_dir is not None:
        multi.out_dir = Path(opts.out_dir)
        write_trials(multi.out_dir / TRIALS_NAME, table)
        write_index(multi, multi.out_dir / INDEX_NAME)
    if shared.loaded is not None:
        remote.snapshot_used(shared.loaded)
    return multi


def _shared_evidence(history: Any, trials: Sequence[Trial]) -> Any:
    """The history's SharedEvidence for a pass of several trials (None: nothing recorded,
    or one trial)."""
    if history is None or len(trials) < 2:
        return None
    from fhir_cohort.history.db import SharedEvidence

    return SharedEvidence(criterion_keys(t) for t in trials)


def _screen_trial(
    opts: _Options,
    trial: Trial,
    criteria_info: dict[str, Any],
    shared: _Pass,
    terminology: Terminology,
    *,
    out_dir: str | Path | None,
    one_pass: Sequence[str] = (),
    history: Any = None,
    pass_id: str | None = None,
    shared_evidence: Any = None,
) -> ScreeningResult:
    """Evaluate one trial on the shared tables and write its outputs (pure per trial: the
    tables are only read)."""
    tables, report, src_path = shared.tables, shared.report, shared.source_path
    loaded, unmapped_rows = shared.loaded, shared.unmapped_rows
    t_start = time.perf_counter()
    n_trials = max(1, len(one_pass))
    which = trial.id if one_pass else None
    if shared.spark is not None:
        # The Spark engine: the same evaluators, one partition of patients at a time on the
        # executors (fhir_cohort/spark); what comes back is what the lines below compute.
        done = shared.spark.evaluate(trial, terminology, opts.as_of)
        evaluation, attrition_table = done.evaluation, done.attrition
        eras, labs, without_patient = done.eras, done.labs, done.records_without_patient
        t_eval = time.perf_counter()
    else:
        total = len(tables.patients) * n_trials
        opts.progress(Progress("evaluate", 0, total=total, unit="patients", message=which))
        prepared = shared.prepare(terminology, opts.as_of)
        evaluation, attrition_table = screen_tables(
            trial, tables, terminology, opts.as_of, prepared
        )
        if loaded is not None:
            _keep_from_eligible(evaluation, loaded.unsearched, requirements(trial, terminology))
        opts.progress(Progress("evaluate", len(tables.patients), total=total, message=which))
        t_eval = time.perf_counter()
        eras, labs = detail_tables(trial, tables, terminology, opts.as_of, prepared)
        del prepared
        last = not one_pass or trial.id == one_pass[-1]
        if last:
            shared.prepared = None  # the last trial: free the rows before writing outputs
        without_patient = shared.without_patient()
        # the evaluation's per-patient lists, before the outputs (collected once the rows go)
        release_free_memory(collect=last and worth_collecting(len(tables.patients)))

    ids = tuple(c.id for c in trial.criteria)
    patients = patients_table(evaluation.answers, evaluation.status, ids)
    evidence = sort_evidence(evaluation.evidence, ids)
    eras, labs = sort_details(eras, ids), sort_details(labs, ids)
    evaluation.evidence = evidence  # the same rows: the unsorted copy is freed, not held
    group = candidate_group(
        patients,
        trial_id=trial.id,
        trial_version=trial.version,
        as_of=opts.as_of,
        evidence=evidence,
    )
    run = _run_record(
        trial=trial,
        criteria_info=criteria_info,
        criterion_ids=ids,
        terminology=terminology,
        source=src_path,
        as_of=opts.as_of,
        report=report,
        started=opts.started,
        timings={**shared.timings, "evaluate": t_eval - t_start},
        patients=patients,
    )
    if shared.spark is not None:
        run["engine"] = "spark"
        run["spark"] = shared.spark.describe()
    if one_pass:
        # The read (and its counts, unmapped.csv) is shared: it kept what any of these needed.
        run["one_pass"] = {"trials": list(one_pass), "index": f"../{INDEX_NAME}"}
    # Records of patients with no Patient resource are not screened: say how many (v1.1).
    run["records_without_patient"] = without_patient
    run["unmapped"] = {
        "file": "unmapped.csv",
        "free_text_listed": opts.unmapped_text,
        "per_type": report.unmapped.summary(unmapped_rows),
    }
    if loaded is not None:
        run["data_cut"] = loaded.data_cut
        run["source"] = {
            "kind": "server",
            "url": strip_query(str(opts.source)),
            "snapshot": str(src_path),
            "fetch": loaded.to_json(),
        }
    if opts.publish_group and shared.client is not None:
        run["published_group"] = remote.publish_group(shared.client, group)
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
    # The run is recorded and its outputs written in one history transaction: a run whose
    # outputs failed is not in the history, so the next screen compares with the last good one.
    recording = history.transaction() if history is not None else contextlib.nullcontext()
    with recording:
        if history is not None:
            result.changes, result.worklist = _record(
                history, run, evaluation, evidence, out_dir, pass_id, trial, shared_evidence
            )
        if opts.publish_subjects and shared.client is not None:
            # After the run is recorded (its worklist says which decisions still hold), before
            # run.json is written: a failure leaves neither the run nor outputs behind.
            run["published_research"] = _publish_research(
                opts, trial, patients, run, history, result.worklist, shared
            )
        if out_dir is not None:
            _write(result, run, out_dir, opts.t0, opts.show_identifiers)
            if shared.spark is not None:
                from fhir_cohort.spark.engine import write_lakehouse

                write_lakehouse(Path(out_dir), result.patients, result.evidence)
    return result


def _publish_research(
    opts: _Options,
    trial: Trial,
    patients: pd.DataFrame,
    run: dict[str, Any],
    history: Any,
    worklist: Any,
    shared: _Pass,
) -> dict[str, Any]:
    """The ResearchStudy and ResearchSubjects on the source server (fhir_cohort/research.py),
    with the coordinators' decisions from the history (those the run's worklist does not
    send back to review)."""
    from fhir_cohort.research import publish_research, recruitment_decisions

    group = run.get("published_group") or {}
    return publish_research(
        shared.client,
        trial_id=trial.id,
        title=trial.title,
        trial_version=trial.version,
        as_of=opts.as_of,
        statuses=dict(zip(patients["patient_id"], patients["status"], strict=True)),
        group_id=group.get("id"),
        recruitment=recruitment_decisions(history, trial.id, worklist),
        # the funnel fetched only patients with an entry code: the others are ineligible
        unscreened_ineligible=shared.loaded is not None and shared.loaded.strategy == "funnel",
    )


def _record(
    history: Any,
    run: dict[str, Any],
    evaluation: EvaluationResult,
    evidence: pd.DataFrame,
    out_dir: str | Path | None,
    pass_id: str | None,
    trial: Trial,
    shared_evidence: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Record the run in the history, compare it with the trial's previous run there and
    apply the chart-review decisions: the comparison goes to run["history"]; the changes
    table (changes.csv) and the worklist (worklist.csv) are returned. The engine's answers
    stay as they are: decisions are an overlay."""
    from fhir_cohort.history.diff import diff_runs

    info = history.record_run(
        run,
        status=evaluation.status,
        answers=evaluation.answers,
        evidence=evidence,
        out_dir=Path(out_dir).absolute() if out_dir is not None else None,
        pass_id=pass_id,
        shared=shared_evidence,
        same_keys=criterion_keys(trial) if shared_evidence is not None else (),
    )
    diff = diff_runs(history, info.previous_run_id, info.run_id)
    worklist = history.worklist(info.trial_id, info.run_id)
    run["history"] = diff.as_record(str(history.path)) | {
        "re_review": sum(e.re_review for e in worklist.entries),
        "review_queue": len(worklist.queue),
        "worklist_file": "worklist.csv",
    }
    return diff.frame(), worklist.frame()


def _write(
    result: ScreeningResult, run: dict[str, Any], out_dir: str | Path, t0: float, show_ids: bool
) -> None:
    run["timings_seconds"]["total"] = round(time.perf_counter() - t0, 3)
    result.paths = write_outputs(
        Path(out_dir),
        patients=result.patients,
        evidence=result.evidence,
        attrition=result.attrition,
        group=result.group,
        run=run,
        eras=result.eras,
        labs=result.labs,
        unmapped=result.unmapped,
        changes=result.changes,
        worklist=result.worklist,
    )
    write_report(result, result.paths.out_dir / REPORT_NAME, show_identifiers=show_ids)


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
