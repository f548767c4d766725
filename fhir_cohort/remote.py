"""Screening from a FHIR server: criteria -> fetch plan, client from options, snapshot on disk.

The fhir package knows nothing about criteria; this module is the bridge. The funnel's entry
query is the trial's first ``condition_present`` inclusion: a patient with no code of its value
sets (counted or unknown ones) can only answer ``not_met`` there, so is ineligible whatever the
rest of the record says, and is not fetched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fhir_cohort.criteria import ConditionPresentCriterion, Trial, value_set_ids
from fhir_cohort.errors import CriteriaError, SourceError
from fhir_cohort.fhir.auth import AuthOptions, auth_from_env
from fhir_cohort.fhir.client import FhirClient, strip_query
from fhir_cohort.fhir.fetch import (
    MEDICATION_TYPES,
    FetchPlan,
    FetchProgress,
    FetchReport,
    fetch_all,
    fetch_snapshot,
)
from fhir_cohort.progress import Progress, ProgressCallback, no_progress
from fhir_cohort.report.files import private_dir
from fhir_cohort.terminology import Terminology

LOINC = "http://loinc.org"
STRATEGIES = ("funnel", "full")
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
    timeout: float = 120.0
    batch_size: int = 50
    concurrency: int = 4
    requests_per_second: float | None = None
    env: Mapping[str, str] | None = None


def entry_criterion(trial: Trial) -> ConditionPresentCriterion:
    for crit in trial.criteria:
        if crit.kind == "inclusion" and isinstance(crit, ConditionPresentCriterion):
            return crit
    raise CriteriaError(
        f"{trial.id}: screening from a server needs a condition_present inclusion to plan the "
        "funnel's entry query (or use --strategy full)"
    )


def funnel_plan(trial: Trial, terminology: Terminology) -> FetchPlan:
    """The fetch plan of ``trial``: entry Conditions, then the cohort's records.

    Observations are asked for by the LOINC codes of every value set the criteria use (servers
    index Observation.code; the labs these criteria read are LOINC-coded); Conditions,
    Procedures and medications are fetched whole for the cohort, since their value sets are
    large and the cohort is small.
    """
    entry = entry_criterion(trial)
    entry_sets = [*entry.value_sets, *entry.unknown_value_sets]
    tokens = terminology.search_tokens(entry_sets)
    used = sorted(value_set_ids(trial))
    observation_codes = [t for t in terminology.search_tokens(used) if t.startswith(LOINC + "|")]
    return FetchPlan.standard(tokens, observation_codes=observation_codes, procedure_codes=())


def build_client(url: str, options: ServerOptions) -> FhirClient:
    env = options.env if options.env is not None else os.environ
    try:
        return FhirClient(
            url,
            auth=auth_from_env(env, options.auth),
            timeout=(10, options.timeout),
            verify=str(options.ca_bundle) if options.ca_bundle else True,
            headers=dict(options.headers),
            requests_per_second=options.requests_per_second,
        )
    except ValueError as exc:  # bad URL, missing CA file: the user's input, not a bug
        raise SourceError(f"cannot use server {strip_query(url)}: {exc}") from None


def _fetch_progress(progress: ProgressCallback) -> Callable[[FetchProgress], None]:
    last = {"done": 0}

    def cb(p: FetchProgress) -> None:
        advance = max(0, p.queries_done - last["done"]) if p.stage != "entry" else 0
        last["done"] = p.queries_done
        progress(
            Progress(
                "fetch",
                advance,
                total=p.queries_total or None,
                unit="queries",
                message=f"{p.stage}: {p.resources} resources, {p.patients} patients",
            )
        )

    return cb


def fetch(
    url: str,
    trial: Trial,
    terminology: Terminology,
    options: ServerOptions,
    *,
    default_cache: Path,
    progress: ProgressCallback = no_progress,
    client: FhirClient | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fetch what ``trial`` needs from the server at ``url`` into a private NDJSON snapshot.

    Returns the snapshot folder (readable by the disk source) and the fetch record for run.json.
    """
    if options.strategy not in STRATEGIES:
        raise CriteriaError(f"unknown strategy {options.strategy!r}; use one of {STRATEGIES}")
    cache = private_dir(Path(options.cache_dir) if options.cache_dir else default_cache)
    client = client or build_client(url, options)
    if options.strategy == "full":
        report: FetchReport = fetch_all(
            client, FULL_TYPES, cache, progress=_fetch_progress(progress)
        )
    else:
        report = fetch_snapshot(
            client,
            funnel_plan(trial, terminology),
            cache,
            batch_size=options.batch_size,
            workers=options.concurrency,
            since=options.since,
            progress=_fetch_progress(progress),
        )
    record = {"strategy": options.strategy, **report.to_dict()}
    return cache, record
