"""Bulk options through the CLI entry point: bad options fail before any request, and a damaged
export stops the screen before it reads anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from fakes import FakeTime

from fhir_cohort import remote
from fhir_cohort.cli import EXIT_OK, EXIT_SERVER, EXIT_USAGE, main
from fhir_cohort.errors import BulkExportError, OptionError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.remote import ServerOptions

BASE = "https://ehr.example.org/fhir"
STATUS = f"{BASE}/bulk-status/job-1"
FILE = "https://files.example.org/job-1/Patient.ndjson"


@pytest.fixture
def no_network() -> Iterator[responses.RequestsMock]:
    """Every request fails at once, and is recorded."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["export", "--level", "group"], "--level group needs --group"),
        (["screen", "--strategy", "bulk", "--level", "group"], "--level group needs --group"),
        (["screen", "--strategy", "bulk", "--group", "g1"], "--group is used only"),
        (["screen", "--strategy", "auto", "--concurrency", "0"], "--concurrency"),
        (["screen", "--strategy", "bulk", "--concurrency", "-2"], "--concurrency"),
        (["export", "--reuse-export", "--restart"], "contradict"),
    ],
)
def test_bad_bulk_options_exit_2_before_any_request(
    no_network: responses.RequestsMock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    out = tmp_path / "out"
    try:
        code = main([*argv, "--source", BASE, "--out", str(out)])
    except SystemExit as exc:  # argparse's own checks (positive integers) exit 2 themselves
        code = exc.code
    assert code == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert len(no_network.calls) == 0
    assert not out.exists()


def test_server_options_validate_on_construction() -> None:
    with pytest.raises(OptionError):
        ServerOptions(concurrency=0)
    with pytest.raises(OptionError):
        ServerOptions(strategy="bulk", bulk_level="group")
    assert ServerOptions(strategy="bulk", bulk_level="group", bulk_group="g1").bulk_group == "g1"


SECRET = "p-SECRET-77"


def test_a_damaged_export_stops_the_screen_then_a_rerun_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeTime()
    monkeypatch.setattr(
        remote,
        "build_client",
        lambda url, options: FhirClient(url, sleep=fake.sleep, clock=fake.clock, rng=lambda: 0.5),
    )
    manifest = {
        "transactionTime": "2026-01-02T03:04:05Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": False,
        "output": [{"type": "Patient", "url": FILE, "count": 2}],
        "error": [],
    }
    good = b'{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}\n'
    cut = good[:-12] + SECRET.encode()  # cut inside the last line
    out = tmp_path / "out"
    argv = ["screen", "--source", BASE, "--strategy", "bulk", "--out", str(out)]
    argv += ["--as-of", "2026-11-24"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
        rsps.get(STATUS, json=manifest)
        damaged = rsps.get(FILE, body=cut)
        assert main(argv) == EXIT_SERVER
    err = capsys.readouterr().err
    assert damaged.call_count > 1  # downloaded again before giving up
    assert "Patient.000.ndjson.gz" in err and "line 2" in err and SECRET not in err
    assert not (out / "patients.csv").exists() and not (out / "run.json").exists()

    with responses.RequestsMock() as rsps:
        rsps.get(FILE, body=good)
        rsps.delete(STATUS, status=202)
        assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["source"]["fetch"]["resumed"] is True
    assert run["counts"]["patients"] == 2
    assert "data cut: 2026-01-02T03:04:05Z (export transactionTime; an unfinished export" in printed


@pytest.mark.parametrize(
    ("argv", "cap"),
    [
        (["export"], 60.0),
        (["export", "--poll-max", "0.5"], 0.5),
        (["screen", "--strategy", "bulk", "--poll-max", "2", "--as-of", "2026-11-24"], 2.0),
    ],
)
def test_poll_max_caps_the_wait_between_status_polls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], cap: float
) -> None:
    """``--poll-max`` reaches the export's poll cap (run_export honours Retry-After up to it,
    tests/fhir/test_bulk.py), on both commands that export."""
    seen: list[float] = []

    def stop_at_kickoff(*args: object, poll_cap_seconds: float, **kw: object) -> None:
        seen.append(poll_cap_seconds)
        raise BulkExportError("stopped before any request")

    monkeypatch.setattr(remote, "run_export", stop_at_kickoff)
    code = main([*argv, "--source", BASE, "--out", str(tmp_path / "out")])
    assert code == EXIT_SERVER
    assert seen == [cap]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_poll_max_must_be_a_positive_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--poll-max", value, "--source", BASE, "--out", str(tmp_path)])
    assert exc.value.code == EXIT_USAGE
    assert "--poll-max" in capsys.readouterr().err
    with pytest.raises(OptionError, match="--poll-max"):
        ServerOptions(bulk_poll_max=0)
