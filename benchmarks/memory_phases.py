"""Where a screen's memory goes: PSS of the screen and of its read workers over time, by phase.

Runs ``fhir-cohort screen`` in this process (the CLI's own code, history recorded as the CLI
does unless ``--no-history``) with a sampler thread that reads ``/proc/self/smaps_rollup`` and
the workers' every ``--every`` seconds, and marks the phases by wrapping the pipeline's steps
(read, prepare, evaluate, attrition, details, tables, history, outputs, report). Prints per
phase the peak PSS of the main process, of the workers and of both, and where the peak was;
with ``--tracemalloc`` also the largest live Python allocations at the end of each phase.

    python benchmarks/memory_phases.py DIR/hospital-100000 --out OUT [--no-history]

Not a test and not a timing benchmark: the sampler and the wrappers cost a little CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import re
import shutil
import sys
import threading
import time
import tracemalloc
from array import array
from pathlib import Path
from typing import Any


def _pss_kib(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(c) for c in fh.read().split()]
                out.extend(kids)
                stack.extend(kids)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_mib() -> dict[str, float]:
    """glibc heap in use / free but kept, Arrow's pool, live Python (tracemalloc)."""
    out: dict[str, float] = {"pss": _pss_kib("self") / 1024}
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        out["glibc_used"] = (info.uordblks + info.hblkhd) / 2**20
        out["glibc_free"] = info.fordblks / 2**20
    except (OSError, AttributeError):
        pass
    if "pyarrow" in sys.modules:
        out["arrow"] = sys.modules["pyarrow"].default_memory_pool().bytes_allocated() / 2**20
    out.update(_pymalloc_mib())
    out["py_blocks_k"] = sys.getallocatedblocks() / 1000
    if tracemalloc.is_tracing():
        now, peak = tracemalloc.get_traced_memory()
        out["python_live"], out["python_peak"] = now / 2**20, peak / 2**20
        tracemalloc.reset_peak()
    return out


def _pymalloc_mib() -> dict[str, float]:
    """pymalloc's arenas (1 MiB each) and the bytes of live objects in them."""
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode()
    out = {}
    for key, name in (
        ("arenas allocated current", "py_arenas"),
        ("bytes in allocated blocks", "py_objects"),
    ):
        m = re.search(rf"# {key}\s*=\s*([\d,]+)", text)
        if m:
            value = int(m.group(1).replace(",", ""))
            out[name] = value if name == "py_arenas" else value / 2**20
    return out


def _census() -> dict[str, tuple[int, int]]:
    """Per type of gc-tracked object: how many, and in how many 1 MiB address regions (about
    pymalloc's arenas, which a single live object keeps)."""
    import gc

    counts: dict[str, int] = {}
    regions: dict[str, set[int]] = {}
    for o in gc.get_objects():
        name = type(o).__name__
        counts[name] = counts.get(name, 0) + 1
        regions.setdefault(name, set()).add(id(o) >> 20)
    return {k: (counts[k], len(regions[k])) for k in counts}


