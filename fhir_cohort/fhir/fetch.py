"""The funnel: fetch only the patients a plan can concern, into a Bulk-style NDJSON snapshot.

Step 1 searches the entry codes (in chunks, so URLs stay short) and collects patient ids.
Step 2 fetches, for those patients only, each follow-up resource type with batched
``patient=a,b,c`` queries on a bounded thread pool. Step 3 reads referenced Medications the
server did not ``_include``. Every finished query is journaled in ``fetch_state.json`` with its
resources in a staging file, so an interrupted fetch resumes without refetching; the snapshot
files are written atomically at the end. This module knows nothing about criteria: the plan is
plain data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir_cohort.errors import FhirCohortError, SourceError
from fhir_cohort.fhir.capability import check_plan, fetch_capability
from fhir_cohort.fhir.client import FhirClient, strip_query
from fhir_cohort.fhir.search import SearchQuery
from fhir_cohort.fhir.wire import reference_id
from fhir_cohort.files import PRIVATE_FILE_MODE, private_dir

__all__ = [
    "MEDICATION_TYPES",
    "STATE_FILE",
    "EntrySearch",
    "FetchPlan",
    "FetchProgress",
    "FetchReport",
    "FollowUp",
    "fetch_all",
    "fetch_snapshot",
    "read_state",
]

log = logging.getLogger("fhir_cohort.fhir")

STATE_FILE = "fetch_state.json"
STAGING_DIR = ".fetch_partial"
STATE_VERSION = 1
MEDICATION_TYPES = (
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
)


@dataclass(frozen=True)
class EntrySearch:
    """Find cohort patients: ``resource_type?param=token1,token2,...``.

    ``patient_element`` names the element holding the patient reference (ignored for Patient).
    """

    resource_type: str
    param: str
    tokens: tuple[str, ...]
    patient_element: str = "subject"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(dict.fromkeys(self.tokens)))
        if not self.tokens:
            raise ValueError(f"entry search on {self.resource_type}.{self.param} has no codes")


@dataclass(frozen=True)
class FollowUp:
    """Fetch ``resource_type`` for the cohort, batched by ``patient_param``.

    ``codes`` (with ``code_param``) restricts the query to those tokens; ``include`` lists
    ``_include`` specs, dropped when the server does not advertise them.
    """

    resource_type: str
    patient_param: str = "patient"
    code_param: str = "code"
    codes: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    # Optional: skipped (not refused) when the server does not advertise ``code_param``.
    optional: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple(dict.fromkeys(self.codes)))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "params", tuple((str(k), str(v)) for k, v in self.params))


@dataclass(frozen=True)
class FetchPlan:
    """Plain-data plan of a funnel fetch. ``entry`` accepts ``(type, param, tokens)`` triples."""

    entry: tuple[EntrySearch, ...]
    follow_ups: tuple[FollowUp, ...]
    resolve_medications: bool = True
    code_chunk: int = 100

    def __post_init__(self) -> None:
        entries = tuple(
            e if isinstance(e, EntrySearch) else EntrySearch(e[0], e[1], tuple(e[2]))
            for e in self.entry
        )
        if not entries:
            raise ValueError("a fetch plan needs at least one entry search")
        object.__setattr__(self, "entry", entries)
        object.__setattr__(self, "follow_ups", tuple(self.follow_ups))
        if self.code_chunk < 1:
            raise ValueError("code_chunk must be >= 1")

    @classmethod
    def standard(
        cls,
        entry_tokens: Iterable[str],
        *,
        observation_codes: Iterable[str] = (),
        procedure_codes: Iterable[str] | None = None,
        entry_type: str = "Condition",
        entry_param: str = "code",
        medication_include: bool = True,
    ) -> FetchPlan:
        """Patient, Condition, the four medication types (with their Medications), the
        Observations of ``observation_codes`` and, if given, the Procedures of ``procedure_codes``.

        >>> plan = FetchPlan.standard(["http://snomed.info/sct|55464009"],
        ...                           observation_codes=["http://loinc.org|82810-3"])
        >>> [f.resource_type for f in plan.follow_ups][:3]
        ['Patient', 'Condition', 'MedicationStatement']
        """
        follow: list[FollowUp] = [
            FollowUp("Patient", patient_param="_id"),
            FollowUp("Condition"),
        ]
        for mtype in MEDICATION_TYPES:
            inc = (f"{mtype}:medication",) if medication_include else ()
            follow.append(FollowUp(mtype, include=inc))
        obs = tuple(observation_codes)
        if obs:
            follow.append(FollowUp("Observation", codes=obs))
            # A panel whose component carries the test counts as that test (spec v1.1).
            follow.append(
                FollowUp("Observation", code_param="component-code", codes=obs, optional=True)
            )
        if procedure_codes is not None:
            follow.append(FollowUp("Procedure", codes=tuple(procedure_codes)))
        return cls(
            entry=(EntrySearch(entry_type, entry_param, tuple(entry_tokens)),),
            follow_ups=tuple(follow),
        )

    def needs(self, *, since: bool = False) -> dict[str, set[str]]:
        """Resource type -> search parameters the plan uses (for capability.check_plan)."""
        out: dict[str, set[str]] = {}
        for e in self.entry:
            out.setdefault(e.resource_type, set()).add(e.param)
        for f in self.follow_ups:
            if f.optional:
                continue
            ps = out.setdefault(f.resource_type, set())
            ps.add(f.patient_param)
            if f.codes:
                ps.add(f.code_param)
            ps.update(k for k, _ in f.params)
        if self.resolve_medications and any(
            f.resource_type in MEDICATION_TYPES for f in self.follow_ups
        ):
            out.setdefault("Medication", set()).add("_id")
        if since:
            for ps in out.values():
                ps.add("_lastUpdated")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FetchProgress:
    """What the progress callback receives after every finished query (and at each stage)."""

    stage: str  # "entry", "follow-up", "medications", "write"
    queries_done: int
    queries_total: int
    resources: int  # received so far in this run (including resumed queries)
    patients: int
    resumed: int  # queries skipped because the journal had them


@dataclass
class FetchReport:
    """For run.json: queries (patient ids redacted), traffic and what the snapshot holds."""

    base_url: str
    queries: list[dict[str, Any]]
    requests: int
    bytes_received: int
    retries: int
    seconds: float
    resources: dict[str, int]  # per type, in the snapshot on disk
    fetched: dict[str, int]  # per type, received in this run
    patients: int
    new_patients: int
    resumed_queries: int
    since: str | None
    snapshot_dir: str
    started_at: str
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Query:
    stage: str
    query: SearchQuery

    @property
    def key(self) -> str:
        raw = json.dumps([self.query.resource_type, self.query.params], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


ProgressCallback = Callable[[FetchProgress], None]


def _chunks(items: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), size):
        yield tuple(items[i : i + size])


def _format_since(since: datetime) -> str:
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via a temp file in the same directory, then rename over ``path``."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # snapshots hold patient data, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_ndjson(path: Path, resources: Iterable[Mapping[str, Any]]) -> None:
    def write(fh: Any) -> None:
        for res in resources:
            fh.write(json.dumps(res, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")

    _atomic_write(path, write)


def _read_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                res = json.loads(line)
            except ValueError:
                raise SourceError(f"{path}:{lineno}: not JSON") from None
            if isinstance(res, dict):
                yield res


def read_state(cache_dir: str | Path) -> dict[str, Any] | None:
    """The fetch journal of ``cache_dir`` (None if absent)."""
    path = Path(cache_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SourceError(f"{path}: fetch journal is not JSON") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SourceError(f"{path}: unknown fetch journal version")
    return state


def _patient_of(resource: Mapping[str, Any], element: str) -> str | None:
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return str(rid) if rid else None
    for name in (element, "subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, Mapping):
            pid = reference_id(ref, "Patient")
            if pid and not str(ref.get("reference", "")).startswith(("#", "urn:")):
                return pid
    return None


def _medication_refs(resource: Mapping[str, Any]) -> Iterator[str]:
    ref = resource.get("medicationReference")
    if isinstance(ref, Mapping):
        raw = str(ref.get("reference") or "")
        if raw and not raw.startswith(("#", "urn:")):
            mid = reference_id(raw, "Medication")
            if mid:
                yield mid


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
    """The later version of one resource (by meta.lastUpdated; ties go to ``b``)."""
    la = str((a.get("meta") or {}).get("lastUpdated") or "")
    lb = str((b.get("meta") or {}).get("lastUpdated") or "")
    return a if la > lb else b


class _Fetcher:
    def __init__(
        self,
        client: FhirClient,
        plan: FetchPlan,
        cache_dir: Path,
        *,
        batch_size: int,
        workers: int,
        since: datetime | None,
        progress: ProgressCallback | None,
    ) -> None:
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be >= 1")
        self.client = client
        self.plan = plan
        self.dir = cache_dir
        self.staging = cache_dir / STAGING_DIR
        self.batch_size = batch_size
        self.workers = workers
        self.since = _format_since(since) if since is not None else None
        self.progress = progress
        self.state: dict[str, Any] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.report_queries: list[dict[str, Any]] = []
        self.fetched: dict[str, int] = {}
        self.received = 0
        self.resumed = 0
        self.patients: set[str] = set()

    # -- journal ---------------------------------------------------------------------------

    def _save_state(self) -> None:
        self.state["completed"] = self.done
        text = json.dumps(self.state, indent=1, sort_keys=True)
        _atomic_write(self.dir / STATE_FILE, lambda fh: fh.write(text))

    def _open_journal(self) -> tuple[set[str], bool]:
        """Load or start the journal; returns (previous cohort, whether the fetch is a delta)."""
        private_dir(self.dir)
        old = read_state(self.dir)
        base = strip_query(self.client.base_url)
        fp = self.plan.fingerprint()
        same_run = (
            old is not None
            and old.get("status") == "in_progress"
            and old.get("plan") == fp
            and old.get("base_url") == base
            and old.get("since") == self.since
        )
        if same_run:
            assert old is not None
            self.state = old
            self.done = {
                k: v
                for k, v in (old.get("completed") or {}).items()
                if (self.staging / f"{k}.ndjson").exists()
            }
            previous = set(old.get("previous_patients") or [])
            log.debug("resuming fetch: %d queries already done", len(self.done))
            return previous, self.since is not None
        previous: set[str] = set()
        if self.since is not None:
            if old is None or old.get("status") != "complete" or old.get("base_url") != base:
                raise SourceError(
                    f"{self.dir}: a fetch with 'since' needs a complete earlier snapshot of "
                    f"{base} in this cache directory"
                )
            if old.get("plan") != fp:
                raise SourceError(
                    f"{self.dir}: the cached snapshot was fetched with a different plan; "
                    "fetch it again without 'since'"
                )
            previous = set(old.get("patients") or [])
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.state = {
            "version": STATE_VERSION,
            "status": "in_progress",
            "plan": fp,
            "base_url": base,
            "since": self.since,
            "started_at": _now_iso(),
            "previous_patients": sorted(previous),
            "previous_fetched_at": (old or {}).get("fetched_at"),
        }
        self.done = {}
        self._save_state()
        return previous, self.since is not None

    # -- running queries -------------------------------------------------------------------

    def _execute(self, q: _Query) -> tuple[str, dict[str, int]]:
        """Run one query to the last page, stage its resources; returns (key, counts)."""
        counts: dict[str, int] = {}
        resources: list[dict[str, Any]] = []
        for entry in self.client.iter_resources(q.query):
            resources.append(entry.resource)
            rtype = entry.resource["resourceType"]
            counts[rtype] = counts.get(rtype, 0) + 1
        _write_ndjson(self.staging / f"{q.key}.ndjson", resources)
        return q.key, counts

    def _notify(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(
                FetchProgress(stage, done, total, self.received, len(self.patients), self.resumed)
            )

    def _record(self, q: _Query, counts: Mapping[str, int], resumed: bool) -> None:
        n = sum(counts.values())
        self.received += n
        for rtype, c in counts.items():
            self.fetched[rtype] = self.fetched.get(rtype, 0) + (0 if resumed else c)
        self.report_queries.append(
            {"stage": q.stage, "query": q.query.describe(), "resources": n, "resumed": resumed}
        )

    def run_stage(self, stage: str, queries: list[_Query]) -> None:
        total = len(queries)
        todo: list[_Query] = []
        done_count = 0
        for q in queries:
            if q.key in self.done:
                self.resumed += 1
                done_count += 1
                self._record(q, self.done[q.key]["counts"], resumed=True)
            else:
                todo.append(q)
        self._notify(stage, done_count, total)
        if not todo:
            return
        by_key = {q.key: q for q in todo}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fhir-fetch")
        try:
            pending: set[Future[tuple[str, dict[str, int]]]] = {
                pool.submit(self._execute, q) for q in todo
            }
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    key, counts = fut.result()  # a failed query fails the fetch (journal kept)
                    q = by_key[key]
                    self.done[key] = {"stage": stage, "counts": counts}
                    self._save_state()
                    self._record(q, counts, resumed=False)
                    done_count += 1
                    self._notify(stage, done_count, total)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _staged(self, queries: Iterable[_Query]) -> Iterator[dict[str, Any]]:
        for q in queries:
            path = self.staging / f"{q.key}.ndjson"
            if path.exists():
                yield from _read_ndjson(path)

    # -- the funnel ------------------------------------------------------------------------

    def _with_since(self, params: list[tuple[str, str]], delta: bool) -> list[tuple[str, str]]:
        if delta and self.since is not None:
            params.append(("_lastUpdated", f"gt{self.since}"))
        return params

    def entry_queries(self) -> list[_Query]:
        out = []
        for e in self.plan.entry:
            for chunk in _chunks(e.tokens, self.plan.code_chunk):
                params = self._with_since([(e.param, ",".join(chunk))], delta=True)
                out.append(_Query("entry", SearchQuery(e.resource_type, tuple(params))))
        return out

    def follow_up_queries(
        self,
        patients: Sequence[str],
        delta: bool,
        includes_ok: Callable[[str], bool],
        param_ok: Callable[[str, str], bool] = lambda _t, _p: True,
    ) -> list[_Query]:
        out = []
        for f in self.plan.follow_ups:
            if f.optional and not param_ok(f.resource_type, f.code_param):
                continue
            code_chunks: list[tuple[str, ...] | None] = (
                list(_chunks(f.codes, self.plan.code_chunk)) if f.codes else [None]
            )
            for batch in _chunks(patients, self.batch_size):
                for codes in code_chunks:
                    params: list[tuple[str, str]] = [(f.patient_param, ",".join(batch))]
                    if codes is not None:
                        params.append((f.code_param, ",".join(codes)))
                    params.extend(f.params)
                    params.extend(("_include", spec) for spec in f.include if includes_ok(spec))
                    params = self._with_since(params, delta)
                    out.append(_Query("follow-up", SearchQuery(f.resource_type, tuple(params))))
        return out

    def run(self) -> FetchReport:
        started = time.perf_counter()
        stats0 = self.client.stats.snapshot()
        cap = fetch_capability(self.client)
        check_plan(cap, self.plan.needs(since=self.since is not None))
        previous, delta = self._open_journal()
        started_at = str(self.state.get("started_at"))

        entry = self.entry_queries()
        self.run_stage("entry", entry)
        found: set[str] = set()
        elements = {e.resource_type: e.patient_element for e in self.plan.entry}
        for res in self._staged(entry):
            pid = _patient_of(res, elements.get(res.get("resourceType", ""), "subject"))
            if pid:
                found.add(pid)
        new = sorted(found - previous)
        old = sorted(previous)
        self.patients = found | previous

        follow = self.follow_up_queries(new, False, cap.supports_include, cap.supports_param)
        if delta:
            follow += self.follow_up_queries(old, True, cap.supports_include, cap.supports_param)
        self.run_stage("follow-up", follow)

        meds: list[_Query] = []
        if self.plan.resolve_medications:
            have: set[str] = set()
            wanted: set[str] = set()
            for res in self._staged(follow):
                if res.get("resourceType") == "Medication" and res.get("id"):
                    have.add(str(res["id"]))
                wanted.update(_medication_refs(res))
            if delta:
                have.update(self._snapshot_ids("Medication"))
            missing = sorted(wanted - have)
            meds = [
                _Query("medications", SearchQuery("Medication", (("_id", ",".join(b)),)))
                for b in _chunks(missing, self.batch_size)
            ]
            self.run_stage("medications", meds)

        self._notify("write", 0, 1)
        counts, files = self._write_snapshot([*entry, *follow, *meds], delta)
        self.state.update(
            status="complete",
            patients=sorted(self.patients),
            fetched_at=started_at,
            completed_at=_now_iso(),
            resources=counts,
        )
        self.done = {}
        self._save_state()
        shutil.rmtree(self.staging, ignore_errors=True)
        self._notify("write", 1, 1)

        stats1 = self.client.stats.snapshot()
        return FetchReport(
            base_url=strip_query(self.client.base_url),
            queries=self.report_queries,
            requests=int(stats1["requests"] - stats0["requests"]),
            bytes_received=int(stats1["bytes_received"] - stats0["bytes_received"]),
            retries=int(stats1["retries"] - stats0["retries"]),
            seconds=round(time.perf_counter() - started, 3),
            resources=counts,
            fetched=dict(sorted(self.fetched.items())),
            patients=len(self.patients),
            new_patients=len(new),
            resumed_queries=self.resumed,
            since=self.since,
            snapshot_dir=str(self.dir),
            started_at=started_at,
            files=files,
        )

    # -- snapshot --------------------------------------------------------------------------

    def _snapshot_ids(self, rtype: str) -> set[str]:
        path = self.dir / f"{rtype}.ndjson"
        if not path.exists():
            return set()
        return {str(r["id"]) for r in _read_ndjson(path) if r.get("id")}

    def _write_snapshot(
        self, queries: Sequence[_Query], delta: bool
    ) -> tuple[dict[str, int], list[str]]:
        merged: dict[str, dict[str, Mapping[str, Any]]] = {}
        if delta:
            for path in sorted(self.dir.glob("*.ndjson")):
                rtype = path.name[: -len(".ndjson")]
                bucket = merged.setdefault(rtype, {})
                for res in _read_ndjson(path):
                    if res.get("id"):
                        bucket[str(res["id"])] = res
        fresh: dict[str, dict[str, Mapping[str, Any]]] = {}
        for res in self._staged(queries):
            rtype, rid = res.get("resourceType"), res.get("id")
            if not isinstance(rtype, str) or not rid:
                continue  # a resource without id cannot be deduplicated or referenced
            bucket = fresh.setdefault(rtype, {})
            rid = str(rid)
            bucket[rid] = _newer(bucket[rid], res) if rid in bucket else res
        for rtype, bucket in fresh.items():
            merged.setdefault(rtype, {}).update(bucket)  # changed resources replace by id
        counts: dict[str, int] = {}
        files: list[str] = []
        for rtype in sorted(merged):
            bucket = merged[rtype]
            path = self.dir / f"{rtype}.ndjson"
            _write_ndjson(path, (bucket[k] for k in sorted(bucket)))
            counts[rtype] = len(bucket)
            files.append(path.name)
        if not delta:
            # a full fetch replaces the snapshot: drop files of types no longer present
            for path in self.dir.glob("*.ndjson"):
                if path.name[: -len(".ndjson")] not in merged:
                    path.unlink()
        return counts, files


def fetch_snapshot(
    client: FhirClient,
    plan: FetchPlan,
    cache_dir: str | Path,
    *,
    batch_size: int = 500,
    workers: int = 4,
    since: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> FetchReport:
    """Run the funnel and write ``<Type>.ndjson`` files plus ``fetch_state.json`` in ``cache_dir``.

    Checks the server's CapabilityStatement first (CapabilityError listing everything missing).
    An interrupted run (error, Ctrl-C, a progress callback that raises) resumes on the next call
    with the same plan, server and ``since``, skipping journaled queries. With ``since`` the
    cohort's resources changed after that instant are merged into the existing snapshot
    (replaced by id) and patients new to the cohort are fetched in full; deletions on the server
    are not seen by a ``since`` fetch.
    """
    fetcher = _Fetcher(
        client,
        plan,
        Path(cache_dir),
        batch_size=batch_size,
        workers=workers,
        since=since,
        progress=progress,
    )
    try:
        return fetcher.run()
    except FhirCohortError:
        raise
    except OSError as exc:
        raise SourceError(f"{cache_dir}: cannot write the snapshot: {exc.strerror}") from None


def fetch_all(
    client: FhirClient,
    resource_types: Sequence[str],
    cache_dir: str | Path,
    *,
    count: int = 1000,
    progress: ProgressCallback | None = None,
) -> FetchReport:
    """The naive pull: every resource of ``resource_types``, one paged search per type.

    For small servers, for checking the funnel, and as the baseline it is measured against.
    Each type's file is written atomically once its search has paged to the end.
    """
    cache = private_dir(cache_dir)
    started = _now_iso()
    t0 = time.perf_counter()
    requests0, bytes0 = client.stats.requests, client.stats.bytes_received
    retries0 = client.stats.retries
    counts: dict[str, int] = {}
    queries: list[dict[str, Any]] = []
    patients: set[str] = set()
    for done, rtype in enumerate(resource_types, 1):
        query = SearchQuery(rtype)
        found: dict[str, dict[str, Any]] = {}
        for entry in client.iter_resources(query, count=count):
            res = entry.resource
            if res.get("resourceType") == rtype and isinstance(res.get("id"), str):
                found[res["id"]] = res
        _write_ndjson(cache / f"{rtype}.ndjson", (found[k] for k in sorted(found)))
        counts[rtype] = len(found)
        if rtype == "Patient":
            patients.update(found)
        queries.append({"stage": "full", "query": query.describe(), "resources": len(found)})
        if progress is not None:
            progress(
                FetchProgress(
                    "full", done, len(resource_types), sum(counts.values()), len(patients), 0
                )
            )
    return FetchReport(
        base_url=strip_query(client.base_url),
        queries=queries,
        requests=client.stats.requests - requests0,
        bytes_received=client.stats.bytes_received - bytes0,
        retries=client.stats.retries - retries0,
        seconds=round(time.perf_counter() - t0, 3),
        resources=dict(counts),
        fetched=dict(counts),
        patients=len(patients),
        new_patients=len(patients),
        resumed_queries=0,
        since=None,
        snapshot_dir=str(cache),
        started_at=started,
        files=sorted(f"{t}.ndjson" for t in counts),
    )
