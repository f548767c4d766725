"""FHIR Bulk Data ``$export`` client: kick-off, poll, download, resume. Knows nothing of criteria.

One export lives in one folder, which :func:`fhir_cohort.fhir.sources.open_source` reads as is::

    out_dir/
      Condition.000.ndjson.gz     one file per manifest output entry, gzip-compressed
      Patient.000.ndjson.gz
      errors/OperationOutcome.000.ndjson.gz   the manifest's error files
      deleted/Bundle.000.ndjson.gz            the manifest's deleted files (Bulk Data 2.0)
      manifest.json               the server's manifest (URLs without query strings)
      export_state.json           the job (:class:`ExportState`): request, status URL, manifest,
                                  completed files, kick-offs, deleted resources
      export_log.ndjson           append-only log (:class:`ExportLog`, SMART log convention)

:class:`BulkExporter` runs one export; :func:`run_export` is its one-call form. Every HTTP
exchange goes through the client's one retry loop, so 429/5xx and connection errors are
retried. Files are read inside :meth:`FhirClient.exchange`: every line must be a JSON object of
the manifest entry's type, the last line whole and the count the manifest's, else the body was
damaged in transit and the file is downloaded again within the same retry budget. A file is
written under a hidden temporary name (``files.private_writer``, the package's one atomic
writer) and renamed only once complete and checked, so an interrupted run never leaves a
partial file that looks complete; the next
``run_export(..., resume=True)`` polls the saved status URL or downloads only the missing files.
A completed export in the folder is used again only with ``reuse=True``.

EHR servers (docs/bulk.md): ``_type`` goes comma-separated in one parameter (Oracle Health
rejects repeats); a kick-off that keeps answering 429 means another export by this client is
running (:class:`BulkExportAlreadyRunningError`); a run waits at most ``deadline_seconds`` and
stops at once when the server's Retry-After reaches past it (:class:`BulkExportTimeout`, the
job kept for the next run); files that expired on the server (404/410) are exported anew; the
resources the manifest's ``deleted[]`` names are dropped from the folder's data and recorded.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests

# The bulk errors live in the one exception tree; re-exported here for existing imports.
from fhir_cohort.errors import (
    AuthError,
    BulkExportAlreadyRunningError,
    BulkExportError,
    BulkExportTimeout,
    BulkJobExpiredError,
    FhirHttpError,
    OptionError,
    TransientResponseError,
)
from fhir_cohort.fhir.client import FhirClient, is_loopback, parse_retry_after, strip_query
from fhir_cohort.fhir.ndjson import BOM, BadLine, iter_ndjson, parse_line
from fhir_cohort.files import open_private, private_dir, private_writer
from fhir_cohort.progress import ProgressCallback, StageProgress

__all__ = [
    "DELETED_DIR",
    "ERRORS_DIR",
    "LOG_FILE",
    "MANIFEST_FILE",
    "NDJSON",
    "STATE_FILE",
    "BulkExportAlreadyRunningError",
    "BulkExportError",
    "BulkExportRequest",
    "BulkExportTimeout",
    "BulkExporter",
    "BulkJobExpiredError",
    "ErrorSummary",
    "ExportLog",
    "ExportResult",
    "ExportState",
    "ExportedFile",
    "FileRecord",
    "deleted_keys",
    "run_export",
    "summarise_errors",
]

log = logging.getLogger("fhir_cohort.fhir.bulk")

NDJSON = "application/fhir+ndjson"
STATE_FILE = "export_state.json"
LOG_FILE = "export_log.ndjson"
MANIFEST_FILE = "manifest.json"
ERRORS_DIR = "errors"
DELETED_DIR = "deleted"
_STATE_VERSION = 1
_CHUNK = 1 << 16

Level = Literal["system", "patient", "group"]
Item = Literal["output", "error", "deleted"]  # the manifest's three file lists


# -- the request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkExportRequest:
    """What to export. ``type_filters`` are FHIR queries ``Type?param=value&...`` (plain commas
    inside a value mean OR, as in any search; they are escaped on the wire)."""

    level: Level = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None
    type_filters: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()
    output_format: str = NDJSON

    def __post_init__(self) -> None:
        for name in ("types", "type_filters", "elements"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.level not in ("system", "patient", "group"):
            raise OptionError(f"level must be system, patient or group, got {self.level!r}")
        if (self.level == "group") != bool(self.group_id):
            raise OptionError("group_id is required for level='group' and only for it")
        for tf in self.type_filters:
            rtype, sep, query = tf.partition("?")
            if not sep or not rtype or not query or "/" in rtype:
                raise OptionError(f"a _typeFilter must look like 'Type?param=value', got {tf!r}")

    @property
    def path(self) -> str:
        """Kick-off path relative to the FHIR base."""
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group":
            return f"Group/{quote(str(self.group_id), safe='')}/$export"
        return "$export"

    def params(self) -> list[tuple[str, str]]:
        """Kick-off query parameters. Repeated ``_typeFilter`` (servers SHALL accept that),
        with commas inside one filter percent-encoded so a server splitting the parameter on
        commas still sees one filter (its query parser decodes them back to OR)."""
        params: list[tuple[str, str]] = [("_outputFormat", self.output_format)]
        if self.types:
            params.append(("_type", ",".join(self.types)))
        if self.since:
            params.append(("_since", self.since))
        params.extend(("_typeFilter", tf.replace(",", "%2C")) for tf in self.type_filters)
        if self.elements:
            params.append(("_elements", ",".join(self.elements)))
        return params

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "group_id": self.group_id,
            "types": list(self.types),
            "since": self.since,
            "type_filters": list(self.type_filters),
            "elements": list(self.elements),
            "output_format": self.output_format,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BulkExportRequest:
        return cls(
            level=data.get("level", "system"),
            group_id=data.get("group_id"),
            types=tuple(data.get("types") or ()),
            since=data.get("since"),
            type_filters=tuple(data.get("type_filters") or ()),
            elements=tuple(data.get("elements") or ()),
            output_format=data.get("output_format", NDJSON),
        )


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedFile:
    type: str
    path: Path
    lines: int
    bytes: int  # uncompressed NDJSON bytes received


@dataclass(frozen=True)
class ErrorSummary:
    """What the manifest's error files say, without their text (diagnostics can name patients).

    ``by_severity`` / ``by_code`` count issues; ``with_diagnostics`` counts issues that carry a
    diagnostics string (read it in ``errors/``).
    """

    files: int = 0
    resources: int = 0
    issues: int = 0
    by_severity: Mapping[str, int] = field(default_factory=dict)
    by_code: Mapping[str, int] = field(default_factory=dict)
    with_diagnostics: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "resources": self.resources,
            "issues": self.issues,
            "by_severity": dict(self.by_severity),
            "by_code": dict(self.by_code),
            "with_diagnostics": self.with_diagnostics,
        }


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    transaction_time: str
    request: BulkExportRequest
    files: tuple[ExportedFile, ...]
    error_files: tuple[Path, ...]
    errors: ErrorSummary
    requests: int  # HTTP requests sent by this run (retries included)
    bytes: int  # body bytes received by this run
    seconds: float
    resumed: bool = False  # an unfinished export in the folder was continued
    reused: bool = False  # a completed export in the folder was returned, without any request
    reexported: bool = False  # the job's files had expired on the server: exported anew
    deleted: tuple[tuple[str, str], ...] = ()  # (type, id) the manifest's deleted[] names

    def deleted_by_type(self) -> dict[str, int]:
        return dict(sorted(Counter(t for t, _ in self.deleted).items()))

    def resources_by_type(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for f in self.files:
            counts[f.type] += f.lines
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        """For run.json: the data cut (transactionTime) and what was fetched."""
        return {
            "transactionTime": self.transaction_time,
            "request": self.request.to_json(),
            "files": [
                {"type": f.type, "path": f.path.name, "lines": f.lines, "bytes": f.bytes}
                for f in self.files
            ],
            "resources": self.resources_by_type(),
            "errors": self.errors.to_json(),
            "requests": self.requests,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
            "reused": self.reused,
            "reexported": self.reexported,
            "deleted": self.deleted_by_type(),
        }


# -- the SMART-style log ----------------------------------------------------------------------


class ExportLog:
    """Append-only ``export_log.ndjson``: one method per event, one JSON object per line.

    Shape of the SMART bulk-data-client log: ``exportId, timestamp, eventId, eventDetail``; the
    event ids are that log's (``kickoff``, ``status_progress``, ``download_complete``...), plus
    ``file_expired`` and ``export_pending``, ours. URLs are logged without query strings
    (signed file URLs carry credentials there); bodies are OperationOutcome text, never
    resource content. Safe to call from the download threads.
    """

    def __init__(self, path: Path, export_id: str) -> None:
        self.path = path
        self.export_id = export_id
        self._lock = threading.Lock()

    def _event(self, event_id: str, detail: Mapping[str, Any]) -> None:
        row = {
            "exportId": self.export_id,
            "timestamp": datetime.now(UTC).astimezone().isoformat(),
            "eventId": event_id,
            "eventDetail": dict(detail),
        }
        line = json.dumps(row, separators=(",", ":"), default=str) + "\n"
        with self._lock, open_private(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)

    def kicked_off(
        self,
        client: FhirClient,
        request: BulkExportRequest,
        capability: Mapping[str, Any] | None,
        *,
        error_code: int | None = None,
        error_body: str | None = None,
    ) -> None:
        software = (capability or {}).get("software") or {}
        self._event(
            "kickoff",
            {
                "exportUrl": strip_query(client.url(request.path)),
                "softwareName": software.get("name"),
                "softwareVersion": software.get("version"),
                "softwareReleaseDate": software.get("releaseDate"),
                "fhirVersion": (capability or {}).get("fhirVersion"),
                "requestParameters": _merged(request.params()),
                "errorCode": error_code,
                "errorBody": error_body,
            },
        )

    def polled(self, x_progress: str | None, retry_after: float | None) -> None:
        self._event("status_progress", {"xProgress": x_progress, "retryAfter": retry_after})

    def poll_failed(self, exc: BaseException | None = None, **detail: Any) -> None:
        self._event("status_error", _error_detail(exc) if exc is not None else detail)

    def manifest(self, manifest: Mapping[str, Any]) -> None:
        when = manifest.get("transactionTime")
        self._event("status_complete", {"transactionTime": when})
        self._event(
            "manifest_complete",
            {
                "transactionTime": when,
                "totalOutputFileCount": len(manifest.get("output") or []),
                "totalDeletedFileCount": len(manifest.get("deleted") or []),
                "totalErrorFileCount": len(manifest.get("error") or []),
                "totalManifests": 1,
            },
        )

    def file_requested(self, job: _Job) -> None:
        self._event(
            "download_request",
            {"fileUrl": strip_query(job.url), "itemType": job.item, "resourceType": job.type},
        )

    def file_downloaded(self, job: _Job, lines: int, nbytes: int) -> None:
        self._event(
            "download_complete",
            {"fileUrl": strip_query(job.url), "resourceCount": lines, "fileSize": nbytes},
        )

    def file_failed(self, job: _Job, exc: BaseException) -> None:
        self._event("download_error", {"fileUrl": strip_query(job.url), **_error_detail(exc)})

    def file_expired(self, job: _Job, status: int | None) -> None:
        self._event("file_expired", {"fileUrl": strip_query(job.url), "code": status})

    def export_pending(self, waited: float, retry_after: float | None) -> None:
        self._event("export_pending", {"waited": int(waited * 1000), "retryAfter": retry_after})

    def export_complete(self, result: ExportResult, duration: float) -> None:
        self._event(
            "export_complete",
            {
                "files": len(result.files),
                "resources": sum(f.lines for f in result.files),
                "bytes": sum(f.bytes for f in result.files),
                "attachments": None,
                "duration": int(duration * 1000),
            },
        )


def _error_detail(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, FhirHttpError):
        return {"code": exc.status, "body": exc.outcome, "message": str(exc)}
    return {"code": None, "body": None, "message": type(exc).__name__}


def _merged(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for k, v in params:
        merged[k] = f"{merged[k]},{v}" if k in merged else v
    return merged


# -- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """A file downloaded complete and checked; ``size`` is its size on disk (gzip)."""

    path: str  # relative to the export folder
    type: str
    item: Item
    lines: int
    bytes: int  # uncompressed NDJSON bytes received
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "item": self.item,
            "lines": self.lines,
            "bytes": self.bytes,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        return cls(
            path=str(data["path"]),
            type=str(data["type"]),
            item=data.get("item", "output"),
            lines=int(data["lines"]),
            bytes=int(data["bytes"]),
            size=int(data["size"]),
        )


@dataclass
class ExportState:
    """``export_state.json``: everything needed to resume, saved atomically after each change.

    It keeps the manifest with its full URLs (signed URLs are needed to resume downloads), so
    it is written owner-readable only. ``files`` maps a manifest URL to its complete file.
    """

    path: Path
    export_id: str
    base_url: str
    request: BulkExportRequest
    kickoff_url: str | None = None  # without query string
    status_url: str | None = None
    manifest: dict[str, Any] | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    completed: bool = False
    kickoffs: int = 0  # kick-offs accepted for this folder (one more per re-export)
    polls: int = 0  # status requests answered 202 or 200
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (type, id) of deleted[]
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def new(cls, path: Path, base_url: str, request: BulkExportRequest) -> ExportState:
        return cls(path, uuid.uuid4().hex, base_url, request)

    @classmethod
    def load(cls, path: Path) -> ExportState | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
                raise BulkExportError(f"{path}: not an export state this version understands")
            return cls(
                path=path,
                export_id=str(data["exportId"]),
                base_url=str(data.get("base_url") or ""),
                request=BulkExportRequest.from_json(data.get("request") or {}),
                kickoff_url=data.get("kickoff_url"),
                status_url=data.get("status_url"),
                manifest=data.get("manifest"),
                files={u: FileRecord.from_json(r) for u, r in (data.get("files") or {}).items()},
                completed=bool(data.get("completed")),
                kickoffs=int(data.get("kickoffs") or 0),
                polls=int(data.get("polls") or 0),
                deleted=[(str(t), str(i)) for t, i in data.get("deleted") or []],
            )
        except BulkExportError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BulkExportError(
                f"{path}: unreadable export state ({type(exc).__name__}); "
                "start again with resume=False"
            ) from None

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": _STATE_VERSION,
                "exportId": self.export_id,
                "base_url": self.base_url,
                "request": self.request.to_json(),
                "kickoff_url": self.kickoff_url,
                "status_url": self.status_url,
                "manifest": self.manifest,
                "files": {u: r.to_json() for u, r in self.files.items()},
                "completed": self.completed,
                "kickoffs": self.kickoffs,
                "polls": self.polls,
                "deleted": [list(k) for k in self.deleted],
            }

    def save(self) -> None:
        # under the lock: download threads save at once
        with self._lock:
            data = self.to_json()
            with private_writer(self.path) as fh:
                json.dump(data, fh, indent=1)

    def file_done(self, url: str, record: FileRecord) -> None:
        with self._lock:
            self.files[url] = record
        self.save()

    def forget_job(self) -> None:
        """The job's files are gone on the server: what it fetched is no longer a whole export."""
        self.status_url = self.manifest = None
        self.files = {}
        self.deleted = []
        self.completed = False
        self.save()


