"""FHIR Bulk Data ``$export`` client: kick-off, poll, download, resume. Knows nothing of criteria.

One export lives in one folder, which :func:`fhir_cohort.fhir.sources.open_source` reads as is::

    out_dir/
      Condition.000.ndjson.gz     one file per manifest output entry, gzip-compressed
      Patient.000.ndjson.gz
      errors/OperationOutcome.000.ndjson.gz   the manifest's error files
      manifest.json               the server's manifest (URLs without query strings)
      export_state.json           the job: request, status URL, manifest, completed files
      export_log.ndjson           append-only log (SMART bulk export log convention)

Every HTTP exchange goes through the client's one retry loop, so 429/5xx and connection errors
are retried. Files are read inside :meth:`FhirClient.exchange`: every line must be a JSON
object of the manifest entry's type, the last line whole and the count the manifest's, else the
body was damaged in transit and the file is downloaded again within the same retry budget. A
file is written under a hidden temporary name and renamed only once complete and checked, so an
interrupted run never leaves a partial file that looks complete; the next
``run_export(..., resume=True)`` polls the saved status URL or downloads only the missing files.
A completed export in the folder is used again only with ``reuse=True``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
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

import orjson
import requests

# The bulk errors live in the one exception tree; re-exported here for existing imports.
from fhir_cohort.errors import (
    AuthError,
    BulkExportError,
    BulkExportTimeout,
    BulkJobExpiredError,
    FhirHttpError,
    OptionError,
    TransientResponseError,
)
from fhir_cohort.fhir.client import FhirClient, _parse_retry_after, is_loopback, strip_query
from fhir_cohort.files import open_private, private_dir, private_file

__all__ = [
    "ERRORS_DIR",
    "LOG_FILE",
    "MANIFEST_FILE",
    "NDJSON",
    "STATE_FILE",
    "BulkExportError",
    "BulkExportRequest",
    "BulkExportTimeout",
    "BulkJobExpiredError",
    "ErrorSummary",
    "ExportProgress",
    "ExportResult",
    "ExportedFile",
    "run_export",
    "summarise_errors",
]

log = logging.getLogger("fhir_cohort.fhir.bulk")

NDJSON = "application/fhir+ndjson"
STATE_FILE = "export_state.json"
LOG_FILE = "export_log.ndjson"
MANIFEST_FILE = "manifest.json"
ERRORS_DIR = "errors"
_STATE_VERSION = 1
_CHUNK = 1 << 16

Level = Literal["system", "patient", "group"]


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
        }


@dataclass(frozen=True)
class ExportProgress:
    """Passed to the ``progress`` callback. ``message`` is the server's X-Progress, if any."""

    phase: Literal["kickoff", "waiting", "downloading", "complete"]
    elapsed: float
    message: str | None = None
    files_done: int = 0
    files_total: int = 0
    bytes: int = 0


ProgressCallback = Callable[[ExportProgress], None]


# -- the SMART-style log ----------------------------------------------------------------------


class _ExportLog:
    """Append-only ``export_log.ndjson``: one JSON object per event, flushed at once.

    Shape of the SMART bulk-data-client log: ``exportId, timestamp, eventId, eventDetail``.
    URLs are logged without query strings (signed file URLs carry credentials there).
    """

    def __init__(self, path: Path, export_id: str) -> None:
        self.path = path
        self.export_id = export_id
        self._lock = threading.Lock()

    def __call__(self, event_id: str, detail: Mapping[str, Any]) -> None:
        row = {
            "exportId": self.export_id,
            "timestamp": datetime.now(UTC).astimezone().isoformat(),
            "eventId": event_id,
            "eventDetail": dict(detail),
        }
        line = json.dumps(row, separators=(",", ":"), default=str) + "\n"
        with self._lock, open_private(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)


def _error_detail(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, FhirHttpError):
        return {"code": exc.status, "body": exc.outcome, "message": str(exc)}
    return {"code": None, "body": None, "message": type(exc).__name__}


# -- state ------------------------------------------------------------------------------------


