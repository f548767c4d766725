"""Run ``fhir-cohort`` in a real child process without paying its start-up each time.

Some tests need the CLI in a process of its own: they SIGKILL it mid-run and rerun, send it
SIGINT, or set a umask (process-wide). A fresh interpreter costs ~2.3 s CPU of imports (pandas,
pyarrow, the engine) plus ~0.7 s parsing value_sets/ per run. Instead, each pytest worker starts
one *zygote* (lazily, on first use; it ends when the worker does: its stdin closes): a plain
``python tests/zygote.py`` process, not a fork of the pytest worker (no pytest capture, plugins
or threads in it), that imports the CLI, pipeline, engine, report, remote and history and loads
the Terminology once, single-threaded. For each job it ``os.fork()``s a child that

- replaces ``os.environ`` with the job's environment, enters its cwd, sets its umask (and a new
  session if asked, so ``os.killpg(pid, ...)`` reaches the whole group);
- points fds 0/1/2 at /dev/null and the job's stdout/stderr files (``os.dup2``);
- calls the job's test hooks (``"module:function"``, e.g. tests/pipeline/killable.py's
  ``install``), then ``fhir_cohort.cli.main(args)`` as the console script does
  (``sys.exit(main())``: SystemExit's code; an exception: traceback on stderr, exit 1);
- flushes, runs the atexit handlers and ``os._exit``\\ s with the code.

The zygote reports the child's pid as soon as it has forked (a test can signal it) and its exit
status when it ends (negative signal number, as ``subprocess``). The child is a real process:
kill, signal, umask and exit semantics hold. No module of fhir_cohort reads the environment at
import time, and ``main`` sets up its own logging on the child's stderr (the zygote configures
none). The zygote refuses to fork while it holds a second thread (BLAS pools are pinned to one
thread before numpy loads).

API (in the pytest worker; this module imports nothing heavy there):
``run(args, env=None, cwd=None, umask=None, timeout=600, hooks=()) -> CompletedProcess[str]``
and ``start(...) -> Child`` (``.pid``, ``.poll()``, ``.wait()``, ``.communicate()``,
``.send_signal()``, ``.kill()``, ``.returncode``), as ``subprocess.run``/``Popen`` with
``text=True`` and captured output. Tests about the installed script itself (test_setup,
test_imports, the console-script tests) keep a real ``subprocess``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Child", "run", "start"]

REPO = Path(__file__).resolve().parents[1]
PROG = "fhir-cohort"
# Modules a screen uses, imported once in the zygote (fhir_cohort's lazy imports otherwise
# load them in every child).
PRELOAD = (
    "fhir_cohort.cli",
    "fhir_cohort.pipeline",
    "fhir_cohort.engine",
    "fhir_cohort.report",
    "fhir_cohort.remote",
    "fhir_cohort.history",
    "fhir_cohort.history.db",
    "fhir_cohort.fhir",
    "fhir_cohort.fhir.fetch",
    "fhir_cohort.fhir.auth",
    "fhir_cohort.results",
    "fhir_cohort.plots",
    "fhir_cohort.criteria",
    "fhir_cohort.terminology",
    "requests",
)


# -- the pytest side ---------------------------------------------------------------------------


class _Zygote:
    """The client end: one zygote process, JSON lines both ways."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="fhir-cohort-zygote-"))
        self.log = self.tmp / "zygote.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                env={**os.environ, **_SINGLE_THREADED},
                close_fds=True,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self._next = 0
        self._pending: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()  # tests may start jobs from helper threads

    def _read(self, timeout: float | None) -> bool:
        """Read what the zygote has said within ``timeout``; False if it said nothing."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._fd, 65536)
        if not chunk:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the zygote ended:\n{tail}")
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            self._pending.setdefault(msg["id"], {}).update(msg)
        return True

    def message(self, job: int, key: str, timeout: float | None) -> Any:
        """The job's ``key`` (pid or status), waiting up to ``timeout``; None if not yet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not {key, "error"} & self._pending.get(job, {}).keys():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._read(left) and left is not None and left <= 0:
                    return None
            if "error" in self._pending[job]:
                raise RuntimeError(f"zygote job failed: {self._pending[job]['error']}")
            return self._pending[job][key]

    def submit(self, job: dict[str, Any]) -> int:
        with self._lock:
            self._next += 1
            job["id"] = self._next
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
            return self._next

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


