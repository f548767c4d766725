"""One copy per resource: duplicate ids and versions (issue 9 item 4), and the tally of
references that do not resolve (item 5), gathered while reading, applied to the tables after.

The same resource (type + id) can reach the reader more than once: in two files (two exports,
an export and its ``_since`` update), twice in one file, as two versions of a history. Every
copy is recorded in a :class:`Ledger` (type, id, subject, ``meta.versionId``,
``meta.lastUpdated``, location), and every row remembers the location of the copy it came from.
Worker processes each fill a ledger; the reader concatenates them, and :func:`apply` drops the
rows of every copy but one. Which copy wins is a total order within each (type, id) that does
not depend on the order files, chunks or workers were read in:

1. when every copy has a numeric ``meta.versionId``: the highest version;
2. else (or on a tie) when every copy has ``meta.lastUpdated``: the latest instant;
3. else (or on a tie) the copy at the last location: files in the reader's order (by name),
   then line (or Bundle entry).

A copy that gives no row still counts (a later ``entered-in-error`` version, or one whose
codes changed): when it wins, the older copies' rows go. Copies whose subjects differ are a
subject conflict: when rule 1 or 2 decided, only the winner's rows stay (its subject alone gets
the fact); when only rule 3 could decide, no copy is kept, so a fact is never attributed to a
patient on the strength of file order. Both are counted and their locations listed in
run.json (``duplicates``); ids, subjects and content never are.

A copy the line filter rejected before parsing (a later version whose codes no criterion
uses) is never seen, so it cannot supersede an earlier one.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from fhir_cohort.engine.tables import ROW_RESOURCE_TYPES

__all__ = [
    "NO_TIME",
    "NO_VERSION",
    "TYPES",
    "Ledger",
    "apply",
    "decide",
    "format_location",
    "location_key",
    "version_key",
    "winner",
]

# Types the ledger records: the ones tables hold, and Medication (resolved, not a table).
TYPES: tuple[str, ...] = ("Patient", *ROW_RESOURCE_TYPES, "Medication")
_TYPE_CODE = {t: i for i, t in enumerate(TYPES)}
NO_VERSION = -1
NO_TIME = -(2**62)
MAX_LOCATIONS = 1000
_TABLES = ("patients", "conditions", "medications", "observations")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_TIME_CACHE: dict[str, int] = {}
_CACHE_LIMIT = 100_000
# A location key packs (file index, kind, line or entry) into one int64.
_ENTRY_BIT = 1 << 32
_FILE_SHIFT = 33


def _instant(value: Any) -> int:
    """meta.lastUpdated as microseconds since the epoch (UTC when no offset), or NO_TIME."""
    if not isinstance(value, str):
        return NO_TIME
    hit = _TIME_CACHE.get(value)
    if hit is not None:
        return hit
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        out = NO_TIME
    else:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        out = (dt - _EPOCH) // _MICRO
    if len(_TIME_CACHE) >= _CACHE_LIMIT:
        _TIME_CACHE.clear()
    _TIME_CACHE[value] = out
    return out


def version_key(resource: Mapping[str, Any]) -> tuple[int, int]:
    """(numeric meta.versionId or NO_VERSION, meta.lastUpdated in µs or NO_TIME)."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return NO_VERSION, NO_TIME
    v = meta.get("versionId")
    version = int(v) if isinstance(v, str) and v.isascii() and v.isdigit() else NO_VERSION
    return version, _instant(meta.get("lastUpdated"))


def location_key(file_index: int, path: str, location: str) -> int:
    """A sortable int for a reader location (``path:line``, ``path#entry[i]`` or ``path``)."""
    tail = location[len(path) :]
    n, kind = 0, 0
    if tail[:1] == ":" and tail[1:].isdigit():
        n = int(tail[1:])
    elif tail.startswith("#entry[") and tail.endswith("]"):
        n, kind = int(tail[7:-1]), _ENTRY_BIT
    return (file_index << _FILE_SHIFT) | kind | n


def format_location(key: int, files: Sequence[str]) -> str:
    """The ``file:line`` (or ``file#entry[i]``) a location key stands for."""
    index, n = key >> _FILE_SHIFT, key & (_ENTRY_BIT - 1)
    name = files[index] if 0 <= index < len(files) else f"file {index}"
    if key & _ENTRY_BIT:
        return f"{name}#entry[{n}]"
    return f"{name}:{n}" if n else name


