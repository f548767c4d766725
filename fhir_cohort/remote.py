"""Screening from a FHIR server: criteria -> fetch plan, client from options, snapshot on disk.

The fhir package knows nothing about criteria; this module is the bridge. What to fetch comes
from :func:`fhir_cohort.requirements.requirements`. The funnel's entry query is the trial's
first inclusion whose rule needs a Condition of some value sets (a condition query, or an
``all`` holding one): a patient with no code of them can only answer ``not_met`` there, so is
ineligible whatever the rest of the record says, and is not fetched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fhir_cohort.criteria import Trial
from fhir_cohort.defaults import (
    AUTO_BULK_THRESHOLD,
    BATCH_SIZE,
    BULK_MAX_WAIT,
    BULK_POLL_MAX,
    CONCURRENCY,
    TIMEOUT,
)
from fhir_cohort.errors import (
    AuthError,
    CapabilityError,
    CriteriaError,
    FhirHttpError,
    OptionError,
)
from fhir_cohort.fhir.auth import AuthOptions, auth_from_env
from fhir_cohort.fhir.bulk import (
    BulkExportRequest,
    ExportResult,
    run_export,
)
from fhir_cohort.fhir.capability import Capability
from fhir_cohort.fhir.client import FhirClient, strip_query
from fhir_cohort.fhir.crawl import (
    CrawlPlan,
    CrawlSearch,
    PatientList,
    SinceMode,
    crawl,
    read_patient_list,
)
from fhir_cohort.fhir.fetch import (
    MEDICATION_TYPES,
    PAGE_SIZE,
    FetchPlan,
    FetchReport,
    Reuse,
    fetch_all,
    fetch_snapshot,
    mark_used,
)
from fhir_cohort.fhir.probe import PROBE_TYPES, probe, probe_population
from fhir_cohort.fhir.server_profile import Fact, ServerProfile, load_profile
from fhir_cohort.files import private_dir
from fhir_cohort.progress import Progress, ProgressCallback, no_progress
from fhir_cohort.requirements import Requirements, requirements
from fhir_cohort.terminology import Terminology

STRATEGIES = ("funnel", "full", "bulk", "crawl", "auto")
# Ids per ``_id`` read in a crawl where the server takes a list (Epic caps a Patient search at
# 100 results, 4127).
ID_BATCH = 100
FULL_TYPES = ("Patient", "Condition", "Procedure", "Observation", "Medication", *MEDICATION_TYPES)


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class ServerOptions:
    """How to reach and query a FHIR server. Secrets are never fields: they come from the
    environment (see :func:`fhir_cohort.fhir.auth.auth_from_env`)."""

    strategy: str = "funnel"
    cache_dir: Path | None = None
    since: datetime | None = None
    ca_bundle: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    auth: AuthOptions = field(default_factory=AuthOptions)
    # Defaults in fhir_cohort/defaults.py, which the CLI reads without importing this module.
    timeout: float = TIMEOUT
    batch_size: int = BATCH_SIZE
    concurrency: int = CONCURRENCY
    requests_per_second: float | None = None
    # Credentials go to the base URL's origin only. Links (next pages, bulk status or files)
    # and redirects to these other origins are followed without credentials; to any other
    # origin they are refused. Plain http with credentials only to loopback, unless allowed.
    allow_origins: tuple[str, ...] = ()
    allow_insecure_http: bool = False
    env: Mapping[str, str] | None = None
    # The patient list of --strategy crawl: a file of ids or system|value identifiers, or a
    # snapshot folder; or bulk_group, the Group whose members are crawled (or, with
    # bulk_level "group", exported).
    patients: Path | None = None
    # Patients per crawl request: more than 1 only where the server accepts patient=a,b,c.
    crawl_batch: int = 1
    # Bulk Data ($export) settings, used by strategy bulk (and auto when it picks bulk).
    bulk_level: str = "system"
    bulk_group: str | None = None
    bulk_type_filter: bool = True
    bulk_resume: bool = True
    bulk_poll_max: float = BULK_POLL_MAX  # seconds; caps the server's Retry-After
    # seconds this run waits for the export before it saves the job and stops
    # (BulkExportTimeout); None (--wait): until the export completes
    bulk_max_wait: float | None = BULK_MAX_WAIT
    # Reuse a complete download already in the cache (bulk export or REST snapshot) instead of
    # downloading again: the data may be stale. Without it a REST snapshot is reused only when
    # the run that fetched it never finished (no outputs written).
    reuse_export: bool = False
    auto_threshold: int = AUTO_BULK_THRESHOLD
    # --server-profile NAME|FILE: the server's limits as stated (a vendor's documented profile,
    # or a file in the same schema) instead of probing the server (docs/architecture.md).
    server_profile: str | None = None

    def __post_init__(self) -> None:
        # Checked here, before any work or request: these failed only deep inside a run.
        if self.concurrency < 1:
            raise OptionError(f"--concurrency must be at least 1, got {self.concurrency}")
        if not 0 < self.bulk_poll_max < float("inf"):
            raise OptionError(f"--poll-max must be a number above 0, got {self.bulk_poll_max}")
        if self.bulk_max_wait is not None and not 0 < self.bulk_max_wait < float("inf"):
            raise OptionError(f"--max-wait must be a number above 0, got {self.bulk_max_wait}")
        if self.bulk_level not in ("system", "patient", "group"):
            raise OptionError(f"--level must be system, patient or group, not {self.bulk_level!r}")
        if self.bulk_level == "group" and not self.bulk_group:
            raise OptionError("--level group needs --group ID (the Group to export)")
        lists = self.strategy in ("crawl", "auto")
        if self.bulk_group and self.bulk_level != "group" and not lists:
            raise OptionError(
                "--group is used only with --level group (Bulk export) or --strategy crawl"
            )
        if self.patients is not None and not lists:
            raise OptionError("--patients is used only with --strategy crawl")
        if self.patients is not None and self.bulk_group:
            raise OptionError("--patients and --group both name the patients: give one")
        if self.strategy == "crawl" and self.patients is None and not self.bulk_group:
            raise OptionError("--strategy crawl needs --group ID or --patients FILE")
        if not isinstance(self.crawl_batch, int) or self.crawl_batch < 1:
            raise OptionError(f"--crawl-batch must be at least 1, got {self.crawl_batch}")
        if self.reuse_export and not self.bulk_resume:
            raise OptionError("--reuse-export and --restart contradict each other")
        if self.server_profile is not None:
            load_profile(self.server_profile)  # a bad name or file fails before any request


def _needs(trial: Trial | Requirements | Sequence[Trial], terminology: Terminology) -> Requirements:
    """A trial's requirements, or the union of several trials' (screened in one pass)."""
    if isinstance(trial, Requirements):
        return trial
    if isinstance(trial, Trial):
        return requirements(trial, terminology)
    return Requirements.union_of(requirements(t, terminology) for t in trial)


def plans_from_entry(options: ServerOptions) -> bool:
    """Whether the fetch may plan from one trial's entry criterion (funnel, or auto without a
    patient list), so cannot serve several trials in one pass."""
    lists = options.patients is not None or bool(options.bulk_group)
    return options.strategy == "funnel" or (options.strategy == "auto" and not lists)


def entry_tokens(trial: Trial | Requirements, terminology: Terminology) -> tuple[str, ...]:
    """The funnel's entry query: Condition ``code`` tokens a patient must have one of."""
    needs = _needs(trial, terminology)
    if needs.entry_tokens is None:
        raise CriteriaError(
            f"{', '.join(needs.trials)}: screening from a server needs an inclusion that a "
            "patient must have a Condition for (a condition query, or an `all` holding one) to "
            "plan the funnel's entry query (or use --strategy full)"
        )
    return needs.entry_tokens


