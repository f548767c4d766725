"""The local session's JVM class archive (no Spark session) and the read's bucket blobs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from fhir_cohort.engine.read import _TABLES, _TaskResult
from fhir_cohort.spark import engine


def test_class_archive_is_written_once_then_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No archive: the JVM writes one to a temporary file (renamed when the session stops);
    then it is mapped; the variable turns it off."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(engine, "_dumping", [])
    monkeypatch.setenv(engine.CLASS_ARCHIVE_ENV, "0")
    assert engine._class_archive_options() == []
    monkeypatch.delenv(engine.CLASS_ARCHIVE_ENV)
    writing = engine._class_archive_options()
    ((temporary, final),) = engine._dumping
    assert writing[0] == f"-XX:ArchiveClassesAtExit={temporary}"
    assert temporary.parent == final.parent == tmp_path / "fhir-cohort"
    assert (tmp_path / "fhir-cohort").stat().st_mode & 0o777 == 0o700
    final.write_bytes(b"archive")
    assert engine._class_archive_options()[0] == f"-XX:SharedArchiveFile={final}"
    assert len(engine._dumping) == 1  # mapping writes nothing


def test_bucket_blobs_keep_a_patients_rows_together_in_order() -> None:
    """Every row of a patient is in one bucket's blob, each table's rows there in the
    partition's order, with their location keys."""
    out = _TaskResult()
    src = 0
    for t in _TABLES:
        for n in range(40):
            out.rows[t].append((f"p{n % 7}" if n % 9 else None, t, n))
            out.ledger.rows[t].append(src)
            src += 1
    seen: dict[str | None, int] = {}
    back: dict[str, list[tuple]] = {t: [] for t in _TABLES}
    for b, blob in engine._bucket_blobs(out):
        assert 0 <= b < engine.BUCKETS
        rows, srcs, seqs = pickle.loads(blob)
        for i, t in enumerate(_TABLES):
            assert seqs[i] == sorted(seqs[i])
            for row, s, n in zip(rows[i], srcs[i], seqs[i], strict=True):
                assert seen.setdefault(row[0] or "", b) == b
                assert out.rows[t][n] == row and out.ledger.rows[t][n] == s
                back[t].append(row)
    assert {t: sorted(map(str, v)) for t, v in back.items()} == {
        t: sorted(map(str, v)) for t, v in out.rows.items()
    }