def winner(copies: Sequence[tuple[int, int, int]]) -> tuple[int, bool]:
    """(index of the winning copy, whether a version or lastUpdated decided) among
    ``(version, updated, location)`` copies of one resource; the rule of the module doc."""
    all_v = all(c[0] != NO_VERSION for c in copies)
    all_u = all(c[1] != NO_TIME for c in copies)
    keys = [(c[0] if all_v else 0, c[1] if all_u else 0, c[2]) for c in copies]
    order = sorted(range(len(copies)), key=keys.__getitem__)
    best, runner = keys[order[-1]], keys[order[-2]] if len(order) > 1 else None
    return order[-1], runner is None or best[:2] != runner[:2]


@dataclass
class Ledger:
    """Copies of resources and the location of the copy behind each row, in reading order,
    plus unresolved references. Compact (arrays) because the reader keeps one entry per
    parsed resource; picklable, so worker processes return theirs."""

    rtype: array = field(default_factory=lambda: array("b"))
    rid: list[str] = field(default_factory=list)
    pid: list[str | None] = field(default_factory=list)
    version: array = field(default_factory=lambda: array("q"))
    updated: array = field(default_factory=lambda: array("q"))
    src: array = field(default_factory=lambda: array("q"))
    rows: dict[str, array] = field(default_factory=lambda: {t: array("q") for t in _TABLES})
    unresolved: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    unresolved_at: list[tuple[str, str, str, str]] = field(default_factory=list)

    def copy_of(
        self, rtype: str, rid: str, pid: str | None, resource: Mapping[str, Any], src: int
    ) -> None:
        """Record one parsed copy of a resource (``src``: its :func:`location_key`)."""
        code = _TYPE_CODE.get(rtype)
        if code is None:
            return
        v, u = version_key(resource)
        self.rtype.append(code)
        self.rid.append(rid)
        self.pid.append(pid)
        self.version.append(v)
        self.updated.append(u)
        self.src.append(src)

    def row(self, table: str, src: int) -> None:
        self.rows[table].append(src)

    def unresolved_reference(self, location: str, rtype: str, element: str, form: str) -> None:
        self.unresolved[(rtype, element, form)] += 1
        at = self.unresolved_at
        at.append((location, rtype, element, form))
        if len(at) >= 2 * MAX_LOCATIONS:
            # the smallest in the order the report lists them, not the first read: the same
            # ones however the reading was split (trimmed in batches: one sort per 1000)
            at.sort()
            del at[MAX_LOCATIONS:]

    def merge(self, other: Ledger) -> None:
        self.rtype.extend(other.rtype)
        self.rid.extend(other.rid)
        self.pid.extend(other.pid)
        self.version.extend(other.version)
        self.updated.extend(other.updated)
        self.src.extend(other.src)
        for table, srcs in other.rows.items():
            self.rows[table].extend(srcs)
        self.unresolved.update(other.unresolved)
        if other.unresolved_at:
            # the smallest, as unresolved_reference keeps them: whatever the merge order
            at = sorted([*self.unresolved_at, *other.unresolved_at])
            self.unresolved_at = at[:MAX_LOCATIONS]

    def unresolved_report(self, bases: Iterable[str]) -> dict[str, Any]:
        per_type: Counter[str] = Counter()
        per_form: Counter[str] = Counter()
        per_element: Counter[str] = Counter()
        for (rtype, element, form), n in self.unresolved.items():
            per_type[rtype] += n
            per_form[form] += n
            per_element[element] += n
        total = sum(self.unresolved.values())
        listed = sorted(self.unresolved_at)[:MAX_LOCATIONS]
        return {
            "total": total,
            "bases": sorted(bases),
            "per_type": dict(sorted(per_type.items())),
            "per_element": dict(sorted(per_element.items())),
            "per_form": dict(sorted(per_form.items())),
            "locations": [
                {"location": loc, "type": t, "element": e, "form": f} for loc, t, e, f in listed
            ],
            "locations_truncated": total > len(listed),
        }


def _empty_report() -> dict[str, Any]:
    return {
        "resources": {},
        "copies_dropped": {},
        "subject_conflicts": {},
        "conflicts_dropped": {},
        "locations": [],
        "locations_truncated": False,
    }