class _State:
    """``export_state.json``: everything needed to resume. Saved atomically after each change.

    It keeps the manifest with its full URLs (signed URLs are needed to resume downloads), so
    it is written owner-readable only.
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> _State | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BulkExportError(
                f"{path}: unreadable export state ({type(exc).__name__}); "
                "start again with resume=False"
            ) from None
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            raise BulkExportError(f"{path}: not an export state this version understands")
        return cls(path, data)

    def save(self) -> None:
        with self._lock:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open_private(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.data, fh, indent=1)
            os.replace(tmp, self.path)

    def file_done(self, url: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.data["files"][url] = record
        self.save()


# -- the export -------------------------------------------------------------------------------


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

    - an unfinished export of the same request and server (a run that crashed, timed out or
      lost files): ``resume=True`` continues it (polls its status URL, downloads the missing
      files) and the result says ``resumed``; ``resume=False`` discards it and starts anew;
    - a completed export: returned as is, without any request, only with ``reuse=True``
      (the result says ``reused``); otherwise it is discarded and a new export started, so a
      re-run never screens an old data cut by accident.

    ``poll_cap_seconds`` caps one wait between status polls (``Retry-After`` is honoured up to
    it); ``deadline_seconds`` bounds the whole wait for the job. ``capability_statement`` only
    feeds the kick-off log entry (software name/version). ``sleep``/``clock`` are injectable.

    Raises :class:`OptionError` for ``download_workers < 1`` or ``reuse`` without ``resume``,
    :class:`BulkJobExpiredError` when the saved job is gone (start again with ``resume=False``),
    :class:`BulkExportTimeout` at the deadline (the job is kept: resume later),
    :class:`BulkExportError` when files failed, stayed corrupt or are miscounted after the
    client's retries (complete files are kept).
    """
    if download_workers < 1:
        raise OptionError(f"download_workers must be at least 1, got {download_workers}")
    if reuse and not resume:
        raise OptionError("reuse=True (reuse a completed export) contradicts resume=False")
    out = private_dir(out_dir)
    start = clock()
    stats0 = client.stats.snapshot()

    state = _State.load(out / STATE_FILE) if resume else None
    if state is not None:
        saved = BulkExportRequest.from_json(state.data.get("request") or {})
        if saved != request or state.data.get("base_url") != strip_query(client.base_url):
            raise BulkExportError(
                f"{out} holds an export of another request or server; use another folder, or "
                "resume=False to discard it"
            )
        if state.data.get("completed") and not reuse:
            log.info("the folder holds a completed export: starting a new one (reuse=True uses it)")
            state = None
            _clear_previous(out)
    if not resume:
        _clear_previous(out)
    elif state is None:
        _refuse_foreign_data(out)
    reused = state is not None and bool(state.data.get("completed"))
    resumed = state is not None and not reused
    if reused:
        _check_intact(out, state)  # type: ignore[arg-type]
    if state is None:
        state = _State(
            out / STATE_FILE,
            {
                "version": _STATE_VERSION,
                "exportId": uuid.uuid4().hex,
                "base_url": strip_query(client.base_url),
                "request": request.to_json(),
                "status_url": None,
                "manifest": None,
                "files": {},
                "completed": False,
            },
        )
    elog = _ExportLog(out / LOG_FILE, state.data["exportId"])

    def report(phase: Any, **kw: Any) -> None:
        if progress is not None:
            progress(ExportProgress(phase=phase, elapsed=clock() - start, **kw))

    if not state.data.get("completed"):
        manifest = state.data.get("manifest")
        if manifest is None:
            status_url = state.data.get("status_url")
            if status_url is None:
                report("kickoff")
                status_url = _kickoff(client, request, elog, capability_statement)
                state.data["status_url"] = status_url
                state.save()
            else:
                log.info("resuming export: polling the saved status URL")
            manifest = _poll(
                client,
                status_url,
                elog,
                report,
                sleep,
                clock,
                start,
                poll_cap_seconds,
                deadline_seconds,
            )
            state.data["manifest"] = manifest
            state.save()
            _write_manifest(out / MANIFEST_FILE, manifest)
        else:
            log.info("resuming export: downloading the files not yet complete")
        _download_all(client, manifest, out, state, elog, report, download_workers)
        state.data["completed"] = True
        state.save()
        if not (out / MANIFEST_FILE).exists():
            _write_manifest(out / MANIFEST_FILE, manifest)
        result = _result(out, state, request, client, stats0, clock() - start, resumed, reused)
        elog(
            "export_complete",
            {
                "files": len(result.files),
                "resources": sum(f.lines for f in result.files),
                "bytes": sum(f.bytes for f in result.files),
                "attachments": None,
                "duration": int((clock() - start) * 1000),
            },
        )
        if delete_on_complete and state.data.get("status_url"):
            _delete_job(client, state.data["status_url"])
    result = _result(out, state, request, client, stats0, clock() - start, resumed, reused)
    report(
        "complete",
        files_done=len(result.files),
        files_total=len(result.files),
        bytes=sum(f.bytes for f in result.files),
    )
    return result