def _trials(trial: Trial | Sequence[Trial]) -> list[Trial]:
    return [trial] if isinstance(trial, Trial) else list(trial)


def _types(needs: Requirements) -> tuple[str, ...]:
    return tuple(t for t in FULL_TYPES if t in needs.resource_types)


def funnel_plan(trial: Trial | Requirements, terminology: Terminology) -> FetchPlan:
    """The fetch plan of ``trial``: entry Conditions, then the cohort's records.

    Observations are asked for by the LOINC codes of the observation queries' value sets
    (servers index Observation.code; the labs these criteria read are LOINC-coded);
    Conditions, Procedures and medications, as far as the criteria read them, are fetched
    whole for the cohort, since their value sets are large and the cohort is small.
    """
    needs = _needs(trial, terminology)
    tokens = entry_tokens(needs, terminology)
    types = needs.resource_types
    return FetchPlan.standard(
        tokens,
        observation_codes=needs.observation_tokens if "Observation" in types else (),
        procedure_codes=() if "Procedure" in types else None,
        medications=any(t in types for t in MEDICATION_TYPES),
    )


def crawl_plan(
    trial: Trial | Requirements | Sequence[Trial],
    terminology: Terminology,
    *,
    batch: int = 1,
    server_codes: bool = True,
    since_mode: SinceMode = "auto",
    panels: Literal["auto", "param", "whole"] = "auto",
    category_required: bool = False,
    observation_categories: Sequence[str] = (),
    id_batch: int | None = None,
) -> CrawlPlan:
    """The crawl plan of ``trial`` (or of several screened in one pass): per patient, every
    type the criteria read, as the funnel's follow-ups (Observations by the criteria's LOINC
    codes where the server honours ``code``, panels by ``component-code`` or, where the server
    does not filter by it (``panels``), the patient's Observations whole, of the
    ``observation_categories`` where a category is required; medications with their
    Medications ``_include``-d). What the server is not asked to filter is filtered on
    arrival by the on-disk reader's line filter (the criteria's codes), so the snapshot holds
    the same records whichever the server does.
    """
    from fhir_cohort.engine.flatten import make_line_filter

    needs = _needs(trial, terminology)
    types = needs.resource_types
    searches: list[CrawlSearch] = []
    if "Condition" in types:
        searches.append(CrawlSearch("Condition"))
    if "Procedure" in types:
        searches.append(CrawlSearch("Procedure"))
    for mtype in MEDICATION_TYPES:
        if mtype in types:
            searches.append(CrawlSearch(mtype, include=(f"{mtype}:medication",)))
    keep = {}
    if "Observation" in types:
        obs = _bare_loinc(needs.observation_tokens)
        searches.append(CrawlSearch("Observation", codes=obs))
        if obs:
            # A panel whose component carries the test counts as that test (spec v1.1).
            searches.append(
                CrawlSearch("Observation", code_param="component-code", codes=obs, optional=True)
            )
        keep["Observation"] = make_line_filter(needs.codes, needs.medication_names, "Observation")
    key = json.dumps([sorted(map(list, needs.codes)), sorted(needs.medication_names)])
    return CrawlPlan(
        searches=tuple(searches),
        resolve_medications=any(t in types for t in MEDICATION_TYPES),
        batch=batch,
        server_codes=server_codes,
        since_mode=since_mode,
        keep=keep,
        keep_key=hashlib.sha256(key.encode()).hexdigest()[:16],
        category_required=category_required,
        observation_categories=tuple(observation_categories),
        panels=panels,
        id_batch=id_batch,
    )


