"""Read a disk source into tidy tables: line filter, parse, flatten; in parallel when it pays.

Separate Medication resources (files of them, and the Medications in Bundles) are read first in
this process and handed to every worker, so a medicationReference resolves whichever worker
reads the resource that holds it. Bundle files go to workers in groups; their entries pass an
entry filter (:class:`_BundleEntries`) with the outcome of reading them in full, before they are
parsed where the Bundle splits into entries from its bytes. Large NDJSON
files are cut into byte ranges on line boundaries so two cores share even one big file; line
numbers in error locations stay exact because a range knows the line it starts at.

Under ``strict`` no line filter runs: every line is parsed and checked, so the run stops on any
line that is not a resource. Records read with invalid UTF-8 replaced are counted with their
locations (``ReadReport.replaced``).
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import operator
import os
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from fhir_cohort.engine import dedup
from fhir_cohort.engine.dedup import Ledger, location_key, version_key, winner
from fhir_cohort.engine.flatten import (
    _CODE_VALUE,
    _COMPACT_START,
    CODE_ONLY_TYPES,
    CodeLineFilter,
    Flattener,
    make_line_filter,
)
from fhir_cohort.engine.tables import ROW_RESOURCE_TYPES, Tables
from fhir_cohort.engine.unmapped import (
    MAX_KEYS,
    MAX_LINE_KEYS,
    UNMAPPED_TYPES,
    Key,
    TallyingLineFilter,
    Unmapped,
    code_key,
    medication_is_mapped,
    unmapped_codings,
)
from fhir_cohort.errors import MalformedResourceError, SourceError
from fhir_cohort.fhir.ndjson import read_bytes
from fhir_cohort.fhir.references import LOCAL, MISSING, OTHER_TYPE, ReferenceResolver
from fhir_cohort.fhir.sources import (
    DiskSource,
    is_bundle_name,
    iter_bundle_bytes,
    iter_file,
    iter_ndjson_range,
)
from fhir_cohort.fhir.wire import reference_id
from fhir_cohort.progress import Progress, ProgressCallback, no_progress

# Below this many bytes the process start-up costs more than it saves.
PARALLEL_MIN_BYTES = 48 * 1024 * 1024
# Byte-range size for splitting big uncompressed NDJSON files across workers.
CHUNK_BYTES = 64 * 1024 * 1024
# Bundle files are whole tasks; small ones (Synthea: one per patient) go to workers in groups
# of about this many bytes, so per-task overhead vanishes.
BUNDLE_GROUP_BYTES = 16 * 1024 * 1024
MAX_ERRORS_KEPT = 1000
_TABLES = ("patients", "conditions", "medications", "observations")
# The resource types the tables are built from (Medication is read first, separately).
READ_TYPES = ("Patient", *ROW_RESOURCE_TYPES)


_T = TypeVar("_T")


def reading_position(files: Mapping[str, int], location: str) -> tuple[int, int, int, str]:
    """A sort key in reading order for a reader location (``path:line``, ``path#entry[i]``
    or ``path``; ``files``: each path's index in the reading order)."""
    path, kind, n = location, 0, 0
    at = location.rfind("#entry[")
    if at != -1 and location.endswith("]") and location[at + 7 : -1].isdigit():
        path, kind, n = location[:at], 1, int(location[at + 7 : -1])
    else:
        head, sep, tail = location.rpartition(":")
        if sep and tail.isdigit():
            path, n = head, int(tail)
    return (files.get(path, len(files)), kind, n, location)


@dataclass
class ReadReport:
    """What was read: per type, lines seen, resources parsed and malformed ones skipped."""

    files: list[str] = field(default_factory=list)
    lines: Counter[str] = field(default_factory=Counter)
    parsed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    unmapped: Unmapped = field(default_factory=Unmapped)
    # Records read with invalid UTF-8 decoded as U+FFFD: how many, and where (no content).
    replaced: int = 0
    replaced_at: list[str] = field(default_factory=list)
    # run.json "duplicates" and "unresolved_references" (fhir_cohort.engine.dedup).
    duplicates: dict[str, Any] = field(default_factory=dict)
    unresolved: dict[str, Any] = field(default_factory=dict)
    # Read again without the line filter: a line it dropped shares its id with a resource read.
    reread_unfiltered: bool = False

    def merge(self, other: _TaskResult) -> None:
        self.lines.update(other.lines)
        self.parsed.update(other.parsed)
        self.skipped.update(other.skipped)
        self.unmapped.merge(other.unmapped)
        # Kept in reading order, the first MAX_ERRORS_KEPT of the whole source (each worker
        # keeps its first ones): the same list whatever order the workers finish in.
        if other.errors:
            self.errors = self._first([*self.errors, *other.errors], lambda e: e[0])
        self.replaced += other.replaced
        if other.replaced_at:
            self.replaced_at = self._first([*self.replaced_at, *other.replaced_at], str)

    def _first(self, items: list[_T], location: Callable[[_T], str]) -> list[_T]:
        index = {name: i for i, name in enumerate(self.files)}
        items.sort(key=lambda item: reading_position(index, location(item)))
        return items[:MAX_ERRORS_KEPT]

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": dict(sorted(self.lines.items())),
            "read": dict(sorted(self.parsed.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "errors": [{"location": loc, "reason": why} for loc, why in self.errors],
            "errors_truncated": sum(self.skipped.values()) > len(self.errors),
            "invalid_utf8": {
                "records": self.replaced,
                "locations": self.replaced_at,
                "truncated": self.replaced > len(self.replaced_at),
            },
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "duplicates": self.duplicates,
            "unresolved_references": self.unresolved,
            "reread_unfiltered": self.reread_unfiltered,
        }

    def require_resources(self, source: str) -> None:
        """Raise :class:`SourceError` when no Patient was read: an empty file, an empty
        Bundle or a folder of non-FHIR JSON must not pass as a cohort of 0."""
        if self.parsed.get("Patient", 0):
            return
        skipped = sum(self.skipped.values())
        detail = f"{sum(self.lines.values())} lines in {len(self.files)} files, no Patient"
        if skipped:
            detail += f", {skipped} skipped as malformed"
            if self.errors:
                loc, why = self.errors[0]
                detail += f" (first: {loc}: {why})"
        raise SourceError(
            f"no FHIR resources found in {source} ({detail}); "
            "allow an empty source with --allow-empty (allow_empty=True)"
        )


@dataclass(frozen=True)
class _Task:
    path: str
    expected_type: str | None
    start: int = 0  # byte range [start, end) of an uncompressed NDJSON file; end -1 = whole
    end: int = -1
    first_line: int = 1
    size: int = 0
    file_index: int = 0  # in the reader's file list: orders copies (dedup) and names them

    def resources(self, **common: Any) -> Iterable[tuple[dict[str, Any], str]]:
        """The task's resources and locations (``common``: iter_file's keyword arguments)."""
        if self.end >= 0:
            return iter_ndjson_range(self.path, self.start, self.end, self.first_line, **common)
        return iter_file(self.path, **common)


@dataclass
class _TaskResult:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in _TABLES})
    lines: Counter[str] = field(default_factory=Counter)
    parsed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)
    unmapped: Unmapped = field(default_factory=Unmapped)
    replaced: int = 0
    replaced_at: list[str] = field(default_factory=list)

    def on_replaced(self, location: str) -> None:
        self.replaced += 1
        if len(self.replaced_at) < MAX_ERRORS_KEPT:
            self.replaced_at.append(location)

    ledger: Ledger = field(default_factory=Ledger)
    # (type, id) hashes of the lines the line filter dropped unparsed (see _IdRecorder).
    dropped: array = field(default_factory=lambda: array("q"))
    # The same for Bundle entries the entry filter took out (see _BundleEntries).
    bundle_dropped: array = field(default_factory=lambda: array("q"))
    probe: int = field(default_factory=lambda: hash(_PROBE))


