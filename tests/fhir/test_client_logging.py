"""No log line carries a query string (patient ids) at any -v level (issue 9 item 10).

urllib3 logs each request line, query included ("GET /fhir/Condition?patient=... HTTP/1.1"):
the CLI's logging set-up keeps it at WARNING unless -vvv, and strips queries from every record.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.cli import EXIT_OK, main
from fhir_cohort.logs import RedactQueries, strip_queries
from tests.server.sekmet import SekmetServer

PATIENT_IDS = [f"srv-p{i}" for i in range(1, 7)]
EXE = shutil.which("fhir-cohort") or str(Path(sys.executable).parent / "fhir-cohort")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures logging for the whole process: put it back for the next tests."""
    root = logging.getLogger()
    names = ("urllib3", "requests")
    saved = root.level, [list(h.filters) for h in root.handlers]
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.setLevel(saved[0])
    for handler, filters in zip(root.handlers, saved[1], strict=False):
        handler.filters = filters
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.integration
@pytest.mark.parametrize("verbosity", ["-vv", "-vvv"])
def test_debug_logs_of_a_server_screen_hold_no_query_and_no_patient_id(
    small_hospital_server: SekmetServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
    verbosity: str,
) -> None:
    for name in [k for k in os.environ if k.startswith("FHIR_COHORT_")]:
        monkeypatch.delenv(name)
    caplog.set_level(logging.DEBUG)
    args = ["screen", "--source", small_hospital_server.base_url, "--out", str(tmp_path), "-q"]
    code = main([verbosity, *args, "--as-of", "2026-11-24"])
    assert code == EXIT_OK
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "fhir_cohort" in {r.name.split(".")[0] for r in caplog.records}  # debug was on
    for pid in PATIENT_IDS:
        assert pid not in text
    assert "?" not in "".join(r.getMessage() for r in caplog.records if "/fhir/" in r.getMessage())
    urllib3_lines = [r for r in caplog.records if r.name.startswith("urllib3")]
    if verbosity == "-vv":
        assert not [r for r in urllib3_lines if r.levelno < logging.WARNING]
    else:  # asked for: the request lines are there, cut before their query
        assert any('"GET /fhir/Condition HTTP/1.1"' in r.getMessage() for r in urllib3_lines)


@pytest.mark.integration
def test_the_console_script_prints_no_query_at_vvv(
    small_hospital_server: SekmetServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")}
    res = subprocess.run(
        [EXE, "-vvv", "screen", "--source", small_hospital_server.base_url, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == EXIT_OK, res.stderr
    assert "urllib3.connectionpool" in res.stderr and "/fhir/Condition" in res.stderr
    for pid in PATIENT_IDS:
        assert pid not in res.stderr
    assert "patient=" not in res.stderr and "_count=" not in res.stderr


# anything but blanks, quotes and angle brackets (a URL in a log line never holds those raw)
query_values = st.text(
    alphabet=st.characters(
        blacklist_characters="\"'<>#", blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")
    ),
    min_size=1,
    max_size=40,
)


@given(query_values, st.sampled_from(["http://h:1/fhir/X", "/fhir/X", "h:443/fhir/X"]))
def test_strip_queries_removes_any_query(query: str, prefix: str) -> None:
    line = f'"GET {prefix}?patient={query} HTTP/1.1" 200'
    assert strip_queries(line) == f'"GET {prefix} HTTP/1.1" 200'


def test_the_filter_rewrites_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "urllib3.connectionpool", logging.DEBUG, __file__, 1, '%s "%s %s"', None, None
    )
    record.args = ("http://h:80", "GET", "/fhir/Condition?patient=p-secret")
    try:
        raise ValueError("Max retries exceeded with url: /fhir/Condition?patient=p-secret")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert RedactQueries().filter(record)
    assert record.getMessage() == 'http://h:80 "GET /fhir/Condition"'
    assert record.exc_text is not None and "p-secret" not in record.exc_text