def _decide(ledger: Ledger) -> tuple[np.ndarray, pd.DataFrame]:
    """(location keys of the copies to drop, one row per duplicated resource)."""
    frame = pd.DataFrame(
        {
            "t": np.frombuffer(ledger.rtype, dtype=np.int8),
            "id": pd.Series(ledger.rid, dtype=object),
            "v": np.frombuffer(ledger.version, dtype=np.int64),
            "u": np.frombuffer(ledger.updated, dtype=np.int64),
            "src": np.frombuffer(ledger.src, dtype=np.int64),
        }
    )
    dup = frame.loc[frame.duplicated(["t", "id"], keep=False)].copy()
    del frame
    if dup.empty:
        return np.empty(0, dtype=np.int64), dup
    dup["pid"] = [ledger.pid[i] for i in dup.index]
    groups = dup.groupby(["t", "id"], sort=False)
    all_v = groups["v"].transform("min") != NO_VERSION
    all_u = groups["u"].transform("min") != NO_TIME
    dup["kv"] = np.where(all_v, dup["v"], 0)
    dup["ku"] = np.where(all_u, dup["u"], 0)
    pids = dup["pid"].where(dup["pid"].notna(), "\x00")  # no subject is a subject too
    dup["conflict"] = pids.groupby([dup["t"], dup["id"]], sort=False).transform("nunique") > 1
    dup = dup.sort_values(["t", "id", "kv", "ku", "src"], kind="stable")
    last = ~dup.duplicated(["t", "id"], keep="last")
    # A version (or lastUpdated) decided when the winner's beats the runner-up's.
    prev = dup[["t", "id", "kv", "ku"]].shift(1)
    decided = ~((prev["t"] == dup["t"]) & (prev["id"] == dup["id"]))
    decided |= (prev["kv"] != dup["kv"]) | (prev["ku"] != dup["ku"])
    dup["keep"] = last & ~(dup["conflict"] & ~decided)
    drop = dup.loc[~dup["keep"], "src"].to_numpy(dtype=np.int64)
    return drop, dup


def apply(tables: Any, ledger: Ledger, files: Sequence[str]) -> dict[str, Any]:
    """Drop from ``tables`` (in place) the rows of every copy but the winning one; the
    ``duplicates`` section of run.json (counts per type, file:line locations, no content).

    The tables' rows must be in the order the ledger recorded them (:meth:`Ledger.row`).
    """
    drop, report = decide(ledger, files)
    if len(drop):
        for table in _TABLES:
            srcs = np.frombuffer(ledger.rows[table], dtype=np.int64)
            frame = getattr(tables, table)
            if len(srcs) != len(frame):
                raise AssertionError(f"{table}: {len(frame)} rows, {len(srcs)} locations")
            gone = np.isin(srcs, drop)
            if gone.any():
                setattr(tables, table, frame.loc[~gone].reset_index(drop=True))
    return report


def decide(ledger: Ledger, files: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """(location keys of the copies whose rows go, run.json's ``duplicates``): :func:`apply`
    without the tables. Only duplicated (type, id) pairs matter, so a ledger holding just
    those copies (the Spark engine gathers them) decides the same."""
    drop, dup = _decide(ledger)
    report = _empty_report()
    if dup.empty:
        return drop, report
    names = pd.Series(np.asarray(TYPES, dtype=object)[dup["t"].to_numpy()], index=dup.index)
    kept_any = dup.groupby(["t", "id"], sort=False)["keep"].transform("any")
    heads = dup.drop_duplicates(["t", "id"])
    report["resources"] = _count(names[heads.index])
    report["copies_dropped"] = _count(names[~dup["keep"]])
    report["subject_conflicts"] = _count(names[heads.index[heads["conflict"].to_numpy()]])
    report["conflicts_dropped"] = _count(names[heads.index[~kept_any[heads.index].to_numpy()]])
    # Each duplicated resource: which copy stayed (None when none did) and which went.
    locations = []
    for (t, _), group in dup.groupby(["t", "id"], sort=True):
        if len(locations) >= MAX_LOCATIONS:
            report["locations_truncated"] = True
            break
        kept = group.loc[group["keep"], "src"].tolist()
        locations.append(
            {
                "type": TYPES[t],
                "kept": format_location(kept[0], files) if kept else None,
                "dropped": [format_location(s, files) for s in group.loc[~group["keep"], "src"]],
                "subject_conflict": bool(group["conflict"].iloc[0]),
            }
        )
    report["locations"] = sorted(locations, key=lambda d: (d["type"], d["dropped"]))
    return drop, report


def _count(names: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(names).items())}