@dataclass(frozen=True)
class _Config:
    relevant: frozenset[tuple[str, str]]
    words: frozenset[str]
    strict: bool
    validate: bool
    medications: dict[str, dict[str, Any]]
    unmapped_text: bool = False
    refs: ReferenceResolver = field(default_factory=ReferenceResolver)
    medication_keys: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    filter_lines: bool = True
    # Code-only files filtered a block of lines at a time (the same lines as line by line).
    block_filter: bool = True
    # Bundle entries filtered before their references are rewritten (_BundleEntries).
    filter_bundles: bool = True


# The leading resourceType and id of a line without backslashes (the filter drops no other):
# the id is top-level when it is the key right after a top-level resourceType.
_LEADING_ID = re.compile(rb'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"\s*,\s*"id"\s*:\s*"([^"]*)"')
_ID_SEP = b'","id":"'
# Worker processes are forked (read_tables), so they share the parent's str/bytes hash salt;
# each result carries this probe, and a mismatch forces the safe path (a re-read).
_PROBE = b"fhir-cohort id hash probe"


def id_hash(rtype: bytes, rid: bytes) -> int:
    """Hash of (type, id) as the line filter records it; valid in this process tree only."""
    return hash(rtype + _ID_SEP + rid)


class _IdRecorder:
    """A line filter that records the (type, id) of each line it drops.

    Dedup keeps the latest version of a resource, so a dropped line (no relevant code) may be
    the later version of a resource that was read, e.g. a diagnosis corrected to an unrelated
    code. A line whose id the bytes do not prove is parsed instead of dropped; read_tables
    re-reads without the filter when a dropped id matches one read.
    """

    def __init__(self, inner: Callable[[bytes], bool], sink: array) -> None:
        self.inner = inner
        self.sink = sink

    def __call__(self, line: bytes) -> bool:
        if line.startswith(_COMPACT_START):  # what bulk exporters write: a few C calls
            end = line.find(b'"', 17)
            if line.startswith(_ID_SEP, end):
                if self.inner(line):
                    return True
                self.sink.append(hash(line[17 : line.find(b'"', end + 8)]))
                return False
        # id first: the inner filter tallies the lines it rejects as unmapped, once
        m = _LEADING_ID.match(line)
        if m is None or self.inner(line):
            return True
        self.sink.append(id_hash(m.group(1), m.group(2)))
        return False


