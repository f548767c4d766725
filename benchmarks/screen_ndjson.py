"""Benchmark: screen a synthetic hospital from Bulk NDJSON on disk.

    .venv/bin/python benchmarks/screen_ndjson.py --patients 100000

Generates the hospital once (kept in --dir for re-runs), then in the same run measures:
1. the ceiling: orjson.loads of every line of the files the screen reads, on all cores;
2. the screen itself (`fhir-cohort screen`, in a child process), wall time and peak memory of
   its whole process tree (PSS summed over the processes, sampled from /proc every 50 ms);
and prints patients/s, resources/s and the screen's rate as a fraction of the ceiling, the
machine-independent figure recorded in docs/benchmarks.md. Not a test: nothing here asserts.

With ``--trials N`` (N >= 2) it then screens N criteria files in one pass (`--criteria` N
times: the shipped NCT06038474 and N-1 copies with other ids and age limits; with
``--shipped-trials``, NCT06038474 and the trials shipped in fhir_cohort/criteria/trials/) and
prints the one-pass time as a ratio of the single-trial screen of the same run; ``--repeat R``
alternates the two R times and compares the fastest and the mean of each (a shared machine's
load comes and goes), and CPU time (user + system of the whole process tree) is printed beside
wall time. ``--baseline DIR`` (a git worktree of an older commit) adds, in each round, the
single-trial screen by that code (``PYTHONPATH=DIR``) for a same-run regression check, and
``--baseline-pass`` its one pass too (the ratio before and after in one run).

With ``--engine spark`` it then screens with the Spark engine (``--spark-master``, default
``local[2]``) and the local engine alternately (``--repeat`` rounds) and prints, per round,
spark / local wall time, CPU and peak memory of the whole process tree (the JVM and Spark's
Python workers included: CPU is sampled from /proc, as they are not waited-for children) and
whether the two patients.csv are byte-identical.

With ``--bundles`` it also writes the hospital as a Bundle folder (``--dir``/bundles-N: one
transaction Bundle per patient, urn:uuid fullUrls and references, as Synthea writes them; the
Medications in a Bundle of their own), measures the Bundle ceiling (orjson.loads of every
Bundle file on all cores) and screens the NDJSON folder and the Bundle folder alternately
(``--repeat`` rounds), printing per round Bundle / NDJSON wall and CPU, each screen's ceiling
time / wall time, and whether the two patients.csv are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import orjson

AS_OF = date(2026, 11, 24)
READ_TYPES = (
    "Patient",
    "Condition",
    "Procedure",
    "Observation",
    "Medication",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
)


def ensure_hospital(folder: Path, patients: int, files_per_type: int) -> dict:
    meta_path = folder / ".benchmark.json"  # dot files are not read as data
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("patients") == patients and meta.get("files_per_type") == files_per_type:
            return meta
    from fhir_cohort.synth import generate

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = generate(
        folder, n_background=patients, seed=20261124, as_of=AS_OF, files_per_type=files_per_type
    )
    meta = {
        "patients": patients,
        "files_per_type": files_per_type,
        "generate_seconds": round(time.perf_counter() - t0, 1),
        "summary": str(summary),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


_REF = re.compile(rb'"reference":"([A-Za-z]+)/([^"]+)"')


def _patient_of(res: dict) -> str:
    if res["resourceType"] == "Patient":
        return res["id"]
    ref = (res.get("subject") or res.get("patient") or {}).get("reference", "")
    return ref.split("/")[-1]


def _write_bundles(groups: dict[str, list[tuple[bytes, bytes, bytes]]], folder: Path) -> None:
    """One transaction Bundle per patient, as Synthea writes them: every entry's fullUrl is
    urn:uuid:<id> and references to entries of the same Bundle are rewritten to it."""
    for pid, items in groups.items():
        local = {rtype + b"/" + rid for rtype, rid, _ in items}

        def ref(m: re.Match[bytes], local: set[bytes] = local) -> bytes:
            if m.group(1) + b"/" + m.group(2) in local:
                return b'"reference":"urn:uuid:' + m.group(2) + b'"'
            return m.group(0)

        entries = [
            b'{"fullUrl":"urn:uuid:'
            + rid
            + b'","resource":'
            + _REF.sub(ref, raw)
            + b',"request":{"method":"POST","url":"'
            + rtype
            + b'"}}'
            for rtype, rid, raw in items
        ]
        name = "patient-" + hashlib.sha1(pid.encode()).hexdigest()[:16] + ".json"
        (folder / name).write_bytes(
            b'{"resourceType":"Bundle","type":"transaction","entry":['
            + b",".join(entries)
            + b"]}\n"
        )


def ensure_bundles(ndjson: Path, folder: Path) -> dict:
    """The NDJSON hospital as a Bundle folder: one Bundle per patient (every type the export
    holds, Encounters too) and the separate Medications in a Bundle of their own, which the
    patients' Bundles reference as Medication/<id> (a cross-Bundle reference)."""
    meta_path = folder / ".benchmark.json"
    source_meta = json.loads((ndjson / ".benchmark.json").read_text())
    if meta_path.exists() and json.loads(meta_path.read_text()).get("source") == source_meta:
        return json.loads(meta_path.read_text())
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    files = sorted(ndjson.glob("*.ndjson"))
    total = sum(p.stat().st_size for p in files)
    # Patients in partitions of about 400 MB each, one pass over the files per partition.
    parts = max(1, -(-total // (400 * 1024 * 1024)))
    meds: list[bytes] = []
    for part in range(parts):
        groups: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
        for path in files:
            with path.open("rb") as fh:
                for line in fh:
                    line = line.rstrip(b"\n")
                    if not line:
                        continue
                    res = orjson.loads(line)
                    rtype, rid = res["resourceType"].encode(), res["id"].encode()
                    if rtype == b"Medication":
                        if part == 0:
                            meds.append(
                                b'{"fullUrl":"urn:uuid:' + rid + b'","resource":' + line + b"}"
                            )
                        continue
                    pid = _patient_of(res)
                    if zlib.crc32(pid.encode()) % parts == part:
                        groups.setdefault(pid, []).append((rtype, rid, line))
        _write_bundles(groups, folder)
    (folder / "medications.json").write_bytes(
        b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join(meds) + b"]}\n"
    )
    meta = {"source": source_meta, "convert_seconds": round(time.perf_counter() - t0, 1)}
    meta_path.write_text(json.dumps(meta))
    return meta


def _parse_file(path: str) -> int:
    n = 0
    loads = orjson.loads
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n


def _parse_bundle(path: str) -> int:
    with open(path, "rb") as fh:
        return len(orjson.loads(fh.read()).get("entry") or ())


def orjson_ceiling(files: list[Path], workers: int, bundles: bool = False) -> tuple[int, float]:
    """(resources, seconds) of orjson.loads of every line (every Bundle) of ``files``."""
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parse = _parse_bundle if bundles else _parse_file
        n = sum(pool.map(parse, [str(p) for p in files], chunksize=1 + len(files) // 64))
    return n, time.perf_counter() - t0


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_rss_kib(
    root: int, cpu: dict[int, float] | None = None, kind: dict[int, str] | None = None
) -> int:
    """Memory of the process tree: the sum of PSS (proportional set size), so pages a forked
    worker shares with its parent count once, not once per process as RSS would. ``cpu``
    gets each process's own user + system seconds so far (the JVM and Spark's Python workers
    are never waited for, so RUSAGE_CHILDREN misses them; sampling sees them); ``kind`` what
    each process is: the screen's own ("main"), the JVM ("jvm") or a worker ("workers")."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            if cpu is not None:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                cpu[pid] = max(cpu.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / _TICK)
            if kind is not None:  # each time: spark-submit's shell execs the JVM
                with open(f"/proc/{pid}/comm") as fh:
                    comm = fh.read().strip()
                kind[pid] = "main" if pid == root else "jvm" if comm == "java" else "workers"
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def trial_files(folder: Path, n: int) -> list[Path]:
    """The shipped criteria and n-1 variants (other id, another minimum age) in ``folder``."""
    import yaml

    from fhir_cohort.criteria import default_criteria_path

    shipped = default_criteria_path()
    base = yaml.safe_load(shipped.read_text())
    files = [shipped]
    for i in range(1, n):
        data = dict(base, id=f"{base['id']}-V{i}")
        data["criteria"] = [
            dict(c, min_years=18 + 5 * i) if c.get("type") == "age" else c for c in base["criteria"]
        ]
        path = folder / f"variant-{i}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        files.append(path)
    return files


def shipped_trial_files() -> list[Path]:
    """NCT06038474 and every trial shipped in fhir_cohort/criteria/trials/, sorted by name."""
    from fhir_cohort.criteria import default_criteria_path

    shipped = default_criteria_path()
    return [shipped, *sorted((shipped.parent / "trials").glob("*.yaml"))]


def run_screen(
    folder: Path,
    out: Path,
    workers: int | None,
    criteria: list[Path] | None = None,
    code: Path | None = None,
    spark_master: str | None = None,
) -> tuple[float, int, dict]:
    exe = Path(sys.executable).parent / "fhir-cohort"
    cmd = [
        str(exe),
        "screen",
        "--source",
        str(folder),
        "--as-of",
        AS_OF.isoformat(),
        "--out",
        str(out),
        "--quiet",
    ]
    for path in criteria or []:
        cmd += ["--criteria", str(path)]
    if workers:
        cmd += ["--workers", str(workers)]
    if spark_master:
        cmd += ["--engine", "spark", "--spark-master", spark_master]
    peak = 0
    cpu: dict[int, float] = {}
    kind: dict[int, str] = {}
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    env = None
    if code is not None:  # another version of the package, same interpreter and libraries
        env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(cmd, env=env)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kib(proc.pid, cpu, kind))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"screen failed with exit code {rc}")
    # several trials: OUT/<trial id>/run.json, the first trial's (the read is shared)
    first = out / "run.json" if len(criteria or []) < 2 else next(out.glob("*/run.json"))
    run = json.loads(first.read_text())
    run["benchmark_cpu_seconds"] = _children_cpu() - cpu0
    # Sampled every 50 ms: a process's last 50 ms and processes shorter than that are missed.
    run["benchmark_tree_cpu_seconds"] = sum(cpu.values())
    by_kind: dict[str, float] = {}
    for pid, seconds in cpu.items():
        by_kind[kind.get(pid, "workers")] = by_kind.get(kind.get(pid, "workers"), 0.0) + seconds
    run["benchmark_cpu_by_process"] = {k: round(v, 1) for k, v in sorted(by_kind.items())}
    return wall, peak, run


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--files-per-type", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "fhir-cohort-bench")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--trials",
        type=int,
        default=1,
        help="also screen this many criteria files in one pass and compare (default 1: no)",
    )
    ap.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the orjson ceiling (the trial comparison does not use it)",
    )
    ap.add_argument(
        "--shipped-trials",
        action="store_true",
        help="with --trials: the shipped trials instead of copies of NCT06038474",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="with --trials: also screen one trial with the package at DIR (a git worktree)",
    )
    ap.add_argument(
        "--baseline-pass",
        action="store_true",
        help="with --baseline: also screen the one pass with that package, each round",
    )
    ap.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="spark: after the local screen, screen with --engine spark (--spark-master) and "
        "the local engine alternately, --repeat times, and print spark / local per round",
    )
    ap.add_argument("--spark-master", default="local[2]", help="with --engine spark")
    ap.add_argument(
        "--bundles",
        action="store_true",
        help="also screen the hospital written as a Bundle folder (one Bundle per patient) "
        "and the NDJSON folder alternately, --repeat times, and print Bundle / NDJSON",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --trials: alternate one trial and the one pass this many times",
    )
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    folder = args.dir / f"hospital-{args.patients}"
    meta = ensure_hospital(folder, args.patients, args.files_per_type)
    files = sorted(p for p in folder.glob("*.ndjson") if p.name.split(".")[0] in READ_TYPES)
    size = sum(p.stat().st_size for p in folder.glob("*.ndjson"))
    read_size = sum(p.stat().st_size for p in files)
    print(
        f"hospital: {args.patients} background patients, {size / 1e9:.2f} GB NDJSON "
        f"({read_size / 1e9:.2f} GB in the types the screen reads), generated in "
        f"{meta['generate_seconds']} s; cores: {cores}"
    )

    ceiling = None
    if not args.no_ceiling:
        n_ceiling, t_ceiling = orjson_ceiling(files, args.workers or cores)
        ceiling = n_ceiling / t_ceiling
        print(
            f"ceiling: orjson.loads of {n_ceiling:,} resources on {args.workers or cores} "
            f"processes: {t_ceiling:.1f} s = {ceiling:,.0f} resources/s"
        )

    with tempfile.TemporaryDirectory() as tmp:
        wall, peak_kib, run = run_screen(folder, Path(tmp) / "out", args.workers)
        first_patients = (Path(tmp) / "out" / "patients.csv").read_bytes()
    run["benchmark_patients_csv"] = first_patients
    lines = sum(run["lines"].values())
    patients = run["counts"]["patients"]
    rate = lines / wall
    print(
        f"screen: {patients:,} patients, {lines:,} resources in {wall:.1f} s wall "
        f"(read {run['timings_seconds']['read']} s, evaluate "
        f"{run['timings_seconds']['evaluate']} s, workers {run['workers']})"
    )
    print(
        f"        {patients / wall:,.0f} patients/s, {rate:,.0f} resources/s, "
        f"peak memory {peak_kib / 1024:,.0f} MiB (PSS of the process tree)"
    )
    versus = f"screen rate / orjson ceiling = {rate / ceiling:.2f}; " if ceiling else ""
    print(f"        {versus}status {run['counts']['status']}")
    if args.trials > 1:
        compare_trials(folder, args, (wall, peak_kib, run))
    if args.engine == "spark":
        compare_spark(folder, args, (wall, peak_kib, run))
    if args.bundles:
        compare_bundles(folder, args, (wall, peak_kib, run), ceiling)


def compare_bundles(
    folder: Path, args: argparse.Namespace, first: tuple[float, int, dict], ceiling: float | None
) -> None:
    """The same hospital as a Bundle folder against NDJSON, alternately (a shared machine's
    load comes and goes: compare within a round), each against its own orjson ceiling."""
    bundles = args.dir / f"bundles-{args.patients}"
    meta = ensure_bundles(folder, bundles)
    files = sorted(bundles.glob("*.json"))
    size = sum(p.stat().st_size for p in files)
    print(
        f"bundles: {len(files):,} Bundle files, {size / 1e9:.2f} GB (every type, Encounters "
        f"too), converted in {meta['convert_seconds']} s"
    )
    workers = args.workers or os.cpu_count() or 1
    n_b, t_b = orjson_ceiling(files, workers, bundles=True)
    print(f"bundle ceiling: orjson.loads of {len(files):,} Bundles ({n_b:,} entries) on "
          f"{workers} processes: {t_b:.1f} s")  # fmt: skip
    t_n = None
    if ceiling is not None:
        t_n = sum(first[2]["lines"].values()) / ceiling
    ndjson = [first]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            if i:
                ndjson.append(run_screen(folder, Path(tmp) / f"ndjson-{i}", args.workers))
            want = (
                first[2]["benchmark_patients_csv"]
                if i == 0
                else (Path(tmp) / f"ndjson-{i}" / "patients.csv").read_bytes()
            )
            bundle = run_screen(bundles, Path(tmp) / f"bundles-{i}", args.workers)
            same = (Path(tmp) / f"bundles-{i}" / "patients.csv").read_bytes() == want
            show(f"NDJSON (round {i + 1})", ndjson[-1])
            show(f"Bundles (round {i + 1})", bundle)
            n_wall, b_wall = ndjson[-1][0], bundle[0]
            n_cpu = ndjson[-1][2]["benchmark_cpu_seconds"]
            b_cpu = bundle[2]["benchmark_cpu_seconds"]
            vs = f"; ceiling / wall: NDJSON {t_n / n_wall:.2f}" if t_n else ""
            print(
                f"round {i + 1}: Bundles / NDJSON = {b_wall / n_wall:.2f} wall, "
                f"{b_cpu / n_cpu:.2f} CPU, {bundle[1] / ndjson[-1][1]:.2f} peak memory"
                f"{vs}{',' if vs else '; ceiling / wall:'} Bundles {t_b / b_wall:.2f}; "
                f"workers {bundle[2]['workers']}; patients.csv identical: {same}; "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def compare_spark(folder: Path, args: argparse.Namespace, first: tuple[float, int, dict]) -> None:
    """The Spark engine against the local engine, alternately (a shared machine's load comes
    and goes: compare within a round), with the same patients.csv checked byte for byte."""
    local = [first]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            if i:
                local.append(run_screen(folder, Path(tmp) / f"local-{i}", args.workers))
            spark = run_screen(
                folder, Path(tmp) / f"spark-{i}", args.workers, spark_master=args.spark_master
            )
            want = (
                first[2]["benchmark_patients_csv"]
                if i == 0
                else (Path(tmp) / f"local-{i}" / "patients.csv").read_bytes()
            )
            show(f"local engine (round {i + 1})", local[-1])
            show(f"spark engine {args.spark_master} (round {i + 1})", spark)
            # The Spark run's profile: wall seconds of each step (run.json spark.seconds).
            print(f"        spark steps: {spark[2].get('spark', {}).get('seconds')}")
            same = (Path(tmp) / f"spark-{i}" / "patients.csv").read_bytes() == want
            # CPU of the sampled process tree: the JVM and Spark's Python workers are not
            # waited-for children of the screen, so RUSAGE_CHILDREN misses them.
            cpu = (
                spark[2]["benchmark_tree_cpu_seconds"] / local[-1][2]["benchmark_tree_cpu_seconds"]
            )
            print(
                f"round {i + 1}: spark / local = {spark[0] / local[-1][0]:.2f} wall, "
                f"{cpu:.2f} CPU, "
                f"{spark[1] / local[-1][1]:.2f} peak memory; patients.csv identical: "
                f"{same}; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def show(label: str, result: tuple[float, int, dict]) -> None:
    wall, peak, run = result
    t = run["timings_seconds"]
    print(
        f"{label}: {wall:.1f} s wall, {run['benchmark_cpu_seconds']:.1f} s CPU of waited-for "
        f"children, {run['benchmark_tree_cpu_seconds']:.1f} s CPU of the sampled tree "
        f"{run['benchmark_cpu_by_process']} (read "
        f"{t['read']} s, evaluate {t['evaluate']} s), peak memory {peak / 1024:,.0f} MiB, "
        f"status {run['counts']['status']}",
        flush=True,
    )


def compare_trials(folder: Path, args: argparse.Namespace, first: tuple[float, int, dict]) -> None:
    one: list[tuple[float, int, dict]] = [first]
    many: list[tuple[float, int, dict]] = []
    base: list[tuple[float, int, dict]] = []
    base_many: list[tuple[float, int, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.shipped_trials:
            files = shipped_trial_files()
            if len(files) != args.trials:
                raise SystemExit(f"--shipped-trials: {len(files)} trials ship, not {args.trials}")
        else:
            files = trial_files(Path(tmp), args.trials)
        print("trials in one pass: " + ", ".join(p.name for p in files))
        for i in range(args.repeat):
            if args.baseline is not None:
                base.append(
                    run_screen(folder, Path(tmp) / f"base-{i}", args.workers, code=args.baseline)
                )
            if i:
                one.append(run_screen(folder, Path(tmp) / f"one-{i}", args.workers))
            many.append(run_screen(folder, Path(tmp) / f"many-{i}", args.workers, files))
            if args.baseline is not None and args.baseline_pass:
                out = Path(tmp) / f"base-many-{i}"
                base_many.append(run_screen(folder, out, args.workers, files, code=args.baseline))
            # Each run's figures as soon as its round ends (a long session may be cut short).
            for label, runs in (("baseline one trial", base), ("one trial", one)):
                if runs:
                    show(label, runs[-1])
            show(f"{args.trials} trials in one pass", many[-1])
            if base_many:
                show(f"baseline {args.trials} trials in one pass", base_many[-1])
            print(f"round {i + 1} done, load average {os.getloadavg()[0]:.1f}", flush=True)

    def ratio(a: list[tuple[float, int, dict]], b: list[tuple[float, int, dict]], what: str) -> str:
        def figs(runs: list[tuple[float, int, dict]]) -> list[list[float]]:
            return [
                [r[0] for r in runs],
                [r[2]["benchmark_cpu_seconds"] for r in runs],
                [float(r[1]) for r in runs],
            ]

        fa, fb = figs(a), figs(b)
        best = [min(x) / max(min(y), 1e-9) for x, y in zip(fa, fb, strict=True)]
        mean = [sum(x) / len(x) / max(sum(y) / len(y), 1e-9) for x, y in zip(fa, fb, strict=True)]
        return (
            f"{what} (fastest of {len(a)} / {len(b)}): {best[0]:.2f} wall, {best[1]:.2f} CPU, "
            f"{best[2]:.2f} peak memory; means: {mean[0]:.2f} wall, {mean[1]:.2f} CPU, "
            f"{mean[2]:.2f} peak memory"
        )

    print(ratio(many, one, "one pass / one trial"))
    if base:
        print(ratio(one, base, "one trial / baseline one trial"))
        print(ratio(many, base, "one pass / baseline one trial"))
    if base_many:
        print(ratio(base_many, base, "baseline: one pass / one trial"))
        print(ratio(many, base_many, "one pass / baseline one pass"))


if __name__ == "__main__":
    main()