# -- the export -------------------------------------------------------------------------------


class _FilesExpired(Exception):
    """Every failed file answered 404/410 after the manifest: the job's files expired."""

    def __init__(self, jobs: Sequence[tuple[_Job, int | None]], message: str) -> None:
        super().__init__(message)
        self.jobs = jobs


class BulkExporter:
    """One export into one folder: kick-off, poll, download, resume (see the module doc).

    ``run()`` decides from the folder what to do (:func:`run_export` documents it) and returns
    an :class:`ExportResult`. The state (:class:`ExportState`) is saved after every step, so an
    interrupted run, a run that stopped waiting (:class:`BulkExportTimeout`) or one whose
    downloads failed is continued by the next ``run()`` with ``resume=True``.
    """

    def __init__(
        self,
        client: FhirClient,
        request: BulkExportRequest,
        out_dir: str | Path,
        *,
        resume: bool = True,
        reuse: bool = False,
        poll_cap_seconds: float = 60.0,
        deadline_seconds: float = 6 * 3600.0,
        download_workers: int = 4,
        progress: ProgressCallback | None = None,
        delete_on_complete: bool = True,
        capability_statement: Mapping[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if download_workers < 1:
            raise OptionError(f"download_workers must be at least 1, got {download_workers}")
        if reuse and not resume:
            raise OptionError("reuse=True (reuse a completed export) contradicts resume=False")
        if not deadline_seconds > 0:
            raise OptionError(f"deadline_seconds must be above 0, got {deadline_seconds}")
        self.client = client
        self.request = request
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.reuse = reuse
        self.poll_cap = poll_cap_seconds
        self.deadline = deadline_seconds
        self.workers = download_workers
        self.progress = StageProgress(progress, "export", "files")
        self.delete_on_complete = delete_on_complete
        self.capability = capability_statement
        self.sleep = sleep
        self.clock = clock
        self.start = clock()

    # -- the steps ----------------------------------------------------------------------------

    def run(self) -> ExportResult:
        out = private_dir(self.out_dir)
        self.start = self.clock()
        stats0 = self.client.stats.snapshot()
        state = self._open_state(out)
        reused = state is not None and state.completed
        resumed = state is not None and not reused
        if reused:
            _check_intact(out, state)  # type: ignore[arg-type]
        if state is None:
            state = ExportState.new(
                out / STATE_FILE, strip_query(self.client.base_url), self.request
            )
        elog = ExportLog(out / LOG_FILE, state.export_id)
        reexported = False
        if not state.completed:
            try:
                self._fetch(out, state, elog)
            except _FilesExpired as expired:
                # Files expire on the server (Oracle Health: after 30 days): the job cannot be
                # completed, so a new export is the way on, once per run.
                for job, status in expired.jobs:
                    elog.file_expired(job, status)
                log.info("the export's files expired on the server: kicking off a new export")
                if state.status_url:  # one export per client at a time on EHRs: end this one
                    _delete_job(self.client, state.status_url)
                _remove_files(out, state)
                state.forget_job()
                reexported = True
                try:
                    self._fetch(out, state, elog)
                except _FilesExpired as again:
                    raise BulkJobExpiredError(
                        f"{again} (the files of a new export expired too)"
                    ) from None
            state.completed = True
            state.save()
            if not (out / MANIFEST_FILE).exists():
                _write_manifest(out / MANIFEST_FILE, state.manifest or {})
            result = self._result(out, state, stats0, resumed, reused, reexported)
            elog.export_complete(result, self.clock() - self.start)
            if self.delete_on_complete and state.status_url:
                _delete_job(self.client, state.status_url)
        result = self._result(out, state, stats0, resumed, reused, reexported)
        self._report("complete", files_done=len(result.files), files_total=len(result.files))
        return result

    def _open_state(self, out: Path) -> ExportState | None:
        """The folder's state to continue or reuse; None when a new export starts."""
        state = ExportState.load(out / STATE_FILE) if self.resume else None
        if state is not None:
            if state.request != self.request or state.base_url != strip_query(self.client.base_url):
                raise BulkExportError(
                    f"{out} holds an export of another request or server; use another folder, "
                    "or resume=False to discard it"
                )
            if state.completed and not self.reuse:
                log.info("the folder holds a completed export: starting a new one (reuse=True)")
                _clear_previous(out, self.client)
                return None
            return state
        if not self.resume:
            _clear_previous(out, self.client)
        else:
            _refuse_foreign_data(out)
        return None

    def _fetch(self, out: Path, state: ExportState, elog: ExportLog) -> None:
        """Kick off (or poll the saved job), then download what is not yet complete."""
        if state.manifest is None:
            if state.status_url is None:
                self._report("kickoff")
                state.kickoff_url = strip_query(self.client.url(self.request.path))
                state.status_url = self._kickoff(elog)
                state.kickoffs += 1
                state.save()
            else:
                log.info("resuming export: polling the saved status URL")
            manifest = self._poll(state, elog)
            state.manifest = manifest
            state.save()
            _write_manifest(out / MANIFEST_FILE, manifest)
        else:
            log.info("resuming export: downloading the files not yet complete")
        self._download_all(out, state, elog)
        if (state.manifest or {}).get("deleted"):
            _apply_deleted(out, state)

    def _kickoff(self, elog: ExportLog) -> str:
        request, client = self.request, self.client
        try:
            resp = client.request(
                "GET",
                request.path,
                params=request.params(),
                headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
            )
        except FhirHttpError as exc:
            elog.kicked_off(
                client, request, self.capability, error_code=exc.status, error_body=exc.outcome
            )
            if exc.status == 429:
                raise BulkExportAlreadyRunningError(
                    "the server refused the $export kick-off with 429 Too Many Requests after "
                    "the client's retries: another export by this client is most likely still "
                    "running (Oracle Health allows one per client and tenant, Epic one per "
                    "client and Group), started elsewhere (an unfinished export in this "
                    "folder would have been continued). Let it finish or cancel it (a DELETE "
                    "on its status URL), then run again",
                    method="GET",
                    url=exc.url,
                    status=exc.status,
                    outcome=exc.outcome,
                ) from exc
            raise BulkExportError(
                "the server refused the $export kick-off",
                method="GET",
                url=exc.url,
                status=exc.status,
                outcome=exc.outcome,
            ) from exc
        location = resp.headers.get("Content-Location")
        if resp.status_code != 202 or not location:
            elog.kicked_off(client, request, self.capability, error_code=resp.status_code)
            raise BulkExportError(
                "kick-off did not answer 202 Accepted with a Content-Location",
                method="GET",
                url=strip_query(resp.url or client.url(request.path)),
                status=resp.status_code,
            )
        elog.kicked_off(client, request, self.capability)
        return client.url(location)

    def _poll(self, state: ExportState, elog: ExportLog) -> dict[str, Any]:
        assert state.status_url is not None
        status_url = state.status_url
        interval = 1.0  # without Retry-After: 1 s, doubling up to the cap
        while True:
            try:
                resp = self.client.request(
                    "GET", status_url, headers={"Accept": "application/json"}
                )
            except FhirHttpError as exc:
                elog.poll_failed(exc)
                if exc.status in (404, 410):
                    raise BulkJobExpiredError(
                        "the export job has expired or was deleted on the server; its files "
                        "cannot be fetched any more: start a fresh export (resume=False)",
                        method="GET",
                        url=exc.url,
                        status=exc.status,
                        outcome=exc.outcome,
                    ) from exc
                raise
            state.polls += 1
            if resp.status_code == 200:
                manifest = self.client.decode(resp)
                if not isinstance(manifest.get("output"), list) or (
                    "transactionTime" not in manifest
                ):
                    elog.poll_failed(code=200, body=None, message="bad manifest")
                    raise BulkExportError(
                        "the completed export's manifest lacks output[] or transactionTime",
                        method="GET",
                        url=strip_query(status_url),
                        status=200,
                    )
                elog.manifest(manifest)
                return manifest
            if resp.status_code != 202:
                elog.poll_failed(code=resp.status_code, body=None, message="unexpected")
                raise BulkExportError(
                    "unexpected answer from the export status URL",
                    method="GET",
                    url=strip_query(status_url),
                    status=resp.status_code,
                )
            x_progress = resp.headers.get("X-Progress")
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC))
            wait = min(retry_after if retry_after is not None else interval, self.poll_cap)
            interval = min(interval * 2, self.poll_cap)
            elog.polled(x_progress, retry_after)
            self._report("waiting", message=x_progress)
            waited = self.clock() - self.start
            # The server's Retry-After is its estimate: when even that passes the deadline,
            # polling on until the deadline is pointless (Oracle Health asks for hours).
            ask = max(wait, retry_after or 0.0)
            if waited + ask > self.deadline:
                state.save()
                elog.export_pending(waited, retry_after)
                hint = (
                    f"the server asks to poll again in {_duration(retry_after)}"
                    if retry_after is not None and retry_after > wait
                    else f"waited {_duration(waited)}"
                )
                raise BulkExportTimeout(
                    f"the export is still running on the server ({hint}; this run waits at "
                    f"most {_duration(self.deadline)}); its job is kept in the folder, and "
                    "the next run with resume=True (the CLI's default) continues it",
                    method="GET",
                    url=strip_query(status_url),
                    status=202,
                )
            self.sleep(wait)

    def _download_all(self, out: Path, state: ExportState, elog: ExportLog) -> None:
        manifest = state.manifest or {}
        jobs = _plan(manifest)
        # Bulk Data spec: the token goes to file URLs only when the manifest requires it.
        requires_token = manifest.get("requiresAccessToken") is True
        if requires_token:
            cleartext = sorted({strip_query(j.url) for j in jobs if not _may_carry_token(j.url)})
            if cleartext:
                raise BulkExportError(
                    f"the manifest requires the access token for plain-http file URLs "
                    f"({', '.join(cleartext[:3])}): refusing to send it in cleartext"
                )
        todo = [j for j in jobs if not _is_done(out, state, j)]
        done = len(jobs) - len(todo)
        if done:
            log.info(
                "%d of %d export files already complete: not downloading them again",
                done,
                len(jobs),
            )
        for sub in {ERRORS_DIR} | {str(Path(j.rel_path).parent) for j in jobs} - {"."}:
            private_dir(out / sub)
        lock = threading.Lock()
        counts = {"done": done, "bytes": 0}
        failures: list[tuple[_Job, BaseException]] = []

        def one(job: _Job) -> None:
            try:
                lines, nbytes = self._download(job, out, elog, requires_token)
            except Exception as exc:
                elog.file_failed(job, exc)
                with lock:
                    failures.append((job, exc))
                if not isinstance(exc, FhirHttpError | OSError | requests.RequestException):
                    raise
                return
            size = (out / job.rel_path).stat().st_size
            state.file_done(
                job.url, FileRecord(job.rel_path, job.type, job.item, lines, nbytes, size)
            )
            with lock:
                counts["done"] += 1
                counts["bytes"] += nbytes
                snapshot = dict(counts)
            self._report("downloading", files_done=snapshot["done"], files_total=len(jobs))

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bulk-dl") as pool:
            for fut in [pool.submit(one, j) for j in todo]:
                fut.result()
        if not failures:
            return
        kept = len(jobs) - len(failures)
        why = "; ".join(sorted(f"{job.rel_path}: {_short(exc)}" for job, exc in failures))
        msg = (
            f"{len(failures)} of {len(jobs)} export files failed ({why}); the export is "
            f"incomplete and was not used; the {kept} complete files are kept: run again "
            "with resume=True to fetch the rest"
        )
        gone = [
            (j, e.status)
            for j, e in failures
            if isinstance(e, FhirHttpError) and e.status in (404, 410)
        ]
        if len(gone) == len(failures):
            raise _FilesExpired(gone, msg)
        # an auth failure stays one (exit 6): chained so the CLI sees it
        denied = next((e for _, e in failures if isinstance(e, AuthError)), None)
        raise BulkExportError(msg) from denied

    def _download(
        self, job: _Job, out: Path, elog: ExportLog, requires_token: bool
    ) -> tuple[int, int]:
        """Stream one file gzip-compressed through the atomic writer, check every line, keep it.

        The body is read inside :meth:`FhirClient.exchange`, so a body cut by a reset, a line
        that is not a resource of the entry's type, a cut last line or a count that differs
        from the manifest's is retried (re-downloaded whole) within the client's retry budget.
        """
        client = self.client
        final = out / job.rel_path
        elog.file_requested(job)
        lines, nbytes = client.exchange(
            "GET",
            job.url,
            lambda resp: _receive(client, resp, job, final),
            headers={"Accept": _accept(job)},
            authenticate=requires_token and _may_carry_token(job.url),
            stream=True,
        )
        elog.file_downloaded(job, lines, nbytes)
        return lines, nbytes

    def _report(
        self, phase: str, *, message: str | None = None, files_done: int = 0, files_total: int = 0
    ) -> None:
        self.progress(phase, files_done, files_total, phase + (f" ({message})" if message else ""))

    def _result(
        self,
        out: Path,
        state: ExportState,
        stats0: Mapping[str, float | int],
        resumed: bool,
        reused: bool,
        reexported: bool,
    ) -> ExportResult:
        manifest = state.manifest or {}
        files: list[ExportedFile] = []
        error_files: list[Path] = []
        for job in _plan(manifest):
            record = state.files.get(job.url)
            if record is None:
                continue
            if job.item == "error":
                error_files.append(out / job.rel_path)
            elif job.item == "output":
                files.append(ExportedFile(job.type, out / job.rel_path, record.lines, record.bytes))
        stats = self.client.stats.snapshot()
        return ExportResult(
            out_dir=out,
            transaction_time=str(manifest.get("transactionTime", "")),
            request=self.request,
            files=tuple(files),
            error_files=tuple(error_files),
            errors=summarise_errors(error_files),
            requests=int(stats["requests"] - stats0["requests"]),
            bytes=int(stats["bytes_received"] - stats0["bytes_received"]),
            seconds=self.clock() - self.start,
            resumed=resumed,
            reused=reused,
            reexported=reexported,
            deleted=tuple(state.deleted),
        )