class _BundleEntries:
    """The reader's filter for Bundle entries (a :data:`fhir_cohort.fhir.sources.EntryFilter`),
    with the outcome of reading every entry in full.

    An entry of a type no table holds (Encounter, Claim, ...) and a Condition, Procedure or
    Observation without a relevant code (the flattener's own test) give no row: they are
    counted, and the latter's unmapped codes and (type, id) recorded as reading them would
    (the subject's fullUrl rewritten, so the same records count as unmapped), without walking
    the whole resource to rewrite its references and without the ledger copy. Every other
    entry (Patient, Medication*, relevant ones) is read in full. A filtered entry whose id
    another copy shares makes read_tables read the Bundles again unfiltered, so duplicates are
    decided and reported exactly as before. :meth:`heads` makes the same decision before an
    entry is parsed, for Bundles split from the bytes (fhir_cohort.fhir.bundle_split).
    """

    def __init__(self, flattener: Flattener, out: _TaskResult, cfg: _Config) -> None:
        self.flattener = flattener
        self.out = out
        self.cfg = cfg
        self.resolve = cfg.refs.resolve
        self.relevant = flattener._relevant
        # For head(): decisions per code and components spelling, per subject of one Bundle.
        self.codes: dict[bytes, tuple[bool, Key]] = {}
        self.components: dict[bytes, bool] = {}
        self.counters: dict[str, dict[Key, int]] = {}  # Unmapped.counter(type), once held
        self.taken: dict[str, int] = {}  # per type, entries taken out by heads (see flush)
        self.prefix = {t: t.encode() + _ID_SEP for t in CODE_ONLY_TYPES}  # id_hash's bytes

    def __call__(self, res: dict[str, Any], urls: dict[str, str]) -> bool:
        rtype = res["resourceType"]
        if rtype in CODE_ONLY_TYPES:
            if self.relevant(res.get("code")):
                return True
            if rtype == "Observation":
                for comp in res.get("component") or ():
                    if isinstance(comp, dict) and self.relevant(comp.get("code")):
                        return True
            subject = res.get("subject")
            if urls and isinstance(subject, dict):
                ref = subject.get("reference")
                if isinstance(ref, str) and ref in urls:
                    subject["reference"] = urls[ref]
            out = self.out
            if self.resolve(subject, "Patient", res)[0] in (LOCAL, MISSING, OTHER_TYPE):
                key = unmapped_codings(res, self.flattener.medications, text=self.cfg.unmapped_text)
                if key is not None:
                    out.unmapped.add(rtype, key)
            out.bundle_dropped.append(
                id_hash(rtype.encode(), res["id"].encode("utf-8", "surrogatepass"))
            )
        elif rtype in _READ_IN_FULL:
            return True
        out = self.out
        out.lines[rtype] += 1
        out.parsed[rtype] += 1
        return False

    def heads(self, urls: dict[str, str]) -> Callable[[str, str, Any], bool]:
        """:meth:`__call__` for the entries of one Bundle split from the bytes, before they
        are parsed, from their resources' heads: the same decision and the same accounting,
        a code's and components' decision made once per spelling, a subject's once per
        Bundle. An entry whose subject is a contained resource is parsed (True)."""
        codes, subjects, out = self.codes, {}, self.out
        taken, dropped = self.taken, out.bundle_dropped
        unmapped, counters = out.unmapped, self.counters
        prefix, code_only, read_in_full = self.prefix, CODE_ONLY_TYPES, _READ_IN_FULL

        def decide(rtype: str, rid: str, head: Any) -> bool:
            if rtype in code_only:
                code = _RAW_BYTES(head.code)
                relevant, key = codes.get(code) or self._code(code)
                if relevant:
                    return True
                if (
                    rtype == "Observation"
                    and len(head.component)
                    and self._components(head.component)
                ):
                    return True
                subject = _RAW_BYTES(head.subject)
                counted = subjects.get(subject, _UNSEEN)
                if counted is _UNSEEN:
                    counted = subjects[subject] = self._subject_counted(subject, urls)
                if counted is None:
                    return True
                if counted:  # Unmapped.add, inline
                    c = counters.get(rtype)
                    if c is None:
                        c = counters[rtype] = unmapped.counter(rtype)
                    c[key] = c.get(key, 0) + 1
                    if len(c) > MAX_KEYS:
                        unmapped.prune(rtype)
                # id_hash; msgspec's strings are valid UTF-8 (no lone surrogate)
                dropped.append(hash(prefix[rtype] + rid.encode()))
            elif rtype in read_in_full:
                return True
            taken[rtype] = taken.get(rtype, 0) + 1
            return False

        return decide

    def flush(self) -> None:
        """Count the entries :meth:`heads` took out as read (kept apart until now: a plain
        dict is cheaper per entry than the Counters)."""
        self.out.lines.update(self.taken)
        self.out.parsed.update(self.taken)
        self.taken.clear()

    def _code(self, raw: bytes) -> tuple[bool, Key]:
        """Whether the flattener finds a code (its value's bytes) relevant, and the key
        :func:`unmapped_codings` counts for it."""
        value = orjson.loads(raw) if raw else None
        got = (bool(self.relevant(value)), code_key(value))
        if len(self.codes) >= _SPELLINGS_KEPT:
            self.codes.clear()
        self.codes[raw] = got
        return got

    def _components(self, span: Any) -> bool:
        """Whether an Observation's components (their value's bytes) hold a relevant code."""
        raw = bytes(span)
        got = self.components.get(raw)
        if got is None:
            got = any(
                isinstance(comp, dict) and bool(self.relevant(comp.get("code")))
                for comp in orjson.loads(raw) or ()
            )
            if len(self.components) >= _SPELLINGS_KEPT:
                self.components.clear()
            self.components[raw] = got
        return got

    def _subject_counted(self, raw: bytes, urls: dict[str, str]) -> bool | None:
        """Whether a filtered record with this subject (its value's bytes; empty when absent)
        counts as unmapped, as in :meth:`__call__` (a resolved or missing Patient subject);
        None for a contained one."""
        subject = orjson.loads(raw) if raw else None
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(ref, str):
            if ref.startswith("#"):
                return None  # resolved against the resource's contained list: parse it
            if urls and ref in urls:
                subject = {**subject, "reference": urls[ref]}
        if self.resolve(subject, "Patient")[0] not in (LOCAL, MISSING, OTHER_TYPE):
            return False
        ref = subject.get("reference") if isinstance(subject, dict) else None
        return reference_id(ref, "Patient") is not None


