"""The set-up cannot fail for a reason we can handle (issue 9 items 16, 17).

scripts/install_browser.sh runs with fake `id`, `apt-get` and `sleep` first on PATH: no root is
needed, nothing is installed and no time passes. The Makefile is read with `make -n`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The Debian packages the tests need, each installed by its script the same way: (script, the
# variable naming its binary, the package apt-get installs, what the binary prints).
INSTALLERS = {
    "browser": ("install_browser.sh", "FHIR_COHORT_CHROMIUM", "chromium", "Chromium"),
    "java": ("install_java.sh", "FHIR_COHORT_JAVA", "openjdk-17-jre-headless", "openjdk"),
}
LOCKED = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture(params=sorted(INSTALLERS))
def installer(request: pytest.FixtureRequest) -> tuple[str, str, str, str]:
    return INSTALLERS[request.param]


def _run_script(
    tmp_path: Path,
    installer: tuple[str, str, str, str],
    *,
    uid: int,
    update_fails: int = 0,
    ci: bool = False,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the install script against fakes; returns the result and the apt-get call log."""
    script, variable, _, shown = installer
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "apt-calls"
    binary = tmp_path / "binary"
    counter = tmp_path / "update-count"
    _fake(bin_dir, "id", f"echo {uid}")
    _fake(bin_dir, "sleep", f'echo "sleep $*" >> "{calls}"')
    _fake(
        bin_dir,
        "apt-get",
        f"""echo "apt-get $*" >> "{calls}"
case "$*" in
  *update*)
    n=$(cat "{counter}" 2>/dev/null || echo 0); echo $((n + 1)) > "{counter}"
    if [ "$n" -lt {update_fails} ]; then echo "{LOCKED}" >&2; exit 100; fi ;;
  *install*)
    printf '#!/bin/sh\\necho {shown} 1.0\\n' > "{binary}"; chmod +x "{binary}" ;;
esac""",
    )
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        variable: str(binary),
        "HOME": str(tmp_path),
    }
    if ci:
        env["CI"] = "true"
    done = subprocess.run(
        ["sh", str(REPO / "scripts" / script)], capture_output=True, text=True, env=env, timeout=60
    )
    return done, calls


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_without_root_it_installs_nothing_and_says_the_tests_skip(
    tmp_path: Path, installer: tuple[str, str, str, str]
) -> None:
    done, calls = _run_script(tmp_path, installer, uid=1000)
    assert done.returncode == 0, done.stderr
    assert "needs root" in done.stderr and "skipped" in done.stderr
    assert _calls(calls) == []


def test_without_root_under_ci_it_fails(
    tmp_path: Path, installer: tuple[str, str, str, str]
) -> None:
    done, calls = _run_script(tmp_path, installer, uid=1000, ci=True)
    assert done.returncode == 1
    assert "needs root" in done.stderr
    assert _calls(calls) == []


def test_as_root_it_waits_for_the_apt_lock_then_installs(
    tmp_path: Path, installer: tuple[str, str, str, str]
) -> None:
    done, calls = _run_script(tmp_path, installer, uid=0, update_fails=2)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("waiting") == 2
    log = _calls(calls)
    assert [c for c in log if "update" in c] == ["apt-get -q update"] * 3
    assert log.count("sleep 5") == 2
    [install] = [c for c in log if "install" in c]
    # apt-get itself waits for the dpkg lock, bounded.
    assert "-o DPkg::Lock::Timeout=300" in install and installer[2] in install
    assert f"{installer[3]} 1.0" in done.stdout + done.stderr


def test_a_lock_held_for_ever_gives_up_after_five_minutes(
    tmp_path: Path, installer: tuple[str, str, str, str]
) -> None:
    done, calls = _run_script(tmp_path, installer, uid=0, update_fails=10_000)
    assert done.returncode != 0
    assert "still held after 300s" in done.stderr
    log = _calls(calls)
    assert log.count("sleep 5") == 60  # 300 s in 5 s steps, then it stops
    assert not any("install" in c for c in log)


def test_a_present_binary_is_left_alone(
    tmp_path: Path, installer: tuple[str, str, str, str]
) -> None:
    binary = tmp_path / "binary"
    binary.write_text(f"#!/bin/sh\necho {installer[3]} 2.0\n")
    binary.chmod(0o755)
    done, calls = _run_script(tmp_path, installer, uid=1000)
    assert done.returncode == 0 and f"already installed: {installer[3]} 2.0" in done.stdout
    assert _calls(calls) == []