# LOINC's system, by URL and by OID: the criteria's tokens name both.
LOINC_SYSTEMS = ("http://loinc.org", "urn:oid:2.16.840.1.113883.6.1")


def _bare_loinc(tokens: Sequence[str]) -> tuple[str, ...]:
    """The crawl's Observation codes: LOINC codes without their system (Epic's documentation
    names them so), half the tokens of ``system|code`` under both of LOINC's systems. A
    server matches a bare code under any system; what else comes back is dropped on arrival
    by the line filter, so the snapshot is the same. Tokens of another system stay whole."""
    out: list[str] = []
    for token in tokens:
        system, bar, code = token.rpartition("|")
        out.append(code if bar and system in LOINC_SYSTEMS else token)
    return tuple(dict.fromkeys(out))


def patient_list(options: ServerOptions) -> PatientList | None:
    """The crawl's patient list from the options: --group, or --patients (file or folder)."""
    if options.patients is not None:
        return read_patient_list(options.patients)
    if options.bulk_group and options.strategy in ("crawl", "auto"):
        return PatientList.of_group(options.bulk_group)
    return None


def bulk_request(
    trial: Trial | Requirements | Sequence[Trial],
    terminology: Terminology,
    options: ServerOptions | None = None,
) -> BulkExportRequest:
    """The $export request of ``trial`` (or of several trials screened in one pass: the union
    of their codes): the types the screen reads, and (``type_filter``) the
    funnel as far as one export can state it: Observations restricted to the criteria's LOINC
    codes (they are most of a hospital's data and most are vital signs no criterion reads).

    Conditions, Procedures and medications stay whole: their relevant code lists run to
    thousands of codes (too long for a kick-off URL), and medications coded by reference or
    only by text would fall through a code filter.
    """
    options = options or ServerOptions()
    needs = _needs(trial, terminology)
    filters: list[str] = []
    if options.bulk_type_filter:
        loinc = needs.observation_tokens
        if loinc:
            # Observation.code only: a panel whose component alone carries the test is not
            # exported under this filter (docs/bulk.md; --no-type-filter exports it).
            filters.append("Observation?code=" + ",".join(loinc))
    return BulkExportRequest(
        level=options.bulk_level,  # type: ignore[arg-type]
        group_id=options.bulk_group,
        types=_types(needs),
        since=options.since.isoformat() if options.since else None,
        type_filters=tuple(filters),
    )