_UNSEEN = object()
# bytes() of a msgspec.Raw, a third cheaper (concatenation takes the buffer directly).
_RAW_BYTES = b"".__add__
# Distinct code and component spellings whose decision _BundleEntries keeps.
_SPELLINGS_KEPT = 1 << 16
# Bundle entries always read in full: the types a row or a medication lookup can come from.
_READ_IN_FULL = frozenset({*READ_TYPES, "Medication"})


def _is_bundle(path: str) -> bool:
    return is_bundle_name(path)


def _bundle_copies_collide(ledger: Ledger, dropped: array, bundle_dropped: array) -> bool:
    """Whether a Bundle entry the entry filter took out shares its (type, id) with another copy
    (read, filtered out of a Bundle, or dropped by the line filter): then only reading every
    entry gives the duplicates report and the version rule their input."""
    if not len(bundle_dropped):
        return False
    # Sorted once, then compared and searched: np.unique and np.isin hash a million entries
    # several times slower (they held up the main process after the workers).
    mine = np.sort(np.frombuffer(bundle_dropped, dtype=np.int64))
    if (mine[1:] == mine[:-1]).any():
        return True
    others = np.concatenate([ledger_hashes(ledger), np.frombuffer(dropped, dtype=np.int64)])
    if not len(others):
        return False
    where = np.minimum(np.searchsorted(mine, others), len(mine) - 1)
    return bool((mine[where] == others).any())


_JOIN = b"\x00".join
_NUL = b"\x00"  # what joins a line's "code" values in its unmapped key
_COUNT_NUL = operator.methodcaller("count", _NUL)


def _lines_holding(
    keys: list[bytes], joined: bytes, values: list[bytes], found: set[bytes]
) -> list[int]:
    """Indices of the lines whose key (``keys``: a line's values joined by NUL; ``values``: all
    of them in order, as split from ``joined``, the keys joined by newlines) holds one of
    ``found`` as a whole value or a value with a blank, sorted. Linear in the block whatever
    ``found`` holds: a membership test per value (mapped in C) and each value's line from the
    per-line value counts (searching the block once per found value was quadratic when a
    block held thousands of the criteria's codes)."""
    if b"" in found:  # an empty code is relevant (never seen): every line, one by one
        return list(range(len(keys)))
    hit = np.fromiter(map(found.__contains__, values), dtype=bool, count=len(values))
    if b" " in joined:
        hit |= np.fromiter(map(operator.contains, values, repeat(b" ")), bool, len(values))
    if not hit.any():
        return []
    per_line = np.fromiter(map(_COUNT_NUL, keys), np.int64, len(keys)) + 1
    line_of = np.repeat(np.arange(len(keys)), per_line)
    return np.unique(line_of[hit]).tolist()


class _BlockFilter:
    """The reader's filter for a file of one code-only type (Condition, Procedure,
    Observation), applied to a block of lines at once, with the same outcome line by line.

    A block in which every line is compact JSON of the file's type (starts with
    ``{"resourceType":"<type>","id":"<id>"``, holds one "resourceType" token, ends with
    ``}``), ASCII and without a backslash is one :class:`CodeLineFilter` decides from the
    "code" values alone; counts over the whole block prove that shape for every line at C
    speed. Each line's values are found as the per-line filter finds them (its findall, mapped
    over the lines in C): that is the unmapped-codes key it counts, and their union says in
    one set operation whether any line holds a relevant spelling or a value with a blank.
    Only those lines go through the per-line filter; the rest are rejected in bulk, counted
    by key and their ids recorded for dedup, as the per-line filter would. A block of any
    other shape goes line by line.
    """

    def __init__(self, per_line: _IdRecorder, codes: CodeLineFilter, sink: array) -> None:
        assert codes.expected is not None
        self.per_line = per_line
        self.codes = codes
        self.sink = sink
        self.start = _COMPACT_START + codes.expected + _ID_SEP
        self.line_start = b"\n" + self.start
        # (type, id) exactly as _IdRecorder hashes it: b'Observation","id":"<id>'; the
        # pattern starts with a literal so the regex engine scans for it at C speed.
        tail = re.escape(codes.expected) + rb'","id":"[^"\n]*)"'
        self.first_id = re.compile(rb'\{"resourceType":"(' + tail)
        self.next_ids = re.compile(rb'\n\{"resourceType":"(' + tail)

    def _line_by_line(self, block: bytes) -> list[tuple[int, bytes]]:
        keep = self.per_line
        return [(i, line) for i, line in enumerate(io.BytesIO(block)) if keep(line)]

    def __call__(self, block: bytes) -> list[tuple[int, bytes]]:
        n = block.count(b"\n")
        if not (
            n
            and block.endswith(b"\n")
            and block.startswith(self.start)
            and block.count(b'"resourceType"') == n
            and block.count(b"}\n") == n
            and block.find(b"\\") == -1
            and block.isascii()
        ):
            return self._line_by_line(block)
        first = self.first_id.match(block)
        ids = self.next_ids.findall(block, 0, len(block) - 1)
        if first is None or len(ids) != n - 1:
            return self._line_by_line(block)  # a line starts otherwise, or its id is cut
        ids.insert(0, first.group(1))
        lines = block.split(b"\n")
        lines.pop()  # after the last newline
        keys = list(map(_JOIN, map(_CODE_VALUE.findall, lines)))
        joined = b"\n".join(keys)  # values: NUL between those of a line, newline between lines
        values = joined.replace(b"\n", _NUL).split(_NUL)
        found = self.codes.spellings.intersection(values)
        hits = _lines_holding(keys, joined, values, found) if found or b" " in joined else []
        out: list[tuple[int, bytes]] = []
        prev = 0
        for h in [*hits, n]:
            if h > prev:
                self._reject(lines, keys, ids, prev, h)
            if h < n:
                line = lines[h] + b"\n"
                if self.per_line(line):
                    out.append((h, line))
            prev = h + 1
        return out

    def _reject(
        self, lines: list[bytes], keys: list[bytes], ids: list[bytes], lo: int, hi: int
    ) -> None:
        """Lines lo..hi-1 hold no relevant code: counted and recorded as line by line."""
        codes = self.codes
        rejected = codes.rejected
        if rejected is not None:
            part = keys[lo:hi] if lo or hi < len(keys) else keys
            counts = Counter(part)
            if len(rejected) + len(counts) > MAX_LINE_KEYS:
                # near the bound the per-line filter prunes key by key: let it, exactly
                for i in range(lo, hi):
                    self.per_line(lines[i] + b"\n")
                return
            samples, ranks, on_new_key = codes.samples, codes.ranks, codes.on_new_key
            for key, k in counts.items():
                old = rejected.get(key)
                if old is None:
                    rejected[key] = k
                    samples[key] = lines[lo + part.index(key)] + b"\n"
                    ranks[key] = codes.at
                    if on_new_key is not None:
                        on_new_key()
                else:
                    rejected[key] = old + k
        self.sink.extend(map(hash, ids[lo:hi]))