def run_export(
    client: FhirClient,
    request: BulkExportRequest,
    out_dir: str | Path,
    *,
    resume: bool = True,
    reuse: bool = False,
    poll_cap_seconds: float = 60.0,
    deadline_seconds: float = 6 * 3600.0,
    download_workers: int = 4,
    progress: ProgressCallback | None = None,
    delete_on_complete: bool = True,
    capability_statement: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ExportResult:
    """Run (or resume) a Bulk Data export of ``request`` into ``out_dir``; see the module doc.

    What the folder may already hold decides what happens:

    - an unfinished export of the same request and server (a run that crashed, stopped
      waiting or lost files): ``resume=True`` continues it (polls its status URL, downloads the
      missing files) and the result says ``resumed``; ``resume=False`` discards it (asking the
      server to cancel its job) and starts anew;
    - a completed export: returned as is, without any request, only with ``reuse=True``
      (the result says ``reused``); otherwise it is discarded and a new export started, so a
      re-run never screens an old data cut by accident.

    ``poll_cap_seconds`` caps one wait between status polls (``Retry-After`` is honoured up to
    it); ``deadline_seconds`` bounds this run's wait for the job (``math.inf``: wait until it
    completes): at the deadline, or as soon as the server's ``Retry-After`` reaches past it,
    the run stops with :class:`BulkExportTimeout` and the job stays saved for the next run.
    Files that answer 404/410 after the manifest (expired) are exported anew: one new
    kick-off per run, and the result says ``reexported``. ``capability_statement`` only feeds
    the kick-off log entry (software name/version). ``sleep``/``clock`` are injectable.

    Raises :class:`OptionError` for ``download_workers < 1`` or ``reuse`` without ``resume``,
    :class:`BulkExportAlreadyRunningError` when the kick-off keeps answering 429 (another
    export by this client runs), :class:`BulkJobExpiredError` when the saved job is gone
    (start again with ``resume=False``), :class:`BulkExportTimeout` (the job is kept: resume
    later), :class:`BulkExportError` when files failed, stayed corrupt or are miscounted after
    the client's retries (complete files are kept).
    """
    return BulkExporter(
        client,
        request,
        out_dir,
        resume=resume,
        reuse=reuse,
        poll_cap_seconds=poll_cap_seconds,
        deadline_seconds=deadline_seconds,
        download_workers=download_workers,
        progress=progress,
        delete_on_complete=delete_on_complete,
        capability_statement=capability_statement,
        sleep=sleep,
        clock=clock,
    ).run()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds == float("inf"):
        return "until done"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def _check_intact(out: Path, state: ExportState) -> None:
    """A completed export about to be reused must still be whole on disk."""
    jobs = _plan(state.manifest or {})
    missing = [job.rel_path for job in jobs if not _is_done(out, state, job)]
    if missing:
        raise BulkExportError(
            f"the completed export in {out} lacks {len(missing)} of its files "
            f"({', '.join(missing[:3])}...) or they changed: export again without reusing it"
        )


def _remove_files(out: Path, state: ExportState) -> None:
    for record in state.files.values():
        (out / record.path).unlink(missing_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)


def _clear_previous(out: Path, client: FhirClient | None = None) -> None:
    """resume=False: forget a previous job in this folder and the files it wrote.

    An unfinished job is cancelled on the server first (a DELETE on its status URL): servers
    that run one export per client at a time (Oracle Health, Epic) would refuse the new one.
    """
    try:
        old = ExportState.load(out / STATE_FILE)
    except BulkExportError:
        old = None  # unreadable: nothing to salvage, but the files it names cannot be known
    if old is not None:
        ours = client is not None and old.base_url == strip_query(client.base_url)
        if ours and old.status_url and not old.completed:  # never to another server
            _delete_job(client, old.status_url)  # type: ignore[arg-type]
        _remove_files(out, old)
    (out / STATE_FILE).unlink(missing_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for sub in ("", f"{ERRORS_DIR}/", f"{DELETED_DIR}/"):
        for tmp in out.glob(f"{sub}.*.part"):
            tmp.unlink()
    _refuse_foreign_data(out)


def _refuse_foreign_data(out: Path) -> None:
    # Data we did not write would be read as part of this export: never mix.
    foreign = sorted(
        p.name for p in out.iterdir() if p.is_file() and ".ndjson" in p.name and p.name != LOG_FILE
    )
    if foreign:
        raise BulkExportError(
            f"{out} already holds NDJSON files ({', '.join(foreign[:3])}...) that no export "
            "state accounts for; export into an empty folder"
        )


def _write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """The manifest as received, but URLs without query strings (signed URLs are secrets)."""
    safe = dict(manifest)
    for key in ("output", "error", "deleted"):
        if isinstance(safe.get(key), list):
            safe[key] = [
                {**e, "url": strip_query(e["url"])} if isinstance(e.get("url"), str) else e
                for e in safe[key]
                if isinstance(e, Mapping)
            ]
    if isinstance(safe.get("request"), str):
        safe["request"] = strip_query(safe["request"])
    with private_writer(path) as fh:
        fh.write(json.dumps(safe, indent=1))


@dataclass(frozen=True)
class _Job:
    url: str
    item: Item
    type: str
    rel_path: str  # relative to out_dir
    count: int | None


_ITEM_DIRS: dict[str, str] = {"output": "", "error": ERRORS_DIR, "deleted": DELETED_DIR}


def _plan(manifest: Mapping[str, Any]) -> list[_Job]:
    jobs: list[_Job] = []
    seen: Counter[tuple[str, str]] = Counter()
    for item in ("output", "error", "deleted"):
        for entry in manifest.get(item) or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
                raise BulkExportError(f"manifest {item}[] entry without a url")
            rtype = {"output": entry.get("type"), "error": "OperationOutcome"}.get(item, "Bundle")
            if not isinstance(rtype, str) or not rtype.isalpha():
                raise BulkExportError(f"manifest {item}[] entry with a bad type")
            n = seen[(item, rtype)]
            seen[(item, rtype)] += 1
            name = f"{rtype}.{n:03d}.ndjson.gz"
            count = entry.get("count")
            folder = _ITEM_DIRS[item]
            jobs.append(
                _Job(
                    url=entry["url"],
                    item=item,  # type: ignore[arg-type]
                    type=rtype,
                    rel_path=f"{folder}/{name}" if folder else name,
                    count=count if isinstance(count, int) and count >= 0 else None,
                )
            )
    return jobs


def _is_done(out: Path, state: ExportState, job: _Job) -> bool:
    record = state.files.get(job.url)
    if record is None or record.path != job.rel_path:
        return False
    path = out / job.rel_path
    return path.is_file() and path.stat().st_size == record.size


def _may_carry_token(url: str) -> bool:
    """Never send a token in cleartext: https, or http to a loopback host only."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


def _receive(
    client: FhirClient, resp: requests.Response, job: _Job, final: Path
) -> tuple[int, int]:
    """One attempt: the body to ``final``, every line checked as it passes; the file replaces
    ``final`` only when the whole body arrived and passed (private_writer drops it otherwise).
    """
    check = _LineCheck(job.type, need_id=job.item == "output")
    nbytes = 0
    try:
        with (
            resp,
            private_writer(final, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6) as gz,
        ):
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                if not chunk:
                    continue
                gz.write(chunk)
                nbytes += len(chunk)
                check.feed(chunk)
            if check.pending:
                gz.write(b"\n")  # so files concatenate and the reader sees a whole last line
            lines = check.close()
            if job.count is not None and lines != job.count:
                raise _transient(resp, f"{lines} lines but the manifest's count is {job.count}")
    finally:
        client.stats.add(nbytes=nbytes)
    return lines, nbytes


# -- deleted resources (Bulk Data 2.0 manifest ``deleted[]``) ---------------------------------


def deleted_keys(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(type, id) of every resource the ``deleted[]`` files name: each line a transaction
    Bundle whose entries' ``request`` is ``DELETE <Type>/<id>`` (relative or absolute URL)."""
    keys: dict[tuple[str, str], None] = {}
    for path in paths:
        for lineno, bundle, _ in iter_ndjson(path):
            if type(bundle) is BadLine:  # every line passed _LineCheck when it was downloaded
                raise BulkExportError(f"{path}:{lineno}: damaged since it was downloaded")
            for entry in bundle.get("entry") or []:
                request = entry.get("request") if isinstance(entry, dict) else None
                if not isinstance(request, dict) or request.get("method") != "DELETE":
                    continue
                key = _type_and_id(request.get("url"))
                if key is not None:
                    keys[key] = None
    return list(keys)


class _Unchanged(Exception):
    """Leaves a private_writer block without replacing its file."""


def _type_and_id(url: Any) -> tuple[str, str] | None:
    if not isinstance(url, str):
        return None
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or not parts[-2].isalpha() or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


def _apply_deleted(out: Path, state: ExportState) -> None:
    """Record the deleted resources and drop them from the folder's data files.

    A resource the server says was deleted must not be screened, whether a server lists it in
    output[] as well or a later step merges this folder with older data (the keys stay in the
    state and the result). A file is rewritten under a temporary name, then its record.
    """
    jobs = _plan(state.manifest or {})
    paths = [out / j.rel_path for j in jobs if j.item == "deleted"]
    state.deleted = deleted_keys(paths)
    state.save()
    gone_ids: dict[str, set[str]] = {}
    for rtype, rid in state.deleted:
        gone_ids.setdefault(rtype, set()).add(rid)
    for job in jobs:
        if job.item != "output" or job.type not in gone_ids:
            continue
        record = state.files[job.url]
        path = out / job.rel_path
        kept = dropped = nbytes = 0
        try:
            with (
                gzip.open(path, "rb") as src,
                private_writer(path, "wb") as raw,
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6) as dst,
            ):
                for line in src:
                    if not line.strip():
                        continue
                    resource, _ = parse_line(line.removeprefix(BOM))
                    if isinstance(resource, dict) and resource.get("id") in gone_ids[job.type]:
                        dropped += 1
                        continue
                    dst.write(line)
                    kept += 1
                    nbytes += len(line)
                if not dropped:
                    raise _Unchanged  # the writer then drops its copy: the file stays as it is
        except _Unchanged:
            continue
        log.info("dropped %d deleted %s resources from %s", dropped, job.type, job.rel_path)
        state.file_done(
            job.url,
            FileRecord(record.path, record.type, "output", kept, nbytes, path.stat().st_size),
        )


class _LineCheck:
    """Checks an NDJSON body chunk by chunk: each non-blank line must be a JSON object whose
    resourceType is the file's type (and, with ``need_id``, with an id: what the reader needs to
    read it). A server's file is not user input: a line that fails is a transfer error
    (:class:`TransientResponseError`), never a resource for the reader to skip. Messages carry
    line numbers only, never content."""

    def __init__(self, rtype: str, *, need_id: bool = False) -> None:
        self.type = rtype
        self.need_id = need_id
        self.pending = bytearray()  # the line in progress (after the last newline)
        self.lineno = 0
        self.lines = 0  # non-blank lines

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            self.pending += chunk
            return
        if self.pending:
            self.pending += parts[0]
            self._line(bytes(self.pending), cut=False)
            self.pending.clear()
        else:
            self._line(parts[0], cut=False)
        for part in parts[1:-1]:
            self._line(part, cut=False)
        self.pending += parts[-1]

    def close(self) -> int:
        """The last line (when the body does not end with a newline); the non-blank count."""
        if self.pending:
            self._line(bytes(self.pending), cut=True)
            self.pending.clear()
        return self.lines

    def _line(self, line: bytes, *, cut: bool) -> None:
        self.lineno += 1
        if not line or line.isspace():
            return
        if self.lineno == 1:
            line = line.removeprefix(BOM)
        # invalid UTF-8 inside a string is decoded with replacement, as the reader does
        resource, _ = parse_line(line)
        if type(resource) is BadLine:
            where = f"the body ends inside line {self.lineno}" if cut else None
            raise TransientResponseError(
                f"{where or f'line {self.lineno}'}: not valid JSON (cut or garbled)"
            )
        if not isinstance(resource, dict):
            raise TransientResponseError(f"line {self.lineno}: not a JSON object")
        if resource.get("resourceType") != self.type:
            raise TransientResponseError(f"line {self.lineno}: resourceType is not {self.type}")
        if self.need_id and not (isinstance(resource.get("id"), str) and resource["id"]):
            raise TransientResponseError(f"line {self.lineno}: {self.type} without id")
        self.lines += 1


def _transient(resp: requests.Response, reason: str) -> TransientResponseError:
    return TransientResponseError(
        reason, method="GET", url=strip_query(resp.url or ""), status=resp.status_code
    )


def _short(exc: BaseException) -> str:
    # FhirHttpError text is safe (no query strings); others may quote URLs: name them only.
    if isinstance(exc, FhirHttpError) and exc.status is not None and 200 <= exc.status < 300:
        # retries spent on a body that kept arriving corrupt or cut: say what was wrong
        return f"{exc.outcome or 'bad body'} ({exc.message}) [{exc.method} {exc.url}]"
    return str(exc) if isinstance(exc, FhirHttpError) else f"{type(exc).__name__} while reading"


def _accept(job: _Job) -> str:
    return NDJSON if job.item == "output" else f"{NDJSON}, application/ndjson"


def summarise_errors(paths: Sequence[Path]) -> ErrorSummary:
    """Count the issues of OperationOutcome NDJSON files by severity and code (no text)."""
    severity: Counter[str] = Counter()
    code: Counter[str] = Counter()
    resources = issues = with_diag = 0
    for path in paths:
        for _, oo, _ in iter_ndjson(path):
            if type(oo) is BadLine:
                code["(unreadable line)"] += 1
                continue
            resources += 1
            for issue in (oo.get("issue") or []) if isinstance(oo, dict) else []:
                if not isinstance(issue, dict):
                    continue
                issues += 1
                severity[str(issue.get("severity", "unknown"))] += 1
                code[str(issue.get("code", "unknown"))] += 1
                with_diag += bool(issue.get("diagnostics"))
    return ErrorSummary(
        files=len(paths),
        resources=resources,
        issues=issues,
        by_severity=dict(sorted(severity.items())),
        by_code=dict(sorted(code.items())),
        with_diagnostics=with_diag,
    )


def _delete_job(client: FhirClient, status_url: str) -> None:
    """Tell the server it may drop the job's files; a server that cannot is not an error."""
    try:
        client.request("DELETE", status_url, ok_statuses=(404, 405))
    except FhirHttpError as exc:
        log.warning("could not delete the export job: %s", exc)