class Sampler:
    def __init__(self, every: float) -> None:
        self.every = every
        self.phase = "start"
        self.t0 = time.perf_counter()
        # arrays, not a list of tuples: the sampler must not scatter small objects over
        # pymalloc's arenas while it measures them
        self._t, self._phase = array("d"), array("i")
        self._main, self._workers = array("q"), array("q")
        self.phases: list[str] = ["start"]
        self.marks: list[tuple[float, str, str, dict[str, float]]] = []
        self.snapshots: dict[str, Any] = {}
        self.census = False
        self.trace_from: str | None = None
        self.censuses: dict[str, dict[str, tuple[int, int]]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._done.is_set():
            main = _pss_kib("self")
            workers = sum(_pss_kib(c) for c in _children(me))
            self._t.append(time.perf_counter() - self.t0)
            self._phase.append(self.phases.index(self.phase))
            self._main.append(main)
            self._workers.append(workers)
            time.sleep(self.every)

    @property
    def samples(self) -> list[tuple[float, str, int, int]]:
        n = min(len(self._t), len(self._phase), len(self._main), len(self._workers))
        return [
            (self._t[i], self.phases[self._phase[i]], self._main[i], self._workers[i])
            for i in range(n)
        ]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def enter(self, phase: str) -> str:
        if phase == self.trace_from and not tracemalloc.is_tracing():
            tracemalloc.start(12)
        before = self.phase
        if phase not in self.phases:
            self.phases.append(phase)
        self.phase = phase
        self.marks.append((time.perf_counter() - self.t0, "enter", phase, _heap_mib()))
        return before

    def leave(self, phase: str, before: str) -> None:
        self.marks.append((time.perf_counter() - self.t0, "leave", phase, _heap_mib()))
        if tracemalloc.is_tracing():
            self.snapshots[phase] = tracemalloc.take_snapshot()
        if self.census:
            self.censuses[phase] = _census()
        self.phase = before


def _wrap(sampler: Sampler, owner: Any, name: str, phase: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before = sampler.enter(phase)
        try:
            return fn(*args, **kwargs)
        finally:
            sampler.leave(phase, before)

    setattr(owner, name, wrapped)


def instrument(sampler: Sampler) -> None:
    from fhir_cohort import pipeline
    from fhir_cohort.history import db

    for name, phase in (
        ("read_tables", "read"),
        ("prepare", "prepare (rows)"),
        ("evaluate", "evaluate"),
        ("attrition", "attrition"),
        ("detail_tables", "eras + labs"),
        ("patients_table", "patients table"),
        ("sort_evidence", "sort evidence"),
        ("candidate_group", "group"),
        ("_record", "history"),
        ("write_outputs", "outputs (CSV, Parquet)"),
        ("write_report", "report.html"),
    ):
        _wrap(sampler, pipeline, name, phase)
    _wrap(sampler, db.History, "record_run", "history: record_run")
    from fhir_cohort.engine import evaluate

    _wrap(sampler, evaluate, "_frame", "evaluate: answers frame")


def report(sampler: Sampler, top: int) -> None:
    mib = 1024
    phases: dict[str, list[int]] = {}
    order: list[str] = []
    for _, phase, main, workers in sampler.samples:
        if phase not in phases:
            phases[phase] = [0, 0, 0, 0]
            order.append(phase)
        got = phases[phase]
        got[0] = max(got[0], main)
        got[1] = max(got[1], workers)
        got[2] = max(got[2], main + workers)
        got[3] += 1
    peak = max(sampler.samples, key=lambda s: s[2] + s[3])
    print(f"{'phase':28} {'main':>9} {'workers':>9} {'tree':>9}  samples   (peak PSS, MiB)")
    for phase in order:
        m, w, t, n = phases[phase]
        print(f"{phase:28} {m / mib:9.0f} {w / mib:9.0f} {t / mib:9.0f}  {n:7d}")
    print(
        f"peak: {(peak[2] + peak[3]) / mib:.0f} MiB at {peak[0]:.1f} s in {peak[1]!r} "
        f"(main {peak[2] / mib:.0f}, workers {peak[3] / mib:.0f})"
    )
    print("\nmarks (s, event, phase, heaps MiB):")
    for t, ev, phase, heaps in sampler.marks:
        cells = " ".join(f"{k}={v:.0f}" for k, v in heaps.items())
        print(f"{t:8.2f} {ev:5} {phase:28} {cells}")
    cen = sampler.censuses
    if "read" in cen and "patients table" in cen:
        a, b = cen["read"], cen["patients table"]
        print("\ngc objects: end of 'patients table' against end of 'read' (count, regions):")
        rows = sorted(b, key=lambda k: b[k][0] - a.get(k, (0, 0))[0], reverse=True)
        for k in rows[:top]:
            print(f"  {k:30} {a.get(k, (0, 0))} -> {b[k]}")
    snaps = sampler.snapshots
    if "read" in snaps and "patients table" in snaps:
        print("\nlive at the end of 'patients table', allocated after the read (by count):")
        diff = snaps["patients table"].compare_to(snaps["read"], "lineno")
        diff.sort(key=lambda d: d.count_diff, reverse=True)
        for d in diff[:top]:
            print(f"  {d.count_diff:+9d} blocks {d.size_diff / 2**20:+7.2f} MiB  {d.traceback}")
    if sampler.trace_from and "patients table" in snaps:
        snap = snaps["patients table"]
        print(f"\nlive at the end of 'patients table', allocated since {sampler.trace_from!r}:")
        for st in snap.statistics("traceback")[:top]:
            print(f"  {st.size / 2**20:7.2f} MiB {st.count:8d} blocks")
            for line in st.traceback.format()[-12:]:
                print("      " + line)
        return
    for phase, snap in sampler.snapshots.items():
        stats = snap.statistics("lineno")[:top]
        total = sum(s.size for s in snap.statistics("filename"))
        print(f"\ntracemalloc at the end of {phase!r}: {total / 2**20:.1f} MiB live")
        for s in stats:
            print(f"  {s.size / 2**20:7.1f} MiB {s.count:9d}  {s.traceback}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("--out", required=True)
    ap.add_argument("--as-of", default="2026-11-24")
    ap.add_argument("--no-history", action="store_true")
    ap.add_argument("--every", type=float, default=0.02)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--census", action="store_true", help="count gc objects by type")
    ap.add_argument("--trace-from", help="start tracemalloc when this phase starts")
    ap.add_argument("--json", help="write the samples and marks here")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    history = out.parent / f"{out.name}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{history}{suffix}").unlink(missing_ok=True)
    from fhir_cohort import cli

    sampler = Sampler(args.every)
    sampler.census = args.census
    sampler.trace_from = args.trace_from
    instrument(sampler)
    if args.tracemalloc:
        tracemalloc.start(8)
    sampler.start()
    argv = ["screen", "--source", args.source, "--as-of", args.as_of, "--out", str(out)]
    argv += ["--quiet", *(["--no-history"] if args.no_history else ["--history", str(history)])]
    t0 = time.perf_counter()
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    wall = time.perf_counter() - t0
    sampler.stop()
    print(f"screen exit {code}, {wall:.1f} s")
    report(sampler, args.top)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"samples": sampler.samples, "marks": sampler.marks}, default=str)
        )


if __name__ == "__main__":
    main()