# Dropped-line hashes compared a slice at a time (2 MB each).
_DROPPED_SLICE = 1 << 18


def _dropped_copy_of_a_read_one(ledger: Ledger, dropped: array) -> bool:
    """Whether a line dropped unparsed has the type and id of a resource that was read."""
    if not dropped or not ledger.rid:
        return False
    kept = ledger_hashes(ledger)
    # Millions of dropped lines against the few resources read: vectorised, no big set, and
    # a slice at a time (np.isin over all of them held several copies: 140 MiB at 100,000
    # patients).
    kept.sort()
    hashes = np.frombuffer(dropped, dtype=np.int64)
    for at in range(0, len(hashes), _DROPPED_SLICE):
        part = hashes[at : at + _DROPPED_SLICE]
        where = np.minimum(np.searchsorted(kept, part), len(kept) - 1)
        if (kept[where] == part).any():
            return True
    return False


def ledger_hashes(ledger: Ledger) -> np.ndarray:
    """:func:`id_hash` of each copy the ledger recorded, in its order (int64)."""
    names = [t.encode() for t in dedup.TYPES]
    return np.fromiter(
        (
            id_hash(names[code], rid.encode("utf-8", "surrogatepass"))
            for code, rid in zip(ledger.rtype, ledger.rid, strict=True)
        ),
        dtype=np.int64,
        count=len(ledger.rid),
    )


