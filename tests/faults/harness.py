"""What the fault suite and benchmarks/faults.py share: the data, the command, the verdict.

A run is judged against the fault-free run of the same strategy:

- ``identical``: exit 0 and the same patients.csv and evidence.csv (lines compared sorted);
- ``clear_error``: an exit code that names the failure (not 0, not 1 = "a bug"), a
  ``fhir-cohort: error:`` message and no traceback;
- ``different``: exit 0 with other results: silent data loss, must never happen;
- ``unclear_error``: a traceback, exit 1 or no message.

After a ``clear_error`` (or a SIGKILL) the *same command* is run again without faults: it must
then end ``identical`` (the state left behind is resumable).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tests import zygote
from tests.cli_main import run_main

AS_OF = "2026-11-24"
STRATEGIES = ("funnel", "full", "bulk")
TOKEN = "fault-suite-token"  # the static bearer token the suite's server accepts
EXE = shutil.which("fhir-cohort") or str(Path(sys.executable).parent / "fhir-cohort")
COMPARED = ("patients.csv", "evidence.csv")
# Encounters are noise the screen never reads; left out to keep loading quick.
SKIPPED_TYPES = ("Encounter",)
# Exit codes that say what failed (cli.EXIT_*); 1 is "unexpected error (a bug)".
CLEAR_EXITS = frozenset({2, 3, 4, 5, 6, 7})


def make_hospital(directory: Path, *, n_background: int = 10, seed: int = 5) -> Path:
    """The synthetic hospital (every scenario patient plus ``n_background``) as NDJSON."""
    from fhir_cohort.synth import generate

    generate(directory, n_background=n_background, seed=seed, as_of=date.fromisoformat(AS_OF))
    for rtype in SKIPPED_TYPES:
        for p in directory.glob(f"{rtype}*.ndjson"):
            p.unlink()
    return directory


# Bulk runs export whole types: sekmet evaluates a _typeFilter resource by resource (9 s per
# export of this hospital, 0.3 s without), and what the faults hit (kick-off, status polls, file
# downloads) is the same either way; the filtered export is screened against the disk in
# tests/pipeline/test_server_identity.py. Polls at most every 0.2 s instead of sekmet's 1 s.
BULK_ARGS = ("--no-type-filter", "--poll-max", "0.2")


def screen_args(source: str, out: Path, strategy: str | None, *extra: str) -> list[str]:
    args = ["screen", "--source", source, "--as-of", AS_OF, "--out", str(out), "-q"]
    if strategy:
        args += ["--strategy", strategy]
    if strategy == "bulk":
        args += BULK_ARGS
    return [*args, *extra]


def cli_env(token: str | None = TOKEN, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_COHORT_")}
    if token:
        env["FHIR_COHORT_TOKEN"] = token
    env.update(more)
    return env


def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    umask: int | None = None,
    in_process: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``fhir-cohort ARGS``: through the entry point in this process (tests/cli_main.py: exit
    code, stdout, stderr and tracebacks as the script gives them; ~2 s of imports saved per
    run), in a tests/zygote.py child whenever ``umask`` is set (a process-wide setting), or as
    the installed script in a process of its own (``in_process=False``: the benchmark)."""
    if in_process and umask is None:
        return run_main(args, env=dict(env) if env is not None else cli_env())
    if in_process:
        return zygote.run(args, env=dict(env) if env is not None else cli_env(), umask=umask)
    # umask through the shell: preexec_fn is unsafe in a process with threads (the proxy's)
    cmd = [EXE, *args]
    if umask is not None:
        cmd = ["/bin/sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *cmd]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else cli_env(),
    )


def loose_modes(out: Path) -> list[str]:
    """Paths under ``out`` (itself included) that are not owner-only: files 0600, folders
    0700. Relative paths and modes only: the suite prints no machine paths."""
    found = []
    for path in [out, *sorted(out.rglob("*"))]:
        want = 0o700 if path.is_dir() else 0o600
        mode = path.stat().st_mode & 0o777
        if mode & ~want:
            found.append(f"{path.relative_to(out.parent)} {mode:o}")
    return found


def outputs(out: Path) -> dict[str, list[str]]:
    """The compared outputs as sorted lines (row order is not part of the answer)."""
    got: dict[str, list[str]] = {}
    for name in COMPARED:
        path = out / name
        got[name] = sorted(path.read_text().splitlines()) if path.exists() else []
    return got


@dataclass(frozen=True)
class Verdict:
    kind: str  # identical | clear_error | different | unclear_error
    returncode: int
    message: str  # the error line (for the report), or what differed

    @property
    def ok(self) -> bool:
        return self.kind in ("identical", "clear_error")


def error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("fhir-cohort: error:"):
            return line
    return ""


def judge(
    res: subprocess.CompletedProcess[str], out: Path, baseline: Mapping[str, list[str]]
) -> Verdict:
    if res.returncode == 0:
        got = outputs(out)
        if got == baseline:
            return Verdict("identical", 0, "")
        diff = [n for n in COMPARED if got[n] != baseline[n]]
        sizes = ", ".join(f"{n}: {len(got[n])} vs {len(baseline[n])} lines" for n in diff)
        return Verdict("different", 0, f"exit 0 but {sizes}")
    line = error_line(res.stderr)
    if "Traceback" in res.stderr or res.returncode not in CLEAR_EXITS or not line:
        tail = res.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        return Verdict("unclear_error", res.returncode, tail[0][:300])
    return Verdict("clear_error", res.returncode, line[:300])


def run_killed(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    kill_when: Callable[[], bool],
    timeout: float = 300,
) -> bool:
    """Start the CLI, SIGKILL its whole process group as soon as ``kill_when()`` is true.

    Returns True if it was killed, False if it ended first. Polls every 20 ms: the point of
    the kill is chosen by ``kill_when`` (a request count, a file on disk), not by a clock.
    The CLI is a tests/zygote.py child (a real process, without the start-up's imports).
    """
    # its own group: the reader's worker processes die with it
    proc = zygote.start(args, env=dict(env), new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise TimeoutError("the CLI neither ended nor reached the kill point")
            time.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