# Threads that native libraries start at load time: none in the zygote, so it never forks with
# threads (BLAS pools pinned to one thread; Arrow's jemalloc without the background thread that
# importing pyarrow starts). Each child gets the job's own environment; what was set up in the
# zygote stays (the answers do not depend on either).
_SINGLE_THREADED = {
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _get() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
            atexit.register(_zygote.close)
        return _zygote


class Child:
    """A running ``fhir-cohort`` job: the subset of ``subprocess.Popen`` the tests use."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None, **job: Any) -> None:
        self.args = [PROG, *args]
        self.returncode: int | None = None
        self._zygote = _get()
        self._files = Path(tempfile.mkdtemp(prefix="job-", dir=self._zygote.tmp))
        self._out, self._err = self._files / "stdout", self._files / "stderr"
        self._job = self._zygote.submit(
            {
                "args": list(args),
                "env": dict(os.environ if env is None else env),
                "stdout": str(self._out),
                "stderr": str(self._err),
                **job,
            }
        )
        self.pid: int = self._zygote.message(self._job, "pid", None)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.message(self._job, "status", 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._zygote.message(self._job, "status", timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the child has ended."""
        self.wait(timeout)
        out, err = self._out.read_text(), self._err.read_text()
        shutil.rmtree(self._files, ignore_errors=True)
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    umask: int | None = None,
    *,
    hooks: Sequence[str] = (),
    new_session: bool = False,
) -> Child:
    """``fhir-cohort ARGS`` in a forked child: ``env`` (default: this process's) as its whole
    environment, ``cwd`` (default: this process's), ``umask`` (default: the zygote's, which is
    this worker's), ``hooks`` (``"module:function"``) called before ``main``, ``new_session``
    as ``Popen(start_new_session=True)``."""
    return Child(
        args,
        env,
        cwd=str(cwd if cwd is not None else os.getcwd()),
        umask=umask,
        hooks=list(hooks),
        new_session=new_session,
    )


def run(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    umask: int | None = None,
    timeout: float | None = 600,
    *,
    hooks: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run([fhir-cohort, *args], capture_output=True, text=True, ...)``: on a
    timeout the child is killed and ``subprocess.TimeoutExpired`` raised."""
    child = start(args, env, cwd, umask, hooks=hooks)
    try:
        out, err = child.communicate(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise
    return subprocess.CompletedProcess(child.args, child.wait(), out, err)


# -- the zygote side ---------------------------------------------------------------------------


def _threads() -> int:
    """Threads of this process, native ones included."""
    return len(os.listdir("/proc/self/task"))


def _single_threaded() -> bool:
    """True when this process runs one thread; a short-lived native one is waited for (1 s)."""
    for _ in range(50):
        if _threads() == 1:
            return True
        time.sleep(0.02)
    return False


def _child(job: dict[str, Any], keep: Sequence[int]) -> None:
    """In the forked child: become the job's process, run the CLI, never return."""
    code = 1
    try:
        for fd in keep:
            os.close(fd)
        if job["new_session"]:
            os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(job["env"])
        os.chdir(job["cwd"])
        if job["umask"] is not None:
            os.umask(job["umask"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [PROG, *job["args"]]
        code = _main(job)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not hide the exit code
                stream.flush()
        os._exit(code)


def _main(job: dict[str, Any]) -> int:
    """What the console script does around ``main``, plus the exit of the interpreter."""
    import atexit as _atexit
    import importlib
    import traceback

    from fhir_cohort.cli import main

    try:
        for hook in job["hooks"]:
            module, _, func = hook.partition(":")
            getattr(importlib.import_module(module), func)()
        try:
            code = main(list(job["args"]))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:  # as an uncaught exception at the top of a script
        traceback.print_exc()
        code = 1
    _atexit._run_exitfuncs()
    return int(code)


def _serve() -> None:
    """Preload, then fork a child per job line on stdin; answer on the original stdout."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    from fhir_cohort.terminology import Terminology

    Terminology.load()
    # The protocol keeps the pipes on fds of their own; 0/1 are the children's to replace.
    inp = os.dup(0)
    ans = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    sys.stdout.flush()
    pidfds: dict[int, tuple[int, int]] = {}  # pidfd -> (job id, pid)
    buf = b""

    def say(msg: dict[str, Any]) -> None:
        os.write(ans, json.dumps(msg).encode() + b"\n")

    while True:
        ready, _, _ = select.select([inp, *pidfds], [], [])
        for fd in ready:
            if fd in pidfds:
                job_id, pid = pidfds.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                say({"id": job_id, "status": os.waitstatus_to_exitcode(status)})
                continue
            chunk = os.read(inp, 1 << 20)
            if not chunk:  # the pytest worker is gone: so are we (children run on)
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                job = json.loads(line)
                if not _single_threaded():
                    say({"id": job["id"], "error": f"zygote holds {_threads()} threads"})
                    continue
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(job, [inp, ans, *pidfds])
                pidfds[os.pidfd_open(pid)] = (job["id"], pid)
                say({"id": job["id"], "pid": pid})


if __name__ == "__main__":
    sys.path[0] = str(REPO)  # the repository, not tests/ (whose folders shadow packages)
    _serve()
