"""The Spark engine's read and evaluation, on the local engine's own functions.

What runs where (docs/spark.md):

- driver: lists the source through Hadoop's FileSystem (local paths, ``s3a://``, ``abfss://``,
  ...), classifies files as ``fhir/sources.py`` does, reads the separate Medications (the
  local reader reads them first too) and broadcasts them with the trial's requirements;
- executors, one task per file split: NDJSON files Python opens directly (``file:``) in the
  local reader's own line-aligned byte ranges (``engine/read._split``), read by its range
  reader with the block filter; NDJSON on any other file system through Spark's text source
  (lines), Bundles through its binaryFile source; ``engine/read.py``'s ``_run_tasks`` runs
  the requirement filter, the parser and the ``Flattener`` over them as for a local range;
- the rows (pickled blobs, one per bucket of patients and partition) are cached; the
  ledger's hashes come back to the driver, which applies ``engine/dedup.py``'s rule to the
  few duplicated resources and the dropped-line check of the local reader (a re-read
  without the line filter when it fires);
- executors, one task per partition of patients (``repartition`` by bucket of patients,
  ``mapInArrow``): ``evaluate``, ``attrition``, ``detail_tables``, ``records_without_patient``
  on that partition's tables; the driver concatenates (attrition is a sum: every count is over
  disjoint patients) and the pipeline writes the same outputs with the same writers.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import itertools
import math
import os
import pickle
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from fhir_cohort.criteria import Trial
from fhir_cohort.engine import dedup
from fhir_cohort.engine.dedup import Ledger
from fhir_cohort.engine.evaluate import EvaluationResult, attrition, prepare
from fhir_cohort.engine.flatten import Flattener
from fhir_cohort.engine.read import (
    _PROBE,
    _TABLES,
    CHUNK_BYTES,
    READ_TYPES,
    ReadReport,
    _Config,
    _run_tasks,
    _split,
    _TaskResult,
    ledger_hashes,
    medication_reading,
    medications_of,
)
from fhir_cohort.engine.tables import Tables, records_without_patient
from fhir_cohort.errors import SourceError
from fhir_cohort.fhir.references import ReferenceResolver, recorded_base_of
from fhir_cohort.fhir.sources import (
    classify,
    iter_bundle_bytes,
    iter_file,
    iter_ndjson_lines,
    iter_ndjson_range,
    reading_order,
)

__all__ = [
    "SparkEvaluation",
    "SparkRead",
    "local_session",
    "read_spark",
    "screen_spark",
    "stop_local_session",
    "write_lakehouse",
]

# Row kinds of the read's output: the partition's table rows, one pickled blob per bucket of
# patients (b); its ledger copies, one blob for the partition (read only when a hash repeats);
# one summary (counts, errors, unmapped, unresolved, hashes of the copies read) and the hashes
# of the lines the line filter dropped unparsed. Blobs, not a row per table row or copy: the
# JVM caches and shuffles a few thousand rows instead of one per row and resource.
_ROWS, _COPY, _PIECE, _DROPPED = 0, 4, 5, 6
_READ_SCHEMA = "k byte, b int, payload binary"
# Buckets of patients (crc32 of the patient id): a patient's rows share one, and the evaluation
# partitions are buckets hashed by Spark, so many more buckets than partitions keep those even.
BUCKETS = 4096
_EVAL_SCHEMA = "kind string, payload binary"
# A location key holds a line number below 2**32 (engine/dedup.py): Spark's text source
# numbers a split's lines from the split's byte offset, so a plain NDJSON file it reads must
# stay below 4 GiB (the byte-range read counts lines exactly: no limit).
_MAX_SPLIT_FILE = 1 << 32
# Bytes of local byte ranges per read partition at most, unless the cores outnumber them:
# Spark's own split size (spark.sql.files.maxPartitionBytes' default), two of the local
# reader's ranges (read.CHUNK_BYTES).
PARTITION_BYTES = 128 * 1024 * 1024
# Hashes (8 bytes) of lines the filter dropped that the driver takes with the read's
# summaries instead of checking them in a job of their own: 32M, 256 MB (at 100k patients
# 4.7M); past it, per partition, they stay on the executors.
DROPPED_ON_DRIVER = 32 * 1024 * 1024
# Patients per evaluation partition: about 20 s of one core at the local engine's rate, and
# a few hundred MB of rows at most (docs/spark.md).
PATIENTS_PER_PARTITION = 50_000


# The JVM's class-data archive (AppCDS) of the CLI's local session: Spark loads and verifies
# some 20k classes at every start; mapped from an archive, the JVM's start-up costs about half
# the CPU (docs/benchmarks.md). "0" in this variable: no archive.
CLASS_ARCHIVE_ENV = "FHIR_COHORT_SPARK_CLASS_ARCHIVE"
# A class archive being written by this process's JVM at its exit: (temporary, final) path.
_dumping: list[tuple[Path, Path]] = []


def local_session(master: str = "local[2]", *, class_archive: bool = False, **conf: str) -> Any:
    """A SparkSession for this machine (the CLI's ``--engine spark`` without spark-submit):
    quiet logs, Arrow on, the UI and its console progress bars off; on a ``local`` master the
    JVM compiles with C1 only. ``class_archive``: map Spark's classes from an archive in the
    user's cache (written at the end of the first run: call :func:`stop_local_session`). Under
    spark-submit use the session it configured (``SparkSession.builder.getOrCreate()``)."""
    from pyspark.sql import SparkSession

    # The workers run this interpreter (it has fhir-cohort and its dependencies), not the
    # first python3 on PATH; PySpark reads the variable when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    java_options: list[str] = []
    if master.startswith("local"):
        # The JVM shares the cores with the Python workers that do the reading and the
        # evaluation; its own hot code (caching, shuffling blobs) is small, so C2's compile
        # threads cost more CPU than its faster code saves (docs/benchmarks.md).
        java_options.append("-XX:TieredStopAtLevel=1")
    if class_archive:
        java_options += _class_archive_options()
    if "spark.driver.extraJavaOptions" in conf:
        java_options.append(conf.pop("spark.driver.extraJavaOptions"))
    builder = (
        SparkSession.builder.master(master)
        .appName("fhir-cohort")
        .config("spark.ui.enabled", "false")
        # fhir-cohort reports its own progress (and none under --quiet): no console bars.
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", os.environ.get("FHIR_COHORT_SPARK_DRIVER_MEMORY", "2g"))
    )
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", " ".join(java_options))
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _class_archive_options() -> list[str]:
    """The JVM options that map Spark's classes from the archive in the user's cache, or that
    write it (to a temporary file :func:`stop_local_session` renames) when there is none.
    The JVM checks the archive against its own version and class path and runs without it
    when they differ; the file name holds PySpark's version and place and the Java binary's,
    so another PySpark or Java writes its own."""
    import hashlib
    import shutil

    import pyspark

    from fhir_cohort.files import private_dir

    if os.environ.get(CLASS_ARCHIVE_ENV, "1") == "0":
        return []
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None:
        return []
    try:
        java = os.path.realpath(java)
        st = os.stat(java)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fhir-cohort"
        key = f"{pyspark.__version__}|{pyspark.__file__}|{java}|{st.st_size}|{st.st_mtime_ns}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        final = cache / f"spark-classes-{digest}.jsa"
        # Quiet: the archive skips signed jars' classes with a warning per class.
        quiet = "-Xlog:cds*=off"
        if final.is_file():
            return [f"-XX:SharedArchiveFile={final}", quiet]
        private_dir(cache)
        for old in cache.glob("spark-classes-*.tmp"):  # a run killed while writing
            if time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)
    except (OSError, RuntimeError):  # no home, a read-only cache: run without the archive
        return []
    temporary = cache / f"{final.name}.{os.getpid()}.tmp"
    _dumping.append((temporary, final))
    return [f"-XX:ArchiveClassesAtExit={temporary}", quiet]


def stop_local_session(session: Any) -> None:
    """Stop ``session``; when its JVM writes the class archive, wait for the JVM to exit (it
    writes the archive then, once per PySpark and Java) and put the archive in place."""
    from pyspark import SparkContext

    session.stop()
    if not _dumping:
        return
    temporary, final = _dumping.pop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    try:
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # the gateway exits on end of input, writing the archive
            proc.wait(timeout=300)
        if proc is not None and proc.returncode == 0 and temporary.is_file():
            os.replace(temporary, final)  # atomic: another run maps a whole file or none
    except Exception:  # no archive this time; the next run writes one
        pass
    finally:
        temporary.unlink(missing_ok=True)


def screen_spark(spark: Any, source: str | Path, **kwargs: Any) -> Any:
    """:func:`fhir_cohort.screen` on the Spark engine: ``source`` is a path or Hadoop URI,
    ``spark`` a ``pyspark.sql.SparkSession``; every other argument is screen's."""
    from fhir_cohort.pipeline import screen

    return screen(source, spark=spark, **kwargs)


class _Clock:
    """Wall seconds per step: the read's profile in run.json (spark.seconds)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


# ------------------------------------------------------------------------------ the listing


@dataclass(frozen=True)
class _File:
    uri: str  # as Hadoop names it
    name: str  # as locations and run.json name it (the local engine's str(path))
    kind: str  # "ndjson" | "json"
    declared: str | None
    size: int


def _norm(uri: str) -> str:
    """A file URI as both Hadoop's listing and Spark's ``_metadata.file_path`` spell it."""
    uri = unquote(uri)
    if uri.startswith("file:"):
        uri = "/" + uri[5:].lstrip("/")
    return uri


def _opened(uri: str) -> str | None:
    """The path Python on the executors opens for a file Hadoop lists as ``uri``: local files
    (``file:``; a path without a scheme resolves against the cluster's default file system,
    HDFS on YARN, and is listed as such), else None (read through Spark's sources)."""
    return _norm(uri) if uri.startswith("file:") else None


def _java_error(exc: Exception) -> str:
    """The Java exception's class name, never its message (it may quote a path or data)."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return str(java.getClass().getSimpleName())
        except Exception:  # a dead gateway: the Python class is all there is
            pass
    return type(exc).__name__


def _list(spark: Any, source: str) -> list[_File]:
    """The source's data files in the local engine's reading order (``fhir/sources.py``)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    local = "://" not in source
    try:
        root = jvm.org.apache.hadoop.fs.Path(str(Path(source).absolute()) if local else source)
        fs = root.getFileSystem(conf)
        if not fs.exists(root):
            raise SourceError(f"{source}: no such file or folder")
        top = fs.getFileStatus(root)
        statuses = [top] if not top.isDirectory() else list(fs.listStatus(root))
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{source}: cannot list or read ({_java_error(exc)})") from exc
    found: list[tuple[str | None, str]] = []
    info: dict[str, _File] = {}
    for st in statuses:
        name = str(st.getPath().getName())
        what = classify(name)
        if what is None:
            if not top.isDirectory():
                raise SourceError(f"{source}: expected .ndjson, .jsonl or .json (optionally .gz)")
            continue
        if st.isDirectory():
            raise SourceError(f"{source}/{name}: a folder named like a data file (expected a file)")
        kind, declared = what
        shown = (
            (source if not top.isDirectory() else str(Path(source) / name))
            if local
            else str(st.getPath().toString())
        )
        size = int(st.getLen())
        uri = str(st.getPath().toString())
        if (
            kind == "ndjson"
            and not name.lower().endswith(".gz")
            and size >= _MAX_SPLIT_FILE
            and _opened(uri) is None
        ):
            raise SourceError(
                f"{shown}: an uncompressed NDJSON file of 4 GiB or more; the Spark engine "
                "reads such files in splits whose lines it cannot number: gzip or split it"
            )
        info[shown] = _File(uri, shown, kind, declared, size)
        found.append((declared, shown))
    if not found:
        raise SourceError(f"{source}: no .ndjson, .jsonl or .json files")
    return [info[name] for _, name in reading_order(found)]


def _recorded_base(spark: Any, source: str) -> str | None:
    """The base URL the export folder recorded (``fhir/references.recorded_base``)."""
    if "://" not in source:
        from fhir_cohort.fhir.references import recorded_base

        return recorded_base(source)
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()

    def read(name: str) -> str | None:
        try:
            path = jvm.org.apache.hadoop.fs.Path(source.rstrip("/") + "/" + name)
            fs = path.getFileSystem(conf)
            if not fs.exists(path) or fs.getFileStatus(path).getLen() > 1 << 20:
                return None
            stream = fs.open(path)
            try:
                data = jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
            finally:
                stream.close()
            return bytes(data).decode("utf-8", "replace")
        except Exception:
            return None

    return recorded_base_of(read)


# ------------------------------------------------------------------------- executor side


@dataclass
class _LineTask:
    """A run of lines of one NDJSON file split, as ``_run_tasks`` reads a _Task."""

    path: str
    expected_type: str | None
    lines: list[bytes]
    first_line: int
    file_index: int
    size: int = 0

    def resources(self, **common: Any) -> Iterable[tuple[dict[str, Any], str]]:
        common.pop("types", None)
        return iter_ndjson_lines(self.path, self.lines, self.first_line, **common)


@dataclass(frozen=True)
class _RangeTask:
    """A line-aligned byte range of a local NDJSON file, or a whole file (gzip, or one range),
    as the local reader plans it (``engine/read._split``): the executor opens the file itself
    and reads it with the local reader's range reader and block filter."""

    path: str  # as locations name it (the local engine's name, perhaps relative)
    opened: str  # the absolute path the executor opens
    expected_type: str | None
    start: int = 0
    end: int = -1  # -1: the whole file
    first_line: int = 1
    size: int = 0
    file_index: int = 0

    def resources(self, **common: Any) -> Iterable[tuple[dict[str, Any], str]]:
        if self.end >= 0:
            return iter_ndjson_range(
                self.opened, self.start, self.end, self.first_line, name=self.path, **common
            )
        return iter_file(self.opened, name=self.path, **common)


def _range_partitions(
    files: list[_File], index: dict[str, int], parallelism: int
) -> list[list[_RangeTask]]:
    """The local reader's byte ranges of ``files`` (``engine/read._split``: newlines counted
    here, on the driver, as the local reader counts them, so line numbers are exact), dealt
    biggest first to the least loaded of max(parallelism, bytes / PARTITION_BYTES)
    partitions: big files' ranges about one per task, small files together."""
    tasks: list[_RangeTask] = []
    for f in files:
        opened = _opened(f.uri)
        assert opened is not None
        for t in _split(Path(opened), f.declared, CHUNK_BYTES, index[f.name]):
            tasks.append(
                _RangeTask(
                    f.name,
                    opened,
                    t.expected_type,
                    t.start,
                    t.end,
                    t.first_line,
                    t.size,
                    t.file_index,
                )
            )
    total = sum(t.size for t in tasks)
    n = min(len(tasks), max(parallelism, math.ceil(total / PARTITION_BYTES)))
    parts: list[list[_RangeTask]] = [[] for _ in range(n)]
    load = [0] * n
    for t in sorted(tasks, key=lambda t: t.size, reverse=True):
        i = load.index(min(load))
        parts[i].append(t)
        load[i] += t.size
    return [sorted(p, key=lambda t: (t.file_index, t.start)) for p in parts]


@dataclass
class _BundleTask:
    """One Bundle file's bytes, as ``_run_tasks`` reads a _Task."""

    path: str
    data: bytes
    file_index: int
    expected_type: str | None = None
    size: int = 0

    def resources(self, **common: Any) -> Iterable[tuple[dict[str, Any], str]]:
        return iter_bundle_bytes(self.path, self.data, **common)


def _emit(out: _TaskResult, inline_dropped: int) -> Iterator[Any]:
    """One partition's read as an Arrow batch of _READ_SCHEMA rows; the hashes of the lines
    dropped unparsed go in the summary when at most ``inline_dropped``, else in a row of
    their own for the driver's check job."""
    import pyarrow as pa

    k: list[int] = []
    bucket: list[int] = []
    payload: list[bytes] = []
    dumps = pickle.dumps
    for b, blob in _bucket_blobs(out):
        k.append(_ROWS)
        bucket.append(b)
        payload.append(blob)
    ledger = out.ledger
    hashes = ledger_hashes(ledger)
    if len(ledger.rid):
        copies = (
            hashes.tobytes(),
            ledger.rtype,
            ledger.rid,
            ledger.pid,
            ledger.version,
            ledger.updated,
            ledger.src,
        )
        k.append(_COPY)
        bucket.append(0)
        payload.append(dumps(copies, protocol=5))
    dropped = np.unique(np.frombuffer(out.dropped, dtype=np.int64))
    # What the driver needs of the partition, without the rows and copies it ships above.
    out.rows = {t: [] for t in _TABLES}
    out.ledger = Ledger(unresolved=ledger.unresolved, unresolved_at=ledger.unresolved_at)
    out.dropped = type(out.dropped)("q")
    # Each hash once, and apart the hashes of copies this partition read more than once:
    # the driver finds every duplicated resource from these without another job.
    values, counts = np.unique(hashes, return_counts=True)
    inline = len(dropped) <= inline_dropped
    summary = (
        out,
        values.tobytes(),
        values[counts > 1].tobytes(),
        dropped.tobytes() if inline else None,
    )
    extra = [] if inline else [(_DROPPED, dropped.tobytes())]
    for kind, blob in [(_PIECE, dumps(summary, protocol=5)), *extra]:
        k.append(kind)
        bucket.append(0)
        payload.append(blob)
    yield pa.RecordBatch.from_arrays(
        [pa.array(k, pa.int8()), pa.array(bucket, pa.int32()), pa.array(payload, pa.binary())],
        names=["k", "b", "payload"],
    )


def _bucket_blobs(out: _TaskResult) -> Iterator[tuple[int, bytes]]:
    """The partition's table rows by bucket of patients: (bucket, pickled blob), the blob per
    table the rows, their location keys and their order in the partition (so the evaluation
    puts the rows of many partitions in the local engine's order)."""
    crc = zlib.crc32
    bucket_of: dict[str, int] = {}
    found: dict[int, tuple[list[list[tuple]], list[list[int]], list[list[int]]]] = {}
    for i, table in enumerate(_TABLES):
        rows = out.rows[table]
        srcs = out.ledger.rows[table]
        for n, (row, s) in enumerate(zip(rows, srcs, strict=True)):
            pid = row[0] if isinstance(row[0], str) else ""
            b = bucket_of.get(pid)
            if b is None:
                b = bucket_of[pid] = crc(pid.encode("utf-8", "surrogatepass")) % BUCKETS
            got = found.get(b)
            if got is None:
                got = found[b] = tuple([[] for _ in _TABLES] for _ in range(3))  # type: ignore[assignment]
            got[0][i].append(row)
            got[1][i].append(s)
            got[2][i].append(n)
    for b in sorted(found):
        yield b, pickle.dumps(found[b], protocol=5)


def _line_tasks(batches: Iterable[Any], files: dict[str, tuple[str, str | None, int]]) -> Any:
    """_LineTasks of the runs of consecutive lines of one file split in ``batches``."""
    counted: dict[tuple[str, int], int] = {}
    for batch in batches:
        values = batch.column(0).to_pylist()
        paths = batch.column(1).to_pylist()
        starts = batch.column(2).to_pylist()
        i, n = 0, len(values)
        while i < n:
            key = (paths[i], starts[i])
            j = i + 1
            while j < n and paths[j] == key[0] and starts[j] == key[1]:
                j += 1
            name, declared, index = files[_norm(key[0])]
            before = counted.get(key, 0)
            counted[key] = before + j - i
            lines = [v if v is not None else b"" for v in values[i:j]]
            # Line numbers: exact in a split at offset 0 (every gzip file, every file below
            # the split size); after it, the split's offset plus the line within the split.
            yield _LineTask(name, declared, lines, key[1] + before + 1, index)
            i = j


def _bundle_tasks(batches: Iterable[Any], files: dict[str, tuple[str, str | None, int]]) -> Any:
    for batch in batches:
        for path, content in zip(
            batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
        ):
            name, _, index = files[_norm(path)]
            data = gzip.decompress(content) if name.lower().endswith(".gz") else content
            yield _BundleTask(name, data, index)


# ------------------------------------------------------------------------------ the read


@dataclass
class SparkEvaluation:
    """One trial evaluated on the executors: what ``pipeline._screen_trial`` needs."""

    evaluation: EvaluationResult
    attrition: pd.DataFrame
    eras: pd.DataFrame
    labs: pd.DataFrame
    records_without_patient: dict[str, int]


@dataclass
class SparkRead:
    """The read: its report (the local reader's ReadReport) and the cached rows on the
    executors, without the copies the duplicate rule dropped."""

    spark: Any
    report: ReadReport
    rows: Any  # DataFrame of _READ_SCHEMA, cached
    drop: np.ndarray
    patients: int
    partitions: int | None = None
    # Wall seconds of each step of the read (run.json spark.seconds), then of each evaluation.
    seconds: dict[str, float] = field(default_factory=dict)
    # How the read was cut (run.json spark.read_tasks): local byte ranges, files through
    # Spark's text source, Bundle files.
    tasks: dict[str, int] = field(default_factory=dict)
    _cached: list[Any] = field(default_factory=list)

    def evaluate(self, trial: Trial, terminology: Any, as_of: date) -> SparkEvaluation:
        """Evaluate ``trial`` on every partition of patients (one Spark job)."""
        from pyspark.sql import functions as F

        t0 = time.perf_counter()
        rows = self.rows.filter(F.col("k") == _ROWS)
        n = self._partitions()
        # The losing copies of duplicated resources (dedup.decide) go in the partitions.
        drop = self.spark.sparkContext.broadcast(self.drop) if len(self.drop) else None
        evaluate_part = _partition_evaluator(trial, as_of, self._terminology(terminology), drop)
        out = (
            rows.select("b", "payload")
            .repartition(n, "b")
            .mapInArrow(evaluate_part, _EVAL_SCHEMA)
            .collect()
        )
        self.seconds[f"evaluate {trial.id}"] = round(time.perf_counter() - t0, 3)
        parts: dict[str, list[Any]] = {}
        for row in out:
            parts.setdefault(row["kind"], []).append(pickle.loads(row["payload"]))
        return _combine(parts, trial)

    def _terminology(self, terminology: Any) -> Any:
        """None for the bundled value sets (each executor process loads them once), else
        ``terminology`` broadcast once."""
        from fhir_cohort.terminology import Terminology

        if terminology is Terminology.load():
            return None
        for held, shared in self._cached:
            if held is terminology:
                return shared
        shared = self.spark.sparkContext.broadcast(terminology)
        self._cached.append((terminology, shared))
        return shared

    def describe(self) -> dict[str, Any]:
        """run.json's ``spark``: where it ran and how the work was cut."""
        sc = self.spark.sparkContext
        return {
            "version": self.spark.version,
            "master": sc.master,
            "default_parallelism": sc.defaultParallelism,
            "evaluation_partitions": self._partitions(),
            "read_tasks": dict(self.tasks),
            "seconds": dict(self.seconds),
        }

    def _partitions(self) -> int:
        if self.partitions:
            return self.partitions
        # A multiple of the cores: 3 partitions on 2 cores run in two waves, the second on
        # one core (100k patients: evaluate 21.6 s against the local engine's 13.0 s).
        cores = self.spark.sparkContext.defaultParallelism
        return cores * math.ceil(max(cores, self.patients / PATIENTS_PER_PARTITION) / cores)

    def close(self) -> None:
        """Free the cached rows on the executors."""
        self.rows.unpersist()


LAKEHOUSE = "lakehouse"


def write_lakehouse(out_dir: Path, patients: pd.DataFrame, evidence: pd.DataFrame) -> Path:
    """``OUT/lakehouse``: the patients table partitioned by status and the evidence by
    criterion (Hive layout, ``status=eligible/part-0.parquet``), for a lakehouse table over
    weekly runs. Written with the package's private writer (0600 files, 0700 folders); the
    partitions of an earlier run in the same OUT are replaced."""
    import shutil

    from fhir_cohort.files import private_dir, private_writer

    root = Path(out_dir) / LAKEHOUSE
    for table, frame, column in (
        ("patients", patients, "status"),
        ("evidence", evidence, "criterion_id"),
    ):
        folder = root / table
        if folder.exists():
            shutil.rmtree(folder)
        private_dir(folder)
        for value, part in frame.groupby(column, sort=True, dropna=False):
            where = private_dir(folder / f"{column}={value}")
            with private_writer(where / "part-0.parquet", "wb") as fh:
                part.drop(columns=column).to_parquet(fh, index=False)
    return root


def _frames(parts: list[pd.DataFrame], columns: Iterable[str]) -> pd.DataFrame:
    nonempty = [p for p in parts if len(p)]
    if not nonempty:
        return parts[0] if parts else pd.DataFrame(columns=list(columns))
    return pd.concat(nonempty, ignore_index=True)


def _combine(parts: dict[str, list[Any]], trial: Trial) -> SparkEvaluation:
    from fhir_cohort.engine.evaluate import ANSWER_COLUMNS, STATUS_COLUMNS
    from fhir_cohort.report.outputs import EVIDENCE_COLUMNS

    evaluation = EvaluationResult(
        answers=_frames(parts.get("answers", []), ANSWER_COLUMNS),
        evidence=_frames(parts.get("evidence", []), EVIDENCE_COLUMNS),
        status=_frames(parts.get("status", []), STATUS_COLUMNS),
    )
    tables = parts.get("attrition", [])
    if tables:
        # Every count is over the partition's patients, and partitions are disjoint: a sum.
        total = tables[0].copy()
        counts = [c for c in total.columns if c not in ("step", "criterion_id", "kind", "title")]
        for other in tables[1:]:
            total[counts] = total[counts].to_numpy() + other[counts].to_numpy()
    else:
        total = attrition(evaluation, trial)
    without: dict[str, int] = {}
    for counts_of in parts.get("without", []):
        for key, n in counts_of.items():
            without[key] = without.get(key, 0) + n
    return SparkEvaluation(
        evaluation=evaluation,
        attrition=total,
        # in the partitions' order: the pipeline sorts them as it sorts the local engine's
        eras=_frames(parts.get("eras", []), ["criterion_id"]),
        labs=_frames(parts.get("labs", []), ["criterion_id"]),
        records_without_patient=without,
    )


def _partition_evaluator(trial: Trial, as_of: date, shared: Any, drop: Any) -> Any:
    """The mapInArrow function: one partition's buckets of rows -> its evaluation, pickled
    frames."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from fhir_cohort.pipeline import detail_tables, screen_tables
        from fhir_cohort.terminology import Terminology

        rows: list[list[tuple]] = [[] for _ in _TABLES]
        srcs: list[list[int]] = [[] for _ in _TABLES]
        seqs: list[list[int]] = [[] for _ in _TABLES]
        blobs = 0
        loads = pickle.loads
        for batch in batches:
            for blob in batch.column("payload").to_pylist():
                blobs += 1
                got_rows, got_srcs, got_seqs = loads(blob)
                for i in range(len(_TABLES)):
                    rows[i].extend(got_rows[i])
                    srcs[i].extend(got_srcs[i])
                    seqs[i].extend(got_seqs[i])
        if not blobs:
            return
        by_table: list[list[tuple]] = []
        for i in range(len(_TABLES)):
            src = np.asarray(srcs[i], dtype=np.int64)
            # The local engine's order: by location key, then by order within the read
            # partition (a resource's rows, in the order the Flattener made them).
            order = np.lexsort((np.asarray(seqs[i], dtype=np.int64), src))
            if drop is not None:  # the losing copies of duplicated resources (dedup.decide)
                order = order[~np.isin(src[order], drop.value)]
            table_rows = rows[i]
            by_table.append([table_rows[j] for j in order.tolist()])
        del rows, srcs, seqs
        tables = Tables.from_rows(*by_table)
        del by_table
        if not tables.patients.empty:
            tables.patients = tables.patients.drop_duplicates("patient_id", keep="first")
        terminology = Terminology.load() if shared is None else shared.value
        prepared = prepare(tables, terminology, as_of, keep=True)
        evaluation, attrition_table = screen_tables(trial, tables, terminology, as_of, prepared)
        eras, labs = detail_tables(trial, tables, terminology, as_of, prepared)
        out = {
            "answers": evaluation.answers,
            "evidence": evaluation.evidence,
            "status": evaluation.status,
            "attrition": attrition_table,
            "eras": eras,
            "labs": labs,
            "without": records_without_patient(tables),
        }
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(list(out), pa.string()),
                pa.array([pickle.dumps(v, protocol=5) for v in out.values()], pa.binary()),
            ],
            names=["kind", "payload"],
        )

    return run


def _reader(cfg: Any, files: Any, tasks_of: Any, inline_dropped: int) -> Any:
    """The mapInArrow function of the read: one partition's splits -> rows."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        out = _run_tasks(tasks_of(batches, files.value), cfg.value)
        yield from _emit(out, inline_dropped)

    return run


def _ranges_of(batches: Iterable[Any], parts: list[list[_RangeTask]]) -> Iterator[_RangeTask]:
    """The _RangeTasks of the partitions a partition of ``spark.range`` ids names."""
    for batch in batches:
        for i in batch.column(0).to_pylist():
            yield from parts[i]


def read_spark(
    spark: Any,
    source: str,
    *,
    relevant: Iterable[tuple[str, str]],
    medication_words: Iterable[str],
    strict: bool = False,
    validate: bool = False,
    unmapped_text: bool = False,
    base_url: str | None = None,
    filter_lines: bool = True,
    partitions: int | None = None,
) -> SparkRead:
    """Read ``source`` (a path or Hadoop URI) on ``spark``'s executors, as
    :func:`fhir_cohort.engine.read.read_tables` reads it; the rows stay there."""
    from pyspark.sql import functions as F

    relevant, medication_words = frozenset(relevant), frozenset(medication_words)
    clock = _Clock()
    listed = _list(spark, source)
    clock.lap("list")
    report = ReadReport()
    report.files = [f.name for f in listed]
    index = {f.name: i for i, f in enumerate(listed)}
    bases = (base_url, _recorded_base(spark, source))
    refs = ReferenceResolver(bases)
    cfg = _Config(
        relevant,
        medication_words,
        strict,
        validate,
        {},
        unmapped_text,
        refs,
        filter_lines=filter_lines,
        # Spark's text source hands over lines, not bytes: the per-line filter (the same
        # lines as the block filter keeps; tests/engine/test_fast_paths.py). The byte
        # ranges below take the block filter.
        block_filter=False,
    )
    ledger = Ledger()
    meds, med_keys = _medications(spark, listed, cfg, report, ledger)
    clock.lap("medications")
    cfg = dataclasses.replace(cfg, medications=meds, medication_keys=med_keys)
    sc = spark.sparkContext
    by_uri = sc.broadcast({_norm(f.uri): (f.name, f.declared, index[f.name]) for f in listed})
    b_cfg = sc.broadcast(cfg)
    wanted = set(READ_TYPES)
    ndjson_files = [
        f
        for f in listed
        if f.kind == "ndjson"
        and f.declared != "Medication"
        and (f.declared is None or f.declared in wanted)
    ]
    # Files Python opens itself go in byte ranges: only the relevant rows leave Python, and
    # the block filter sees the bytes; the others cross from the JVM line by line.
    ranges = _range_partitions(
        [f for f in ndjson_files if _opened(f.uri) is not None], index, sc.defaultParallelism
    )
    ndjson = [f.uri for f in ndjson_files if _opened(f.uri) is None]
    bundles = [f.uri for f in listed if f.kind == "json"]
    inputs = []  # (input DataFrame, its config and files, how its rows become tasks)
    if ranges:
        b_ranges = sc.broadcast(ranges)
        b_cfg_blocks = sc.broadcast(dataclasses.replace(cfg, block_filter=True))
        ids = spark.range(0, len(ranges), 1, len(ranges))
        inputs.append((ids, b_cfg_blocks, b_ranges, _ranges_of))
    if ndjson:
        text = spark.read.text(ndjson).select(
            F.col("value").cast("binary").alias("value"),
            F.col("_metadata.file_path").alias("path"),
            F.col("_metadata.file_block_start").alias("start"),
        )
        inputs.append((text, b_cfg, by_uri, _line_tasks))
    if bundles:
        raw = spark.read.format("binaryFile").load(bundles).select("path", "content")
        inputs.append((raw, b_cfg, by_uri, _bundle_tasks))
    # The dropped lines' hashes come to the driver with the summaries (no check job) while
    # they stay within DROPPED_ON_DRIVER in all; the partition count is the plan's, no job.
    n_parts = sum(df.rdd.getNumPartitions() for df, *_ in inputs)
    inline_dropped = DROPPED_ON_DRIVER // max(1, n_parts)
    parts = [
        df.mapInArrow(_reader(c, f, tasks_of, inline_dropped), _READ_SCHEMA)
        for df, c, f, tasks_of in inputs
    ]
    if not parts:
        rows = spark.createDataFrame([], _READ_SCHEMA)
    else:
        rows = functools.reduce(lambda a, b: a.unionByName(b), parts)
    rows = rows.persist()
    try:
        pieces = [
            pickle.loads(r["payload"])
            for r in rows.filter(F.col("k") == _PIECE).select("payload").collect()
        ]
    except Exception as exc:
        rows.unpersist()
        _raise_read_error(source, exc)
    read_hashes: list[np.ndarray] = []
    repeated: list[np.ndarray] = []
    dropped_here: list[np.ndarray] = []
    shipped = False  # a partition left its dropped hashes on the executors
    probes = {hash(_PROBE)} if not pieces else set()
    for piece, hashes, again_in, dropped in pieces:
        if dropped is None:
            shipped = True
        else:
            dropped_here.append(np.frombuffer(dropped, dtype=np.int64))
        report.merge(piece)
        ledger.merge(piece.ledger)
        probes.add(piece.probe)
        read_hashes.append(np.frombuffer(hashes, dtype=np.int64))
        repeated.append(np.frombuffer(again_in, dtype=np.int64))
    clock.lap("read_splits")
    every = np.concatenate(read_hashes) if read_hashes else np.empty(0, np.int64)
    kept, counts = np.unique(every, return_counts=True)
    # Hashes in two partitions, or twice in one: the candidates for the duplicate rule.
    candidates = np.union1d(kept[counts > 1], np.concatenate([np.empty(0, np.int64), *repeated]))
    if filter_lines and (
        len(probes) > 1
        or any(_any_in(kept, d) for d in dropped_here)
        or (shipped and _dropped_match(spark, rows, kept))
    ):
        # As the local reader: a dropped line shares its type and id with a resource read
        # (or the workers hash differently): read everything, so the version rule sees all.
        rows.unpersist()
        again = read_spark(
            spark,
            source,
            relevant=relevant,
            medication_words=medication_words,
            strict=strict,
            validate=validate,
            unmapped_text=unmapped_text,
            base_url=base_url,
            filter_lines=False,
            partitions=partitions,
        )
        again.report.reread_unfiltered = True
        return again
    clock.lap("dropped_line_check")
    drop = _duplicates(rows, candidates, ledger=ledger, report=report)
    clock.lap("duplicates")
    report.unresolved = ledger.unresolved_report(refs.bases)
    report.workers = sc.defaultParallelism
    return SparkRead(
        spark=spark,
        report=report,
        rows=rows,
        drop=drop,
        patients=report.parsed.get("Patient", 0),
        partitions=partitions,
        seconds=clock.laps,
        tasks={
            "byte_ranges": sum(map(len, ranges)),
            "range_partitions": len(ranges),
            "text_files": len(ndjson),
            "bundle_files": len(bundles),
        },
    )


def _raise_read_error(source: str, exc: Exception) -> None:
    from fhir_cohort.errors import FhirCohortError

    cause: BaseException | None = exc
    while cause is not None:  # a worker's own error (strict: a malformed line) as itself
        if isinstance(cause, FhirCohortError):
            raise cause
        cause = cause.__cause__
    raise SourceError(f"{source}: cannot read ({_java_error(exc)})") from exc


def _any_in(kept: np.ndarray, values: np.ndarray) -> bool:
    """Whether one of ``values`` is in ``kept`` (sorted, unique): a binary search each,
    where np.isin sorts both (0.3 s against 8.8 s for 4.7M hashes against 300k)."""
    if not len(kept) or not len(values):
        return False
    at = np.searchsorted(kept, values)
    at[at == len(kept)] = 0
    return bool((kept[at] == values).any())


def _dropped_match(spark: Any, rows: Any, kept: np.ndarray) -> bool:
    """Whether a line dropped unparsed has the (type, id) hash of a resource read: one job
    over each partition's dropped hashes, against the broadcast hashes of what was read."""
    from pyspark.sql import functions as F

    if not len(kept):
        return False
    b_kept = spark.sparkContext.broadcast(kept)

    def check(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # A binary search of each dropped hash in the sorted kept ones: np.isin would sort
        # the kept hashes again for every partition (at 1M patients 238 s of the run).
        hit = False
        for frame in frames:
            for blob in frame["payload"]:
                hit = hit or _any_in(b_kept.value, np.frombuffer(blob, dtype=np.int64))
        yield pd.DataFrame({"hit": [hit]})

    found = (
        rows.filter(F.col("k") == _DROPPED)
        .select("payload")
        .mapInPandas(check, "hit boolean")
        .filter("hit")
        .collect()  # no limit(1): it scans the partitions in growing rounds, a job each
    )
    b_kept.unpersist()
    return bool(found)


def _duplicates(
    rows: Any, candidates: np.ndarray, *, ledger: Ledger, report: ReadReport
) -> np.ndarray:
    """The duplicate rule (``dedup.decide``) over the copies whose (type, id) hash another
    copy shares, fetched from the executors (usually none: no job), and the driver's
    Medications; the location keys of the copies to drop."""
    from pyspark.sql import functions as F

    if len(candidates):
        # Broadcast, not a literal list: a delta export merged with the full one duplicates
        # many resources.
        wanted = rows.sparkSession.sparkContext.broadcast(candidates)

        def pick(batches: Iterator[Any]) -> Iterator[Any]:
            import pyarrow as pa

            for batch in batches:
                for blob in batch.column(0).to_pylist():
                    hashes, *columns = pickle.loads(blob)
                    at = np.flatnonzero(
                        np.isin(np.frombuffer(hashes, dtype=np.int64), wanted.value)
                    ).tolist()
                    if at:
                        got = [tuple(c[j] for c in columns) for j in at]
                        yield pa.RecordBatch.from_arrays(
                            [pa.array([pickle.dumps(got, protocol=5)], pa.binary())],
                            names=["payload"],
                        )

        got = (
            rows.filter(F.col("k") == _COPY)
            .select("payload")
            .mapInArrow(pick, "payload binary")
            .collect()
        )
        wanted.unpersist()
        for r in got:  # in the partitions' order, each partition's copies in its order
            for t, rid, pid, v, u, src in pickle.loads(r["payload"]):
                ledger.rtype.append(t)
                ledger.rid.append(rid)
                ledger.pid.append(pid)
                ledger.version.append(v)
                ledger.updated.append(u)
                ledger.src.append(src)
    drop, report.duplicates = dedup.decide(ledger, report.files)
    return drop


def _medications(
    spark: Any, listed: list[_File], cfg: _Config, report: ReadReport, ledger: Ledger
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[int, int, int]]]:
    """The separate Medications, read on the driver as the local reader reads them first, and
    those inside Bundles and mixed NDJSON files (which the local reader resolves in-stream,
    having one Flattener for them all): every partition then resolves every reference."""
    from pyspark.sql import functions as F

    tmp = _TaskResult()
    common = medication_reading(cfg, tmp)
    med_files = [f for f in listed if f.kind == "ndjson" and f.declared == "Medication"]
    streams: list[tuple[str, Iterable[tuple[dict[str, Any], str]]]] = []
    if med_files and all("://" not in f.name for f in med_files):
        # Files the driver can open: the local reader's own reading, no Spark job.
        streams = [(f.name, iter_file(f.name, **common)) for f in med_files]
    elif med_files:
        try:
            lines = (
                spark.read.text([f.uri for f in med_files])
                .select(
                    F.col("value").cast("binary").alias("value"),
                    F.col("_metadata.file_path").alias("path"),
                    F.col("_metadata.file_block_start").alias("start"),
                )
                .collect()
            )
        except Exception as exc:
            _raise_read_error(str(med_files[0].name), exc)
        by_file: dict[str, list[tuple[int, bytes]]] = {}
        for r in lines:
            by_file.setdefault(_norm(r["path"]), []).append((r["start"], r["value"] or b""))
        for f in med_files:
            got = by_file.get(_norm(f.uri), [])
            # collect() keeps each split's order; splits are put back in offset order
            got.sort(key=lambda x: x[0])
            groups = itertools.groupby(got, key=lambda x: x[0])
            for start, group in groups:
                values = [v for _, v in group]
                streams.append((f.name, iter_ndjson_lines(f.name, values, start + 1, **common)))
    meds, keys = medications_of(streams, cfg, report, ledger, tmp)
    inline = _inline_medications(spark, listed, cfg)
    if inline:
        # Seed a Flattener with the separate ones and let its rule pick the latest copy.
        flat = Flattener(cfg.relevant, cfg.words, refs=cfg.refs)
        flat.medications.update(meds)
        flat.medication_keys.update(keys)
        for resource, location, src in inline:
            flat.add_medication(resource, location, src)
        meds, keys = flat.medications, flat.medication_keys
    return meds, keys


def _inline_medications(
    spark: Any, listed: list[_File], cfg: _Config
) -> list[tuple[dict[str, Any], str, int]]:
    """Medications inside Bundles and mixed NDJSON files, with location and key (one job;
    only files whose bytes name the type are parsed)."""
    from fhir_cohort.engine.dedup import location_key

    bundles = [f for f in listed if f.kind == "json"]
    if not bundles:
        return []
    sc = spark.sparkContext
    by_uri = sc.broadcast({_norm(f.uri): (f.name, None, i) for i, f in enumerate(listed)})

    def find(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        found = []
        for task in _bundle_tasks(batches, by_uri.value):
            if b'"Medication"' not in task.data and b"\\" not in task.data:
                continue
            for resource, loc in task.resources():
                if resource.get("resourceType") == "Medication":
                    src = location_key(task.file_index, task.path, loc)
                    found.append(pickle.dumps((resource, loc, src), protocol=5))
        yield pa.RecordBatch.from_arrays([pa.array(found, pa.binary())], names=["payload"])

    raw = spark.read.format("binaryFile").load([f.uri for f in bundles]).select("path", "content")
    try:
        got = raw.mapInArrow(find, "payload binary").collect()
    except Exception as exc:
        _raise_read_error(bundles[0].name, exc)
    return sorted((pickle.loads(r["payload"]) for r in got), key=lambda x: x[2])
