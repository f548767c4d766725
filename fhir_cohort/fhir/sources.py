"""Read FHIR resources from disk, streaming: Bulk Data NDJSON folders and Bundle files.

Supported inputs (see :func:`open_source`):

- a Bulk Data export folder: ``<Type>*.ndjson``, ``<Type>*.ndjson.gz``, ``*.jsonl(.gz)``; the type
  comes from the file name when it starts with a resource type, else from each resource;
- a single ``.ndjson``/``.jsonl`` file (optionally gzipped);
- a single Bundle ``.json``/``.json.gz`` or a folder of them (Synthea's output, transactions).
  A reference equal to the ``fullUrl`` of an entry of the same Bundle (``urn:uuid:``, or an
  absolute URL) is rewritten to that entry's ``<Type>/<id>``; a ``urn:uuid:`` naming no entry
  stays as it is and does not resolve (:mod:`fhir_cohort.fhir.references`). With an entry
  filter, a Bundle is split into entries from its bytes where that reads it as a whole parse
  does (:mod:`fhir_cohort.fhir.bundle_split`), and only the entries the filter keeps are parsed.

Errors in single resources are reported as :class:`MalformedResourceError` with a location
(``file:line`` or ``file#entry[N]``) and a reason that never quotes resource content. Every
line is read, reported, or (only with a line filter) provably irrelevant: see
:func:`fhir_cohort.engine.flatten.make_line_filter`. A UTF-8 byte order mark is accepted;
invalid UTF-8 inside strings is decoded with U+FFFD and the location reported to
``on_replaced`` instead of losing the record. Files that cannot be listed, opened or
decompressed raise :class:`SourceError` naming the path.

Files are ordered Medication first, then Patient, then the rest, so that a
:class:`fhir_cohort.engine.flatten.Flattener` has every separate Medication before the
MedicationRequests etc. that reference it. For parallel reading, :meth:`DiskSource.files` lists
the files and the module-level :func:`iter_file` reads one of them in a worker process.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from fhir_cohort.errors import MalformedResourceError, SourceError
from fhir_cohort.fhir.bundle_split import split_bundle
from fhir_cohort.fhir.ndjson import (
    BadLine,
    BlockFilter,
    LineFilter,
    iter_lines,
    iter_ndjson,
    parse_json,
    read_bytes,
    read_json,
)
from fhir_cohort.fhir.resource_types import RESOURCE_TYPES

__all__ = [
    "DiskSource",
    "EntryFilter",
    "ErrorHandler",
    "LineFilter",
    "ReplacedHandler",
    "classify",
    "is_bundle_name",
    "iter_bundle_bytes",
    "iter_file",
    "iter_ndjson_lines",
    "iter_ndjson_range",
    "open_source",
    "validate_resource",
]

ErrorHandler = Callable[[MalformedResourceError], None]
# Told the location of each record read with invalid UTF-8 replaced.
ReplacedHandler = Callable[[str], None]


class EntryFilter(Protocol):
    """The reader's filter of Bundle entries (fhir_cohort.engine.read). False from either
    method means the caller has accounted for the entry (counted, filtered out): it is not
    rewritten or yielded."""

    def __call__(self, resource: dict[str, Any], urls: dict[str, str]) -> bool:
        """A parsed entry's resource (valid type and id, references not yet rewritten) and the
        Bundle's fullUrl -> Type/id map."""

    def heads(self, urls: dict[str, str]) -> Callable[[str, str, Any], bool]:
        """For one Bundle split from the bytes (:mod:`fhir_cohort.fhir.bundle_split`) and its
        map: a function that sees an entry not parsed yet, shallow enough to filter (its
        resource's valid type and id and its ``ResourceHead``); True means parse it."""


_NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
_JSON_SUFFIXES = (".json", ".json.gz")
_TYPE_PREFIX = re.compile(r"[A-Z][A-Za-z]+")
_SAFE_NAME = re.compile(r"[A-Za-z]{1,64}")
# Files a bulk client writes beside the data that hold no resources.
_SKIP_NAMES = frozenset(
    {
        "log.ndjson",
        "manifest.json",
        "log.ndjson.gz",
        "export_log.ndjson",
        "export_state.json",
        "fetch_state.json",
    }
)
# Read first: Medications so references resolve, then Patients.
_TYPE_ORDER = {"Medication": 0, "Patient": 1}
_TOO_DEEP = "nested too deeply"


def is_resource_type(name: str) -> bool:
    """True when ``name`` is a concrete R4 or R4B resource type."""
    return name in RESOURCE_TYPES


def _type_from_name(path: Path) -> str | None:
    m = _TYPE_PREFIX.match(path.name)
    if m and is_resource_type(m.group(0)):
        return m.group(0)
    return None


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(_JSON_SUFFIXES):
        return "json"
    return None


def validate_resource(resource: dict[str, Any]) -> str | None:
    """Validate against the FHIR R4 (R4B) model; the reason names fields and error kinds only."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not is_resource_type(rtype):
        return "unknown resourceType"
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except RecursionError:
        return f"invalid {rtype}: {_TOO_DEEP}"
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False, include_context=False)
        parts = [f"{'.'.join(str(x) for x in e['loc'])} ({e['type']})" for e in errs[:3]]
        more = f" and {len(errs) - 3} more" if len(errs) > 3 else ""
        return f"invalid {rtype}: {', '.join(parts)}{more}"
    except (ValueError, TypeError) as exc:
        # Errors raised outside pydantic may quote values: report only their kind.
        return f"invalid {rtype}: {type(exc).__name__}"
    return None


def _check(resource: Any, expected_type: str | None) -> str | None:
    """Structural check of one parsed resource; a reason without content, or None."""
    if not isinstance(resource, dict):
        return "not a JSON object"
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return "missing resourceType"
    if expected_type is not None and rtype != expected_type:
        shown = rtype if _SAFE_NAME.fullmatch(rtype) else "?"
        return f"resourceType {shown} does not match file type {expected_type}"
    if rtype == "Bundle":
        # Bundles are read from .json files only; one here would be dropped unread.
        return "a Bundle where one resource was expected"
    if not is_resource_type(rtype):
        shown = rtype if _SAFE_NAME.fullmatch(rtype) else "?"
        return f"unknown resourceType {shown}"
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        return f"{rtype} without id"
    return None


class _Reporter:
    def __init__(self, on_error: ErrorHandler | None, strict: bool) -> None:
        self.on_error = on_error
        self.strict = strict

    def __call__(self, location: str, reason: str) -> None:
        err = MalformedResourceError(location, reason)
        if self.strict:
            raise err
        if self.on_error is not None:
            self.on_error(err)


def iter_file(
    path: str | Path,
    *,
    expected_type: str | None = None,
    types: set[str] | None = None,
    line_filter: LineFilter | None = None,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    validate: bool = False,
    on_lines: Callable[[int], None] | None = None,
    on_replaced: ReplacedHandler | None = None,
    block_filter: BlockFilter | None = None,
    entry_filter: EntryFilter | None = None,
    name: str | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Resources of one file (NDJSON or Bundle JSON) as (resource, location).

    Module-level and driven by picklable arguments so a ``multiprocessing`` worker can call it.
    ``expected_type`` is the type the file name declares (NDJSON lines of another type are
    malformed). ``line_filter`` sees each raw NDJSON line and may reject it before parsing.
    ``on_lines`` is told, once the file is read, how many NDJSON lines it had; ``on_replaced``
    the location of each record read with invalid UTF-8 replaced by U+FFFD. ``block_filter``
    replaces ``line_filter`` with one that sees blocks of whole NDJSON lines
    (:func:`fhir_cohort.fhir.ndjson.iter_ndjson`). ``entry_filter`` sees each Bundle entry
    before its references are rewritten and may take it out (:data:`EntryFilter`). ``name``
    names an NDJSON file in locations when not ``path`` (the Spark engine's executors open
    the absolute path of a relative one).
    """
    path = Path(path)
    report = _Reporter(on_error, strict)
    kind = _suffix_kind(path)
    if kind == "ndjson":
        yield from _iter_ndjson(
            path,
            expected_type,
            types,
            line_filter,
            report,
            validate,
            on_lines=on_lines,
            on_replaced=on_replaced,
            block_filter=block_filter,
            name=name,
        )
    elif kind == "json":
        yield from _iter_bundle(
            path, types, report, validate, on_replaced, entry_filter=entry_filter
        )
    else:
        raise SourceError(f"{path}: not an .ndjson, .jsonl or .json file")


