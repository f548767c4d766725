"""The screening history: an SQLite database (stdlib ``sqlite3``, WAL) of every run.

One file holds every trial's runs: per run the as-of date, the data cut, the criteria file and
its SHA-256, the tool version; per patient the status, the answers (criterion, answer, reason)
as one interned **answer set** and the SHA-256 of the evidence behind each answer. The schema
grows only by migrations (``MIGRATIONS``, applied in order, each in its own transaction,
recorded in ``schema_version``); an applied step is never edited. docs/history.md describes
the tables.

Why answer sets: a 100,000-patient screen has 800,000 answers but a few thousand distinct
per-patient answer lists, so one row per patient naming its list (plus its evidence digests)
costs a tenth of one row per answer to write and to compare (docs/benchmarks.md).

No pandas import at module level: ``fhir-cohort history`` lists runs without loading it.
:meth:`History.record_run` reads the frames it is given through numpy and pandas.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import operator
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fhir_cohort.engine.sharing import KeyUses
from fhir_cohort.errors import HistoryError
from fhir_cohort.files import open_private, private_dir, warn_if_exposed
from fhir_cohort.history.decisions import DecisionStore

__all__ = [
    "EVIDENCE_HASHED",
    "HISTORY_NAME",
    "MIGRATIONS",
    "MIGRATION_CODE",
    "SCHEMA_VERSION",
    "History",
    "RecordedAnswer",
    "RunInfo",
    "SharedEvidence",
    "default_history_path",
    "evidence_sets",
    "open_history",
]

# The default file sits in the folder that holds --out, not in it: a coordinator re-screens
# weekly into a new folder (results/2026-11-24, results/2026-12-01), and each week must find
# the same history (results/fhir-cohort-history.sqlite).
HISTORY_NAME = "fhir-cohort-history.sqlite"

# The evidence hash covers the records behind an answer, not the engine's note: notes read
# the records relative to the as-of date ("era 301 days" grows every week while a medication
# stays active), and a hash that changed weekly would flag every candidate.
EVIDENCE_HASHED: tuple[str, ...] = (
    "resource_type",
    "resource_id",
    "system",
    "code",
    "display",
    "date",
    "value",
)
# Stored (for the changes' "new evidence" and a later worklist): the hashed fields and the note.
EVIDENCE_STORED: tuple[str, ...] = (*EVIDENCE_HASHED, "note")

# Each step: (version, what it adds, statements). Append only: a database at version N gets
# steps N+1.. on its next open. Never edit a step that was released.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "runs, patients, statuses, answers and evidence hashes",
        (
            """CREATE TABLE runs (
                run_id INTEGER PRIMARY KEY,
                trial_id TEXT NOT NULL,
                trial_title TEXT,
                trial_version TEXT,
                as_of TEXT NOT NULL,
                data_cut TEXT,
                data_cut_kind TEXT,
                started TEXT NOT NULL,
                recorded_at TEXT NOT NULL,
                criteria_file TEXT,
                criteria_sha256 TEXT,
                criterion_ids TEXT NOT NULL,
                tool_version TEXT NOT NULL,
                source TEXT,
                out_dir TEXT,
                pass_id TEXT,
                previous_run_id INTEGER REFERENCES runs (run_id),
                patients INTEGER NOT NULL,
                eligible INTEGER NOT NULL,
                review INTEGER NOT NULL,
                ineligible INTEGER NOT NULL
            )""",
            "CREATE INDEX runs_by_trial ON runs (trial_id, run_id)",
            # FHIR ids once per database; the per-run tables hold the small integer key.
            """CREATE TABLE patients (
                patient_key INTEGER PRIMARY KEY,
                patient_id TEXT NOT NULL UNIQUE
            )""",
            """CREATE TABLE run_patients (
                run_id INTEGER NOT NULL REFERENCES runs (run_id),
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                status TEXT NOT NULL,
                PRIMARY KEY (run_id, patient_key)
            ) WITHOUT ROWID""",
            # Reasons repeat across patients and runs (148 distinct in 15,872 demo answers):
            # stored once, which more than halves the answers table.
            """CREATE TABLE reasons (
                reason_id INTEGER PRIMARY KEY,
                text TEXT NOT NULL UNIQUE
            )""",
            """CREATE TABLE run_answers (
                run_id INTEGER NOT NULL,
                patient_key INTEGER NOT NULL,
                criterion_id TEXT NOT NULL,
                answer TEXT NOT NULL,
                reason_id INTEGER REFERENCES reasons (reason_id),
                evidence_sha256 BLOB,
                PRIMARY KEY (run_id, patient_key, criterion_id),
                FOREIGN KEY (run_id, patient_key) REFERENCES run_patients (run_id, patient_key)
            ) WITHOUT ROWID""",
            # Content-addressed: a week whose records did not change adds nothing here.
            """CREATE TABLE evidence_sets (
                evidence_sha256 BLOB PRIMARY KEY,
                rows TEXT NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    (
        2,
        "chart-review decisions and their audit log (the worklist, issue 12 item 3)",
        (
            # One current decision per trial and patient; `revision` lets a save name the
            # revision it read, so a concurrent edit is a conflict, not a lost update.
            """CREATE TABLE decisions (
                trial_id TEXT NOT NULL,
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                decision TEXT,
                reason TEXT,
                contact_status TEXT,
                note TEXT,
                decided_by TEXT NOT NULL,
                decided_at TEXT NOT NULL,
                run_id INTEGER REFERENCES runs (run_id),
                revision INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (trial_id, patient_key)
            ) WITHOUT ROWID""",
            """CREATE TABLE decision_log (
                entry_id INTEGER PRIMARY KEY,
                trial_id TEXT NOT NULL,
                patient_key INTEGER NOT NULL REFERENCES patients (patient_key),
                field TEXT NOT NULL,
                previous_value TEXT,
                value TEXT,
                changed_by TEXT NOT NULL,
                changed_at TEXT NOT NULL,
                run_id INTEGER REFERENCES runs (run_id)
            )""",
            "CREATE INDEX decision_log_by_patient ON decision_log (trial_id, patient_key)",
        ),
    ),
    (
        3,
        "the decision version each audit row belongs to",
        # One save writes one row per changed field: the version groups them (and says which
        # save a conflict lost to).
        ("ALTER TABLE decision_log ADD COLUMN revision INTEGER",),
    ),
    (
        4,
        "answers as one interned answer set per patient and run, evidence digests beside it",
        (
            # A JSON list, in the run's criteria order, of [criterion id, answer, reason id,
            # evidence index]: the index-th 32-byte digest of run_patients.evidence, or null.
            """CREATE TABLE answer_sets (
                answer_set_id INTEGER PRIMARY KEY,
                answers TEXT NOT NULL UNIQUE
            )""",
            "ALTER TABLE run_patients ADD COLUMN answer_set_id INTEGER "
            "REFERENCES answer_sets (answer_set_id)",
            "ALTER TABLE run_patients ADD COLUMN evidence BLOB",
            # Per digest, 8 bytes of BLAKE2b of the rows text this run stored for it (the
            # notes' wording): the next run skips rewriting the sets whose text it would not
            # change. None for runs recorded before this step.
            "ALTER TABLE run_patients ADD COLUMN evidence_wording BLOB",
            "ALTER TABLE run_answers RENAME TO run_answers_v3",
            # The old table's rows, read from the sets: for SQL by hand and small look-ups
            # (the code compares sets and digests, not these rows).
            """CREATE VIEW run_answers AS
            SELECT rp.run_id, rp.patient_key,
                json_extract(a.value, '$[0]') AS criterion_id,
                json_extract(a.value, '$[1]') AS answer,
                json_extract(a.value, '$[2]') AS reason_id,
                substr(rp.evidence, 1 + 32 * json_extract(a.value, '$[3]'), 32) AS evidence_sha256
            FROM run_patients rp
            JOIN answer_sets s ON s.answer_set_id = rp.answer_set_id,
            json_each(s.answers) a""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
_AGE = re.compile(r"age \d+")
_DIGEST = 32  # bytes of a SHA-256: run_patients.evidence is a row of them
_CHUNK_ROWS = 16_384  # evidence rows hashed at a time: bounded memory at any size
_WORDING = 8  # bytes of BLAKE2b per stored rows text: which wording a run stored
_WRITE_BYTES = 16 << 20  # evidence rows held before they are written (_SetWrites)
_WORDING_OF = functools.partial(hashlib.blake2b, digest_size=_WORDING)
_DIGEST_OF = operator.methodcaller("digest")
_LIST_OF_ONE = b"[%b]".__mod__  # a row's JSON -> a list of that one row
_BUSY_TIMEOUT_S = 30.0  # another screen writing the same history: wait, do not fail
_STATUSES = ("eligible", "review", "ineligible")


def default_history_path(out_dir: str | Path) -> Path:
    """Where ``screen`` keeps the history by default: ``HISTORY_NAME`` in the folder that
    holds ``out_dir`` (``results/2026-11-24`` -> ``results/fhir-cohort-history.sqlite``), so
    a new output folder each week still finds the previous weeks' runs.

    >>> default_history_path("results/2026-11-24").as_posix()
    'results/fhir-cohort-history.sqlite'
    """
    out = Path(out_dir)
    if out.name in ("", ".."):  # "." or "..": name the folder, so its parent is the right one
        out = out.resolve()
    return out.parent / HISTORY_NAME


@dataclass(frozen=True)
class RunInfo:
    """One row of ``runs``: what a screening ran on, and its counts."""

    run_id: int
    trial_id: str
    trial_title: str | None
    trial_version: str | None
    as_of: str
    data_cut: str | None
    data_cut_kind: str | None
    started: str
    recorded_at: str
    criteria_file: str | None
    criteria_sha256: str | None
    criterion_ids: tuple[str, ...]
    tool_version: str
    source: str | None
    out_dir: str | None
    pass_id: str | None
    previous_run_id: int | None
    patients: int
    eligible: int
    review: int
    ineligible: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunInfo:
        values = dict(row)
        values["criterion_ids"] = tuple(json.loads(values["criterion_ids"]))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def _texts(frame: Any, column: str) -> list[str]:
    """A frame's column as text, missing values empty (vectorised: a history records every
    patient of a hospital)."""
    if column not in frame:
        return [""] * len(frame)
    col = frame[column]
    if col.dtype == "str":  # pandas' string dtype: no object round trip
        return list(col.fillna("").tolist())
    return list(col.astype(object).where(col.notna(), "").astype(str).tolist())


def _shared_texts(frame: Any, column: str) -> list[str]:
    """:func:`_texts` for a column of few distinct values: one string object per value, not
    per row (100,000 statuses as separate strings: 6 MB)."""
    import pandas as pd

    codes, values = pd.factorize(_text_column(frame, column))
    names = values.tolist()
    return [names[c] for c in codes.tolist()]


def _as_of_free(value: str, open_end: str) -> str:
    """A value without what the engine computed from the as-of date: an age ("age 77": the
    birth date is the fact) or an exposure open to S ("2026-05-08..<as-of>")."""
    if _AGE.fullmatch(value):
        return "age"
    if open_end and value.endswith(open_end):
        return value[: -len(open_end)] + "..S"
    return value


def _hashed_groups(
    evidence: Any,
    groups: Any,
    as_of: str | None,
    known: _Known | None = None,
) -> Iterator[tuple[Any, list[bytes], list[bytes | None]]]:
    """The evidence sets of ``evidence``'s rows grouped by ``groups`` (an integer per row;
    negative: skipped), a chunk of rows at a time: per chunk the group codes, in the order
    each group first appears, and per group the SHA-256 of its records and the rows as JSON
    bytes (:func:`evidence_sets` says what is hashed). A group whose code is in ``known``
    is not hashed: its digest is ``known``'s and its rows None.

    Rows are turned into Python strings one chunk at a time: a hospital's evidence table as
    Python objects would cost more memory than the whole history record."""
    import numpy as np
    import pandas as pd

    groups = np.asarray(groups, dtype=np.int64)
    kept = np.flatnonzero(groups >= 0)
    if len(kept) == 0:
        return
    # In order of first appearance, rows of a group in table order: the stored rows keep
    # evidence.csv's order, and a digest two groups share keeps the last one's wording.
    first = pd.factorize(groups[kept])[0]
    order = kept[np.argsort(first, kind="stable")] if (np.diff(first) < 0).any() else kept
    codes = groups[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    bounds = np.r_[starts, len(order)]
    contiguous = len(order) == len(evidence) and bool((np.diff(order) == 1).all())
    frame = evidence[[c for c in EVIDENCE_STORED if c in evidence]]  # absent: empty texts
    i = 0
    while i < len(starts):
        j = min(max(i + 1, int(np.searchsorted(starts, starts[i] + _CHUNK_ROWS))), len(starts))
        a, b = int(starts[i]), int(bounds[j])
        chunk_codes = codes[starts[i:j]]
        lengths = bounds[i + 1 : j + 1] - starts[i:j]
        skip, at = known.find(chunk_codes) if known else (None, None)
        if skip is None or not skip.any():
            rows = slice(a, b) if contiguous else order[a:b]
            hashed, stored = _chunk_rows(frame.iloc[rows], lengths.tolist(), as_of)
            digests = list(map(_DIGEST_OF, map(hashlib.sha256, hashed)))
            yield chunk_codes, digests, list(stored)
        else:  # known groups: their digests, no rows turned into text
            rows = order[a:b][np.repeat(~skip, lengths)]
            hashed, stored = _chunk_rows(frame.iloc[rows], lengths[~skip].tolist(), as_of)
            new = list(map(_DIGEST_OF, map(hashlib.sha256, hashed)))
            digests = _merged(skip, known.digests[at[skip]], new, _DIGEST)  # type: ignore[union-attr]
            texts: list[bytes | None] = [None] * (j - i)
            for k, text in zip(np.flatnonzero(~skip).tolist(), stored, strict=True):
                texts[k] = text
            yield chunk_codes, digests, texts
        i = j


def _chunk_rows(
    part: Any, lengths: Sequence[int], as_of: str | None
) -> tuple[list[bytes], list[bytes]]:
    """The rows of ``part`` (groups of ``lengths`` rows, in order) as what is hashed and what
    is stored per group (:func:`_hashed_groups`)."""
    if not lengths:
        return [], []
    value = EVIDENCE_HASHED.index("value")
    open_end = f"..{as_of}" if as_of else ""
    columns = [_texts(part, c) for c in EVIDENCE_STORED]
    # C-level maps, not a Python call per row: a hospital has 200,000 evidence rows
    values = columns[value]
    free = ["age" if m else v for m, v in zip(map(_AGE.fullmatch, values), values, strict=True)]
    if open_end:
        for k in [k for k, hit in enumerate(map(_ends_with(open_end), free)) if hit]:
            free[k] = _as_of_free(free[k], open_end)
    # Each row as "[row]", a group of one: orjson's output is copied at once, since each
    # buffer it returns holds kilobytes (16,384 of them held: 67 MB).
    rows = zip(*columns[:value], free, strict=True)
    hashed = list(map(_LIST_OF_ONE, map(orjson.dumps, rows)))
    stored = list(map(_LIST_OF_ONE, map(orjson.dumps, zip(*columns, strict=True))))
    if len(hashed) != len(lengths):  # some group has several rows: [row,row]
        highs = list(itertools.accumulate(lengths))
        spans = list(zip([0, *highs[:-1]], highs, strict=True))
        hashed = [_list_of(hashed[lo:hi]) for lo, hi in spans]
        stored = [_list_of(stored[lo:hi]) for lo, hi in spans]
    return hashed, stored


def _texts_of(
    evidence: Any,
    groups: Any,
    codes: Any,
    texts: list[bytes | None],
    missing: Sequence[int],
    as_of: str | None,
) -> list[bytes | None]:
    """``texts`` (a chunk's, group ``codes``) with the rows of the groups ``missing`` filled
    in from ``evidence`` (rows of a group in table order, as :func:`_hashed_groups` reads)."""
    import numpy as np

    groups = np.asarray(groups, dtype=np.int64)
    wanted = np.where(np.isin(groups, np.asarray(missing, dtype=np.int64)), groups, -1)
    got: dict[int, bytes | None] = {}
    for found, _, stored in _hashed_groups(evidence, wanted, as_of):
        got.update(zip(found.tolist(), stored, strict=True))
    pairs = zip(codes.tolist(), texts, strict=True)
    return [got[c] if t is None and c in got else t for c, t in pairs]


def _merged(known: Any, known_values: Any, new: Sequence[bytes], size: int) -> list[bytes]:
    """Per position, ``known_values`` in order where ``known`` (booleans) is set and ``new``
    in order elsewhere: fixed-size byte strings (digests, wordings)."""
    import numpy as np

    both = np.empty(len(known), dtype=f"S{size}")
    both[known] = known_values
    if len(new):
        both[~known] = np.array(new, dtype=f"S{size}")
    return _split(both.tobytes(), size)


def _split(blob: bytes, size: int) -> list[bytes]:
    """Fixed-size items of ``blob`` (numpy's tolist() would cut trailing zero bytes)."""
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def _stored_fields(frame: Any) -> Any:
    """``EVIDENCE_STORED`` of a frame as an Arrow table of texts, as :func:`_text_column`
    gives them (missing values, or the column, empty): what two tables' rows are compared
    by. Arrow-backed text columns are not copied into Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in EVIDENCE_STORED:
        col = frame.get(column)
        if col is None or col.dtype != "str":
            col = _text_column(frame, column)
        got = pa.array(col.reset_index(drop=True), from_pandas=True)
        if isinstance(got, pa.ChunkedArray):
            got = got.combine_chunks()
        columns.append(pc.fill_null(got.cast(pa.large_string()), ""))
    return pa.Table.from_arrays(columns, names=list(EVIDENCE_STORED))


@dataclass
class _SharedSource:
    """One criterion's evidence sets as the first trial of a pass that asked it recorded
    them: its rows (in the evidence table's order), each row's patient, and per patient with
    evidence (ascending) the digest and wording."""

    pids: Any  # the trial's patients (its status table's order), Arrow
    fields: Any  # _stored_fields of its evidence
    rows: Any
    row_patients: Any
    patients: Any
    digests: bytes
    words: bytes

    @classmethod
    def of(
        cls,
        table: _AnswerTable,
        fields: Any,
        groups: Any,
        rank: int,
        cells: Any,
        digests: Any,
        words: Any,
    ) -> _SharedSource:
        import numpy as np

        width = len(table.names)
        rows = np.flatnonzero((groups >= 0) & (groups % width == rank))
        mine = cells % width == rank
        return cls(
            pids=table.pids,
            fields=fields,
            rows=rows,
            row_patients=groups[rows] // width,
            patients=cells[mine] // width,
            digests=digests[mine].tobytes(),
            words=words[mine].tobytes(),
        )

    def match(
        self, table: _AnswerTable, fields: Any, groups: Any, rank: int
    ) -> tuple[Any, bytes, bytes] | None:
        """(cells, digests, wordings) of the criterion at ``rank`` of ``table``, when its
        evidence rows are this source's row for row (same patients in the same order, every
        stored field equal); else None (its sets are then hashed)."""
        import numpy as np

        if len(table.pids) != len(self.pids) or not table.pids.equals(self.pids):
            return None
        width = len(table.names)
        rows = np.flatnonzero((groups >= 0) & (groups % width == rank))
        if not np.array_equal(groups[rows] // width, self.row_patients):
            return None
        if not self.fields.take(self.rows).equals(fields.take(rows)):
            return None
        return self.patients * width + rank, self.digests, self.words


class _Known:
    """The sets of a trial an earlier trial of the pass recorded: per cell (patient * width
    + criterion) the digest and wording, as arrays sorted by cell (looked up vectorised: a
    shared criterion has a set per patient)."""

    def __init__(self, found: Sequence[tuple[Any, bytes, bytes]]) -> None:
        import numpy as np

        cells = np.concatenate([np.asarray(c, dtype=np.int64) for c, _, _ in found] or [[]])
        order = np.argsort(cells, kind="stable")
        self.cells = cells.astype(np.int64)[order]
        digests = b"".join(d for _, d, _ in found)
        words = b"".join(w for _, _, w in found)
        self.digests = np.frombuffer(digests, dtype=f"S{_DIGEST}")[order]
        self.words = np.frombuffer(words, dtype=f"S{_WORDING}")[order]

    def __len__(self) -> int:
        return len(self.cells)

    def find(self, codes: Any) -> tuple[Any, Any]:
        """Per code: is it known, and where (an index into the arrays; only where known)."""
        import numpy as np

        if len(self.cells) == 0:
            return np.zeros(len(codes), dtype=bool), np.zeros(len(codes), dtype=np.int64)
        at = np.minimum(np.searchsorted(self.cells, codes), len(self.cells) - 1)
        return self.cells[at] == codes, at


class SharedEvidence:
    """The evidence digests the trials of one pass can share: a criterion several of them
    ask identically (``same_key``) has, patient by patient, the same evidence rows, so a
    later trial takes the first one's digests instead of hashing the same rows again. Only
    read, never trusted: the rows are compared (vectorised) first, and a criterion whose
    rows differ in anything is hashed as usual. Each key's rows are let go after the last
    trial that asks it (:meth:`done_with`)."""

    def __init__(self, keys_per_trial: Iterable[Iterable[str]]) -> None:
        self._uses = KeyUses(keys_per_trial)
        self._sources: dict[str, _SharedSource] = {}

    @property
    def sharing(self) -> bool:
        """Whether a key is still asked by a trial to come."""
        return bool(self._uses)

    def known(self, keys: Sequence[str], table: _AnswerTable, evidence: Any, groups: Any) -> _Known:
        """The digest and wording of every set of this trial an earlier one recorded."""
        found = []
        fields = None
        for rank, key in enumerate(keys):
            source = self._sources.get(key)
            if source is not None:
                if fields is None:
                    fields = _stored_fields(evidence)
                got = source.match(table, fields, groups, rank)
                if got is not None:
                    found.append(got)
        return _Known(found)

    def remember(
        self,
        keys: Sequence[str],
        table: _AnswerTable,
        evidence: Any,
        groups: Any,
        cells: Any,
        digests: Any,
        words: Any,
    ) -> None:
        """Keep this trial's sets of the criteria a later trial asks identically."""
        fields = None
        for rank, key in enumerate(keys):
            if key in self._uses and key not in self._sources:
                if fields is None:
                    fields = _stored_fields(evidence)
                self._sources[key] = _SharedSource.of(
                    table, fields, groups, rank, cells, digests, words
                )

    def done_with(self, keys: Iterable[str]) -> None:
        """A trial is recorded: free what no later trial of the pass asks for."""
        for key in self._uses.done_with(keys):
            self._sources.pop(key, None)


def _list_of(ones: Sequence[bytes]) -> bytes:
    """Rows each as "[row]" -> "[row,row]" (orjson's compact list)."""
    return ones[0] if len(ones) == 1 else b"[" + b",".join(o[1:-1] for o in ones) + b"]"


def _ends_with(suffix: str) -> Callable[[str], bool]:
    return operator.methodcaller("endswith", suffix)


def evidence_sets(
    evidence: Any, as_of: str | None = None
) -> dict[tuple[str, str], tuple[bytes, str]]:
    """(patient id, criterion id) -> (SHA-256 of its evidence records, the rows as JSON).

    The hash reads ``EVIDENCE_HASHED`` of each row in the table's order (evidence.csv's,
    sorted by the pipeline), values without what ``as_of`` alone changes
    (:func:`_as_of_free`); the JSON keeps the rows as shown, note too. No key: no evidence.

    >>> import pandas as pd
    >>> ev = pd.DataFrame({"patient_id": ["p"], "criterion_id": ["age"],
    ...                    "resource_type": ["Patient"], "value": ["age 40"]})
    >>> evidence_sets(ev)["p", "age"][0] == evidence_sets(ev.assign(value="age 41"))["p", "age"][0]
    True
    """
    if evidence is None or len(evidence) == 0:
        return {}
    keys: dict[tuple[str, str], int] = {}
    pairs = zip(_texts(evidence, "patient_id"), _texts(evidence, "criterion_id"), strict=True)
    groups = [keys.setdefault(k, len(keys)) for k in pairs]
    names = list(keys)
    out: dict[tuple[str, str], tuple[bytes, str]] = {}
    for codes, digests, texts in _hashed_groups(evidence, groups, as_of):
        for code, digest, text in zip(codes.tolist(), digests, texts, strict=True):
            out[names[code]] = (digest, text.decode())
    return out


def _set_text(items: Sequence[Sequence[Any]]) -> str:
    """An answer set's stored text: ``[[criterion id, answer, reason id, evidence index],
    ...]`` as compact JSON (one text per set: interned by equality)."""
    return orjson.dumps(items).decode()


def _encode(
    entries: Iterable[tuple[str, str, int | None, bytes | None]],
) -> tuple[str, bytes | None]:
    """(criterion id, answer, reason id, evidence digest) per criterion, in order -> the
    answer set's text and the row of digests (None: no evidence)."""
    items: list[list[Any]] = []
    digests: list[bytes] = []
    for cid, answer, reason_id, digest in entries:
        items.append([cid, answer, reason_id, len(digests) if digest is not None else None])
        if digest is not None:
            digests.append(bytes(digest))
    return _set_text(items), b"".join(digests) or None


def _intern_sets(conn: sqlite3.Connection, texts: Iterable[str]) -> dict[str, int]:
    """Each answer set's id, inserted when new (a weekly run adds few: its patients' sets
    are mostly last week's). New sets are numbered in text order, not in the order the
    patients come in (which follows the read workers' finish order): the same screens give
    the same ids. Looked up in one join through a temporary table, not one query per set."""
    wanted = sorted(set(texts))
    if not wanted:
        return {}
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_answer_sets (answers TEXT NOT NULL)")
    cursor.execute("DELETE FROM temp.wanted_answer_sets")
    cursor.executemany("INSERT INTO temp.wanted_answer_sets VALUES (?)", ((t,) for t in wanted))
    cursor.execute(
        "INSERT INTO answer_sets (answers) SELECT w.answers FROM temp.wanted_answer_sets w "
        "WHERE NOT EXISTS (SELECT 1 FROM answer_sets s WHERE s.answers = w.answers) "
        "ORDER BY w.rowid"
    )
    ids = dict(
        cursor.execute(
            "SELECT s.answers, s.answer_set_id FROM temp.wanted_answer_sets w "
            "JOIN answer_sets s ON s.answers = w.answers"
        ).fetchall()
    )
    cursor.execute("DELETE FROM temp.wanted_answer_sets")
    return ids


def _v4_answer_sets(conn: sqlite3.Connection) -> None:
    """Step 4's data: each run's answer rows (one per patient and criterion, now
    ``run_answers_v3``) become each patient's answer set and evidence digests, in the run's
    criteria order; then the old table is dropped (the file keeps its size until VACUUM)."""
    runs = conn.execute("SELECT run_id, criterion_ids FROM runs ORDER BY run_id").fetchall()
    for run_id, criterion_ids in runs:
        order = {c: i for i, c in enumerate(json.loads(criterion_ids))}
        rows = conn.execute(
            "SELECT patient_key, criterion_id, answer, reason_id, evidence_sha256 "
            "FROM run_answers_v3 WHERE run_id = ? ORDER BY patient_key",
            (run_id,),
        )
        updates = []
        for key, group in itertools.groupby(rows, key=lambda r: r[0]):
            entries = sorted(
                (tuple(r)[1:] for r in group), key=lambda e: (order.get(e[0], len(order)), e[0])
            )
            text, blob = _encode(entries)
            updates.append((text, blob, run_id, key))
        ids = _intern_sets(conn, (u[0] for u in updates))
        conn.executemany(
            "UPDATE run_patients SET answer_set_id = ?, evidence = ? "
            "WHERE run_id = ? AND patient_key = ?",
            ((ids[text], blob, r, k) for text, blob, r, k in updates),
        )
    conn.execute("DROP TABLE run_answers_v3")


# A step's data conversion, run after its statements in the same transaction. Like the
# statements, never edited once released.
MIGRATION_CODE: Mapping[int, Callable[[sqlite3.Connection], None]] = {4: _v4_answer_sets}


def _text_column(frame: Any, column: str) -> Any:
    """A frame's column as a text Series, missing values (or the column) empty: what
    :func:`_texts` gives, without a Python string per cell (a categorical column of text
    categories as it is: ``pd.factorize`` reads it as it reads the text)."""
    import pandas as pd

    if column not in frame:
        return pd.Series("", index=range(len(frame)), dtype="str")
    col = frame[column]
    if _text_categories(col):
        return col  # factorized by its codes: no string per row (800,000 answers' reasons)
    if col.dtype != "str":
        col = col.astype(object).where(col.notna(), "").astype(str)
    return col.fillna("")


def _text_categories(col: Any) -> bool:
    """Whether ``col`` is categorical with text categories and no missing value: then
    ``pd.factorize`` of it is that of the text column, without the text per row."""
    import pandas as pd

    return (
        isinstance(col.dtype, pd.CategoricalDtype)
        and col.dtype.categories.dtype == "str"
        and not col.hasnans
    )


class _AnswerTable:
    """A run's answers as integer codes: a row per patient (the status table's order), a
    column per criterion (the run's order, then any other the answers name); a cell is
    (answer, reason, has evidence), -1 where the patient has no answer. Patients with equal
    rows share one answer set."""

    def __init__(self, pids: Sequence[str], answers: Any, criterion_ids: Sequence[str]) -> None:
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        # Arrow, not a pandas Index: an Index keeps a hash table of 100,000 Python strings.
        self.pids = pa.array(pids, type=pa.large_string())
        if len(pids) and len(self.pids.unique()) != len(pids):
            raise HistoryError("the status table lists a patient twice")
        patient = self._patients(answers)
        if (patient < 0).any():
            raise HistoryError("an answer of a patient the status table does not list")
        c_codes, c_names = pd.factorize(_text_column(answers, "criterion_id"))
        listed = set(criterion_ids)
        self.names = list(criterion_ids) + [c for c in c_names.tolist() if c not in listed]
        self.rank = {c: i for i, c in enumerate(self.names)}
        criterion = np.array([self.rank[c] for c in c_names.tolist()], dtype=np.int32)[c_codes]
        del c_codes
        cell, answer_texts = pd.factorize(_text_column(answers, "answer"))
        r_codes, reasons = pd.factorize(_text_column(answers, "reason"))
        self.answers: list[str] = answer_texts.tolist()
        self.reasons: list[str] = reasons.tolist()
        cell *= max(len(self.reasons), 1)  # in place: 800,000 answers, few copies
        cell += r_codes
        cell <<= 1
        del r_codes
        width = len(self.names)
        self.matrix = np.full((len(pids), width), -1, dtype=np.int64)
        self.matrix[patient, criterion] = cell
        if int((self.matrix >= 0).sum()) != len(patient):
            raise HistoryError("two answers of one patient to one criterion")
        self._sets: tuple[Any, Any] | None = None

    def _patients(self, frame: Any) -> Any:
        """Per row of ``frame`` its patient's row (-1: not in the status table); each id
        looked up once (800,000 answers name 100,000 patients)."""
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        codes, ids = pd.factorize(_text_column(frame, "patient_id"))
        found = pc.index_in(pa.array(ids, type=pa.large_string()), value_set=self.pids)
        return np.append(found.fill_null(-1).to_numpy().astype(np.int32), -1)[codes]

    def groups(self, evidence: Any) -> Any:
        """Per evidence row its answer's cell (patient * width + criterion), -1 for a row no
        answer of this run has (nothing could show it)."""
        import numpy as np
        import pandas as pd

        patient = self._patients(evidence).astype(np.int64)
        c_codes, c_names = pd.factorize(_text_column(evidence, "criterion_id"))
        lookup = np.array([self.rank.get(c, -1) for c in c_names.tolist()] + [-1], np.int64)
        criterion = lookup[c_codes]
        cell = patient * len(self.names) + criterion
        ok = (patient >= 0) & (criterion >= 0)
        ok[ok] = self.matrix.reshape(-1)[cell[ok]] >= 0
        return np.where(ok, cell, -1)

    def mark_evidence(self, cells: Any) -> None:
        self.matrix.reshape(-1)[cells] |= 1

    def _unique(self) -> tuple[Any, Any]:
        import numpy as np

        if self._sets is None:
            if self.matrix.size == 0:  # no patients, or none with an answer
                rows = np.full((min(len(self.matrix), 1), 0), -1, dtype=np.int64)
                self._sets = rows, np.zeros(len(self.matrix), dtype=np.int64)
            else:  # equal rows, by hashing (np.unique(axis=0) sorts: ten times slower)
                import pandas as pd

                columns = list(range(self.matrix.shape[1]))
                inverse = pd.DataFrame(self.matrix).groupby(columns, sort=False).ngroup()
                inverse = inverse.to_numpy(dtype=np.int64)
                _, first = np.unique(inverse, return_index=True)
                self._sets = self.matrix[first], inverse
        return self._sets

    @property
    def patient_sets(self) -> Any:
        """Per patient the index of its set in :meth:`set_texts`."""
        return self._unique()[1]

    def set_texts(self, reason_ids: Sequence[int | None]) -> list[str]:
        """The distinct answer sets' texts (``reason_ids`` per reason code)."""
        width = max(len(self.reasons), 1)
        texts = []
        for row in self._unique()[0].tolist():
            items: list[list[Any]] = []
            index = 0
            for criterion, cell in enumerate(row):
                if cell < 0:
                    continue
                answer, reason = divmod(cell >> 1, width)
                evidence = index if cell & 1 else None
                index += cell & 1
                items.append(
                    [self.names[criterion], self.answers[answer], reason_ids[reason], evidence]
                )
            texts.append(_set_text(items))
        return texts

    def evidence_ends(self) -> Any:
        """Per patient, how many answers with evidence the patients up to it have: where its
        digests end in the run's digests (cell order)."""
        import numpy as np

        return np.cumsum(((self.matrix >= 0) & (self.matrix & 1 == 1)).sum(axis=1))


def _to_write(digests: Sequence[bytes], known: Any, same: Any, rewritten: set[bytes]) -> list[int]:
    """Which of a chunk's sets to write (positions): not one the latest run stored with the
    same text (``known``, ``same``: :meth:`_LatestWordings.lookup`), unless this run wrote
    its digest before (``rewritten``, updated: the digests the latest run has that this run
    wrote), so that the last group's text wins. Vectorised: a chunk has 16,384 sets."""
    import numpy as np

    write = ~same
    fresh = np.flatnonzero(known & write).tolist()  # the latest run's, written now
    again = np.flatnonzero(same)
    if len(again) and (rewritten or fresh):
        at = again.tolist()
        wanted = list(map(digests.__getitem__, at))
        hit = np.fromiter(map(rewritten.__contains__, wanted), bool, len(at))
        if fresh:  # rewritten earlier in this chunk: its first position there
            first = dict(zip(map(digests.__getitem__, fresh[::-1]), fresh[::-1], strict=True))
            later = np.fromiter(map(first.get, wanted, itertools.repeat(len(digests))), np.int64)
            hit |= later < again
        write[again[hit]] = True
    rewritten.update(map(digests.__getitem__, fresh))
    return np.flatnonzero(write).tolist()


class _SetWrites:
    """One run's upserts into evidence_sets, buffered (as bytes, not a Python object per
    row) and written sorted by digest once ``_WRITE_BYTES`` are held, and at the end: SQLite
    then walks the table's pages once per write, not once per chunk of groups (a chunk's
    digests touch nearly every page of a hospital's table, and each page spilled from the
    cache goes to the WAL again). One digest's rows are written in the order added (stable
    sort), so the later wording still wins."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._digests = bytearray()
        self._texts = bytearray()
        self._lengths: list[int] = []

    def add(self, digests: Sequence[bytes], texts: Sequence[bytes]) -> None:
        """Rows to write: each digest with its rows' JSON (UTF-8)."""
        self._digests += b"".join(digests)
        self._texts += b"".join(texts)
        self._lengths += map(len, texts)
        if len(self._digests) + len(self._texts) >= _WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        if not self._lengths:
            return
        digests, texts = bytes(self._digests), self._texts
        ends = np.cumsum(np.asarray(self._lengths, dtype=np.int64))
        starts = ends - np.asarray(self._lengths, dtype=np.int64)
        self._digests, self._texts, self._lengths = bytearray(), bytearray(), []
        order = np.argsort(np.frombuffer(digests, dtype=f"S{_DIGEST}"), kind="stable")
        at = order * _DIGEST
        rows = zip(
            _slices(digests, at.tolist(), (at + _DIGEST).tolist()),
            map(bytearray.decode, _slices(texts, starts[order].tolist(), ends[order].tolist())),
            strict=True,
        )
        self.conn.executemany(
            "INSERT INTO evidence_sets VALUES (?, ?) ON CONFLICT (evidence_sha256) "
            "DO UPDATE SET rows = excluded.rows WHERE rows != excluded.rows",
            rows,
        )


def _slices(blob: Any, starts: Iterable[int], ends: Iterable[int]) -> Iterator[Any]:
    """``blob[start:end]`` per pair (C-level maps: no Python frame per row)."""
    return map(blob.__getitem__, map(slice, starts, ends))


class _LatestWordings:
    """What evidence_sets holds for the digests of the latest recorded run: for each, the
    text that run stored (its wording hash), unless the run had the digest with two."""

    def __init__(self, digests: bytes, words: bytes) -> None:
        """From the run's digests and their wordings (concatenated, in any order)."""
        import numpy as np

        digests_all = np.frombuffer(digests, dtype=f"S{_DIGEST}")
        words_all = np.frombuffer(words, dtype=f"S{_WORDING}")
        # Sorted by each digest's first 8 bytes (integers sort ten times faster than bytes);
        # by the whole digest only if two digests share them (then equal ones might not
        # lie side by side).
        prefix = _prefixes(digests_all)
        order = np.argsort(prefix, kind="stable")
        self.digests, self.words, self.prefix = digests_all[order], words_all[order], prefix[order]
        shared_prefix = self.prefix[1:] == self.prefix[:-1]
        if (shared_prefix & (self.digests[1:] != self.digests[:-1])).any():
            order = np.argsort(self.digests, kind="stable")
            self.digests, self.words, self.prefix = self.digests[order], self.words[order], None
        # a digest with two wordings in that run: which one it stored last is not known
        twice = self.digests[1:] == self.digests[:-1]
        other = twice & (self.words[1:] != self.words[:-1])
        unsure = self.digests[1:][other].tobytes()  # (tolist() would cut trailing zero bytes)
        self.unsure = set(_split(unsure, _DIGEST))

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> _LatestWordings:
        """The latest run's, read from the database."""
        cursor = conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            "SELECT evidence, evidence_wording FROM run_patients "
            "WHERE run_id = (SELECT max(run_id) FROM run_patients) AND evidence_wording NOT NULL"
        ).fetchall()
        return cls(b"".join(r[0] for r in rows), b"".join(r[1] for r in rows))

    def lookup(self, digests: Sequence[bytes], words: Sequence[bytes]) -> tuple[Any, Any]:
        """Per digest: is it the latest run's, and did that run store this wording."""
        import numpy as np

        if len(self.digests) == 0:
            none = np.zeros(len(digests), dtype=bool)
            return none, none
        query = np.array(digests, dtype=f"S{_DIGEST}")
        if self.prefix is not None:  # no two digests share a prefix: it finds the digest
            at = np.searchsorted(self.prefix, _prefixes(query))
        else:
            at = np.searchsorted(self.digests, query)
        at = np.minimum(at, len(self.digests) - 1)
        known = self.digests[at] == query
        same = known & (self.words[at] == np.array(words, dtype=f"S{_WORDING}"))
        if self.unsure:
            same &= np.array([d not in self.unsure for d in digests], dtype=bool)
        return known, same


def _prefixes(digests: Any) -> Any:
    """The first 8 bytes of each digest (an ``S32`` array) as an unsigned integer, big-endian:
    they sort as the bytes do."""
    import numpy as np

    if len(digests) == 0:
        return np.zeros(0, dtype=np.uint64)
    raw = np.frombuffer(np.ascontiguousarray(digests).tobytes(), dtype=">u8")
    return raw[:: _DIGEST // 8].astype(np.uint64)


@dataclass
class _Recorded:
    """What this connection's last record_run left, for the next trial of a pass: its
    patients' keys (the same patients: the same keys) and its evidence wordings (the
    latest run's, while no run was recorded since). Dropped on a rollback."""

    run_id: int
    pids: Any  # Arrow
    keys: list[int]
    wordings: _LatestWordings


class _AnswerSets:
    """Reads run_patients' answers: each set and reason text once per reader (a run's
    100,000 patients share a few thousand sets)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._sets: dict[int, list[tuple[str, str, str, int | None]]] = {}
        self._reasons: dict[int, str] = {}

    def _reason(self, reason_id: int | None) -> str:
        if reason_id is None:
            return ""
        if reason_id not in self._reasons:
            row = self.conn.execute(
                "SELECT text FROM reasons WHERE reason_id = ?", (reason_id,)
            ).fetchone()
            self._reasons[reason_id] = row[0] if row else ""
        return self._reasons[reason_id]

    def answers(
        self, set_id: int | None, evidence: bytes | None
    ) -> list[tuple[str, str, str, bytes | None]]:
        """(criterion id, answer, reason, evidence digest or None) per criterion, in the
        run's criteria order."""
        if set_id is None:
            return []
        items = self._sets.get(set_id)
        if items is None:
            row = self.conn.execute(
                "SELECT answers FROM answer_sets WHERE answer_set_id = ?", (set_id,)
            ).fetchone()
            items = [
                (cid, answer, self._reason(rid), index)
                for cid, answer, rid, index in (json.loads(row[0]) if row else [])
            ]
            self._sets[set_id] = items
        return [
            (
                cid,
                answer,
                reason,
                None
                if index is None or evidence is None
                else bytes(evidence[index * _DIGEST : (index + 1) * _DIGEST]),
            )
            for cid, answer, reason, index in items
        ]


def _data_cut(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The data cut and what it is: a server run's (export transactionTime, or when the
    search fetch started); for a folder, the transactionTime of a Bulk manifest.json in it."""
    if run.get("data_cut"):
        fetch = (run.get("source") or {}).get("fetch") or {}
        kind = "export transactionTime" if fetch.get("strategy") == "bulk" else "fetch started"
        return str(run["data_cut"]), kind
    path = (run.get("source") or {}).get("path")
    if path:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
            when = manifest.get("transactionTime")
            if isinstance(when, str) and when:
                return when, "export transactionTime (manifest.json)"
    return None, None


@dataclass(frozen=True)
class RecordedAnswer:
    """One patient's answer to one criterion in a run, as recorded."""

    criterion_id: str
    answer: str
    reason: str
    evidence: tuple[dict[str, str], ...]  # EVIDENCE_STORED fields per record, in order


def _patient_rows(
    run_id: int,
    keys: Sequence[int],
    statuses: Sequence[str],
    table: _AnswerTable,
    set_ids: Sequence[int],
    digests: bytes,
    wordings: bytes,
) -> Iterator[tuple[Any, ...]]:
    """run_patients' rows by patient key (the table's order), made a block at a time:
    100,000 rows with their evidence blobs held at once would be some 25 MB. (Chained
    iterators, not a generator: no Python frame resumed per row.)"""
    import numpy as np

    ends = table.evidence_ends()
    starts = np.r_[0, ends[:-1]].astype(np.int64)
    sets = np.asarray(set_ids, dtype=np.int64)[table.patient_sets]
    order = np.argsort(np.asarray(keys), kind="stable")

    def block(first: int) -> Iterator[tuple[Any, ...]]:
        rows = order[first : first + _CHUNK_ROWS]
        lo, hi = starts[rows], ends[rows]
        evidence = list(_slices(digests, (lo * _DIGEST).tolist(), (hi * _DIGEST).tolist()))
        words = list(_slices(wordings, (lo * _WORDING).tolist(), (hi * _WORDING).tolist()))
        for k in np.flatnonzero(lo == hi).tolist():  # no evidence: NULL, not an empty blob
            evidence[k] = words[k] = None
        at = rows.tolist()
        return zip(
            itertools.repeat(run_id),
            map(keys.__getitem__, at),
            map(statuses.__getitem__, at),
            sets[rows].tolist(),
            evidence,
            words,
        )

    return itertools.chain.from_iterable(map(block, range(0, len(order), _CHUNK_ROWS)))


class History(DecisionStore):
    """An open history database. Use :func:`open_history`; close it (or use ``with``).

    The chart-review decisions' methods (``decision``, ``decisions``, ``save_decision``,
    ``decision_log``, ``worklist``) are :class:`~fhir_cohort.history.decisions.DecisionStore`'s."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._depth = 0
        self._last_record: _Recorded | None = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, so two screens
        writing one history wait for each other instead of failing half-way). Nested use
        joins the outer transaction. Rolled back on any exception."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._last_record = None  # its patients' keys may be rolled back with it
            self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._last_record = None  # not committed: its keys may not hold
                raise
        finally:
            self._depth = 0

    # ----------------------------------------------------------------------------------------
    # Schema

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, target: int | None = None) -> int:
        """Apply the missing steps up to ``target`` (default: all), each in one transaction
        with its ``schema_version`` row. Returns the version reached."""
        with self.transaction():
            self.conn.execute(_VERSION_TABLE)
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.path}: written by a newer fhir-cohort (history schema {current}; "
                f"this version knows up to {SCHEMA_VERSION}): upgrade fhir-cohort"
            )
        goal = SCHEMA_VERSION if target is None else target
        for version, description, statements in MIGRATIONS:
            if current < version <= goal:
                with self.transaction() as conn:
                    for statement in statements:
                        conn.execute(statement)
                    if version in MIGRATION_CODE:
                        MIGRATION_CODE[version](conn)
                    conn.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)",
                        (version, description, _now()),
                    )
                current = version
        return current

    # ----------------------------------------------------------------------------------------
    # Writing

    def record_run(
        self,
        run: Mapping[str, Any],
        *,
        status: Any,
        answers: Any,
        evidence: Any,
        out_dir: str | Path | None = None,
        pass_id: str | None = None,
        shared: SharedEvidence | None = None,
        same_keys: Sequence[str] = (),
    ) -> RunInfo:
        """Record one trial's screening: ``run`` is its run.json record, ``status`` the
        evaluation's ``patient_id, status`` table, ``answers`` its ``patient_id, criterion_id,
        answer, reason`` table, ``evidence`` the evidence table. In one transaction (joins
        the caller's). The previous run of the same trial is the one recorded last before.

        Each patient gets one row: the status, the answers as an interned answer set, and
        the digests of the evidence behind them; the evidence rows are stored once per
        digest (``evidence_sets``)."""
        trial = run.get("trial") or {}
        criteria = run.get("criteria") or {}
        counts = (run.get("counts") or {}).get("status") or {}
        source = run.get("source") or {}
        data_cut, data_cut_kind = _data_cut(run)
        pids, statuses = _texts(status, "patient_id"), _shared_texts(status, "status")
        with self.transaction() as conn:
            trial_id = str(trial.get("id"))
            previous = conn.execute(
                "SELECT max(run_id) FROM runs WHERE trial_id = ?", (trial_id,)
            ).fetchone()[0]
            cursor = conn.execute(
                "INSERT INTO runs (trial_id, trial_title, trial_version, as_of, data_cut, "
                "data_cut_kind, started, recorded_at, criteria_file, criteria_sha256, "
                "criterion_ids, tool_version, source, out_dir, pass_id, previous_run_id, "
                "patients, eligible, review, ineligible) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    trial_id,
                    trial.get("title"),
                    trial.get("version"),
                    str(run.get("as_of")),
                    data_cut,
                    data_cut_kind,
                    str(run.get("started") or _now()),
                    _now(),
                    criteria.get("file"),
                    criteria.get("sha256"),
                    json.dumps(list(criteria.get("criterion_ids") or [])),
                    str((run.get("tool") or {}).get("version")),
                    source.get("url") or source.get("path"),
                    str(out_dir) if out_dir is not None else None,
                    pass_id,
                    previous,
                    len(pids),
                    *(int(counts[s]) if s in counts else statuses.count(s) for s in _STATUSES),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            table = _AnswerTable(pids, answers, list(criteria.get("criterion_ids") or []))
            keys = self._patient_keys(pids, table.pids)
            del pids  # the table holds them as Arrow
            ids = criteria.get("criterion_ids") or []
            if shared is not None and len(same_keys) != len(ids):
                shared.done_with(same_keys)  # not one key per criterion: nothing to share by
                shared, same_keys = None, ()
            digests, wordings = self._store_evidence(
                table, evidence, str(run.get("as_of")), shared, same_keys
            )
            texts = table.set_texts(self._reason_ids(table.reasons))
            sets = _intern_sets(conn, texts)
            set_ids = [sets[text] for text in texts]
            conn.executemany(
                "INSERT INTO run_patients (run_id, patient_key, status, answer_set_id, evidence, "
                "evidence_wording) VALUES (?, ?, ?, ?, ?, ?)",
                _patient_rows(run_id, keys, statuses, table, set_ids, digests, wordings),
            )
            self._last_record = _Recorded(
                run_id, table.pids, keys, _LatestWordings(digests, wordings)
            )
        return self.run(run_id)

    def _store_evidence(
        self,
        table: _AnswerTable,
        evidence: Any,
        as_of: str,
        shared: SharedEvidence | None = None,
        keys: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """Hash the evidence behind each answer, store each set's rows once (same records,
        new note text: the latest wording is kept, it is only shown) and mark the answers
        that have evidence. Returns the digests and their wordings, in (patient, criterion)
        order.

        A set the latest run stored with the same text is not written again: a weekly run
        rewrites only what changed (and a set whose digest this run wrote before, so that
        the last group's text wins as before). With ``shared`` (the trials of one pass) the
        sets of a criterion an earlier trial of the pass asked identically (``keys``: the
        criteria's :func:`~fhir_cohort.engine.evaluate.same_key`), with equal rows, take that
        trial's digests instead of being hashed again."""
        import numpy as np

        if evidence is None or len(evidence) == 0:
            if shared is not None:
                shared.done_with(keys)
            return b"", b""
        stored = self._latest_wordings()
        found: list[Any] = []
        digests, wordings = bytearray(), bytearray()
        rewritten: set[bytes] = set()  # digests the latest run has, written by this run
        writes = _SetWrites(self.conn)
        groups = table.groups(evidence)
        known = shared.known(keys, table, evidence, groups) if shared is not None else None
        for codes, chunk, texts in _hashed_groups(evidence, groups, as_of, known):
            skip, at = known.find(codes) if known else (None, None)
            if skip is not None and skip.any():
                new = [t for t in texts if t is not None]
                hashes = list(map(_DIGEST_OF, map(_WORDING_OF, new)))
                words = _merged(skip, known.words[at[skip]], hashes, _WORDING)  # type: ignore[union-attr]
            else:
                words = list(map(_DIGEST_OF, map(_WORDING_OF, texts)))  # type: ignore[arg-type]
            found.append(codes)
            digests += b"".join(chunk)
            wordings += b"".join(words)
            write = _to_write(chunk, *stored.lookup(chunk, words), rewritten)
            missing = [
                c for c, k in zip(codes[write].tolist(), write, strict=True) if texts[k] is None
            ]
            if missing:  # shared sets to write after all: their rows are this trial's too
                texts = _texts_of(evidence, groups, codes, texts, missing, as_of)
            writes.add(list(map(chunk.__getitem__, write)), list(map(texts.__getitem__, write)))
        writes.flush()
        if not found:
            if shared is not None:
                shared.done_with(keys)
            return b"", b""
        codes = np.concatenate(found)
        order = np.argsort(codes, kind="stable")
        table.mark_evidence(codes)
        cells = codes[order]
        digest_rows = np.frombuffer(digests, dtype=f"S{_DIGEST}")[order]
        wording_rows = np.frombuffer(wordings, dtype=f"S{_WORDING}")[order]
        if shared is not None:
            shared.remember(keys, table, evidence, groups, cells, digest_rows, wording_rows)
            shared.done_with(keys)
        return digest_rows.tobytes(), wording_rows.tobytes()

    def _latest_wordings(self) -> _LatestWordings:
        """The latest recorded run's wordings: those this connection recorded last, when no
        run was recorded since (a pass's next trial), else read."""
        mine = self._last_record
        if mine is not None:
            latest = self.conn.execute("SELECT max(run_id) FROM run_patients").fetchone()[0]
            if latest == mine.run_id:
                return mine.wordings
        return _LatestWordings.read(self.conn)

    def _patient_keys(self, pids: Sequence[str], arrow: Any = None) -> list[int]:
        """Each patient's key, in ``pids``' order (new ids inserted). ``arrow``: the same ids
        as Arrow; when they are the patients this connection recorded last (a pass's next
        trial), their keys are those: a key never changes once committed."""
        mine = self._last_record
        if mine is not None and arrow is not None and mine.pids.equals(arrow):
            return mine.keys
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: every patient of the database is read
        known = dict(cursor.execute("SELECT patient_id, patient_key FROM patients").fetchall())
        new = sorted(set(pids).difference(known))  # in index order: appends, not inserts
        if new:
            self.conn.executemany(
                "INSERT INTO patients (patient_id) VALUES (?)", ((p,) for p in new)
            )
            wanted = set(new)
            known.update(
                (pid, key)
                for pid, key in cursor.execute(
                    "SELECT patient_id, patient_key FROM patients WHERE patient_key > ?",
                    (max(known.values(), default=0),),
                )
                if pid in wanted
            )
        return [known[p] for p in pids]

    def _reason_ids(self, texts: Sequence[str]) -> list[int | None]:
        """Each reason text's id (an empty reason: None), in ``texts``' order."""
        wanted = sorted(set(texts) - {""})
        self.conn.executemany(
            "INSERT OR IGNORE INTO reasons (text) VALUES (?)", ((t,) for t in wanted)
        )
        ids: dict[str, int] = {}
        for text in wanted:
            row = self.conn.execute("SELECT reason_id FROM reasons WHERE text = ?", (text,))
            ids[text] = int(row.fetchone()[0])
        return [ids.get(t) for t in texts]

    # ----------------------------------------------------------------------------------------
    # Reading

    def runs(self, trial_id: str | None = None) -> list[RunInfo]:
        """Every recorded run (of ``trial_id``), oldest first."""
        sql = "SELECT * FROM runs" + (" WHERE trial_id = ?" if trial_id else "")
        rows = self.conn.execute(sql + " ORDER BY run_id", (trial_id,) if trial_id else ())
        return [RunInfo.from_row(r) for r in rows]

    def run(self, run_id: int) -> RunInfo:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"{self.path}: no run {run_id} (fhir-cohort history lists them)")
        return RunInfo.from_row(row)

    def statuses(self, run_id: int) -> dict[str, str]:
        """Each patient's status in run ``run_id`` (patient id -> eligible | review |
        ineligible): what the recruitment-over-time plots read (fhir_cohort/plots.py)."""
        self.run(run_id)  # an unknown run is an error, not an empty run
        rows = self.conn.execute(
            "SELECT p.patient_id, rp.status FROM run_patients rp "
            "JOIN patients p ON p.patient_key = rp.patient_key WHERE rp.run_id = ?",
            (run_id,),
        )
        return dict(rows.fetchall())

    def evidence_rows(self, digest: bytes | None) -> list[dict[str, str]]:
        """The stored evidence records of one hash (field -> text), in their order."""
        if digest is None:
            return []
        row = self.conn.execute(
            "SELECT rows FROM evidence_sets WHERE evidence_sha256 = ?", (digest,)
        ).fetchone()
        if row is None:
            return []
        return [dict(zip(EVIDENCE_STORED, r, strict=False)) for r in json.loads(row[0])]

    def patient_answers(self, run_id: int, patient_id: str) -> list[RecordedAnswer]:
        """One patient's answers in run ``run_id``, in the run's criteria order, each with its
        reason and evidence records (the worklist's patient page). Empty: not in the run."""
        order = {c: i for i, c in enumerate(self.run(run_id).criterion_ids)}
        row = self._recorded_row(run_id, patient_id)
        if row is None:
            return []
        answers = [
            RecordedAnswer(cid, answer, reason, tuple(self.evidence_rows(digest)))
            for cid, answer, reason, digest in self._answer_sets().answers(*row)
        ]
        return sorted(
            answers, key=lambda a: (order.get(a.criterion_id, len(order)), a.criterion_id)
        )

    def _answer_sets(self) -> _AnswerSets:
        """A reader of run_patients' answer sets (diff.py, decisions.py)."""
        return _AnswerSets(self.conn)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_history(path: str | Path, *, create: bool = True) -> History:
    """Open (``create``: or create, 0600, missing folders 0700) the history at ``path`` and
    bring its schema up to date. A file others can read is warned about, never chmod-ed.

    Raises :class:`HistoryError` for a file that is not a fhir-cohort history (another
    SQLite database, not SQLite, damaged) or was written by a newer version; without
    ``create``, for a missing file too."""
    path = Path(path)
    if path.is_dir():
        raise HistoryError(f"history {path}: is a folder, not a file")
    if not path.exists():
        if not create:
            raise HistoryError(f"no screening history at {path} (a screen creates it)")
        try:
            private_dir(path.parent)
            # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
            # database file's mode.
            with contextlib.suppress(FileExistsError):
                open_private(path, "xb").close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise HistoryError(f"history {path}: cannot create it ({reason})") from None
    else:
        warn_if_exposed(path, "history file")
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryError(f"history {path}: cannot open ({exc})") from None
    conn.row_factory = sqlite3.Row
    history = History(path, conn)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_version" not in tables:
            raise HistoryError(f"history {path}: an SQLite database, but not a fhir-cohort history")
        history.migrate()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise HistoryError(f"history {path}: not a usable SQLite database ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return history
