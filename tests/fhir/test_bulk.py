"""Bulk ``$export`` client against scripted HTTP exchanges (``responses``); no real waiting."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from fakes import FakeTime
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.errors import MalformedResourceError, OptionError, TransientResponseError
from fhir_cohort.fhir.auth import BearerTokenAuth
from fhir_cohort.fhir.bulk import (
    LOG_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    BulkExportError,
    BulkExportRequest,
    BulkExportTimeout,
    BulkJobExpiredError,
    _LineCheck,
    run_export,
)
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.progress import Progress

BASE = "https://ehr.example.org/fhir"
KICKOFF = f"{BASE}/$export"
STATUS = f"{BASE}/bulk-status/job-1"
FILES = "https://files.example.org/job-1"


class BrokenStream(io.RawIOBase):
    """Serves ``data`` but resets the connection after ``fail_after`` bytes."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self.data = data
        self.fail_after = fail_after
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        n = min(len(buffer), self.fail_after - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _patients(n: int) -> bytes:
    return b"".join(
        json.dumps({"resourceType": "Patient", "id": f"p{i}"}).encode() + b"\n" for i in range(n)
    )


def _conditions(n: int, pad: int = 0) -> bytes:
    return b"".join(
        json.dumps(
            {
                "resourceType": "Condition",
                "id": f"c{i}",
                "subject": {"reference": f"Patient/p{i % 2}"},
                "note": [{"text": "x" * pad}],
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def _manifest(
    output: list[dict[str, Any]],
    error: list[dict[str, Any]] | None = None,
    *,
    token: bool = False,
) -> dict[str, Any]:
    return {
        "transactionTime": "2026-01-02T03:04:05Z",
        "request": f"{KICKOFF}?_type=Patient,Condition",
        "requiresAccessToken": token,
        "output": output,
        "error": error or [],
    }


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(fake_time: FakeTime) -> FhirClient:
    return FhirClient(
        BASE,
        auth=BearerTokenAuth("secret-token"),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        rng=lambda: 0.5,
    )


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _kickoff(mock: responses.RequestsMock) -> None:
    mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS})


def _export(client: FhirClient, fake_time: FakeTime, out: Path, **kw: Any) -> Any:
    kw.setdefault("poll_cap_seconds", 30)
    kw.setdefault("deadline_seconds", 3600)
    return run_export(
        client,
        kw.pop("request", BulkExportRequest(types=("Patient", "Condition"))),
        out,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        **kw,
    )


def _read(folder: Path) -> list[tuple[str, str]]:
    errors: list[MalformedResourceError] = []
    found = [
        (r["resourceType"], r["id"])
        for r, _ in open_source(folder).iter_resources(on_error=errors.append)
    ]
    assert errors == []
    return sorted(found)


def _events(folder: Path) -> list[str]:
    return [json.loads(line)["eventId"] for line in (folder / LOG_FILE).read_text().splitlines()]


def test_polls_honouring_retry_after_then_downloads_and_deletes(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    _kickoff(mock)
    mock.get(STATUS, status=202, headers={"X-Progress": "10% done", "Retry-After": "5"})
    mock.get(STATUS, status=202, headers={"X-Progress": "60% done", "Retry-After": "500"})
    mock.get(
        STATUS,
        json=_manifest(
            [
                {"type": "Patient", "url": f"{FILES}/Patient.ndjson?sig=s3cr3t", "count": 2},
                {"type": "Condition", "url": f"{FILES}/Condition-1.ndjson"},
                {"type": "Condition", "url": f"{FILES}/Condition-2.ndjson", "count": 1},
            ]
        ),
    )
    mock.get(f"{FILES}/Patient.ndjson", body=_patients(2))
    mock.get(f"{FILES}/Condition-1.ndjson", body=_conditions(3)[:-1])  # no final newline
    mock.get(f"{FILES}/Condition-2.ndjson", body=_conditions(1))
    delete = mock.delete(STATUS, status=202)
    seen: list[Progress] = []

    result = _export(client, fake_time, tmp_path, progress=seen.append)

    assert fake_time.sleeps == [5, 30]  # Retry-After honoured, then capped
    assert [p.message for p in seen if p.step == "waiting"] == [
        "waiting (10% done)",
        "waiting (60% done)",
    ]
    assert result.transaction_time == "2026-01-02T03:04:05Z"
    assert sorted((f.path.name, f.lines) for f in result.files) == [
        ("Condition.000.ndjson.gz", 3),
        ("Condition.001.ndjson.gz", 1),
        ("Patient.000.ndjson.gz", 2),
    ]
    assert result.resources_by_type() == {"Condition": 4, "Patient": 2}
    assert result.requests == 8  # kick-off, 3 polls, 3 files, DELETE
    assert delete.call_count == 1
    assert _read(tmp_path) == [("Condition", f"c{i}") for i in (0, 0, 1, 2)] + [
        ("Patient", "p0"),
        ("Patient", "p1"),
    ]
    kick = mock.calls[0].request
    assert kick.headers["Prefer"] == "respond-async"
    assert kick.headers["Accept"] == "application/fhir+json"
    assert "_type=Patient%2CCondition" in kick.url
    downloads = [c.request for c in mock.calls if c.request.url.startswith(FILES)]
    assert all("Authorization" not in r.headers for r in downloads)  # no token asked for
    assert "s3cr3t" not in (tmp_path / MANIFEST_FILE).read_text()
    assert "s3cr3t" not in (tmp_path / LOG_FILE).read_text()
    events = _events(tmp_path)
    assert events[0] == "kickoff" and events[-1] == "export_complete"
    assert events.count("status_progress") == 2
    assert events.count("download_request") == events.count("download_complete") == 3
    assert not list(tmp_path.glob(".*.part"))


def test_429_and_500_while_polling_go_through_the_client_retries(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    _kickoff(mock)
    mock.get(STATUS, status=429, headers={"Retry-After": "7"})
    mock.get(STATUS, status=500, json={"resourceType": "OperationOutcome", "issue": []})
    mock.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P.ndjson"}]))
    mock.get(f"{FILES}/P.ndjson", body=_patients(3))
    mock.delete(STATUS, status=202)

    result = _export(client, fake_time, tmp_path)

    assert client.stats.retries == 2
    assert fake_time.sleeps[0] == 7
    assert [f.lines for f in result.files] == [3]


@pytest.mark.parametrize(
    ("requires", "url", "sent"),
    [
        (False, f"{FILES}/P.ndjson", False),  # another origin, token not required
        (False, f"{BASE}/files/P.ndjson", False),  # the base's origin, token not required
        (True, f"{BASE}/files/P.ndjson", True),  # the spec: required -> sent, same origin
        ("true", f"{FILES}/P.ndjson", False),  # only a JSON true requires it
        (None, f"{FILES}/P.ndjson", False),
    ],
)
def test_token_is_sent_to_file_urls_only_when_the_manifest_requires_it(
    client: FhirClient,
    fake_time: FakeTime,
    mock: responses.RequestsMock,
    tmp_path: Path,
    requires: object,
    url: str,
    sent: bool,
) -> None:
    _kickoff(mock)
    manifest = _manifest([{"type": "Patient", "url": url}])
    manifest["requiresAccessToken"] = requires
    status = mock.get(STATUS, json=manifest)
    files = mock.get(url, body=_patients(1))
    mock.delete(STATUS, status=202)
    _export(client, fake_time, tmp_path)
    assert status.calls[0].request.headers["Authorization"] == "Bearer secret-token"
    got = files.calls[0].request.headers.get("Authorization")
    assert got == ("Bearer secret-token" if sent else None)


def test_a_file_url_on_plain_http_is_never_fetched_even_without_a_token(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    # export files hold PHI: a downgrade from the https server to http is refused outright
    _kickoff(mock)
    mock.get(STATUS, json=_manifest([{"type": "Patient", "url": "http://files.example.org/P"}]))
    files = mock.get("http://files.example.org/P", body=_patients(1))
    with pytest.raises(BulkExportError, match="plain http"):
        _export(client, fake_time, tmp_path)
    assert files.call_count == 0


def test_a_token_required_over_plain_http_is_refused_before_any_download(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    _kickoff(mock)
    mock.get(
        STATUS,
        json=_manifest(
            [
                {"type": "Patient", "url": f"{FILES}/P.ndjson"},
                {"type": "Condition", "url": "http://files.example.org/C.ndjson?sig=x"},
            ],
            token=True,
        ),
    )
    https = mock.get(f"{FILES}/P.ndjson", body=_patients(1))
    http = mock.get("http://files.example.org/C.ndjson", body=_conditions(1))
    with pytest.raises(BulkExportError, match=r"cleartext") as err:
        _export(client, fake_time, tmp_path)
    assert "http://files.example.org/C.ndjson" in str(err.value)
    assert "sig=x" not in str(err.value)
    assert https.call_count == http.call_count == 0


def _broken(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(BrokenStream(data, fail_after=len(data) // 2))  # type: ignore[arg-type]


ATTEMPTS = 6  # FhirClient's default max_retries (5) + 1


def test_a_body_cut_by_a_reset_is_downloaded_again_within_the_run(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    big = _conditions(2000, pad=100)  # ~280 kB: several chunks reach the disk before the reset
    _kickoff(mock)
    mock.get(STATUS, json=_manifest([{"type": "Condition", "url": f"{FILES}/C.ndjson"}]))
    cut = mock.get(f"{FILES}/C.ndjson", body=_broken(big))
    whole = mock.get(f"{FILES}/C.ndjson", body=big)
    mock.delete(STATUS, status=202)

    result = _export(client, fake_time, tmp_path)

    assert cut.call_count == 1 and whole.call_count == 1  # retried in the run, no re-run needed
    assert client.stats.retries == 1
    assert client.stats.bytes_received > len(big)  # the cut attempt's bytes are counted too
    assert result.resources_by_type() == {"Condition": 2000}
    assert len(_read(tmp_path)) == 2000
    assert not list(tmp_path.glob(".*.part"))


def test_download_that_keeps_breaking_stops_then_resumes_without_refetching_complete_files(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    big = _conditions(2000, pad=100)
    manifest = _manifest(
        [
            {"type": "Patient", "url": f"{FILES}/P.ndjson", "count": 2},
            {"type": "Condition", "url": f"{FILES}/C.ndjson", "count": 2000},
        ]
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as first:
        _kickoff(first)
        first.get(STATUS, json=manifest)
        first.get(f"{FILES}/P.ndjson", body=_patients(2))
        for _ in range(ATTEMPTS):  # every attempt the client's retry budget allows breaks
            first.get(f"{FILES}/C.ndjson", body=_broken(big))
        first_delete = first.delete(STATUS, status=202)
        with pytest.raises(BulkExportError, match=r"Condition\.000\.ndjson\.gz") as err:
            _export(client, fake_time, tmp_path, download_workers=1)
    assert "resume=True" in str(err.value) and "not used" in str(err.value)
    assert client.stats.retries == ATTEMPTS - 1
    assert client.stats.bytes_received > len(big)  # the breaks came mid-file, not at once
    assert first_delete.call_count == 0  # the job is kept for the resume
    assert (tmp_path / "Patient.000.ndjson.gz").exists()
    assert not (tmp_path / "Condition.000.ndjson.gz").exists()  # no partial file taken as whole
    assert not list(tmp_path.glob(".*.part"))
    assert "download_error" in _events(tmp_path)

    with responses.RequestsMock() as second:
        again = second.get(f"{FILES}/C.ndjson", body=big)
        second_delete = second.delete(STATUS, status=202)
        result = _export(client, fake_time, tmp_path)
        # neither the status URL nor the finished Patient file was asked for again
        assert [c.request.url for c in second.calls] == [f"{FILES}/C.ndjson", STATUS]
    assert again.call_count == 1 and second_delete.call_count == 1
    assert result.resumed and not result.reused
    assert result.resources_by_type() == {"Condition": 2000, "Patient": 2}
    assert len(_read(tmp_path)) == 2002


def test_line_count_mismatch_is_retried_then_an_error_naming_the_file(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    _kickoff(mock)
    mock.get(STATUS, json=_manifest([{"type": "Condition", "url": f"{FILES}/C", "count": 3}]))
    short = mock.get(f"{FILES}/C", body=_conditions(2))  # cut at a line end: parses, count short
    with pytest.raises(BulkExportError, match=r"Condition\.000\.ndjson\.gz: 2 lines .* count is 3"):
        _export(client, fake_time, tmp_path)
    assert short.call_count == ATTEMPTS
    assert not (tmp_path / "Condition.000.ndjson.gz").exists()


# Every way a file can arrive damaged with a 200 (and often a matching length): each is a
# transfer error, retried, never a resource quietly skipped by the reader. SECRET marks content
# that must never reach an error message.
SECRET = "p-SECRET-77"


def _damaged(rtype: str) -> dict[str, bytes]:
    good = [json.dumps({"resourceType": rtype, "id": f"{SECRET}-{i}"}).encode() for i in range(3)]
    whole = b"\n".join(good) + b"\n"
    return {
        "corrupted byte, count unchanged": whole.replace(b'"id"', b'"id\x00', 1).replace(
            b":", b"\x7f", 1
        ),
        "cut inside the last line": whole[:-9],
        "cut inside the last line with a newline": whole[:-9] + b"\n",
        "cut inside a middle line": good[0] + b"\n" + good[1][:10] + b"\n" + good[2] + b"\n",
        "a JSON array line": good[0] + b"\n[1, 2]\n" + good[2] + b"\n",
        "a JSON string line": good[0] + b'\n"' + SECRET.encode() + b'"\n' + good[2] + b"\n",
        "another resourceType": good[0]
        + b"\n"
        + json.dumps({"resourceType": "Basic", "id": SECRET}).encode()
        + b"\n",
        "no resourceType": good[0] + b"\n" + json.dumps({"id": SECRET}).encode() + b"\n",
        "a key flipped in transit": good[0] + b"\n" + good[1].replace(b'"id"', b'"iD"') + b"\n",
        "garbage bytes": good[0] + b"\n\x1f\x8b\x08\x00garbage " + SECRET.encode() + b"\n",
        "trailing garbage": whole + b"<html>" + SECRET.encode(),
    }


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        (item, kind)
        for item in ("output", "error")
        for kind in _damaged("Patient")
        # error files are not read as data: their OperationOutcomes need no id
        if (item, kind) != ("error", "a key flipped in transit")
    ],
)
def test_a_damaged_file_is_downloaded_again_and_never_kept(
    client: FhirClient,
    fake_time: FakeTime,
    mock: responses.RequestsMock,
    tmp_path: Path,
    kind: str,
    item: str,
) -> None:
    rtype = "Patient" if item == "output" else "OperationOutcome"
    entry = {"type": rtype, "url": f"{FILES}/F.ndjson"}
    manifest = _manifest([entry] if item == "output" else [], [entry] if item == "error" else [])
    bad = _damaged(rtype)[kind]
    good = b"".join(
        json.dumps({"resourceType": rtype, "id": f"x{i}"}).encode() + b"\n" for i in range(3)
    )
    _kickoff(mock)
    mock.get(STATUS, json=manifest)
    first = mock.get(f"{FILES}/F.ndjson", body=bad)
    then = mock.get(f"{FILES}/F.ndjson", body=good)
    mock.delete(STATUS, status=202)

    result = _export(client, fake_time, tmp_path)

    assert (first.call_count, then.call_count) == (1, 1)
    saved = result.files[0].path if item == "output" else result.error_files[0]
    with gzip.open(saved) as fh:
        assert fh.read() == good


@pytest.mark.parametrize("kind", list(_damaged("Patient")))
def test_a_file_damaged_on_every_attempt_stops_the_export_naming_the_file_only(
    client: FhirClient,
    fake_time: FakeTime,
    mock: responses.RequestsMock,
    tmp_path: Path,
    kind: str,
) -> None:
    _kickoff(mock)
    mock.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/F.ndjson?sig=abc"}]))
    files = mock.get(f"{FILES}/F.ndjson", body=_damaged("Patient")[kind])
    delete = mock.delete(STATUS, status=202)
    with pytest.raises(BulkExportError, match=r"Patient\.000\.ndjson\.gz: .*line") as err:
        _export(client, fake_time, tmp_path)
    assert files.call_count == ATTEMPTS
    message = str(err.value)
    assert SECRET not in message and "sig=abc" not in message
    assert f"{FILES}/F.ndjson" in message  # the URL, without its query string
    assert SECRET not in (tmp_path / LOG_FILE).read_text()
    assert delete.call_count == 0  # the job is kept: a later run may resume
    assert not (tmp_path / "Patient.000.ndjson.gz").exists()
    assert not list(tmp_path.glob(".*.part"))
    assert not json.loads((tmp_path / STATE_FILE).read_text())["completed"]


def test_a_utf8_bom_and_invalid_utf8_inside_a_string_are_not_transfer_errors(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    body = (
        b"\xef\xbb\xbf"
        + json.dumps({"resourceType": "Patient", "id": "p0"}).encode()
        + b'\n{"resourceType":"Patient","id":"p1","name":[{"text":"M\xfcller"}]}\r\n\n'
    )
    _kickoff(mock)
    mock.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P", "count": 2}]))
    files = mock.get(f"{FILES}/P", body=body)
    mock.delete(STATUS, status=202)
    result = _export(client, fake_time, tmp_path)
    assert files.call_count == 1
    assert [f.lines for f in result.files] == [2]


def test_error_files_are_saved_and_summarised_without_their_text(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    outcomes = [
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "processing",
                    "diagnostics": "Patient/p77 unreadable",
                },
                {"severity": "warning", "code": "not-supported"},
            ],
        },
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": "Patient/p78"}],
        },
    ]
    _kickoff(mock)
    mock.get(
        STATUS,
        json=_manifest(
            [{"type": "Patient", "url": f"{FILES}/P.ndjson"}],
            [{"type": "OperationOutcome", "url": f"{FILES}/err.ndjson"}],
        ),
    )
    mock.get(f"{FILES}/P.ndjson", body=_patients(1))
    mock.get(f"{FILES}/err.ndjson", body="".join(json.dumps(o) + "\n" for o in outcomes))
    mock.delete(STATUS, status=202)

    result = _export(client, fake_time, tmp_path)

    saved = tmp_path / "errors" / "OperationOutcome.000.ndjson.gz"
    assert result.error_files == (saved,)
    with gzip.open(saved, "rt") as fh:
        assert [json.loads(line) for line in fh] == outcomes
    assert result.errors.to_json() == {
        "files": 1,
        "resources": 2,
        "issues": 3,
        "by_severity": {"error": 2, "warning": 1},
        "by_code": {"not-supported": 1, "processing": 2},
        "with_diagnostics": 2,
    }
    assert "p77" not in json.dumps(result.to_json())
    assert _read(tmp_path) == [("Patient", "p0")]  # errors/ is not read as data


def test_deadline_keeps_the_job_and_an_expired_job_says_start_afresh(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    with responses.RequestsMock() as first:
        _kickoff(first)
        first.get(STATUS, status=202, headers={"Retry-After": "60"})
        with pytest.raises(BulkExportTimeout, match="resume=True"):
            _export(client, fake_time, tmp_path, deadline_seconds=100)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["status_url"] == STATUS

    with responses.RequestsMock() as second:
        second.get(
            STATUS,
            status=404,
            json={"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]},
        )
        with pytest.raises(BulkJobExpiredError, match=r"expired.*resume=False") as err:
            _export(client, fake_time, tmp_path)
        assert len(second.calls) == 1  # resumed from the saved status URL, no new kick-off
    assert err.value.status == 404
    assert "status_error" in _events(tmp_path)

    with responses.RequestsMock() as third:
        _kickoff(third)
        third.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P"}]))
        third.get(f"{FILES}/P", body=_patients(2))
        third.delete(STATUS, status=404)  # already gone: fine
        result = _export(client, fake_time, tmp_path, resume=False)
    assert not result.resumed
    assert _read(tmp_path) == [("Patient", "p0"), ("Patient", "p1")]


def _complete_export(client: FhirClient, fake_time: FakeTime, out: Path, n: int) -> Any:
    with responses.RequestsMock() as rsps:
        _kickoff(rsps)
        rsps.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P"}]))
        rsps.get(f"{FILES}/P", body=_patients(n))
        rsps.delete(STATUS, status=405)  # server cannot delete: fine
        return _export(client, fake_time, out)


def test_a_finished_export_is_exported_anew_unless_reuse_is_asked_for(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    first = _complete_export(client, fake_time, tmp_path, 2)
    assert not first.reused and not first.resumed
    # the same call again: a new export, which sees the data added since
    second = _complete_export(client, fake_time, tmp_path, 3)
    assert not second.reused and not second.resumed
    assert second.requests == 4  # kick-off, status, file, DELETE
    assert _read(tmp_path) == [("Patient", f"p{i}") for i in range(3)]
    # reuse=True: the completed export as it is, without a request, and saying so
    with responses.RequestsMock() as third:
        again = _export(client, fake_time, tmp_path, reuse=True)
        assert len(third.calls) == 0
    assert again.reused and not again.resumed and again.requests == 0
    assert again.to_json()["reused"] is True
    assert again.files == second.files and again.transaction_time == second.transaction_time


def test_reuse_refuses_an_export_whose_files_changed_and_contradicting_options(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    done = _complete_export(client, fake_time, tmp_path, 2)
    done.files[0].path.unlink()
    with responses.RequestsMock() as rsps:
        with pytest.raises(BulkExportError, match=r"lacks 1 of its files \(Patient\.000"):
            _export(client, fake_time, tmp_path, reuse=True)
        assert len(rsps.calls) == 0
    with pytest.raises(OptionError, match="resume=False"):
        _export(client, fake_time, tmp_path, reuse=True, resume=False)
    with pytest.raises(OptionError, match="download_workers"):
        _export(client, fake_time, tmp_path, download_workers=0)


def test_refuses_a_folder_with_foreign_data_or_another_request(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    (tmp_path / "Patient.ndjson").write_text("{}\n")
    with pytest.raises(BulkExportError, match="empty folder"):
        _export(client, fake_time, tmp_path)
    (tmp_path / "Patient.ndjson").unlink()
    with responses.RequestsMock() as rsps:
        _kickoff(rsps)
        rsps.get(STATUS, status=202, headers={"Retry-After": "60"})
        with pytest.raises(BulkExportTimeout):
            _export(client, fake_time, tmp_path, deadline_seconds=10)
    with pytest.raises(BulkExportError, match="another request"):
        _export(client, fake_time, tmp_path, request=BulkExportRequest(level="patient"))


def test_kickoff_refusal_carries_the_operation_outcome(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    mock.get(
        KICKOFF,
        status=400,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "diagnostics": "Unsupported _outputFormat"}],
        },
    )
    with pytest.raises(BulkExportError, match="Unsupported _outputFormat") as err:
        _export(client, fake_time, tmp_path)
    assert err.value.status == 400
    detail = json.loads((tmp_path / LOG_FILE).read_text())["eventDetail"]
    assert detail["errorCode"] == 400


def test_request_paths_and_validation() -> None:
    assert BulkExportRequest().path == "$export"
    assert BulkExportRequest(level="patient").path == "Patient/$export"
    assert BulkExportRequest(level="group", group_id="g 1").path == "Group/g%201/$export"
    with pytest.raises(OptionError, match="group_id"):
        BulkExportRequest(level="group")
    with pytest.raises(OptionError, match="group_id"):
        BulkExportRequest(level="system", group_id="g1")
    with pytest.raises(OptionError, match="level"):
        BulkExportRequest(level="everything")  # type: ignore[arg-type]
    for bad in ("code=123", "?code=1", "Condition?", "a/b?code=1"):
        with pytest.raises(OptionError, match="Type"):
            BulkExportRequest(type_filters=(bad,))


_codes = st.lists(st.from_regex(r"[A-Za-z0-9.|:/]{1,12}", fullmatch=True), min_size=1, max_size=4)


@given(codes=_codes, types=st.lists(st.sampled_from(["Patient", "Condition"]), unique=True))
def test_type_filter_commas_never_split_one_filter(codes: list[str], types: list[str]) -> None:
    request = BulkExportRequest(
        types=tuple(types), type_filters=(f"Condition?code={','.join(codes)}",)
    )
    sent = [v for k, v in request.params() if k == "_typeFilter"]
    assert len(sent) == 1 and "," not in sent[0]  # a server splitting on commas sees one filter
    assert sent[0].replace("%2C", ",") == request.type_filters[0]
    assert BulkExportRequest.from_json(request.to_json()) == request


_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


def _feed(body: bytes, cuts: list[int], rtype: str = "Patient") -> int:
    check = _LineCheck(rtype)
    bounds = [0, *sorted({c % (len(body) + 1) for c in cuts}), len(body)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            check.feed(body[lo:hi])
    return check.close()


@given(ids=st.lists(_ids, max_size=6), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_line_check_counts_the_same_however_the_body_is_chunked(
    ids: list[str], cuts: list[int]
) -> None:
    body = b"".join(
        json.dumps({"resourceType": "Patient", "id": i}, ensure_ascii=False).encode() + b"\n\n"
        for i in ids
    )
    assert _feed(body, cuts) == len(ids)


@given(
    ids=st.lists(_ids, min_size=1, max_size=4),
    at=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_line_check_rejects_every_body_cut_inside_a_line(
    ids: list[str], at: int, cuts: list[int]
) -> None:
    lines = [json.dumps({"resourceType": "Patient", "id": i}).encode() for i in ids]
    body = b"\n".join(lines) + b"\n"
    cut = body[: at % (len(body) + 1)]
    last = cut.split(b"\n")[-1]
    complete = cut.count(b"\n") + (last in lines)  # a cut just before a newline is whole
    if last and last not in lines:
        with pytest.raises(TransientResponseError, match="not valid JSON"):
            _feed(cut, cuts)
    else:
        assert _feed(cut, cuts) == complete
