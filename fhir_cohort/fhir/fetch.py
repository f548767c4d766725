"""The funnel: fetch only the patients a plan can concern, into a Bulk-style NDJSON snapshot.

Step 1 searches the entry codes (in chunks, so URLs stay short) and collects patient ids.
Step 2 fetches, for those patients only, each follow-up resource type with batched
``patient=a,b,c`` queries on a bounded thread pool. Step 3 reads referenced Medications the
server did not ``_include``. The full pull (:func:`fetch_all`) runs one paged search per type
through the same machinery.

Resume: every page is appended (fsync) to the query's staging file, then the journal
``fetch_state.json`` (atomic rename) records the page count, the byte length of the staging
file and the page's ``next`` link; a re-run truncates the staging file to the journaled length
and continues at that link (or restarts the search when the server rejects it). The snapshot
files are written atomically at the end and the journal marked complete; a complete snapshot is
reused without any request only when the caller allows it (``reuse``), since it may be stale.
This module knows nothing about criteria: the plan is plain data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from fhir_cohort.errors import (
    AuthError,
    CrawlIncompleteError,
    FhirCohortError,
    FhirHttpError,
    OptionError,
    OriginError,
    SourceError,
)
from fhir_cohort.fhir.capability import check_plan, fetch_capability
from fhir_cohort.fhir.client import FhirClient, strip_query
from fhir_cohort.fhir.ndjson import iter_objects, write_ndjson
from fhir_cohort.fhir.search import SearchQuery, _next_link, iter_entries, iter_pages
from fhir_cohort.fhir.wire import reference_id
from fhir_cohort.files import PRIVATE_FILE_MODE, private_dir, private_writer
from fhir_cohort.progress import ProgressCallback, StageProgress

__all__ = [
    "MEDICATION_TYPES",
    "STATE_FILE",
    "EntrySearch",
    "FetchPlan",
    "FetchReport",
    "FollowUp",
    "Reuse",
    "fetch_all",
    "fetch_snapshot",
    "mark_used",
    "read_state",
]

log = logging.getLogger("fhir_cohort.fhir")

STATE_FILE = "fetch_state.json"
STAGING_DIR = ".fetch_partial"
STATE_VERSION = 2
# Resources per search page (_count). Read at call time, so tests can make pages small.
PAGE_SIZE = 1000
# When a complete snapshot in the cache may be returned instead of fetching again:
# never; "unused" = only if no consumer has marked it used (mark_used) since it was fetched,
# i.e. the run that fetched it was interrupted; "always" = the user accepts possibly stale data.
Reuse = Literal["never", "unused", "always"]
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
            raise OptionError(f"entry search on {self.resource_type}.{self.param} has no codes")


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
            raise OptionError("a fetch plan needs at least one entry search")
        object.__setattr__(self, "entry", entries)
        object.__setattr__(self, "follow_ups", tuple(self.follow_ups))
        if self.code_chunk < 1:
            raise OptionError(f"code_chunk must be >= 1, not {self.code_chunk}")

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
        medications: bool = True,
    ) -> FetchPlan:
        """Patient, Condition, the four medication types (with their Medications; none when
        not ``medications``), the Observations of ``observation_codes`` and, if given, the
        Procedures of ``procedure_codes``.

        >>> plan = FetchPlan.standard(["http://snomed.info/sct|55464009"],
        ...                           observation_codes=["http://loinc.org|82810-3"])
        >>> [f.resource_type for f in plan.follow_ups][:3]
        ['Patient', 'Condition', 'MedicationStatement']
        """
        follow: list[FollowUp] = [
            FollowUp("Patient", patient_param="_id"),
            FollowUp("Condition"),
        ]
        for mtype in MEDICATION_TYPES if medications else ():
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
            resolve_medications=medications,
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
    strategy: str = "funnel"
    # pages read from the journal of an interrupted run instead of the server
    resumed_pages: int = 0
    # searches started over because the server rejected a stored next link
    restarted_queries: int = 0
    # True: a complete snapshot was returned as it was (no request); started_at is its data cut
    reused: bool = False
    # crawl only: who was listed, screened, not found, merged, left the list (counts, no ids)
    cohort: dict[str, Any] | None = None

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


def _chunks(items: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), size):
        yield tuple(items[i : i + size])


def _format_since(since: datetime) -> str:
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(cache_dir: str | Path) -> dict[str, Any] | None:
    """The fetch journal of ``cache_dir`` (None if absent)."""
    path = Path(cache_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SourceError(f"{path}: fetch journal is not JSON") from None
    if not isinstance(state, dict) or state.get("version") not in (1, STATE_VERSION):
        raise SourceError(f"{path}: unknown fetch journal version")
    return state


def _write_state(cache_dir: Path, state: Mapping[str, Any]) -> None:
    text = json.dumps(state, indent=1, sort_keys=True)
    with private_writer(cache_dir / STATE_FILE) as fh:
        fh.write(text)


def mark_used(cache_dir: str | Path) -> bool:
    """Record that the complete snapshot in ``cache_dir`` has been consumed (screened and its
    outputs written), so a later fetch with ``reuse="unused"`` fetches fresh data instead of
    returning it. Returns False when there is no complete snapshot to mark."""
    cache = Path(cache_dir)
    state = read_state(cache)
    if state is None or state.get("status") != "complete":
        return False
    state["used_at"] = _now_iso()
    _write_state(cache, state)
    return True


# A stage stops early once this many of its searches failed and more failed than worked.
STOP_AFTER_FAILURES = 5


def _one_search_failed(exc: BaseException | None) -> bool:
    """A search that failed after its retries, which the stage's other searches need not
    share: an HTTP error or a broken connection; not an auth or origin refusal (those hold for
    every search), a Ctrl-C or a bug."""
    return isinstance(exc, FhirHttpError) and not isinstance(exc, (AuthError, OriginError))


class _Stopped(Exception):
    """Raised in a worker between pages when the stage is being abandoned (error, Ctrl-C)."""


class _Staging:
    """The staging file of one query: pages are appended and fsynced before the journal names
    them; opening truncates it to the journaled length (what a crash appended after is lost)."""

    def __init__(self, path: Path, keep: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        self.fh: BinaryIO = os.fdopen(fd, "r+b")
        self.truncate(keep)

    def truncate(self, size: int) -> None:
        self.fh.truncate(size)
        self.fh.seek(size)

    def append(self, resources: Iterable[Mapping[str, Any]], *, sync: bool = True) -> int:
        data = b"".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            for r in resources
        )
        self.fh.write(data)
        if sync:
            self.sync()
        return self.fh.tell()

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _has_bytes(path: Path, size: object, *, exact: bool = False) -> bool:
    """Whether ``path`` holds the ``size`` bytes the journal recorded (more: a crash appended
    a page the journal never named, cut off on resume)."""
    if not isinstance(size, int) or not path.is_file():
        return False
    actual = path.stat().st_size
    return actual == size if exact else actual >= size


def _link_rejected(exc: FhirHttpError) -> bool:
    """A stored next link the server refuses (expired paging state): 4xx other than auth and
    throttling, which have their own handling."""
    return (
        not isinstance(exc, AuthError)
        and exc.status is not None
        and 400 <= exc.status < 500
        and exc.status != 429
    )


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
        plan: FetchPlan | None,
        cache_dir: Path,
        *,
        batch_size: int,
        workers: int,
        since: datetime | None,
        progress: ProgressCallback | None,
        page_size: int | None = None,
        reuse: Reuse = "never",
        run_key: Mapping[str, Any] | None = None,
        full_types: Sequence[str] = (),
    ) -> None:
        page_size = PAGE_SIZE if page_size is None else page_size
        for name, value in (("batch_size", batch_size), ("workers", workers), ("count", page_size)):
            if not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be an integer >= 1, not {value!r}")
        if reuse not in ("never", "unused", "always"):
            raise OptionError(f"reuse must be 'never', 'unused' or 'always', not {reuse!r}")
        self.client = client
        self.plan = plan
        self.full_types = tuple(full_types)
        self.strategy = "full" if plan is None else "funnel"
        self.dir = cache_dir
        self.staging = cache_dir / STAGING_DIR
        self.batch_size = batch_size
        self.workers = workers
        self.page_size = page_size
        self.reuse: Reuse = reuse
        self.run_key = dict(run_key or {})
        self.since = _format_since(since) if since is not None else None
        self.progress = StageProgress(progress, "fetch", "queries")
        self.state: dict[str, Any] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.partial: dict[str, dict[str, Any]] = {}
        self.report_queries: list[dict[str, Any]] = []
        self.fetched: dict[str, int] = {}
        self.received = 0
        self.resumed = 0
        self.resumed_pages = 0
        self.restarted = 0
        self.patients: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fresh = False
        # The crawl finishes a stage's other searches when one fails after its retries (the
        # funnel stops at once: its stages are few and every search matters to the next)
        self.keep_going = False

    # -- journal ---------------------------------------------------------------------------

    def fingerprint(self) -> str:
        if self.plan is not None:
            return self.plan.fingerprint()
        raw = json.dumps(["full", list(self.full_types)], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def key(self) -> dict[str, Any]:
        """What a journal must match to be resumed or reused."""
        return {
            "base_url": strip_query(self.client.base_url),
            "strategy": self.strategy,
            "plan": self.fingerprint(),
            "page_size": self.page_size,
            "since": self.since,
            "run": self.run_key,
        }

    def _save_state(self) -> None:
        """Write the journal; callers hold ``self._lock`` once workers run."""
        self.state["completed"] = self.done
        self.state["partial"] = self.partial
        _write_state(self.dir, self.state)

    def _intact(self, old: Mapping[str, Any]) -> bool:
        files = old.get("files")
        if not isinstance(files, dict) or not files:
            return False
        for name, size in files.items():
            path = self.dir / name
            if not path.is_file() or path.stat().st_size != size:
                return False
        return True

    def _open_journal(self) -> tuple[set[str], bool, dict[str, Any] | None]:
        """Load or start the journal: (previous cohort, whether the fetch is a delta, the
        complete state to reuse as it is or None)."""
        private_dir(self.dir)
        old = read_state(self.dir)
        key = self.key()
        base, fp = key["base_url"], key["plan"]
        if old is not None and old.get("key") == key:
            if old.get("status") == "in_progress":
                self.state = old
                self.done = {
                    k: v
                    for k, v in (old.get("completed") or {}).items()
                    if _has_bytes(self.staging / f"{k}.ndjson", v.get("bytes"), exact=True)
                }
                self.partial = dict(old.get("partial") or {})
                log.info(
                    "resuming the fetch in %s: %d searches and %d pages of %d more already done",
                    self.dir,
                    len(self.done),
                    sum(int(p.get("pages", 0)) for p in self.partial.values()),
                    len(self.partial),
                )
                return set(old.get("previous_patients") or []), self.since is not None, None
            if old.get("status") == "complete":
                allowed = self.reuse == "always" or (
                    self.reuse == "unused" and not old.get("used_at")
                )
                if allowed and self._intact(old):
                    log.info("reusing the complete snapshot in %s (no request)", self.dir)
                    return set(), False, old
                if allowed:
                    log.info("the snapshot files in %s changed: fetching again", self.dir)
                elif self.reuse == "unused":
                    log.info(
                        "the snapshot in %s was fetched for an earlier finished run: fetching "
                        "again (reuse it with --reuse-export)",
                        self.dir,
                    )
        elif old is not None and not (self.since is not None and old.get("status") == "complete"):
            theirs = old.get("key") or {}
            differs = sorted(k for k in key if theirs.get(k) != key[k]) or ["version"]
            log.info(
                "the fetch journal in %s is for another %s: starting over",
                self.dir,
                ", ".join(differs),
            )
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
        self.state = {
            "version": STATE_VERSION,
            "status": "in_progress",
            "key": key,
            "plan": fp,
            "base_url": base,
            "since": self.since,
            "started_at": _now_iso(),
            "previous_patients": sorted(previous),
            "previous_fetched_at": (old or {}).get("fetched_at"),
        }
        self.done = {}
        self.partial = {}
        self._fresh = True
        return previous, self.since is not None, None

    def _start(self) -> None:
        """Write the journal of a fresh fetch (after the capability check passed)."""
        if self._fresh:
            if self.staging.exists():
                shutil.rmtree(self.staging)
            self._save_state()
            self._fresh = False

    # -- running queries -------------------------------------------------------------------

    def _execute(self, q: _Query) -> tuple[str, dict[str, Any], dict[str, int]]:
        """Run one query to its last page, appending each page to its staging file and
        journaling it; returns (key, its journal entry, resources received in this run)."""
        path = self.staging / f"{q.key}.ndjson"
        with self._lock:
            part = self.partial.get(q.key)
        if part is not None and not (part.get("next") and _has_bytes(path, part.get("bytes"))):
            part = None
        fresh: dict[str, int] = {}
        entry: dict[str, Any] = (
            dict(part, counts=dict(part.get("counts") or {}))
            if part is not None
            else {"stage": q.stage, "counts": {}, "pages": 0, "bytes": 0}
        )
        staging = _Staging(path, int(entry["bytes"]))
        try:
            continuing = part is not None
            if continuing:
                with self._lock:
                    self.resumed_pages += int(entry["pages"])
            pages = iter_pages(
                self.client,
                q.query,
                count=self.page_size,
                start_url=str(entry["next"]) if continuing else None,
            )
            while True:
                if self._stop.is_set():
                    raise _Stopped
                try:
                    bundle: dict[str, Any] | None = next(pages)
                except StopIteration:
                    break
                except FhirHttpError as exc:
                    if not (continuing and _link_rejected(exc)):
                        raise
                    bundle, why = None, f"the server rejected its stored next link ({exc.status})"
                if continuing:
                    continuing = False
                    total = entry.get("total")
                    if bundle is not None and total is not None and bundle.get("total") != total:
                        bundle, why = None, "its result set changed (Bundle.total)"
                    if bundle is None:
                        # never splice pages of two result sets: drop the partial rows
                        log.info(
                            "%s: %s; restarting it from its first page", q.query.describe(), why
                        )
                        staging.truncate(0)
                        entry = {"stage": q.stage, "counts": {}, "pages": 0, "bytes": 0}
                        with self._lock:
                            self.restarted += 1
                        pages = iter_pages(self.client, q.query, count=self.page_size)
                        continue
                assert bundle is not None
                resources = [e.resource for e in iter_entries([bundle])]
                entry["bytes"] = staging.append(resources)
                for res in resources:
                    rtype = str(res["resourceType"])
                    entry["counts"][rtype] = entry["counts"].get(rtype, 0) + 1
                    fresh[rtype] = fresh.get(rtype, 0) + 1
                if entry["pages"] == 0 and isinstance(bundle.get("total"), int):
                    entry["total"] = bundle["total"]
                entry["pages"] += 1
                nxt = _next_link(bundle)
                entry["next"] = self.client.url(nxt) if nxt else None
                if nxt:
                    with self._lock:
                        self.partial[q.key] = dict(entry, counts=dict(entry["counts"]))
                        self._save_state()
        finally:
            staging.close()
        entry.pop("next", None)
        entry.pop("total", None)
        return q.key, entry, fresh

    def _notify(self, stage: str, done: int, total: int) -> None:
        message = f"{stage}: {self.received} resources, {len(self.patients)} patients"
        self.progress(stage, done, total, message)

    def _record(
        self, q: _Query, counts: Mapping[str, int], fresh: Mapping[str, int], resumed: bool
    ) -> None:
        n = sum(counts.values())
        self.received += n
        for rtype, c in fresh.items():
            self.fetched[rtype] = self.fetched.get(rtype, 0) + c
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
                self._record(q, self.done[q.key]["counts"], {}, resumed=True)
            else:
                todo.append(q)
        self._notify(stage, done_count, total)
        if not todo:
            return
        private_dir(self.staging)
        by_key = {q.key: q for q in todo}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fhir-fetch")
        failures: list[tuple[_Query, FhirHttpError]] = []
        succeeded = 0
        # Two searches per worker in flight, the next submitted as one finishes: a failing
        # server stops the stage after STOP_AFTER_FAILURES plus at most those in flight,
        # however late this thread wakes (with every search queued at once, a worker could
        # run several more before the stop was seen).
        queue = iter(todo)
        submitted: dict[Future[tuple[str, dict[str, Any], dict[str, int]]], _Query] = {}
        pending: set[Future[tuple[str, dict[str, Any], dict[str, int]]]] = set()

        def refill() -> None:
            while len(pending) < 2 * self.workers:
                q = next(queue, None)
                if q is None:
                    return
                fut = pool.submit(self._execute, q)
                submitted[fut] = q
                pending.add(fut)

        try:
            refill()
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                # searches that finished are journaled before a failed one fails the fetch,
                # whatever order the two completed in, so a rerun does not ask for them again
                failed = [f for f in finished if f.exception() is not None]
                for fut in [f for f in finished if f.exception() is None]:
                    key, entry, fresh = fut.result()
                    q = by_key[key]
                    with self._lock:
                        self.partial.pop(key, None)
                        self.done[key] = entry
                        self._save_state()
                    self._record(q, entry["counts"], fresh, resumed=False)
                    done_count += 1
                    succeeded += 1
                    self._notify(stage, done_count, total)
                for fut in failed:
                    exc = fut.exception()
                    if not (self.keep_going and _one_search_failed(exc)):
                        fut.result()
                    assert isinstance(exc, FhirHttpError)
                    failures.append((submitted[fut], exc))
                    log.warning("%s: a search failed after its retries", stage)
                if failures and len(failures) >= STOP_AFTER_FAILURES and len(failures) > succeeded:
                    break  # more failing than working: the server, not one patient
                refill()
        except BaseException:
            # other searches stop at their next page boundary, their pages journaled
            self._stop.set()
            raise
        finally:
            if failures:
                self._stop.set()  # searches still running stop at a page boundary, journaled
            pool.shutdown(wait=True, cancel_futures=True)
            self._stop.clear()
        if failures:
            raise self._incomplete(stage, failures, total, done_count)

    def _incomplete(
        self, stage: str, failures: list[tuple[_Query, FhirHttpError]], total: int, done: int
    ) -> CrawlIncompleteError:
        """The error that ends a stage some of whose searches failed: counts only."""
        patients: set[str] = set()
        for q, _ in failures:
            for query in getattr(q, "queries", (q.query,)):
                for name, value in query.params:
                    if name in ("patient", "subject", "_id", "identifier"):
                        patients.update(v for v in value.split(",") if v)
        first = failures[0][1]
        why = f"HTTP {first.status}" if first.status is not None else first.message[:120]
        stopped = total - done - len(failures)
        return CrawlIncompleteError(
            f"{stage}: {len(failures)} of {total} tasks failed after their retries "
            f"(searches of {len(patients)} patients; the first: {why})"
            + (f"; {stopped} more not run (more searches failed than worked)" if stopped else "")
            + f"; every other search is saved in {self.dir}: no patient was screened with part "
            "of their records. Run the same command again to fetch only what is missing"
        )

    def _staged(self, queries: Iterable[_Query]) -> Iterator[dict[str, Any]]:
        for q in queries:
            path = self.staging / f"{q.key}.ndjson"
            if path.exists():
                yield from iter_objects(path)

    # -- the funnel ------------------------------------------------------------------------

    def _with_since(self, params: list[tuple[str, str]], delta: bool) -> list[tuple[str, str]]:
        if delta and self.since is not None:
            params.append(("_lastUpdated", f"gt{self.since}"))
        return params

    def entry_queries(self) -> list[_Query]:
        assert self.plan is not None
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
        assert self.plan is not None
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

    def _funnel(self, previous: set[str], delta: bool) -> tuple[list[_Query], int]:
        assert self.plan is not None
        cap = fetch_capability(self.client)
        check_plan(cap, self.plan.needs(since=self.since is not None))
        self._start()
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
        return [*entry, *follow, *meds], len(new)

    def _stages(self, previous: set[str], delta: bool) -> tuple[list[_Query], int]:
        """Run every search of the fetch: (the queries whose staging files make the
        snapshot, patients new to it). The crawl (fhir/crawl.py) brings its own."""
        if self.plan is not None:
            return self._funnel(previous, delta)
        return self._full()

    def _keep(self, resource: Mapping[str, Any]) -> bool:
        """Whether a resource goes into the snapshot (the crawl drops patients who left)."""
        return True

    def _full(self) -> tuple[list[_Query], int]:
        queries = [_Query("full", SearchQuery(rtype)) for rtype in self.full_types]
        self._start()
        self.run_stage("full", queries)
        return queries, 0

    def run(self) -> FetchReport:
        started = time.perf_counter()
        stats0 = self.client.stats.snapshot()
        # the journal first: a reused snapshot costs no request, not even the capabilities
        previous, delta, complete = self._open_journal()
        if complete is not None:
            return self._reused(complete, started)
        started_at = str(self.state.get("started_at"))

        queries, new_patients = self._stages(previous, delta)
        self._notify("write", 0, 1)
        counts, files = self._write_snapshot(queries, delta)
        if self.strategy == "full":
            self.patients = self._snapshot_ids("Patient")
            new_patients = len(self.patients)
        self.state.update(
            status="complete",
            patients=sorted(self.patients),
            fetched_at=started_at,
            completed_at=_now_iso(),
            resources=counts,
            files={name: (self.dir / name).stat().st_size for name in files},
            queries=[
                {"stage": q["stage"], "query": q["query"], "resources": q["resources"]}
                for q in self.report_queries
            ],
            used_at=None,
        )
        self.done = {}
        self.partial = {}
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
            new_patients=new_patients,
            resumed_queries=self.resumed,
            since=self.since,
            snapshot_dir=str(self.dir),
            started_at=started_at,
            files=files,
            strategy=self.strategy,
            resumed_pages=self.resumed_pages,
            restarted_queries=self.restarted,
            cohort=self.state.get("cohort"),
        )

    def _reused(self, state: Mapping[str, Any], started: float) -> FetchReport:
        queries = [dict(q, resumed=True) for q in state.get("queries") or []]
        self._notify("write", 1, 1)
        return FetchReport(
            base_url=strip_query(self.client.base_url),
            queries=queries,
            requests=0,
            bytes_received=0,
            retries=0,
            seconds=round(time.perf_counter() - started, 3),
            resources=dict(state.get("resources") or {}),
            fetched={},
            patients=len(state.get("patients") or []),
            new_patients=0,
            resumed_queries=len(queries),
            since=self.since,
            snapshot_dir=str(self.dir),
            started_at=str(state.get("fetched_at")),
            files=sorted(state.get("files") or {}),
            strategy=self.strategy,
            reused=True,
            cohort=state.get("cohort"),
        )

    # -- snapshot --------------------------------------------------------------------------

    def _snapshot_ids(self, rtype: str) -> set[str]:
        path = self.dir / f"{rtype}.ndjson"
        if not path.exists():
            return set()
        return {str(r["id"]) for r in iter_objects(path) if r.get("id")}

    def _write_snapshot(
        self, queries: Sequence[_Query], delta: bool
    ) -> tuple[dict[str, int], list[str]]:
        merged: dict[str, dict[str, Mapping[str, Any]]] = {}
        if delta:
            for path in sorted(self.dir.glob("*.ndjson")):
                rtype = path.name[: -len(".ndjson")]
                bucket = merged.setdefault(rtype, {})
                for res in iter_objects(path):
                    if res.get("id") and self._keep(res):
                        bucket[str(res["id"])] = res
        fresh: dict[str, dict[str, Mapping[str, Any]]] = {}
        for res in self._staged(queries):
            rtype, rid = res.get("resourceType"), res.get("id")
            if not isinstance(rtype, str) or not rid:
                continue  # a resource without id cannot be deduplicated or referenced
            if not self._keep(res):
                continue
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
            write_ndjson(path, (bucket[k] for k in sorted(bucket)))
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
    page_size: int | None = None,
    reuse: Reuse = "never",
    run_key: Mapping[str, Any] | None = None,
) -> FetchReport:
    """Run the funnel and write ``<Type>.ndjson`` files plus ``fetch_state.json`` in ``cache_dir``.

    Checks the server's CapabilityStatement first (CapabilityError listing everything missing).
    An interrupted run (error, Ctrl-C, kill) resumes on the next call with the same journal key
    (server, plan, page size, ``since``, ``run_key``: anything else the caller needs to match,
    such as its as-of date), skipping journaled queries and continuing partial ones at their
    next page; a different key starts over (logged). A complete snapshot with the same key is
    returned without any request when ``reuse`` allows it (``"unused"``: not yet
    :func:`mark_used`; ``"always"``), and fetched again otherwise. With ``since`` the cohort's
    resources changed after that instant are merged into the existing snapshot (replaced by
    id) and patients new to the cohort are fetched in full; deletions on the server are not
    seen by a ``since`` fetch. Invalid numbers raise OptionError before any request.
    """
    fetcher = _Fetcher(
        client,
        plan,
        Path(cache_dir),
        batch_size=batch_size,
        workers=workers,
        since=since,
        progress=progress,
        page_size=page_size,
        reuse=reuse,
        run_key=run_key,
    )
    return _run(fetcher, cache_dir)


def _run(fetcher: _Fetcher, cache_dir: str | Path) -> FetchReport:
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
    count: int | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
    reuse: Reuse = "never",
    run_key: Mapping[str, Any] | None = None,
) -> FetchReport:
    """The naive pull: every resource of ``resource_types``, one paged search per type.

    For small servers, for checking the funnel, and as the baseline it is measured against.
    Journaled, resumed and reused like :func:`fetch_snapshot` (``count`` is the page size,
    default :data:`PAGE_SIZE`); the snapshot is written when every search has paged to the end.
    """
    fetcher = _Fetcher(
        client,
        None,
        Path(cache_dir),
        batch_size=1,
        workers=workers,
        since=None,
        progress=progress,
        page_size=count,
        reuse=reuse,
        run_key=run_key,
        full_types=tuple(resource_types),
    )
    return _run(fetcher, cache_dir)