def run_bulk(
    client: FhirClient,
    request: BulkExportRequest,
    out_dir: Path,
    *,
    resume: bool = True,
    reuse: bool = False,
    download_workers: int = 4,
    poll_max: float = BULK_POLL_MAX,
    max_wait: float | None = BULK_MAX_WAIT,
    progress: ProgressCallback = no_progress,
) -> ExportResult:
    """Run or resume an export into a private folder the disk source reads unchanged.

    A completed export already in ``out_dir`` is used again only with ``reuse`` (see
    :func:`fhir_cohort.fhir.bulk.run_export`); the result says which happened. ``poll_max``
    caps one wait between status polls (``Retry-After`` is honoured up to it). ``max_wait``
    bounds this run's wait (None: until the export completes): past it, or when the server's
    Retry-After reaches past it, :class:`~fhir_cohort.errors.BulkExportTimeout` says the
    export is still running and the job is saved in ``out_dir`` for the next run.
    """
    return run_export(
        client,
        request,
        private_dir(out_dir),
        resume=resume,
        reuse=reuse,
        poll_cap_seconds=poll_max,
        deadline_seconds=math.inf if max_wait is None else max_wait,
        download_workers=download_workers,
        progress=progress,
    )


@dataclass(frozen=True)
class Loaded:
    """What every server loader (funnel, crawl, full, bulk) returns: the snapshot folder the
    disk reader screens, which loader ran and why, its own typed report, and the server
    profile the choice was made from. run.json's ``source.fetch`` is :meth:`to_json`; the
    pipeline reads the fields, not that dict."""

    path: Path
    strategy: str
    why: str
    report: FetchReport | ExportResult
    profile: ServerProfile | None = None

    @property
    def data_cut(self) -> str | None:
        """The export's transactionTime, or when the search fetch started."""
        if isinstance(self.report, ExportResult):
            return self.report.transaction_time or None
        return self.report.started_at

    @property
    def unsearched(self) -> tuple[str, ...]:
        """Searches the server allowed no way to send ("Observation by component-code"):
        records they would have found may be missing (the pipeline keeps answers that could
        depend on them from eligible)."""
        cohort = getattr(self.report, "cohort", None) or {}
        return tuple(cohort.get("unsearched") or ())

    @property
    def rest_snapshot(self) -> bool:
        """A REST snapshot (reused by a rerun only until a run's outputs are written)."""
        return isinstance(self.report, FetchReport)

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.report, ExportResult):
            record = bulk_record(self.report, self.why)
        else:
            record = {"strategy": self.strategy, "why": self.why, **self.report.to_dict()}
        if self.profile is not None:
            record["server_profile"] = self.profile.to_json()
        return record


def bulk_record(result: ExportResult, why: str) -> dict[str, Any]:
    """The fetch record of a bulk run for run.json: the data cut and how it was obtained."""
    return {
        "strategy": "bulk",
        "why": why,
        "data_cut": result.transaction_time,
        "reused": result.reused,
        "resumed": result.resumed,
        "export": result.to_json(),
    }


def patient_scoped_error(url: str, fact: Fact[bool]) -> CapabilityError:
    """The funnel (or auto without a patient list) on a server that needs a patient on every
    search (Epic, Oracle Health): say what to use instead."""
    how = fact.source or fact.origin or "its profile"
    return CapabilityError(
        f"the server at {strip_query(url)} cannot be searched without a patient ({how}), so "
        "the funnel's server-wide Condition search cannot run there (EHRs such as Epic and "
        "Oracle Health work this way). Screen a Group or a patient list instead: --group ID "
        "(a Group the site's EHR team set up, e.g. from a registry) or --patients FILE (FHIR "
        "ids, or system|value identifiers such as MRNs)"
    )