def _iter_ndjson(
    path: Path,
    expected_type: str | None,
    types: set[str] | None,
    line_filter: LineFilter | None,
    report: _Reporter,
    validate: bool,
    byte_range: tuple[int, int, int] | None = None,
    on_lines: Callable[[int], None] | None = None,
    on_replaced: ReplacedHandler | None = None,
    *,
    lines: Iterable[bytes] | None = None,
    block_filter: BlockFilter | None = None,
    name: str | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    name = str(path) if name is None else name
    values = (
        iter_ndjson(
            path,
            byte_range=byte_range,
            line_filter=line_filter,
            on_lines=on_lines,
            block_filter=block_filter,
        )
        if lines is None
        else iter_lines(
            lines,
            byte_range[2] if byte_range else 1,
            line_filter=line_filter,
            on_lines=on_lines,
        )
    )
    for lineno, resource, replaced in values:
        if type(resource) is BadLine:
            report(f"{name}:{lineno}", resource.reason)
            continue
        if replaced and on_replaced is not None:
            on_replaced(f"{name}:{lineno}")
        reason = _check(resource, expected_type)
        if reason is None and types is not None and resource["resourceType"] not in types:
            continue
        if reason is None and validate:
            reason = validate_resource(resource)
        if reason is not None:
            report(f"{name}:{lineno}", reason)
            continue
        yield resource, f"{name}:{lineno}"


def iter_ndjson_range(
    path: str | Path,
    start: int,
    end: int,
    first_line: int,
    *,
    expected_type: str | None = None,
    types: set[str] | None = None,
    line_filter: LineFilter | None = None,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    validate: bool = False,
    on_lines: Callable[[int], None] | None = None,
    on_replaced: ReplacedHandler | None = None,
    block_filter: BlockFilter | None = None,
    name: str | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Like :func:`iter_file` for the bytes [start, end) of an uncompressed NDJSON file.

    ``start`` and ``end`` must fall on line boundaries and ``first_line`` is the number of the
    line at ``start``, so error locations stay exact when a big file is shared among workers.
    ``name`` as for :func:`iter_file`.
    """
    yield from _iter_ndjson(
        Path(path),
        expected_type,
        types,
        line_filter,
        _Reporter(on_error, strict),
        validate,
        (start, end, first_line),
        on_lines,
        on_replaced,
        block_filter=block_filter,
        name=name,
    )


def iter_ndjson_lines(
    name: str,
    lines: Iterable[bytes],
    first_line: int,
    *,
    expected_type: str | None = None,
    line_filter: LineFilter | None = None,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    validate: bool = False,
    on_lines: Callable[[int], None] | None = None,
    on_replaced: ReplacedHandler | None = None,
    block_filter: BlockFilter | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Like :func:`iter_ndjson_range` for lines another reader read (Spark's text source):
    ``name`` names the file in locations, ``first_line`` is the number of the first line.
    Lines already split take the line filter; ``block_filter`` must be None (the reader's
    task arguments always name it)."""
    assert block_filter is None, "lines already split: use line_filter"
    yield from _iter_ndjson(
        Path(name),
        expected_type,
        None,
        line_filter,
        _Reporter(on_error, strict),
        validate,
        (0, 0, first_line),
        on_lines,
        on_replaced,
        lines=lines,
    )


def iter_bundle_bytes(
    name: str,
    data: bytes,
    *,
    on_error: ErrorHandler | None = None,
    strict: bool = False,
    validate: bool = False,
    on_replaced: ReplacedHandler | None = None,
    types: set[str] | None = None,
    **_: Any,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Like :func:`iter_file` for a Bundle ``.json`` file's bytes (already decompressed) read
    by another reader (Spark's binaryFile source); ``name`` names it in locations."""
    yield from _iter_bundle(
        Path(name), types, _Reporter(on_error, strict), validate, on_replaced, parse_json(data)
    )


def classify(name: str) -> tuple[str, str | None] | None:
    """How a folder's file named ``name`` is read: ("ndjson" | "json", the type its name
    declares or None), or None for files that hold no resources (logs, manifests, dot files,
    other suffixes). The rule :func:`open_source` applies to a folder."""
    path = Path(name)
    if path.name.lower() in _SKIP_NAMES or path.name.startswith("."):
        return None
    kind = _suffix_kind(path)
    if kind is None:
        return None
    return kind, _type_from_name(path) if kind == "ndjson" else None


def is_bundle_name(name: str) -> bool:
    """``classify(name) == ("json", None)`` without building a Path (the reader asks it of
    every file of a Bundle folder several times)."""
    base = os.path.basename(name)
    low = base.lower()
    return low.endswith(_JSON_SUFFIXES) and low not in _SKIP_NAMES and not base.startswith(".")


def reading_order(entries: Iterable[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """(declared type, name) sorted as :func:`open_source` orders a folder's files."""
    return sorted(entries, key=lambda e: _file_rank((e[0], Path(e[1]))))


def _rewrite_refs(node: Any, urls: dict[str, str]) -> None:
    """Replace ``reference`` values that are fullUrls of entries of the same Bundle by
    ``Type/id`` (FHIR bundle.html#references); every other reference is left as written."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                target = urls.get(value)
                if target is not None:
                    node[key] = target
            elif isinstance(value, dict | list):
                _rewrite_refs(value, urls)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _rewrite_refs(item, urls)


def _iter_bundle(
    path: Path,
    types: set[str] | None,
    report: _Reporter,
    validate: bool,
    on_replaced: ReplacedHandler | None = None,
    parsed: tuple[Any, bool] | None = None,
    *,
    entry_filter: EntryFilter | None = None,
) -> Iterator[tuple[dict[str, Any], str]]:
    name = str(path)
    if parsed is None and entry_filter is not None and types is None and not validate:
        # Filtered entries need not be parsed: split the bytes first, parse what is read.
        data = read_bytes(path)
        split = split_bundle(data)
        if split is not None:
            yield from _iter_split(name, split.spans, split.heads, report, entry_filter)
            return
        parsed = parse_json(data)  # not a shape msgspec reads as orjson does: whole
    doc, replaced = read_json(path) if parsed is None else parsed
    if type(doc) is BadLine:
        report(name, doc.reason)
        return
    if replaced and on_replaced is not None:
        on_replaced(name)
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        report(name, "not a FHIR resource or Bundle")
        return
    if doc["resourceType"] != "Bundle":
        # A single resource in a .json file.
        reason = _check(doc, None)
        if reason is None and types is not None and doc["resourceType"] not in types:
            return
        if reason is None and validate:
            reason = validate_resource(doc)
        if reason is not None:
            report(name, reason)
        else:
            yield doc, name
        return

    entries = doc.get("entry") or []
    if not isinstance(entries, list):
        report(name, "Bundle.entry is not a list")
        return
    # Pass 1: give id-less entries their urn:uuid as id and map every entry's fullUrl (urn:uuid
    # or absolute) to Type/id: within a Bundle, a reference resolves to the entry it names.
    urls: dict[str, str] = {}
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            continue
        full = entry.get("fullUrl")
        if not isinstance(full, str) or not full:
            continue
        if full.startswith("urn:uuid:") and not res.get("id"):
            res["id"] = full[9:]
        if isinstance(res.get("id"), str) and res["id"]:
            urls[full] = f"{res['resourceType']}/{res['id']}"
    if entry_filter is not None and not _shallow(doc):
        entry_filter = None  # an entry deep enough to overflow the walk below: read them all
    # Pass 2: Medications first (they must reach the flattener before their users).
    order = sorted(
        range(len(entries)),
        key=lambda i: _entry_rank(entries[i]),
    )
    for i in order:
        entry = entries[i]
        loc = f"{name}#entry[{i}]"
        if not isinstance(entry, dict):
            report(loc, "entry is not a JSON object")
            continue
        res = entry.get("resource")
        if res is None:
            _without_resource(entry, loc, report)
            continue
        reason = _check(res, None)
        if reason is None and types is not None and res["resourceType"] not in types:
            continue
        if reason is None and entry_filter is not None and not entry_filter(res, urls):
            continue
        try:
            if reason is None and urls:
                _rewrite_refs(res, urls)
        except RecursionError:
            reason = _TOO_DEEP  # a walk deeper than Python's stack: count it, no traceback
        if reason is None and validate:
            reason = validate_resource(res)
        if reason is not None:
            report(loc, reason)
            continue
        yield res, loc


# An entry with at most this many "{" and "[" bytes is nested less deeply than _shallow's bound.
_SHALLOW_OPENERS = 250
# The types an entry filter may take out (a Bundle inside a Bundle is reported, as _check does).
_FILTERABLE = RESOURCE_TYPES - {"Bundle"}
_OPENERS = bytes(1 if b in b"{[" else 0 for b in range(256))  # _deep_entries' translation
_STR = {str}
_RESOURCE = operator.attrgetter("resource")
_FULL_URL = operator.attrgetter("fullUrl")
_RESOURCE_TYPE = operator.attrgetter("resourceType")
_ID = operator.attrgetter("id")


def _deep_entries(spans: list[Any]) -> list[bool] | None:
    """Per entry, whether its bytes do not prove it shallow enough to filter (see
    :func:`_shallow`): more than _SHALLOW_OPENERS "{" and "[" bytes; None when every entry is
    (the common case). Counted in C over the joined entries: "{" and "[" made 1, every other
    byte 0, summed per entry."""
    if not spans:
        return None
    flags = np.frombuffer(b"".join(spans).translate(_OPENERS), dtype=np.uint8)
    starts = np.fromiter(accumulate(map(len, spans), initial=0), np.int64, len(spans) + 1)
    opened = np.add.reduceat(flags, starts[:-1], dtype=np.int64)
    if int(opened.max()) <= _SHALLOW_OPENERS:
        return None
    return (opened > _SHALLOW_OPENERS).tolist()  # type: ignore[no-any-return]


def _iter_split(
    name: str, spans: list[Any], heads: list[Any], report: _Reporter, entry_filter: EntryFilter
) -> Iterator[tuple[dict[str, Any], str]]:
    """:func:`_iter_bundle`'s two passes over a Bundle split into entries: the same resources,
    locations, errors and order, and the same calls of the entry filter, but an entry the
    filter takes out from its head (:meth:`EntryFilter.heads`) is never parsed."""
    # Pass 1 from the heads, as _iter_bundle makes it from the parsed entries. Commonly every
    # entry has a type, an id and a fullUrl (strings): that is checked, and the map made, by
    # maps in C instead of a Python loop over the entries (a Bundle has dozens).
    resources = list(map(_RESOURCE, heads))
    fulls = list(map(_FULL_URL, heads))
    if None not in resources:
        rtypes = list(map(_RESOURCE_TYPE, resources))
        rids = list(map(_ID, resources))
    else:
        rtypes = [None if r is None else r.resourceType for r in resources]
        rids = [None if r is None else r.id for r in resources]
    plain = (
        None not in rtypes
        and set(map(type, rids)) == _STR
        and "" not in rids
        and set(map(type, fulls)) == _STR
        and "" not in fulls
    )
    if plain:
        urls = dict(zip(fulls, map("/".join, zip(rtypes, rids, strict=True)), strict=True))
    else:
        rids = [
            full[9:] if not rid and type(full) is str and full.startswith("urn:uuid:") else rid
            for rid, full in zip(rids, fulls, strict=True)
        ]
        urls = {
            full: f"{rtype}/{rid}"
            for full, rtype, rid in zip(fulls, rtypes, rids, strict=True)
            if rtype is not None and type(full) is str and full and type(rid) is str and rid
        }
    # Pass 2 in _entry_rank's order (a stable sort): Medications, Patients, then the rest.
    first = [i for i, rtype in enumerate(rtypes) if rtype in _TYPE_ORDER]
    order: list[int] | range
    if first:
        first.sort(key=lambda i: _TYPE_ORDER[rtypes[i]])  # type: ignore[index]
        taken = set(first)
        order = first + [i for i in range(len(heads)) if i not in taken]
    else:
        order = range(len(heads))
    deep = _deep_entries(spans)
    # The entries the head filter may see: a valid type and id, shallow enough to filter.
    seen: list[bool] | None = None  # every one
    if not (plain and deep is None and _FILTERABLE.issuperset(rtypes)):
        seen = [
            rtype in _FILTERABLE and type(rid) is str and bool(rid) and (deep is None or not d)
            for rtype, rid, d in zip(rtypes, rids, deep or repeat(False), strict=False)
        ]
    head_filter = entry_filter.heads(urls)
    for i in order:
        if (seen is None or seen[i]) and not head_filter(rtypes[i], rids[i], resources[i]):
            continue
        loc = f"{name}#entry[{i}]"
        try:
            entry = orjson.loads(memoryview(spans[i]))
        except orjson.JSONDecodeError:
            report(loc, "invalid JSON")  # not expected: split_bundle checks what orjson refuses
            continue
        res = entry.get("resource")
        if res is None:
            _without_resource(entry, loc, report)
            continue
        full = entry.get("fullUrl")
        if isinstance(full, str) and full.startswith("urn:uuid:") and not res.get("id"):
            res["id"] = full[9:]  # as pass 1 of _iter_bundle
        reason = _check(res, None)
        if reason is None and (deep is None or not deep[i]) and not entry_filter(res, urls):
            continue
        try:
            if reason is None and urls:
                _rewrite_refs(res, urls)
        except RecursionError:
            reason = _TOO_DEEP
        if reason is not None:
            report(loc, reason)
            continue
        yield res, loc


def _shallow(doc: Any) -> bool:
    """Whether no entry is nested deeply enough to overflow _rewrite_refs' recursion (an
    entry it cannot walk is reported, so a filter must not drop it unwalked): orjson
    serialises at C speed and refuses more than 255 levels, far below Python's limit."""
    try:
        orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return False
    return True


def _without_resource(entry: dict[str, Any], loc: str, report: Callable[[str, str], None]) -> None:
    """An entry with no resource: skipped quietly when its request needs none (DELETE, GET,
    HEAD), else reported."""
    request = entry.get("request")
    if not (isinstance(request, dict) and request.get("method") in ("DELETE", "GET", "HEAD")):
        report(loc, "entry without resource")


def _entry_rank(entry: Any) -> int:
    if isinstance(entry, dict):
        res = entry.get("resource")
        if isinstance(res, dict):
            return _TYPE_ORDER.get(res.get("resourceType"), 2)  # type: ignore[arg-type]
    return 2


def _scan_types(path: Path) -> set[str]:
    """Resource types held by one file whose name does not declare one."""
    found: set[str] = set()
    for res, _ in iter_file(path):
        found.add(res["resourceType"])
    return found


class DiskSource:
    """FHIR resources stored on disk: a Bulk NDJSON folder, NDJSON file, Bundle file or folder."""

    def __init__(self, path: Path, entries: list[tuple[str | None, Path]]) -> None:
        self.path = path
        # (type declared by the file name or None, path), in reading order.
        self._entries = entries
        self._types: list[str] | None = None

    def __repr__(self) -> str:
        return f"DiskSource({str(self.path)!r}, files={len(self._entries)})"

    def files(self, types: set[str] | None = None) -> list[tuple[str | None, Path]]:
        """(declared type or None, path) of the files that can hold ``types``, in reading order.

        A None type means a mixed file (Bundle, or NDJSON not named after a type).
        """
        if types is None:
            return list(self._entries)
        return [(t, p) for t, p in self._entries if t is None or t in types]

    def resource_types(self) -> list[str]:
        """Sorted resource types present (mixed files are scanned once and cached)."""
        if self._types is None:
            found: set[str] = set()
            for t, p in self._entries:
                if t is not None:
                    found.add(t)
                else:
                    found |= _scan_types(p)
            self._types = sorted(found)
        return list(self._types)

    def iter_resources(
        self,
        types: set[str] | None = None,
        line_filter: LineFilter | None = None,
        on_error: ErrorHandler | None = None,
        strict: bool = False,
        *,
        validate: bool = False,
        on_replaced: ReplacedHandler | None = None,
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Every resource (of ``types``, if given) as (resource, location), streaming.

        Malformed resources go to ``on_error`` and are skipped, or raise with ``strict``;
        ``on_replaced`` gets the location of records read with invalid UTF-8 replaced.
        """
        for t, p in self.files(types):
            yield from iter_file(
                p,
                expected_type=t,
                types=types,
                line_filter=line_filter,
                on_error=on_error,
                strict=strict,
                validate=validate,
                on_replaced=on_replaced,
            )


def _file_rank(entry: tuple[str | None, Path]) -> tuple[int, str]:
    t, p = entry
    return (_TYPE_ORDER.get(t, 2) if t is not None else 2, p.name)


def open_source(path: str | Path) -> DiskSource:
    """Open a Bulk export folder, an NDJSON file, a Bundle file or a folder of Bundles."""
    root = Path(path)
    try:
        return _open_source(root)
    except OSError as exc:  # PermissionError, a path too long, ...: name the path, no traceback
        where = exc.filename if isinstance(exc.filename, str) else root
        raise SourceError(f"{where}: cannot list or read ({type(exc).__name__})") from exc


def _open_source(root: Path) -> DiskSource:
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if not root.is_dir():
        kind = _suffix_kind(root)
        if kind is None:
            raise SourceError(f"{root}: expected .ndjson, .jsonl or .json (optionally .gz)")
        declared = _type_from_name(root) if kind == "ndjson" else None
        return DiskSource(root, [(declared, root)])
    entries: list[tuple[str | None, Path]] = []
    # scandir: a folder of Bundles has one file per patient, and DirEntry.is_dir needs no stat;
    # sorted by name, as sorted(root.iterdir()) orders one folder's children.
    with os.scandir(root) as it:
        listed = sorted((d.name, d) for d in it)
    for name, d in listed:
        if name.lower() in _SKIP_NAMES or name.startswith("."):
            continue
        p = root / name
        kind = _suffix_kind(p)
        if kind is None:
            continue
        if d.is_dir():
            # Never skip data silently: Condition.ndjson/ as a folder is a mistake to report.
            raise SourceError(f"{p}: a folder named like a data file (expected a file)")
        entries.append((_type_from_name(p) if kind == "ndjson" else None, p))
    if not entries:
        raise SourceError(f"{root}: no .ndjson, .jsonl or .json files")
    entries.sort(key=_file_rank)
    return DiskSource(root, entries)