# -- Makefile and pins -------------------------------------------------------------------------


def _make_n(target: str, tmp_path: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # missing: make -n lists every set-up step
    done = subprocess.run(
        ["make", "-n", target, f"VENV={venv}", f"PYTHON={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_make_demo_installs_the_package_without_the_test_extra(tmp_path: Path) -> None:
    steps = _make_n("demo", tmp_path)
    installs = [line for line in steps.splitlines() if "pip install" in line]
    assert any(line.rstrip().endswith("install --quiet -e .") for line in installs), installs
    assert "[test" not in steps and ",spark]" not in steps and "install_java" not in steps
    assert "Python >= 3.11" in steps


def test_make_test_checks_lint_and_format(tmp_path: Path) -> None:
    steps = _make_n("test", tmp_path)
    assert '-e ".[test,spark]"' in steps
    assert "ruff check ." in steps and "ruff format --check ." in steps
    assert "install_browser.sh" in steps and "install_java.sh" in steps


def test_make_screenshot_is_the_only_target_that_writes_the_readme_picture() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert makefile.count("FHIR_COHORT_UPDATE_SCREENSHOT=1") == 1
    screenshot = makefile.split("\nscreenshot:", 1)[1].split("\n\n", 1)[0]
    assert "FHIR_COHORT_UPDATE_SCREENSHOT=1" in screenshot


def test_ruff_is_pinned_exactly() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["test"]
    [ruff] = [d for d in extra if d.startswith("ruff")]
    assert ruff.startswith("ruff==")


# -- no test changes a tracked file ------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize(
    ("body", "changes"),
    [
        ("(Path(__file__).parent / 'tracked.txt').write_text('changed')", True),
        ("(Path(__file__).parent / 'untracked.txt').write_text('new')", False),
        ("(tmp_path / 'scratch.txt').write_text('fine')", False),
        ("(Path(__file__).parent / 'edited.txt').write_text('v3')", True),
        (
            "import subprocess; subprocess.run(['git', '-c', 'user.name=t', '-c', "
            "'user.email=t@example.org', 'commit', '-qam', 'mid-run'], check=True)",
            False,
        ),
    ],
    ids=[
        "tracked-file-changed",
        "new-untracked-file",
        "tmp_path",
        "local-edit-changed-again",
        "local-edit-committed-during-the-run",
    ],
)
def test_a_run_that_changes_a_tracked_file_fails(tmp_path: Path, body: str, changes: bool) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.txt").write_text("original")
    # Edited before the run: a local change is no alarm as long as the run leaves it alone.
    (repo / "edited.txt").write_text("v1")
    (repo / "test_it.py").write_text(
        f"from pathlib import Path\n\n\ndef test_it(tmp_path):\n    {body}\n"
    )
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "init")
    (repo / "edited.txt").write_text("v2")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.tracked_files", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        # No third-party plugins (hypothesis, faker): seconds of imports the check needs not.
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    if changes:
        assert done.returncode == 1, done.stdout
        assert "tests changed tracked files" in done.stdout
    else:
        assert done.returncode == 0, done.stdout


# -- tests name no machine path and reach ../shared only through require_shared ----------------

# Where checkouts, homes and scratch space live; made-up paths like "/data/export" are fine.
MACHINE_ROOTS = ("work", "home", "root", "Users", "tmp", "mnt", "opt")


def _test_sources() -> list[Path]:
    return sorted(p for p in (REPO / "tests").rglob("*.py") if p.name != "test_setup.py")


def test_no_test_names_a_machine_path() -> None:
    quote = "[\"']"
    pattern = re.compile(rf"{quote}/(?:{'|'.join(MACHINE_ROOTS)})/")
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in _test_sources()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_shared_data_is_reached_only_through_require_shared() -> None:
    conftest = REPO / "tests" / "conftest.py"
    uses = [
        f"{p.relative_to(REPO)}:{n}"
        for p in _test_sources()
        if p != conftest
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"SHARED\b|\.\./shared|parents?(\[\d\])? / [\"']shared[\"']", line)
    ]
    assert uses == []
    text = conftest.read_text()
    # Every path under SHARED in conftest is handed out through require_shared.
    for name in re.findall(r"^(\w+) = SHARED /", text, flags=re.M):
        assert f"require_shared({name})" in text, name