def server_profile(
    client: FhirClient,
    needs: Requirements,
    options: ServerOptions,
    *,
    patient: str | Callable[[], str | None] | None = None,
) -> ServerProfile:
    """The server's profile: ``--server-profile`` as given (no request), else probed (a few
    cheap requests, see :mod:`fhir_cohort.fhir.probe`) for the types ``needs`` reads.

    On a server that cannot be searched without a patient the probe goes on with one patient:
    ``patient``, else the first member of ``--group`` (one Group read), else none.
    """
    if options.server_profile is not None:
        return load_profile(options.server_profile)
    types = ("Condition", *(t for t in PROBE_TYPES if t in needs.resource_types))
    group = options.bulk_group
    if patient is None and group:
        patient = partial(group_member, client, group)  # read only when needed
    return probe(client, types=types, patient=patient)


def group_member(client: FhirClient, group_id: str) -> str | None:
    """The id of a Group's first Patient member (None when the Group cannot be read)."""
    try:
        group = client.read("Group", group_id)
    except (FhirHttpError, OptionError):
        return None
    for member in group.get("member") or []:
        ref = ((member or {}).get("entity") or {}).get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/") and ref.count("/") == 1:
            return ref.split("/", 1)[1]
    return None


def choose_strategy(
    client: FhirClient,
    trial: Trial | Requirements,
    terminology: Terminology,
    threshold: int,
    *,
    profile: ServerProfile | None = None,
    patients: bool = False,
    group_export: bool = False,
    bulk_level: str = "system",
) -> tuple[str, str]:
    """``auto``: funnel, crawl or bulk from the server's ``profile`` (probed when None).
    Returns (strategy, why); CapabilityError when nothing can run (a patient-scoped server
    without a patient list).

    - A server that needs a patient on every search (Epic, Oracle Health): with a patient list
      (``patients``: ``--group`` or ``--patients``) the crawl, or the Group's export when
      ``group_export`` (``--level group``) and the server exports Groups; without one, the
      error that says to give one.
    - A patient list on any other server: the crawl (or the Group's export, likewise).
    - A server that does not filter Condition by ``code``: bulk where it exports at
      ``bulk_level``, else the full pull (the funnel's entry query would return everything).
    - Otherwise the funnel, or bulk when the server exports at ``bulk_level`` and the entry
      query matches more than ``threshold`` Conditions.
    """
    if profile is None:
        profile = server_profile(client, _needs(trial, terminology), ServerOptions())
    levels = profile.bulk_levels.value
    if levels is None:  # not probed (a --server-profile that does not say): ask the server
        levels = Capability.from_statement(client.capabilities()).export
    if profile.patient_scoped:
        if not patients:
            raise patient_scoped_error(client.base_url, profile.population_search)
        needs_patient = "the server cannot be searched without a patient"
        if group_export and "group" in levels:
            return "bulk", f"{needs_patient}; --level group and the server exports Groups"
        return "crawl", f"{needs_patient}; crawling the listed patients"
    if patients:
        if group_export and "group" in levels:
            return "bulk", "a Group was given with --level group and the server exports Groups"
        return "crawl", "a patient list was given (--group or --patients)"
    exports = bulk_level in levels
    entry = profile.code("Condition")
    if entry.value in ("ignored", "rejected"):
        why = f"the server does not filter Condition by code ({entry.value}: {entry.source})"
        if exports:
            return "bulk", f"{why}; it exports at {bulk_level} level"
        return "full", f"{why}; fetching the needed types whole"
    if not levels:
        return "funnel", "the server does not advertise $export"
    if not exports:
        return "funnel", f"the server does not advertise $export at {bulk_level} level"
    tokens = entry_tokens(trial, terminology)
    bundle = client.get_json("Condition", [("code", ",".join(tokens)), ("_summary", "count")])
    total = bundle.get("total")
    if not isinstance(total, int):
        return "funnel", "the server did not count the entry query"
    if total > threshold:
        return "bulk", f"the entry query matches {total} Conditions (> {threshold})"
    return "funnel", f"the entry query matches {total} Conditions (<= {threshold})"


