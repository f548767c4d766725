"""The CLI through its real entry point: the installed console script for help; a process of
its own where the process is the point (the demo screen's file modes, an option error's exit
code, SIGINT): a tests/zygote.py child, without the start-up's imports; elsewhere its function
``fhir_cohort.cli:main`` in this process (tests/cli_main.py: exit code, stdout and stderr as
the script gives them, without ~2 s of imports per call)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest

from fhir_cohort.cli import (
    EXIT_AUTH,
    EXIT_CAPABILITY,
    EXIT_CRITERIA,
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    main,
)
from tests import zygote
from tests.cli_main import run_main
from tests.conftest_server import SMALL_HOSPITAL
from tests.local_http import always, proxy, serve

EXE = shutil.which("fhir-cohort") or str(Path(sys.executable).parent / "fhir-cohort")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script."""
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The entry point in this process."""
    return run_main(args)


def test_help_explains_commands_and_exit_codes() -> None:
    top = run_script("--help")
    assert top.returncode == EXIT_OK
    assert "screen" in top.stdout and "valuesets" in top.stdout and "exit codes" in top.stdout
    sub = run("screen", "--help")
    for option in ("--source", "--criteria", "--as-of", "--out", "--strict", "--validate"):
        assert option in sub.stdout


def test_valuesets_lists_every_value_set() -> None:
    out = run("valuesets")
    assert out.returncode == EXIT_OK
    for vs in ("sle", "glucocorticoids", "autoantibodies", "serious_comorbidity"):
        assert f"\n{vs} " in out.stdout


def test_screen_demo_writes_private_outputs(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    res = zygote.run(["screen", "--as-of", "2026-11-24", "--out", str(out_dir)])
    assert res.returncode == EXIT_OK, res.stderr
    assert "all patients" in res.stdout and str(out_dir) in res.stdout
    names = {"patients.csv", "evidence.csv", "attrition.csv", "group.json", "run.json"}
    assert names <= {p.name for p in out_dir.iterdir()}
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o600
    patients = pd.read_csv(out_dir / "patients.csv", dtype=str)
    run_rec = json.loads((out_dir / "run.json").read_text())
    assert run_rec["as_of"] == "2026-11-24"
    assert run_rec["counts"]["patients"] == len(patients) == 496
    assert len(run_rec["criteria"]["sha256"]) == 64
    assert "sle" in run_rec["value_sets"]


def test_screen_synthea_has_no_errors_and_no_candidates(tmp_path: Path, synthea13: Path) -> None:
    res = run(
        "screen",
        "--source",
        str(synthea13),
        "--as-of",
        "2026-11-24",
        "--out",
        str(tmp_path),
        "--validate",
    )
    assert res.returncode == EXIT_OK, res.stderr
    run_rec = json.loads((tmp_path / "run.json").read_text())
    assert run_rec["skipped"] == {} and run_rec["errors"] == []
    assert run_rec["read"]["Patient"] == 13
    assert run_rec["read"]["MedicationRequest"] == 1745
    patients = pd.read_csv(tmp_path / "patients.csv", dtype=str)
    assert len(patients) == 13
    assert set(patients["status"]) == {"ineligible"}
    assert (patients["sle"] == "not_met").all()
    group = json.loads((tmp_path / "group.json").read_text())
    assert group["quantity"] == 0 and "member" not in group


@pytest.mark.parametrize(
    ("content", "code"),
    [("criteria: []\nid: x\n", EXIT_CRITERIA), (None, EXIT_DATA)],
)
def test_errors_map_to_exit_codes(tmp_path: Path, content: str | None, code: int) -> None:
    if content is not None:
        crit = tmp_path / "bad.yaml"
        crit.write_text(content)
        res = run("screen", "--criteria", str(crit), "--out", str(tmp_path / "o"))
    else:
        res = run("screen", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert res.returncode == code
    assert res.stderr.startswith("fhir-cohort: error:")
    assert "Traceback" not in res.stderr


def test_strict_stops_on_a_malformed_line_and_names_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Patient.000.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}\n'
        '{"resourceType": "Patient", "id": "p2", "birthDate": "19\n'
    )
    lenient = run("screen", "--source", str(src), "--out", str(tmp_path / "a"), "-q")
    assert lenient.returncode == EXIT_OK
    rec = json.loads((tmp_path / "a" / "run.json").read_text())
    assert rec["skipped"] == {"Patient": 1}
    assert rec["errors"][0]["location"].endswith("Patient.000.ndjson:2")
    strict = run("screen", "--source", str(src), "--out", str(tmp_path / "b"), "--strict")
    assert strict.returncode == EXIT_DATA
    assert "Patient.000.ndjson:2" in strict.stderr
    # No resource content (PHI) in the message.
    assert "19" not in strict.stderr.split("Patient.000.ndjson:2", 1)[1]


def test_unmapped_csv_lists_what_a_synthea_export_codes_outside_the_value_sets(
    tmp_path: Path, synthea13: Path
) -> None:
    source = synthea13
    res = run(
        "screen", "--source", str(source), "--as-of", "2026-11-24", "--out", str(tmp_path), "-q"
    )
    assert res.returncode == EXIT_OK, res.stderr
    table = pd.read_csv(tmp_path / "unmapped.csv", dtype={"code": str}, keep_default_na=False)
    found = {(r.resource_type, r.code): r for r in table.itertuples()}
    # Counted by hand in the export (grep of its NDJSON files).
    hypertension = found[("Condition", "59621000")]
    assert hypertension.system == "http://snomed.info/sct" and hypertension.count == 2
    assert hypertension.display == "Essential hypertension (disorder)"
    lisinopril = found[("MedicationRequest", "314076")]
    assert lisinopril.display == "lisinopril 10 MG Oral Tablet" and lisinopril.count == 238
    run_rec = json.loads((tmp_path / "run.json").read_text())
    assert run_rec["unmapped"]["per_type"]["MedicationRequest"]["records"] >= 238


def test_unmapped_csv_lists_hba1c_from_a_synthea_style_observation_file(tmp_path: Path) -> None:
    """synthea-bulk-13 has no Observation file: Synthea's own HbA1c coding (LOINC 4548-4, as
    its heart/cardiac_labs module writes it) in a Bulk Observation file is listed with its
    count; with --unmapped-text a free-text medication is listed by its text."""
    src = tmp_path / "src"
    src.mkdir()
    obs = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {
                        "system": "http://loinc.org",
                        "code": "4548-4",
                        "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                    }
                ],
                "text": "Hemoglobin A1c/Hemoglobin.total in Blood",
            },
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-01-01",
            "valueQuantity": {"value": 5.9, "unit": "%", "code": "%"},
        }
        for i in range(17)
    ]
    med = {
        "resourceType": "MedicationStatement",
        "id": "m1",
        "status": "active",
        "medicationCodeableConcept": {"text": "HOUSE MIXTURE 10ML PO"},
        "subject": {"reference": "Patient/p1"},
    }
    (src / "Observation.000.ndjson").write_text("\n".join(json.dumps(o) for o in obs) + "\n")
    (src / "MedicationStatement.000.ndjson").write_text(json.dumps(med) + "\n")
    (src / "Patient.000.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    out = tmp_path / "out"
    res = run(
        "screen",
        "--source",
        str(src),
        "--as-of",
        "2026-11-24",
        "--out",
        str(out),
        "-q",
        "--unmapped-text",
    )
    assert res.returncode == EXIT_OK, res.stderr
    table = pd.read_csv(out / "unmapped.csv", dtype={"code": str}, keep_default_na=False)
    rows = {(r.resource_type, r.system, r.code, r.display, r.count) for r in table.itertuples()}
    assert (
        "Observation",
        "http://loinc.org",
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        17,
    ) in rows
    assert ("MedicationStatement", "", "", "HOUSE MIXTURE 10ML PO", 1) in rows
    assert json.loads((out / "run.json").read_text())["unmapped"]["free_text_listed"] is True


# -- options checked before any work, and exit codes end to end (issue 9 items 15, 18) ------

AS_OF = "2026-11-24"


def clean_env(**env: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")} | env


def script_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The entry point in a process of its own (tests/zygote.py) with only ``env``'s
    FHIR_COHORT_* variables."""
    return zygote.run(args, env=clean_env(**env), timeout=300)


