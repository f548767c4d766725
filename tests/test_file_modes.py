"""Every file and folder every command writes is private, whatever the umask (issue 9 item 11).

Files hold patient data (outputs, snapshots, export files, manifests, logs, journals, the
Group, report.html, run.json): 0600. Folders the tool creates, parents included: 0700. A folder
it did not create keeps its mode, with a warning when others can read it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cohort.files import prepare_out_dir, private_dir, private_writer
from tests.cli_main import run_main
from tests.local_http import always, serve
from tests.server.sekmet import SekmetServer, generate_key_pair, write_private_pem

EXE = shutil.which("fhir-cohort") or str(Path(sys.executable).parent / "fhir-cohort")
AS_OF = "2026-11-24"
UMASKS = pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
# sekmet asks for Retry-After: 1 on an export of the small hospital that is done sooner.
FAST_POLL = ("--poll-max", "0.05")


def run(*args: str, umask: int, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in this process under ``umask`` (a child's umask and folder, without a child's
    2 s of imports); the installed script itself is run once, below."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")}
    return run_main(args, env=env, umask=umask, cwd=cwd)


def run_script(*args: str, umask: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")}
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=600, umask=umask, env=env
    )


def entries(root: Path) -> Iterator[tuple[Path, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            yield path, stat.S_IMODE(path.lstat().st_mode)


def assert_private(root: Path, *, root_mode: int | None = 0o700) -> int:
    """Every file under ``root`` 0600, every folder 0700; returns how many files."""
    wrong = {
        str(p.relative_to(root)): oct(m)
        for p, m in entries(root)
        if m != (0o700 if p.is_dir() else 0o600)
    }
    assert wrong == {}
    if root_mode is not None:
        assert stat.S_IMODE(root.stat().st_mode) == root_mode
    return sum(1 for p, _ in entries(root) if p.is_file())


@pytest.fixture(scope="module")
def disk_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    (src / "Patient.000.ndjson").write_text(
        json.dumps({"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}) + "\n"
    )
    return src


@UMASKS
def test_screen_on_disk_creates_private_folders_and_files(
    tmp_path: Path, disk_source: Path, umask: int
) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    # the installed script in a child process, as a user runs it
    res = run_script("screen", "--source", str(disk_source), "--out", str(out), "-q", umask=umask)
    assert res.returncode == 0, res.stderr
    n = assert_private(tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700  # parents it created too
    assert n >= 10 and (out / "report.html").exists()


@UMASKS
@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["funnel", "full", "bulk"])
def test_screen_from_a_server_keeps_every_file_private(
    small_hospital_server: SekmetServer, tmp_path: Path, umask: int, strategy: str
) -> None:
    out = tmp_path / "out"
    res = run(
        "screen",
        "--source",
        small_hospital_server.base_url,
        "--strategy",
        strategy,
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        "-q",
        *FAST_POLL,
        umask=umask,
    )
    assert res.returncode == 0, res.stderr
    files = {p.name for p, _ in entries(out)}
    assert "snapshot" in files
    if strategy == "bulk":
        assert {"export_log.ndjson", "manifest.json", "errors"} <= files
    assert assert_private(out) > 10


@UMASKS
@pytest.mark.integration
def test_export_keeps_every_file_private(
    small_hospital_server: SekmetServer, tmp_path: Path, umask: int
) -> None:
    out = tmp_path / "a" / "export"
    res = run(
        "export",
        "--source",
        small_hospital_server.base_url,
        "--out",
        str(out),
        "-q",
        *FAST_POLL,
        umask=umask,
    )
    assert res.returncode == 0, res.stderr
    names = {p.name for p, _ in entries(out)}
    assert {"export_log.ndjson", "manifest.json", "errors"} <= names
    assert any(n.endswith(".ndjson.gz") for n in names)
    assert_private(tmp_path / "a")


# umask 000 only: the strictest case (the successful runs above cover 022 too)
@pytest.mark.parametrize("umask", [0o000], ids=["umask000"])
def test_failed_runs_leave_only_private_folders_and_files(tmp_path: Path, umask: int) -> None:
    # A server that fails every request (without delay: Retry-After 0), for each strategy that
    # writes before failing, and a --strict run stopped by a malformed line.
    with serve(always(500, b"{}", **{"Retry-After": "0"})) as server:
        for strategy in ("funnel", "bulk"):
            out = tmp_path / strategy / "out"
            res = run(
                "screen",
                "--source",
                server.base_url,
                "--strategy",
                strategy,
                "--out",
                str(out),
                "-q",
                umask=umask,
            )
            assert res.returncode == 5, res.stderr
            assert_private(tmp_path / strategy)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Patient.000.ndjson").write_text('{"resourceType": "Patient", "id": \n')
    out = tmp_path / "strict" / "out"
    res = run("screen", "--source", str(bad), "--out", str(out), "--strict", umask=umask)
    assert res.returncode == 4, res.stderr
    assert_private(tmp_path / "strict")


@UMASKS
def test_an_existing_out_folder_keeps_its_mode_with_a_warning(
    tmp_path: Path, disk_source: Path, umask: int
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o755)
    res = run("screen", "--source", str(disk_source), "--out", str(mine), "-q", umask=umask)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    assert "accessible to other users" in res.stderr and res.stderr.count("WARNING") == 1
    assert_private(mine, root_mode=0o755)
    # `--out .` writes into the current folder and leaves its mode alone too.
    here = tmp_path / "here"
    here.mkdir()
    here.chmod(0o751)
    res = run("screen", "--source", str(disk_source), "--out", ".", "-q", umask=umask, cwd=here)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(here.stat().st_mode) == 0o751
    assert_private(here, root_mode=0o751)
    # A private folder gets no warning.
    quiet = tmp_path / "quiet"
    quiet.mkdir(mode=0o700)
    res = run("screen", "--source", str(disk_source), "--out", str(quiet), "-q", umask=umask)
    assert res.returncode == 0 and "WARNING" not in res.stderr


# -- the helpers themselves, in process -----------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_helpers_ignore_the_umask(tmp_path: Path, open_umask: None) -> None:
    folder = private_dir(tmp_path / "x" / "y")
    with private_writer(folder / "a.csv") as fh:
        fh.write("x\n")
    assert assert_private(tmp_path / "x") == 1
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o777)
    private_dir(existing)
    prepare_out_dir(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o777
    assert list(existing.iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize("kind", ["pem", "jwks"])
def test_a_smart_key_readable_by_others_is_warned_about(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    from jwt.algorithms import RSAAlgorithm

    from fhir_cohort.fhir.auth import load_signing_key

    key = generate_key_pair("RS384")
    if kind == "pem":
        path = write_private_pem(key, tmp_path / "k.pem")
        load = {"pem_path": path}
    else:
        path = tmp_path / "k.jwks"
        path.write_text(json.dumps({"keys": [json.loads(RSAAlgorithm.to_jwk(key))]}))
        load = {"jwks_path": path, "alg": "RS384"}
    for mode, warned in ((0o600, False), (0o640, True), (0o604, True)):
        path.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fhir_cohort"):
            load_signing_key(**load)  # type: ignore[arg-type]
        assert any("accessible to other users" in r.message for r in caplog.records) is warned
        assert stat.S_IMODE(path.stat().st_mode) == mode  # never changed
        if warned:
            from fhir_cohort import files

            files._warned.clear()  # once per path and process: reset for the next mode