def build_client(url: str, options: ServerOptions) -> FhirClient:
    """The client for ``url``; OptionError (exit 2) for a bad URL, CA file or plain-http
    credentials, AuthError (exit 6) for auth settings that cannot work."""
    env = options.env if options.env is not None else os.environ
    try:
        return FhirClient(
            url,
            auth=auth_from_env(env, options.auth),
            timeout=(10, options.timeout),
            verify=str(options.ca_bundle) if options.ca_bundle else True,
            headers=dict(options.headers),
            requests_per_second=options.requests_per_second,
            allow_origins=options.allow_origins,
            allow_insecure_http=options.allow_insecure_http,
        )
    except OptionError as exc:  # the user's input, not a bug
        raise OptionError(f"cannot use server {strip_query(url)}: {exc}") from None


def fetch(
    url: str,
    trial: Trial | Sequence[Trial],
    terminology: Terminology,
    options: ServerOptions,
    *,
    default_cache: Path,
    progress: ProgressCallback = no_progress,
    client: FhirClient | None = None,
    run_key: Mapping[str, Any] | None = None,
) -> Loaded:
    """Fetch what ``trial`` needs from the server at ``url`` into a private NDJSON snapshot.

    Several trials (screened in one pass) are fetched by ``full``, ``bulk`` or ``crawl``: the funnel
    plans from one trial's entry criterion (OptionError before any request).

    Returns the :class:`Loaded` result: the snapshot folder (readable by the disk source), the
    loader that ran and why, its report, the server profile.
    REST strategies resume an interrupted fetch in the cache when the server, plan, strategy
    and ``run_key`` (the caller's as-of date) match; a complete snapshot is reused only when
    no finished run has used it yet (see :func:`snapshot_used`) or ``options.reuse_export``.
    """
    if options.strategy not in STRATEGIES:
        raise CriteriaError(f"unknown strategy {options.strategy!r}; use one of {STRATEGIES}")
    trials = _trials(trial)
    if len(trials) > 1 and plans_from_entry(options):
        raise OptionError(
            f"--strategy {options.strategy} plans its fetch from one trial's criteria; to "
            f"screen {len(trials)} trials "
            "from a server in one pass use --strategy full, bulk or crawl"
        )
    cache = private_dir(Path(options.cache_dir) if options.cache_dir else default_cache)
    client = client or build_client(url, options)
    needs = _needs(trials, terminology)
    strategy, why = options.strategy, "chosen by the user"
    patients = patient_list(options)
    # Probed only for auto; the user's --server-profile is read without a request. An explicit
    # funnel sends no probe: its first search fails fast on a patient-scoped server instead.
    profile = load_profile(options.server_profile) if options.server_profile else None
    if strategy == "auto":
        first = patients.ids[0] if patients is not None and patients.ids else None
        profile = profile or server_profile(client, needs, options, patient=first)
        strategy, why = choose_strategy(
            client,
            needs,
            terminology,
            options.auto_threshold,
            profile=profile,
            patients=patients is not None,
            group_export=options.bulk_level == "group",
            bulk_level=options.bulk_level,
        )
    elif strategy == "funnel" and profile is not None and profile.patient_scoped:
        raise patient_scoped_error(url, profile.population_search)
    progress(Progress("strategy", 0, unit="note", message=f"{strategy} ({why})"))
    if strategy == "bulk":
        request = bulk_request(needs, terminology, options)
        result = run_bulk(
            client,
            request,
            cache,
            resume=options.bulk_resume,
            reuse=options.reuse_export,
            download_workers=options.concurrency,
            poll_max=options.bulk_poll_max,
            max_wait=options.bulk_max_wait,
            progress=progress,
        )
        return Loaded(cache, "bulk", why, result, profile)
    reuse: Reuse = "always" if options.reuse_export else "unused"
    if strategy == "crawl":
        if patients is None:
            raise OptionError("--strategy crawl needs --group ID or --patients FILE")
        report: FetchReport = _crawl(
            client, needs, terminology, options, patients, cache, profile, progress, reuse, run_key
        )
    elif strategy == "full":
        report = fetch_all(
            client,
            _types(needs),
            cache,
            workers=options.concurrency,
            progress=progress,
            reuse=reuse,
            run_key=run_key,
        )
    else:
        report = _funnel(
            client, url, needs, terminology, options, cache, profile, progress, reuse, run_key
        )
    return Loaded(cache, strategy, why, report, profile)