def run_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The entry point in this process, with only ``env``'s FHIR_COHORT_* variables."""
    return run_main(args, env=clean_env(**env))


def assert_clean_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr


BAD_OPTIONS = [
    (("screen", "--batch-size", "0"), "--batch-size"),
    (("screen", "--batch-size", "-5"), "--batch-size"),
    (("screen", "--concurrency", "0"), "--concurrency"),
    (("screen", "--workers", "0"), "--workers"),
    (("screen", "--workers", "-1"), "--workers"),
    (("screen", "--workers", "two"), "--workers"),
    (("screen", "--auto-threshold", "-1"), "--auto-threshold"),
    (("screen", "--server-profile", "meditech"), "--server-profile meditech"),
    (("screen", "--server-profile", "{tmp}/a-file"), "server profile"),
    (("screen", "--timeout", "0"), "--timeout"),
    (("screen", "--timeout", "nan"), "--timeout"),
    (("screen", "--rate-limit", "-1"), "--rate-limit"),
    (("screen", "--criteria", "{tmp}/missing.yaml"), "no such file"),
    # a folder is a set of trials (screen_many): one without criteria files is a usage error
    (("screen", "--criteria", "{tmp}"), "no criteria files"),
    (("screen", "--strategy", "bulk", "--level", "group"), "--level group needs --group"),
    (("screen", "--group", "g1"), "--group is used only with --level group"),
    (("screen", "--out", "{tmp}/a-file"), "not a folder"),
    (("screen", "--out", "{tmp}/a-file/below"), "cannot create or write"),
    (("screen", "--cache", "{tmp}/a-file"), "--cache"),
    (("export", "--level", "group"), "--level group needs --group"),
    (("export", "--out", "{tmp}/a-file"), "not a folder"),
    (("export", "--criteria", "{tmp}/missing.yaml"), "no such file"),
    (("export", "--criteria", "{tmp}"), "is a folder"),
    (("export", "--timeout", "-3"), "--timeout"),
]