def _check_intact(out: Path, state: _State) -> None:
    """A completed export about to be reused must still be whole on disk."""
    jobs = _plan(state.data.get("manifest") or {})
    missing = [job.rel_path for job in jobs if not _is_done(out, state, job)]
    if missing:
        raise BulkExportError(
            f"the completed export in {out} lacks {len(missing)} of its files "
            f"({', '.join(missing[:3])}...) or they changed: export again without reusing it"
        )


def _clear_previous(out: Path) -> None:
    """resume=False: forget a previous job in this folder and the files it wrote."""
    try:
        old = _State.load(out / STATE_FILE)
    except BulkExportError:
        old = None  # unreadable: nothing to salvage, but the files it names cannot be known
    if old is not None:
        for record in old.data.get("files", {}).values():
            (out / record["path"]).unlink(missing_ok=True)
    (out / STATE_FILE).unlink(missing_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for tmp in [*out.glob(".*.part"), *out.glob(f"{ERRORS_DIR}/.*.part")]:
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


def _kickoff(
    client: FhirClient,
    request: BulkExportRequest,
    elog: _ExportLog,
    capability: Mapping[str, Any] | None,
) -> str:
    software = (capability or {}).get("software") or {}
    detail: dict[str, Any] = {
        "exportUrl": strip_query(client.url(request.path)),
        "softwareName": software.get("name"),
        "softwareVersion": software.get("version"),
        "softwareReleaseDate": software.get("releaseDate"),
        "fhirVersion": (capability or {}).get("fhirVersion"),
        "requestParameters": _merged(request.params()),
    }
    try:
        resp = client.request(
            "GET",
            request.path,
            params=request.params(),
            headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
        )
    except FhirHttpError as exc:
        elog("kickoff", {**detail, "errorCode": exc.status, "errorBody": exc.outcome})
        raise BulkExportError(
            "the server refused the $export kick-off",
            method="GET",
            url=exc.url,
            status=exc.status,
            outcome=exc.outcome,
        ) from exc
    location = resp.headers.get("Content-Location")
    safe = strip_query(resp.url or client.url(request.path))
    if resp.status_code != 202 or not location:
        elog("kickoff", {**detail, "errorCode": resp.status_code, "errorBody": None})
        raise BulkExportError(
            "kick-off did not answer 202 Accepted with a Content-Location",
            method="GET",
            url=safe,
            status=resp.status_code,
        )
    elog("kickoff", {**detail, "errorCode": None, "errorBody": None})
    return client.url(location)


def _merged(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for k, v in params:
        merged[k] = f"{merged[k]},{v}" if k in merged else v
    return merged


def _poll(
    client: FhirClient,
    status_url: str,
    elog: _ExportLog,
    report: Callable[..., None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    start: float,
    cap: float,
    deadline: float,
) -> dict[str, Any]:
    interval = 1.0  # without Retry-After: 1 s, doubling up to the cap
    while True:
        try:
            resp = client.request("GET", status_url, headers={"Accept": "application/json"})
        except FhirHttpError as exc:
            elog("status_error", _error_detail(exc))
            if exc.status in (404, 410):
                raise BulkJobExpiredError(
                    "the export job has expired or was deleted on the server; its files cannot "
                    "be fetched any more: start a fresh export (resume=False)",
                    method="GET",
                    url=exc.url,
                    status=exc.status,
                    outcome=exc.outcome,
                ) from exc
            raise
        if resp.status_code == 200:
            manifest = client.decode(resp)
            if not isinstance(manifest.get("output"), list) or "transactionTime" not in manifest:
                elog("status_error", {"code": 200, "body": None, "message": "bad manifest"})
                raise BulkExportError(
                    "the completed export's manifest lacks output[] or transactionTime",
                    method="GET",
                    url=strip_query(status_url),
                    status=200,
                )
            elog("status_complete", {"transactionTime": manifest["transactionTime"]})
            elog(
                "manifest_complete",
                {
                    "transactionTime": manifest["transactionTime"],
                    "totalOutputFileCount": len(manifest.get("output") or []),
                    "totalDeletedFileCount": len(manifest.get("deleted") or []),
                    "totalErrorFileCount": len(manifest.get("error") or []),
                    "totalManifests": 1,
                },
            )
            return manifest
        if resp.status_code != 202:
            elog("status_error", {"code": resp.status_code, "body": None, "message": "unexpected"})
            raise BulkExportError(
                "unexpected answer from the export status URL",
                method="GET",
                url=strip_query(status_url),
                status=resp.status_code,
            )
        x_progress = resp.headers.get("X-Progress")
        retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
        wait = min(retry_after if retry_after is not None else interval, cap)
        interval = min(interval * 2, cap)
        elog("status_progress", {"xProgress": x_progress, "retryAfter": retry_after})
        report("waiting", message=x_progress)
        if clock() + wait - start > deadline:
            elog("status_error", {"code": 202, "body": None, "message": "client deadline"})
            raise BulkExportTimeout(
                f"the export is still running after {clock() - start:.0f}s (deadline "
                f"{deadline:g}s); the job is kept: run again with resume=True to continue",
                method="GET",
                url=strip_query(status_url),
                status=202,
            )
        sleep(wait)


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
    tmp = path.with_name(f".{path.name}.tmp")
    with open_private(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(safe, indent=1))
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Job:
    url: str
    item: Literal["output", "error"]
    type: str
    rel_path: str  # relative to out_dir
    count: int | None


def _plan(manifest: Mapping[str, Any]) -> list[_Job]:
    jobs: list[_Job] = []
    seen: Counter[tuple[str, str]] = Counter()
    for item in ("output", "error"):
        for entry in manifest.get(item) or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
                raise BulkExportError(f"manifest {item}[] entry without a url")
            rtype = entry.get("type") if item == "output" else "OperationOutcome"
            if not isinstance(rtype, str) or not rtype.isalpha():
                raise BulkExportError(f"manifest {item}[] entry with a bad type")
            n = seen[(item, rtype)]
            seen[(item, rtype)] += 1
            name = f"{rtype}.{n:03d}.ndjson.gz"
            count = entry.get("count")
            jobs.append(
                _Job(
                    url=entry["url"],
                    item=item,  # type: ignore[arg-type]
                    type=rtype,
                    rel_path=name if item == "output" else f"{ERRORS_DIR}/{name}",
                    count=count if isinstance(count, int) and count >= 0 else None,
                )
            )
    return jobs


def _is_done(out: Path, state: _State, job: _Job) -> bool:
    record = state.data["files"].get(job.url)
    if not record or record.get("path") != job.rel_path:
        return False
    path = out / job.rel_path
    return path.is_file() and path.stat().st_size == record.get("size")


def _download_all(
    client: FhirClient,
    manifest: Mapping[str, Any],
    out: Path,
    state: _State,
    elog: _ExportLog,
    report: Callable[..., None],
    workers: int,
) -> None:
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
            "%d of %d export files already complete: not downloading them again", done, len(jobs)
        )
    private_dir(out / ERRORS_DIR)
    lock = threading.Lock()
    progress = {"done": done, "bytes": 0}
    failures: list[tuple[str, BaseException]] = []

    def one(job: _Job) -> None:
        try:
            lines, nbytes = _download(client, job, out, elog, requires_token)
        except Exception as exc:
            elog("download_error", {"fileUrl": strip_query(job.url), **_error_detail(exc)})
            with lock:
                failures.append((job.rel_path, exc))
            if not isinstance(exc, FhirHttpError | OSError | requests.RequestException):
                raise
            return
        size = (out / job.rel_path).stat().st_size
        state.file_done(
            job.url,
            {
                "path": job.rel_path,
                "type": job.type,
                "item": job.item,
                "lines": lines,
                "bytes": nbytes,
                "size": size,
            },
        )
        with lock:
            progress["done"] += 1
            progress["bytes"] += nbytes
            snapshot = dict(progress)
        report(
            "downloading",
            files_done=snapshot["done"],
            files_total=len(jobs),
            bytes=snapshot["bytes"],
        )

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-dl") as pool:
        for fut in [pool.submit(one, j) for j in todo]:
            fut.result()
    if failures:
        gone = [e for _, e in failures if isinstance(e, FhirHttpError) and e.status in (404, 410)]
        kept = len(jobs) - len(failures)
        why = "; ".join(sorted(f"{name}: {_short(exc)}" for name, exc in failures))
        msg = (
            f"{len(failures)} of {len(jobs)} export files failed ({why}); the export is "
            f"incomplete and was not used; the {kept} complete files are kept: run again "
            "with resume=True to fetch the rest"
        )
        if len(gone) == len(failures):
            raise BulkJobExpiredError(
                msg + " (the files are gone on the server: if so, start a fresh export "
                "with resume=False)"
            )
        # an auth failure stays one (exit 6): chained so the CLI sees it
        denied = next((e for _, e in failures if isinstance(e, AuthError)), None)
        raise BulkExportError(msg) from denied


def _may_carry_token(url: str) -> bool:
    """Never send a token in cleartext: https, or http to a loopback host only."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


def _download(
    client: FhirClient, job: _Job, out: Path, elog: _ExportLog, requires_token: bool
) -> tuple[int, int]:
    """Stream one file to ``<name>.part`` gzip-compressed, check every line, rename it.

    The body is read inside :meth:`FhirClient.exchange`, so a body cut by a reset, a line that
    is not a resource of the entry's type, a cut last line or a count that differs from the
    manifest's is retried (re-downloaded whole) within the client's one retry budget.
    """
    final = out / job.rel_path
    tmp = final.with_name(f".{final.name}.part")
    elog(
        "download_request",
        {"fileUrl": strip_query(job.url), "itemType": job.item, "resourceType": job.type},
    )
    try:
        lines, nbytes = client.exchange(
            "GET",
            job.url,
            lambda resp: _receive(client, resp, job, tmp),
            headers={"Accept": _accept(job)},
            authenticate=requires_token and _may_carry_token(job.url),
            stream=True,
        )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    elog(
        "download_complete",
        {"fileUrl": strip_query(job.url), "resourceCount": lines, "fileSize": nbytes},
    )
    return lines, nbytes


def _receive(client: FhirClient, resp: requests.Response, job: _Job, tmp: Path) -> tuple[int, int]:
    """One attempt: the body to ``tmp`` (truncated first), every line checked as it passes."""
    check = _LineCheck(job.type, need_id=job.item == "output")
    nbytes = 0
    try:
        private_file(tmp)  # gzip.open keeps the mode of the file it truncates
        with resp, gzip.open(tmp, "wb", compresslevel=6) as gz:
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                if not chunk:
                    continue
                gz.write(chunk)
                nbytes += len(chunk)
                check.feed(chunk)
            if check.pending:
                gz.write(b"\n")  # so files concatenate and the reader sees a whole last line
            lines = check.close()
    finally:
        client.stats.add(nbytes=nbytes)
    if job.count is not None and lines != job.count:
        raise _transient(resp, f"{lines} lines but the manifest's count is {job.count}")
    return lines, nbytes


_BOM = b"\xef\xbb\xbf"


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
        if self.lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:  # invalid UTF-8 inside a string: the reader decodes it with replacement
                resource = orjson.loads(line.decode("utf-8", "replace"))
            except orjson.JSONDecodeError:
                where = f"the body ends inside line {self.lineno}" if cut else None
                raise TransientResponseError(
                    f"{where or f'line {self.lineno}'}: not valid JSON (cut or garbled)"
                ) from None
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
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    oo = json.loads(line)
                except ValueError:
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


def _result(
    out: Path,
    state: _State,
    request: BulkExportRequest,
    client: FhirClient,
    stats0: Mapping[str, float | int],
    seconds: float,
    resumed: bool,
    reused: bool,
) -> ExportResult:
    manifest = state.data.get("manifest") or {}
    files: list[ExportedFile] = []
    error_files: list[Path] = []
    for job in _plan(manifest):
        record = state.data["files"].get(job.url)
        if record is None:
            continue
        if job.item == "error":
            error_files.append(out / job.rel_path)
        else:
            files.append(
                ExportedFile(job.type, out / job.rel_path, record["lines"], record["bytes"])
            )
    stats = client.stats.snapshot()
    return ExportResult(
        out_dir=out,
        transaction_time=str(manifest.get("transactionTime", "")),
        request=request,
        files=tuple(files),
        error_files=tuple(error_files),
        errors=summarise_errors(error_files),
        requests=int(stats["requests"] - stats0["requests"]),
        bytes=int(stats["bytes_received"] - stats0["bytes_received"]),
        seconds=seconds,
        resumed=resumed,
        reused=reused,
    )
