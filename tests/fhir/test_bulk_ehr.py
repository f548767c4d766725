"""Bulk ``$export`` against what EHRs do that the test server cannot show on demand (scripted
with ``responses``, no real waiting): another export already running (429 at kick-off), a
Retry-After of hours, the Bulk Data 2.0 ``deleted[]`` files, files expired on the server. The
kick-off's parameters are checked for every level; the CLI's "export still running" goes
through ``main`` with the real client on a fake clock."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from fakes import FakeTime

from fhir_cohort import remote
from fhir_cohort.cli import (
    EXIT_EXPORT_BUSY,
    EXIT_EXPORT_PENDING,
    EXIT_OK,
    EXIT_USAGE,
    _server_options,
    build_parser,
    exit_code_for,
    main,
)
from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.bulk import (
    DELETED_DIR,
    LOG_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    BulkExportAlreadyRunningError,
    BulkExportRequest,
    BulkExportTimeout,
    BulkJobExpiredError,
    ExportState,
    deleted_keys,
    run_export,
)
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.sources import open_source

BASE = "https://ehr.example.org/fhir"
KICKOFF = f"{BASE}/$export"
STATUS = f"{BASE}/bulk-status/job-1"
STATUS_2 = f"{BASE}/bulk-status/job-2"
FILES = "https://files.example.org"
HOURS_5 = "18000"  # Retry-After Oracle Health has been seen to send (SMART Fetch's notes)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(fake_time: FakeTime) -> FhirClient:
    return FhirClient(BASE, sleep=fake_time.sleep, clock=fake_time.clock, rng=lambda: 0.5)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _ndjson(*resources: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def _patients(*ids: str) -> bytes:
    return _ndjson(*({"resourceType": "Patient", "id": i} for i in ids))


def _manifest(output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "transactionTime": "2026-03-04T05:06:07Z",
        "request": KICKOFF,
        "requiresAccessToken": False,
        "output": output,
        "error": [],
        **extra,
    }


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


def _events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]


def _read(folder: Path) -> list[tuple[str, str]]:
    errors: list[MalformedResourceError] = []
    found = [
        (r["resourceType"], r["id"])
        for r, _ in open_source(folder).iter_resources(on_error=errors.append)
    ]
    assert errors == []
    return sorted(found)


# -- the kick-off ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        BulkExportRequest(types=("Patient",)),
        BulkExportRequest(level="patient", types=("Patient", "Condition", "Observation")),
        BulkExportRequest(
            level="group",
            group_id="registry-12",
            types=("Patient", "Condition", "MedicationRequest", "Observation"),
            since="2026-01-01T00:00:00Z",
            type_filters=(
                "Observation?code=http://loinc.org|1,http://loinc.org|2",
                "Condition?clinical-status=active",
            ),
        ),
    ],
)
def test_type_is_one_comma_separated_parameter_at_every_level(
    client: FhirClient,
    fake_time: FakeTime,
    mock: responses.RequestsMock,
    tmp_path: Path,
    request_: BulkExportRequest,
) -> None:
    """Oracle Health rejects a repeated ``_type``: one parameter, comma-separated, always."""
    kick = mock.get(f"{BASE}/{request_.path}", status=202, headers={"Content-Location": STATUS})
    mock.get(STATUS, json=_manifest([]))
    mock.delete(STATUS, status=202)
    _export(client, fake_time, tmp_path, request=request_)
    query = parse_qsl(urlsplit(kick.calls[0].request.url).query)
    names = [k for k, _ in query]
    assert names.count("_type") == 1
    assert dict(query)["_type"] == ",".join(request_.types)
    assert names.count("_outputFormat") == 1 and names.count("_since") == bool(request_.since)
    # one _typeFilter per filter, a comma inside one filter never splits it
    filters = [v for k, v in query if k == "_typeFilter"]
    assert [f.replace("%2C", ",") for f in filters] == list(request_.type_filters)


def test_429_at_kick_off_says_another_export_is_running(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    busy = mock.get(
        KICKOFF,
        status=429,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "diagnostics": "export already in progress"}],
        },
    )
    with pytest.raises(BulkExportAlreadyRunningError) as err:
        _export(client, fake_time, tmp_path)
    assert busy.call_count > 1  # a passing throttle is retried first
    text = str(err.value)
    assert "another export by this client" in text and "cancel it" in text
    assert "export already in progress" in text  # the server's own words
    assert exit_code_for(err.value) == EXIT_EXPORT_BUSY
    state = ExportState.load(tmp_path / STATE_FILE)
    assert state is None or state.status_url is None  # nothing to resume
    kickoff = _events(tmp_path)[-1]
    assert kickoff["eventId"] == "kickoff" and kickoff["eventDetail"]["errorCode"] == 429


def test_restart_cancels_the_unfinished_job_before_kicking_off(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    """One export per client at a time (Oracle, Epic): discarding a job must cancel it."""
    with responses.RequestsMock() as first:
        first.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
        first.get(STATUS, status=202, headers={"Retry-After": HOURS_5})
        with pytest.raises(BulkExportTimeout):
            _export(client, fake_time, tmp_path)
    with responses.RequestsMock() as second:
        cancel = second.delete(STATUS, status=202)
        second.get(KICKOFF, status=202, headers={"Content-Location": STATUS_2})
        second.get(STATUS_2, json=_manifest([{"type": "Patient", "url": f"{FILES}/P"}]))
        second.get(f"{FILES}/P", body=_patients("a"))
        second.delete(STATUS_2, status=202)
        _export(client, fake_time, tmp_path, resume=False)
        methods = [(c.request.method, c.request.url) for c in second.calls]
    assert cancel.call_count == 1 and methods[0] == ("DELETE", STATUS)


def test_restart_never_cancels_another_servers_job(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    other = "https://other.example.org/fhir"
    with responses.RequestsMock() as first:
        first.get(f"{other}/$export", status=202, headers={"Content-Location": f"{other}/s/1"})
        first.get(f"{other}/s/1", status=202, headers={"Retry-After": HOURS_5})
        with pytest.raises(BulkExportTimeout):
            _export(
                FhirClient(other, sleep=fake_time.sleep, clock=fake_time.clock), fake_time, tmp_path
            )
    with responses.RequestsMock() as second:
        second.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
        second.get(STATUS, status=202, headers={"Retry-After": HOURS_5})
        with pytest.raises(BulkExportTimeout):
            _export(client, fake_time, tmp_path, resume=False)
        assert [c.request.method for c in second.calls] == ["GET", "GET"]  # no DELETE


# -- a Retry-After of hours -------------------------------------------------------------------


def test_a_retry_after_of_hours_saves_the_job_and_stops_then_a_rerun_continues(
    client: FhirClient, fake_time: FakeTime, tmp_path: Path
) -> None:
    with responses.RequestsMock() as first:
        first.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
        first.get(STATUS, status=202, headers={"Retry-After": HOURS_5, "X-Progress": "queued"})
        with pytest.raises(BulkExportTimeout, match=r"poll again in 5\.0 h") as err:
            _export(client, fake_time, tmp_path, deadline_seconds=3600)
    assert fake_time.sleeps == []  # stopped at once, not after polling for an hour
    assert exit_code_for(err.value) == EXIT_EXPORT_PENDING
    state = ExportState.load(tmp_path / STATE_FILE)
    assert state is not None and state.status_url == STATUS and state.kickoffs == 1
    assert _events(tmp_path)[-1]["eventId"] == "export_pending"

    with responses.RequestsMock() as second:  # the same call later: polls, no new kick-off
        second.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P"}]))
        second.get(f"{FILES}/P", body=_patients("a", "b"))
        second.delete(STATUS, status=202)
        result = _export(client, fake_time, tmp_path, deadline_seconds=3600)
        assert KICKOFF not in [c.request.url for c in second.calls]
    assert result.resumed and _read(tmp_path) == [("Patient", "a"), ("Patient", "b")]


@pytest.mark.parametrize(
    ("deadline", "retry_after", "pending", "sleeps"),
    [
        (3600, HOURS_5, True, []),  # the server's estimate passes the limit: stop now
        (3600, "600", False, [30]),  # within the limit: wait (capped by the poll cap)
        (math.inf, HOURS_5, False, [30]),  # --wait: poll every poll cap, however long asked
        (20, None, True, [1, 2, 4, 8]),  # no Retry-After: 1 s doubling until the limit
    ],
)
def test_the_wait_limit_against_the_servers_retry_after(
    client: FhirClient,
    fake_time: FakeTime,
    mock: responses.RequestsMock,
    tmp_path: Path,
    deadline: float,
    retry_after: str | None,
    pending: bool,
    sleeps: list[float],
) -> None:
    mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
    headers = {"Retry-After": retry_after} if retry_after else {}
    if pending:
        mock.get(STATUS, status=202, headers=headers)
        with pytest.raises(BulkExportTimeout, match="still running"):
            _export(client, fake_time, tmp_path, deadline_seconds=deadline)
    else:
        mock.get(STATUS, status=202, headers=headers)
        mock.get(STATUS, json=_manifest([]))
        mock.delete(STATUS, status=202)
        _export(client, fake_time, tmp_path, deadline_seconds=deadline)
    assert fake_time.sleeps == sleeps


# -- deleted[] ---------------------------------------------------------------------------------


def _deleted_bundle(*urls: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": u}} for u in urls],
    }


def test_the_manifests_deleted_resources_are_recorded_and_never_read(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
    manifest = _manifest(
        [
            {"type": "Patient", "url": f"{FILES}/P", "count": 3},
            {"type": "Condition", "url": f"{FILES}/C", "count": 1},
        ],
        deleted=[{"type": "Bundle", "url": f"{FILES}/D?sig=s3cr3t", "count": 2}],
    )
    mock.get(STATUS, json=manifest)
    mock.get(f"{FILES}/P", body=_patients("a", "b", "c"))
    mock.get(
        f"{FILES}/C",
        body=_ndjson({"resourceType": "Condition", "id": "c1", "subject": {"reference": "x"}}),
    )
    mock.get(
        f"{FILES}/D",
        body=_ndjson(
            _deleted_bundle(f"{BASE}/Patient/b", "Condition/c9/_history/2"),
            _deleted_bundle("Patient/z"),
        ),
    )
    mock.delete(STATUS, status=202)
    result = _export(client, fake_time, tmp_path)

    # a server that lists a deleted resource in output[] too: it is not screened
    assert _read(tmp_path) == [("Condition", "c1"), ("Patient", "a"), ("Patient", "c")]
    assert set(result.deleted) == {("Patient", "b"), ("Condition", "c9"), ("Patient", "z")}
    assert result.to_json()["deleted"] == {"Condition": 1, "Patient": 2}
    assert result.resources_by_type() == {"Condition": 1, "Patient": 2}
    assert (tmp_path / DELETED_DIR / "Bundle.000.ndjson.gz").is_file()
    assert deleted_keys([tmp_path / DELETED_DIR / "Bundle.000.ndjson.gz"]) == list(result.deleted)
    assert "s3cr3t" not in (tmp_path / MANIFEST_FILE).read_text()
    assert (tmp_path / DELETED_DIR).stat().st_mode & 0o777 == 0o700
    for written in (MANIFEST_FILE, "Patient.000.ndjson.gz", f"{DELETED_DIR}/Bundle.000.ndjson.gz"):
        assert (tmp_path / written).stat().st_mode & 0o777 == 0o600  # rewritten ones too
    events = [e["eventId"] for e in _events(tmp_path)]
    assert events.count("download_complete") == 3
    # reusing the folder keeps them out and says which they were, without any request
    with responses.RequestsMock() as none:
        again = _export(client, fake_time, tmp_path, reuse=True)
        assert len(none.calls) == 0
    assert again.deleted == result.deleted and again.files == result.files


# -- expired files -----------------------------------------------------------------------------


def test_expired_files_mean_a_new_export_not_a_failure(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    kick = mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
    mock.get(
        STATUS,
        json=_manifest(
            [
                {"type": "Patient", "url": f"{FILES}/old/P"},
                {"type": "Condition", "url": f"{FILES}/old/C"},
            ]
        ),
    )
    mock.get(f"{FILES}/old/P", body=_patients("a"))
    mock.get(f"{FILES}/old/C", status=410)
    mock.delete(STATUS, status=202)
    mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS_2})  # the second kick-off
    mock.get(STATUS_2, json=_manifest([{"type": "Patient", "url": f"{FILES}/new/P"}]))
    mock.get(f"{FILES}/new/P", body=_patients("a", "b"))
    mock.delete(STATUS_2, status=202)

    result = _export(client, fake_time, tmp_path)

    assert result.reexported and result.to_json()["reexported"] is True
    assert kick.call_count == 1
    assert _read(tmp_path) == [("Patient", "a"), ("Patient", "b")]  # the new job's files only
    events = [e["eventId"] for e in _events(tmp_path)]
    assert events.count("kickoff") == 2 and events.count("file_expired") == 1
    state = ExportState.load(tmp_path / STATE_FILE)
    assert state is not None and state.kickoffs == 2 and state.status_url == STATUS_2


def test_files_that_expire_again_stop_with_the_expired_error(
    client: FhirClient, fake_time: FakeTime, mock: responses.RequestsMock, tmp_path: Path
) -> None:
    mock.get(KICKOFF, status=202, headers={"Content-Location": STATUS})
    mock.get(STATUS, json=_manifest([{"type": "Patient", "url": f"{FILES}/P"}]))
    gone = mock.get(f"{FILES}/P", status=404)
    cancel = mock.delete(STATUS, status=202)
    with pytest.raises(BulkJobExpiredError, match="expired too"):
        _export(client, fake_time, tmp_path)
    assert gone.call_count == 2  # once per export: a 404 is not retried
    assert cancel.call_count == 1  # the expired job ended before the new kick-off


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(
        remote,
        "build_client",
        lambda url, options: FhirClient(url, sleep=fake.sleep, clock=fake.clock, rng=lambda: 0.5),
    )
    return fake


def test_cli_says_export_still_running_then_the_same_command_continues(
    fake_client: FakeTime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    argv = ["export", "--source", BASE, "--out", str(out), "-q", "--level", "group"]
    argv += ["--group", "g1"]
    with responses.RequestsMock() as slow:
        slow.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": STATUS})
        slow.get(STATUS, status=202, headers={"Retry-After": HOURS_5})
        assert main(argv) == EXIT_EXPORT_PENDING
    err = capsys.readouterr().err
    assert "export still running; run the same command again to continue" in err
    assert fake_client.sleeps == []

    with responses.RequestsMock() as done:  # the same command: polls the saved job
        manifest = _manifest(
            [{"type": "Patient", "url": f"{FILES}/P"}],
            deleted=[{"type": "Bundle", "url": f"{FILES}/D"}],
        )
        done.get(STATUS, json=manifest)
        done.get(f"{FILES}/P", body=_patients("a"))
        done.get(f"{FILES}/D", body=_ndjson(_deleted_bundle("Patient/b", "Patient/c")))
        done.delete(STATUS, status=202)
        assert main([a for a in argv if a != "-q"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "resumed export" in printed and "left out of the data): 2 Patient" in printed
    with gzip.open(out / "Patient.000.ndjson.gz") as fh:
        assert json.loads(fh.readline())["id"] == "a"


@pytest.mark.parametrize(
    ("flags", "max_wait", "deadline"),
    [
        ([], 3600.0, 3600.0),
        (["--max-wait", "120"], 120.0, 120.0),
        (["--wait"], None, math.inf),
    ],
)
def test_wait_options_reach_the_export(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flags: list[str],
    max_wait: float | None,
    deadline: float,
) -> None:
    for command in (["export"], ["screen", "--strategy", "bulk"]):
        args = build_parser().parse_args([*command, *flags, "--source", BASE, "--out", "o"])
        assert _server_options(args).bulk_max_wait == max_wait
    seen: list[float] = []

    def stop(*args: object, deadline_seconds: float, **kw: object) -> None:
        seen.append(deadline_seconds)

    monkeypatch.setattr(remote, "run_export", stop)
    remote.run_bulk(FhirClient(BASE), BulkExportRequest(), tmp_path, max_wait=max_wait)
    assert seen == [deadline]


def test_wait_and_max_wait_contradict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--wait", "--max-wait", "60", "--source", BASE, "--out", str(tmp_path)]
    assert main(argv) == EXIT_USAGE
    assert "contradict" in capsys.readouterr().err