def main_exit(argv: list[str]) -> int:
    """The CLI in process (argparse exits with SystemExit): fast enough to sweep every option."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(("args", "hint"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_exit_2_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], hint: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with serve(always(200, b"{}")) as server:
        code = main_exit([*argv, "--source", server.base_url, "-q"])
        assert server.requests == []  # refused before any work
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert hint in err and "Traceback" not in err
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize(
    "args", [("--batch-size", "0"), ("--out", "{tmp}/a-file")], ids=["batch-size", "out"]
)
def test_bad_options_exit_2_through_the_entry_point(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = script_env("screen", *argv, "-q")
    assert_clean_error(res, EXIT_USAGE, args[0])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_out_folder_exits_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    res = run_env("screen", "--out", str(locked), "-q")
    assert_clean_error(res, EXIT_USAGE, "cannot create or write")


@pytest.mark.parametrize("command", ["screen", "export"])
def test_a_server_failing_after_retries_exits_5(tmp_path: Path, command: str) -> None:
    # Retry-After 0: the client's retries happen without waiting.
    with serve(always(500, b'{"resourceType": "OperationOutcome"}', **{"Retry-After": "0"})) as s:
        res = run_env(command, "--source", s.base_url, "--out", str(tmp_path / "o"), "-q")
        assert_clean_error(res, EXIT_SERVER, "HTTP 500")
        assert len(s.requests) > 1  # retried before giving up


@pytest.mark.integration
def test_a_rejected_bearer_token_exits_6(sekmet_factory, tmp_path: Path) -> None:
    server = sekmet_factory(auth_types=("bearer",), tokens=("the-right-token",))
    server.load_bundle(json.loads(SMALL_HOSPITAL.read_text()))
    args = ("screen", "--source", server.base_url, "--as-of", AS_OF, "-q")
    bad = run_env(*args, "--out", str(tmp_path / "bad"), FHIR_COHORT_TOKEN="a-wrong-token")
    assert_clean_error(bad, EXIT_AUTH, "HTTP 401")
    assert "a-wrong-token" not in bad.stderr + bad.stdout
    good = run_env(*args, "--out", str(tmp_path / "good"), FHIR_COHORT_TOKEN="the-right-token")
    assert good.returncode == EXIT_OK, good.stderr  # the server does check the token


def test_a_server_without_the_needed_capabilities_exits_7(tmp_path: Path) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [{"type": "Patient"}]}],
    }

    def handle(
        method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/fhir/metadata"):
            return 200, {"Content-Type": "application/fhir+json"}, json.dumps(statement).encode()
        return 404, {"Content-Type": "application/fhir+json"}, b"{}"

    with serve(handle) as server:
        res = run_env("screen", "--source", server.base_url, "--out", str(tmp_path / "o"), "-q")
    assert_clean_error(res, EXIT_CAPABILITY, "Condition")


OUTPUTS = ("patients.csv", "evidence.csv", "attrition.csv", "unmapped.csv", "group.json")


@pytest.mark.integration
def test_sigint_mid_screen_exits_130_and_the_same_command_completes_identically(
    small_hospital_server, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    args = ("screen", "--as-of", AS_OF, "-q", "--concurrency", "1", "--batch-size", "1")
    ref = run_env(*args, "--source", small_hospital_server.base_url, "--out", str(reference))
    assert ref.returncode == EXIT_OK, ref.stderr

    held, release = threading.Event(), threading.Event()
    seen = itertools.count(1)
    box: dict[str, str] = {}
    forward = proxy(small_hospital_server.base_url, lambda: box["base"])

    def handle(
        method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if next(seen) == 4:  # metadata, entry query, then a follow-up: hold it there
            held.set()
            release.wait(60)
        return forward(method, path, body, headers)

    out = tmp_path / "out"
    with serve(handle) as server:
        box["base"] = server.base_url
        cmd = [*args, "--source", server.base_url, "--out", str(out)]
        proc = zygote.start(cmd, env=clean_env())
        try:
            assert held.wait(120), "the screen never reached its follow-up queries"
            proc.send_signal(signal.SIGINT)
        finally:
            release.set()
            _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_INTERRUPTED, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert not (out / "patients.csv").exists()
        again = run_env(*cmd)
    assert again.returncode == EXIT_OK, again.stderr
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