def _run_tasks(
    tasks: Iterable[_Task], cfg: _Config, done: Callable[[int], None] | None = None
) -> _TaskResult:
    """Read ``tasks`` in order with one Flattener (so in-stream Medications resolve). A task
    is anything with a _Task's fields and ``resources`` (the Spark engine's hold lines)."""
    out = _TaskResult()
    type_key = "unknown"

    def on_error(err: MalformedResourceError) -> None:
        out.skipped[type_key] += 1
        if len(out.errors) < MAX_ERRORS_KEPT:
            out.errors.append((err.location, err.reason))

    flattener = Flattener(
        cfg.relevant,
        cfg.words,
        on_error=on_error,
        strict=cfg.strict,
        refs=cfg.refs,
        ledger=out.ledger,
    )
    flattener.medications.update(cfg.medications)
    flattener.medication_keys.update(cfg.medication_keys)
    filters: dict[str | None, Callable[[bytes], bool] | None] = {}
    blocks: dict[str | None, _BlockFilter] = {}
    lines = out.lines
    unmapped = out.unmapped
    meds = flattener.medications

    def count_lines(n: int) -> None:
        lines[type_key] += n

    entries = (
        _BundleEntries(flattener, out, cfg)
        if cfg.filter_bundles and cfg.filter_lines and not (cfg.strict or cfg.validate)
        else None
    )
    rows = out.rows
    code_filters: list[CodeLineFilter] = []
    for task in tasks:
        type_key = task.expected_type or "unknown"
        if cfg.strict or not cfg.filter_lines:
            filters[task.expected_type] = None  # parse every line (strict: stop on any bad one)
        elif task.expected_type not in filters:
            line_filter = make_line_filter(cfg.relevant, cfg.words, task.expected_type)
            # Lines the filter rejects are unmapped records: count their codes there.
            if isinstance(line_filter, CodeLineFilter):
                rtype_ = task.expected_type or ""
                line_filter.count_rejected(
                    *unmapped.line_counter(rtype_), partial(unmapped.bound_lines, rtype_)
                )
                code_filters.append(line_filter)
            elif task.expected_type is None or task.expected_type in UNMAPPED_TYPES:
                line_filter = TallyingLineFilter(line_filter, unmapped, task.expected_type)
            filters[task.expected_type] = recorder = _IdRecorder(line_filter, out.dropped)
            if isinstance(line_filter, CodeLineFilter) and cfg.block_filter:
                blocks[task.expected_type] = _BlockFilter(recorder, line_filter, out.dropped)
        # Where this task's lines stand in the reading order (a file is cut either in byte
        # ranges or in Spark text splits, both numbered in file order; Bundles have no lines).
        at = (task.file_index, getattr(task, "first_line", 1))
        for code_filter in code_filters:
            code_filter.at = at
        block_filter = blocks.get(task.expected_type)
        common: dict[str, Any] = {
            "expected_type": task.expected_type,
            "line_filter": None if block_filter is not None else filters[task.expected_type],
            "block_filter": block_filter,
            "on_error": on_error,
            "strict": cfg.strict,
            "validate": cfg.validate,
            "on_lines": count_lines,
            "on_replaced": out.on_replaced,
        }
        if entries is not None and task.expected_type is None and _is_bundle(task.path):
            common["entry_filter"] = entries
        for resource, location in task.resources(**common):
            rtype = resource["resourceType"]
            out.parsed[rtype] += 1
            if task.expected_type is None:
                lines[rtype] += 1  # Bundles pass no line filter: count resources instead
            src = location_key(task.file_index, task.path, location)
            produced = flattener.flatten(resource, location, src)
            for table, row in produced:
                rows[table].append(row)
            if not produced:
                if rtype == "Medication":
                    if not medication_is_mapped(resource, cfg.relevant, cfg.words):
                        key = unmapped_codings(resource, meds, text=cfg.unmapped_text)
                        if key is not None:
                            unmapped.add(rtype, key)
                elif not (
                    (flattener.pending and flattener.pending[-1][0] is resource)
                    or flattener.subject_unresolved(resource)  # nobody's record: not unmapped
                ):
                    key = unmapped_codings(resource, meds, text=cfg.unmapped_text)
                    if key is not None:
                        unmapped.add(rtype, key)
        if done is not None:
            done(task.size)

    def held_back_unmapped(resource: dict[str, Any]) -> None:
        key = unmapped_codings(resource, meds, text=cfg.unmapped_text)
        if key is not None:
            unmapped.add(resource["resourceType"], key)

    for table, row in flattener.finish(held_back_unmapped):
        rows[table].append(row)
    if entries is not None:
        entries.flush()
    return out


# Worker processes get the configuration once, not with every task.
_WORKER_CFG: _Config | None = None


def _init_worker(cfg: _Config) -> None:
    global _WORKER_CFG
    _WORKER_CFG = cfg


def _run_in_worker(task: _Task | tuple[_Task, ...]) -> _TaskResult:
    """One task, or a group of Bundle files read with one Flattener."""
    assert _WORKER_CFG is not None
    return _run_tasks(list(task) if isinstance(task, tuple) else [task], _WORKER_CFG)