def _fitted(profile: ServerProfile | None, batch: int) -> tuple[int, int | None]:
    """Patients per request and page size as the profile allows: one patient per request
    where several are refused, pages no bigger than the server's cap; unknown facts leave
    ``batch`` and the default page."""
    if profile is None:
        return batch, None
    if profile.multi_patient.known:
        batch = profile.patients_per_request(batch)
    return batch, profile.page_size(PAGE_SIZE) if profile.max_count.known else None


def _crawl(
    client: FhirClient,
    needs: Requirements,
    terminology: Terminology,
    options: ServerOptions,
    patients: PatientList,
    cache: Path,
    profile: ServerProfile | None,
    progress: ProgressCallback,
    reuse: Reuse,
    run_key: Mapping[str, Any] | None,
) -> FetchReport:
    """The crawl, fitted to the profile where it knows: several patients per request only
    where ``patient=a,b,c`` works, Observation codes sent only where the server filters by
    them, ``--since`` by ``_lastUpdated`` or by creation dates, pages no bigger than its cap.
    Unknown facts leave the plan's defaults (one patient per request, codes sent where the
    CapabilityStatement lists the parameter, since mode from the CapabilityStatement)."""
    batch, page = _fitted(profile, options.crawl_batch)
    server_codes = True
    since_mode: SinceMode = "auto"
    panels: Literal["auto", "param", "whole"] = "auto"
    category_required, categories = False, ()
    id_batch: int | None = None
    if profile is not None:
        if profile.code("Observation").known:
            server_codes = profile.sends_code("Observation")
        if profile.last_updated.known:
            since_mode = "updated" if profile.last_updated.value else "created"
        if profile.component_code.known:
            sends = profile.component_code.value in ("honoured", "post-filter")
            panels = "param" if sends else "whole"
        category_required = profile.observation_category_required.value is True
        categories = tuple(profile.observation_categories.value or ())
        if profile.id_list.value and batch < ID_BATCH:
            id_batch = ID_BATCH
    plan = crawl_plan(
        needs,
        terminology,
        batch=batch,
        server_codes=server_codes,
        since_mode=since_mode,
        panels=panels,
        category_required=category_required,
        observation_categories=categories,
        id_batch=id_batch,
    )
    return crawl(
        client,
        plan,
        patients,
        cache,
        workers=options.concurrency,
        since=options.since,
        progress=progress,
        page_size=page,
        reuse=reuse,
        run_key=run_key,
    )


def _funnel(
    client: FhirClient,
    url: str,
    needs: Requirements,
    terminology: Terminology,
    options: ServerOptions,
    cache: Path,
    profile: ServerProfile | None,
    progress: ProgressCallback,
    reuse: Reuse,
    run_key: Mapping[str, Any] | None,
) -> FetchReport:
    """The funnel, fitted to the profile (one patient per request where several are refused,
    pages no bigger than the server's cap). A search the server refuses (a 4xx) is checked
    with one more request: a server that cannot be searched without a patient is the
    CapabilityError that says to use a Group or patient list, not a bare HTTP 400."""
    batch, page = _fitted(profile, options.batch_size)
    try:
        return fetch_snapshot(
            client,
            funnel_plan(needs, terminology),
            cache,
            batch_size=batch,
            workers=options.concurrency,
            since=options.since,
            progress=progress,
            reuse=reuse,
            run_key=run_key,
            page_size=page,
        )
    except FhirHttpError as exc:
        refused = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
        if profile is not None or not refused or isinstance(exc, AuthError):
            raise
        population = probe_population(client)
        if population.value is False:
            raise patient_scoped_error(url, population) from exc
        raise


def snapshot_used(loaded: Loaded) -> None:
    """After a run's outputs are written: its REST snapshot is no longer reused by default."""
    if loaded.rest_snapshot:
        mark_used(loaded.path)


def publish_group(client: FhirClient, group: Mapping[str, Any]) -> dict[str, Any]:
    """Write the candidate Group to the server: PUT over the Group with the same identifier
    (so re-runs update it), or POST a new one. Returns its id and what was done."""
    from fhir_cohort.research import upsert_by_identifier

    gid, action = upsert_by_identifier(client, group)
    return {"id": gid, "action": action, "members": len(group.get("member") or [])}