def _work_units(tasks: list[_Task], n_workers: int) -> list[tuple[_Task | tuple[_Task, ...], int]]:
    """(unit, bytes) for the worker pool: each NDJSON task alone, Bundle files in groups in
    reading order (a worker reads a group with one Flattener, as one process reads them all)."""
    units: list[tuple[_Task | tuple[_Task, ...], int]] = []
    bundles = [t for t in tasks if t.expected_type is None and _is_bundle(t.path)]
    units.extend((t, t.size) for t in tasks if not (t.expected_type is None and _is_bundle(t.path)))
    # Several groups per worker, so the last ones even out the load.
    target = min(BUNDLE_GROUP_BYTES, max(1, sum(t.size for t in bundles) // (4 * n_workers)))
    group: list[_Task] = []
    size = 0
    for t in bundles:
        group.append(t)
        size += t.size
        if size >= target:
            units.append((tuple(group), size))
            group, size = [], 0
    if group:
        units.append((tuple(group), size))
    return units


def _is_plain_ndjson(path: Path) -> bool:
    return path.name.lower().endswith((".ndjson", ".jsonl"))


def _split(
    path: Path, expected_type: str | None, chunk_bytes: int, file_index: int = 0
) -> list[_Task]:
    """Byte ranges of ``path`` ending on newlines, each knowing its first line number."""
    try:
        return _split_ranges(path, expected_type, chunk_bytes, file_index)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({type(exc).__name__})") from exc


def _split_ranges(
    path: Path, expected_type: str | None, chunk_bytes: int, file_index: int
) -> list[_Task]:
    size = path.stat().st_size
    if not _is_plain_ndjson(path) or size <= chunk_bytes:
        return [_Task(str(path), expected_type, size=size, file_index=file_index)]
    tasks: list[_Task] = []
    start, first_line = 0, 1
    with path.open("rb") as fh:
        while start < size:
            fh.seek(min(start + chunk_bytes, size))
            fh.readline()  # finish the line the cut fell in
            end = min(fh.tell(), size)
            tasks.append(
                _Task(str(path), expected_type, start, end, first_line, end - start, file_index)
            )
            # Counting newlines is memchr-fast and only done once per range.
            fh.seek(start)
            remaining, newlines = end - start, 0
            while remaining > 0:
                block = fh.read(min(remaining, 8 * 1024 * 1024))
                newlines += block.count(b"\n")
                remaining -= len(block)
            start, first_line = end, first_line + newlines
    return tasks


def _read_medications(
    source: DiskSource, cfg: _Config, report: ReadReport, ledger: Ledger
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[int, int, int]]]:
    """Separate Medications by id, the latest copy of each (dedup rule), and their keys."""
    tmp = _TaskResult()
    common = medication_reading(cfg, tmp)
    streams = (
        (str(path), iter_file(path, **common))  # type: ignore[arg-type]
        for declared, path in source.files({"Medication"})
        # Bundles: the Flattener resolves their Medications in-stream
        if declared == "Medication"
    )
    return medications_of(streams, cfg, report, ledger, tmp)


# A Bundle holding a Medication holds this token, unless JSON escapes spell it.
_MEDICATION_TOKEN = b'"Medication"'


def _bundle_medications(
    source: DiskSource,
    report: ReadReport,
    meds: dict[str, dict[str, Any]],
    keys: dict[str, tuple[int, int, int]],
    validate: bool,
    n_workers: int = 1,
) -> None:
    """Add the Medications of the source's Bundles to ``meds`` and ``keys`` (the latest copy
    of each id, as the flattener keeps them), so every worker resolves a medicationReference
    to another Bundle's Medication, and one process resolves it as the workers do. Nothing is
    counted or reported here: the Bundles' own reading does that (``validate``: as it does, so a
    Medication it skips as invalid is not added either). With ``n_workers`` > 1 the Bundles
    are looked through on a pool of that many processes (reading every Bundle's bytes is most
    of the cost), and their Medications taken in reading order, as one process takes them."""
    names = [
        str(path)
        for declared, path in source.files({"Medication"})
        if declared is None and _is_bundle(str(path))
    ]
    if not names:
        return
    if n_workers > 1 and len(names) >= 2 * n_workers:
        step = -(-len(names) // (4 * n_workers))  # a few groups per worker: the load evens out
        groups = [names[i : i + step] for i in range(0, len(names), step)]
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            found = list(pool.map(_medications_in, groups, repeat(validate)))
    else:
        found = [_medications_in(names, validate)]
    index = {name: i for i, name in enumerate(report.files)}
    for name, resource, loc in chain.from_iterable(found):
        rid = resource["id"]
        key = (*version_key(resource), location_key(index.get(name, 0), name, loc))
        old = keys.get(rid)
        if old is None or winner([old, key])[0] == 1:
            meds[rid] = resource
            keys[rid] = key


def _medications_in(names: list[str], validate: bool) -> list[tuple[str, dict[str, Any], str]]:
    """(file name, Medication, location) of each Medication of the Bundle files ``names``, in
    their order; module-level for the worker pool."""
    out: list[tuple[str, dict[str, Any], str]] = []
    for name in names:
        data = read_bytes(name)
        if _MEDICATION_TOKEN not in data and (b"\\" not in data or b"\\u" not in data):
            continue
        for resource, loc in iter_bundle_bytes(name, data, types={"Medication"}, validate=validate):
            out.append((name, resource, loc))
    return out


def medication_reading(cfg: _Config, tmp: _TaskResult) -> dict[str, Any]:
    """iter_file's keyword arguments for a Medication file, counting errors into ``tmp``."""

    def on_error(err: MalformedResourceError) -> None:
        tmp.skipped["Medication"] += 1
        if len(tmp.errors) < MAX_ERRORS_KEPT:
            tmp.errors.append((err.location, err.reason))

    return {
        "expected_type": "Medication",
        "on_error": on_error,
        "strict": cfg.strict,
        "validate": cfg.validate,
        "on_replaced": tmp.on_replaced,
    }


def medications_of(
    streams: Iterable[tuple[str, Iterable[tuple[dict[str, Any], str]]]],
    cfg: _Config,
    report: ReadReport,
    ledger: Ledger,
    tmp: _TaskResult,
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[int, int, int]]]:
    """The latest copy of each Medication of ``streams`` ((file name, its resources and
    locations) in reading order) by id, and their keys; ``tmp`` holds the counts until they are
    merged into ``report``."""
    meds: dict[str, dict[str, Any]] = {}
    keys: dict[str, tuple[int, int, int]] = {}
    index = {name: i for i, name in enumerate(report.files)}
    for name, resources in streams:
        for resource, loc in resources:
            tmp.lines["Medication"] += 1
            tmp.parsed["Medication"] += 1
            rid = resource.get("id")
            if isinstance(rid, str):
                src = location_key(index.get(name, 0), name, loc)
                ledger.copy_of("Medication", rid, None, resource, src)
                key = (*version_key(resource), src)
                old = keys.get(rid)
                if old is None or winner([old, key])[0] == 1:
                    meds[rid] = resource
                    keys[rid] = key
            if not medication_is_mapped(resource, cfg.relevant, cfg.words):
                key = unmapped_codings(resource, meds, text=cfg.unmapped_text)
                if key is not None:
                    tmp.unmapped.add("Medication", key)
    report.merge(tmp)
    return meds, keys


def read_tables(
    source: DiskSource,
    *,
    relevant: Iterable[tuple[str, str]],
    medication_words: Iterable[str],
    strict: bool = False,
    validate: bool = False,
    workers: int | None = None,
    progress: ProgressCallback = no_progress,
    chunk_bytes: int = CHUNK_BYTES,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    unmapped_text: bool = False,
    base_urls: Iterable[str | None] = (),
    filter_lines: bool = True,
    block_filter: bool = True,
    filter_bundles: bool = True,
) -> tuple[Tables, ReadReport]:
    """Read every resource of ``source`` into :class:`Tables`, skipping what no criterion uses.

    Malformed resources are counted and kept (location and reason, no content) in the report,
    or raise :class:`MalformedResourceError` with ``strict``. Records that matched no value set
    are counted by code in ``report.unmapped`` (medication free text only with
    ``unmapped_text``).

    ``base_urls`` are the source's own bases: absolute references resolve only against them
    (``fhir_cohort.fhir.references``). One copy of each resource is kept, the latest
    (``fhir_cohort.engine.dedup``); ``report.duplicates`` and ``report.unresolved`` say what
    was dropped or did not resolve.

    ``block_filter`` False filters every line one by one (the same tables and report: the
    block filter is only faster; tests compare the two). ``filter_bundles`` False reads every
    Bundle entry in full (likewise only slower: :class:`_BundleEntries`).
    """
    started = time.perf_counter()
    # kept as values: a re-read without the line filter needs them again
    relevant, medication_words = frozenset(relevant), frozenset(medication_words)
    base_urls = tuple(base_urls)
    report = ReadReport()
    report.files = [str(p) for _, p in source.files()]
    refs = ReferenceResolver(base_urls)
    cfg = _Config(
        relevant,
        medication_words,
        strict,
        validate,
        {},
        unmapped_text,
        refs,
        filter_lines=filter_lines,
        block_filter=block_filter,
        filter_bundles=filter_bundles,
    )
    ledger = Ledger()
    meds, med_keys = _read_medications(source, cfg, report, ledger)
    tasks: list[_Task] = []
    file_index = {name: i for i, name in enumerate(report.files)}
    # Files of types no table holds (Encounter, Immunization, ...) are not opened at all.
    for declared, path in source.files(set(READ_TYPES)):
        if declared == "Medication":
            continue
        tasks.extend(_split(path, declared, chunk_bytes, file_index[str(path)]))
    total = sum(t.size for t in tasks)
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    # Mixed NDJSON files keep their Medications in-stream, so they are read in one Flattener;
    # Bundles' Medications were read beforehand (_bundle_medications).
    mixed = any(t.expected_type is None and not _is_bundle(t.path) for t in tasks)
    if mixed or total < parallel_min_bytes or len(tasks) < 2:
        n_workers = 1
    report.workers = n_workers
    # Bundles' Medications before any worker starts: a medicationReference may name another's.
    _bundle_medications(source, report, meds, med_keys, validate, n_workers)
    cfg = dataclasses.replace(cfg, medications=meds, medication_keys=med_keys)
    progress(Progress("read", 0, total=total, unit="B"))
    rows: dict[str, list[tuple]] = {t: [] for t in _TABLES}
    dropped = array("q")
    bundle_dropped = array("q")
    salted: list[bool] = []

    def advance(size: int) -> None:
        progress(Progress("read", size, total=total, unit="B"))

    def absorb(res: _TaskResult) -> None:
        report.merge(res)
        ledger.merge(res.ledger)  # same order as the rows: apply() relies on it
        dropped.extend(res.dropped)
        bundle_dropped.extend(res.bundle_dropped)
        if res.probe != hash(_PROBE):  # another hash salt: the ids cannot be compared
            salted.append(True)
        for table in _TABLES:
            rows[table].extend(res.rows[table])

    if n_workers == 1:
        absorb(_run_tasks(tasks, cfg, advance))
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            max_workers=n_workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg,)
        ) as pool:
            # Biggest first so one straggler does not hold the end of the run.
            futures = {
                pool.submit(_run_in_worker, unit): size
                for unit, size in sorted(
                    _work_units(tasks, n_workers), key=lambda u: u[1], reverse=True
                )
            }
            for fut in as_completed(futures):
                absorb(fut.result())
                advance(futures[fut])

    def reread(**filters: bool) -> tuple[Tables, ReadReport]:
        """The same read again with other filters (one more pass, never a wrong answer)."""
        rows.clear()
        tables, again = read_tables(
            source,
            relevant=relevant,
            medication_words=medication_words,
            strict=strict,
            validate=validate,
            workers=workers,
            progress=progress,
            chunk_bytes=chunk_bytes,
            parallel_min_bytes=parallel_min_bytes,
            unmapped_text=unmapped_text,
            base_urls=base_urls,
            **filters,
        )
        again.seconds = time.perf_counter() - started
        return tables, again

    if not salted and _bundle_copies_collide(ledger, dropped, bundle_dropped):
        # A filtered Bundle entry has another copy: read the Bundles' entries in full, so
        # the duplicates are decided and reported from every copy, as without the filter.
        return reread(filter_lines=filter_lines, block_filter=block_filter, filter_bundles=False)
    if salted or _dropped_copy_of_a_read_one(ledger, dropped):
        # Rare (one export holds one version of each resource): read everything, so the
        # version rule sees every copy.
        tables, again = reread(filter_lines=False)
        again.reread_unfiltered = True
        return tables, again
    tables = Tables.from_rows(
        rows["patients"], rows["conditions"], rows["medications"], rows["observations"]
    )
    rows.clear()  # the frames hold the data now; free the tuples before dedup
    report.duplicates = dedup.apply(tables, ledger, report.files)
    report.unresolved = ledger.unresolved_report(refs.bases)
    if not tables.patients.empty:
        tables.patients = tables.patients.drop_duplicates("patient_id", keep="first")
    report.seconds = time.perf_counter() - started
    return tables, report
