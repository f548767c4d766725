"""Codes of records that matched no value set (spec v1.1 "Unmapped records").

Counting has to be nearly free, because almost every line of a real export is unmapped: a line
the reader's line filter rejects contributes the raw bytes of its code's ``coding`` array (one
regex search, one slice, one dict increment; no parse), and a parsed record that gave no row
contributes its codings. Only at the end are the distinct keys decoded, normalised and merged
into (resource type, system, code) counts; the display shown is the one of the most frequent
spelling, the smallest of equally frequent ones, and a rejected line's key is decoded from its
first line in reading order, so neither depends on how the reading was split across workers
or in which order they finished. Nothing but codes, displays and counts is kept (medication
free text only when asked for, since it can hold anything).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import orjson

from fhir_cohort.engine.tables import ROW_RESOURCE_TYPES
from fhir_cohort.fhir.wire import normalizers, reference_id

__all__ = [
    "NO_CODING",
    "TEXT_NOT_LISTED",
    "UNMAPPED_COLUMNS",
    "UNMAPPED_TOP",
    "UNMAPPED_TYPES",
    "Key",
    "TallyingLineFilter",
    "Unmapped",
    "code_key",
    "medication_is_mapped",
    "unmapped_codings",
]

# Per resource type the criteria read; Medication resources are counted once each, and a
# Medication* record that references one is counted with the referenced Medication's codes.
UNMAPPED_TYPES: tuple[str, ...] = (*ROW_RESOURCE_TYPES, "Medication")
UNMAPPED_COLUMNS: tuple[str, ...] = ("resource_type", "system", "code", "display", "count")
# Rows listed per resource type (the spec asks for at least the top 500).
UNMAPPED_TOP = 1000
# Distinct keys kept per type before the rarest are dropped (counts stay exact below this).
MAX_KEYS = 100_000
# Distinct "code" value sets of rejected lines kept with one sample line each (memory bound).
MAX_LINE_KEYS = 20_000
NO_CODING = "[no coding]"
TEXT_NOT_LISTED = "[free text; listed only with --unmapped-text]"

_MED_TYPES = frozenset(UNMAPPED_TYPES[3:7])
_TYPE_SET = frozenset(UNMAPPED_TYPES)
# The start of a CodeableConcept's coding array (an optional "text" may come first).
_CC = rb'\{\s*(?:"text"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*)?"coding"\s*:\s*\['
_CODE_CC = re.compile(rb'"code"\s*:\s*' + _CC)
_MED_CC = re.compile(rb'"medicationCodeableConcept"\s*:\s*' + _CC)
_ARRAY_END = re.compile(rb"\}\s*\]")
_RTYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]*)"')
_FIELD = {
    k: re.compile(rb'"' + k.encode() + rb'"\s*:\s*"((?:[^"\\]|\\.)*)"')
    for k in ("system", "code", "display")
}

# A key is the raw bytes of a coding array (from a rejected line), a tuple of parsed
# (system, code, display) codings, or a str: medication free text ("" = text not listed).
Key = Union[bytes, tuple[tuple[str, str, str], ...], str]  # noqa: UP007 - a runtime alias


def _pattern(resource_type: str) -> re.Pattern[bytes]:
    return _MED_CC if resource_type in _MED_TYPES else _CODE_CC


@dataclass
class Unmapped:
    """Counters of unmapped records per resource type; mergeable across worker processes.

    ``counts`` holds keys of parsed records and of lines rejected by a wrapping filter;
    ``line_counts`` the lines a :class:`~fhir_cohort.engine.flatten.CodeLineFilter` rejected,
    keyed by their "code" values, with the first such line in ``samples`` (decoded at the end:
    lines with the same code values are taken to carry the same code) and where it was read,
    (file index, first line of its task), in ``ranks``: merging keeps the earliest sample,
    whatever order the workers' counters arrive in.
    """

    counts: dict[str, dict[Key, int]] = field(default_factory=dict)
    line_counts: dict[str, dict[bytes, int]] = field(default_factory=dict)
    samples: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    ranks: dict[str, dict[bytes, tuple[int, int]]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def counter(self, resource_type: str) -> dict[Key, int]:
        return self.counts.setdefault(resource_type, {})

    def line_counter(
        self, resource_type: str
    ) -> tuple[dict[bytes, int], dict[bytes, bytes], dict[bytes, tuple[int, int]]]:
        return (
            self.line_counts.setdefault(resource_type, {}),
            self.samples.setdefault(resource_type, {}),
            self.ranks.setdefault(resource_type, {}),
        )

    def add(self, resource_type: str, key: Key, n: int = 1) -> None:
        c = self.counter(resource_type)
        c[key] = c.get(key, 0) + n
        if len(c) > MAX_KEYS:
            self.prune(resource_type)

    def bound_lines(self, resource_type: str) -> None:
        if len(self.line_counts.get(resource_type, ())) > MAX_LINE_KEYS:
            self.prune(resource_type)

    def prune(self, resource_type: str) -> None:
        """Keep the most frequent half of the keys (in place: filters hold the dicts), so
        memory stays bounded on any data and every code more frequent than those dropped keeps
        an exact count."""
        for counts, limit in (
            (self.counts.get(resource_type), MAX_KEYS),
            (self.line_counts.get(resource_type), MAX_LINE_KEYS),
        ):
            if not counts or len(counts) <= limit:
                continue
            ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
            samples = self.samples.get(resource_type, {})
            ranks = self.ranks.get(resource_type, {})
            for key, n in ranked[limit // 2 :]:
                del counts[key]
                samples.pop(key, None)  # type: ignore[call-overload]
                ranks.pop(key, None)  # type: ignore[call-overload]
                self.dropped[resource_type] = self.dropped.get(resource_type, 0) + n

    def merge(self, other: Unmapped) -> None:
        for rtype, c in other.counts.items():
            mine = self.counter(rtype)
            for k, v in c.items():
                mine[k] = mine.get(k, 0) + v
        for rtype, lc in other.line_counts.items():
            mine_l, mine_s, mine_r = self.line_counter(rtype)
            theirs_s = other.samples.get(rtype, {})
            theirs_r = other.ranks.get(rtype, {})
            for k, v in lc.items():
                old = mine_l.get(k)
                if old is None:
                    mine_s[k] = theirs_s.get(k, b"")
                    mine_r[k] = theirs_r.get(k, (0, 0))
                    mine_l[k] = v
                    continue
                mine_l[k] = old + v
                # The sample read first wins: the display is that of the same line whichever
                # worker finished first (ties in rank cannot happen: one task, one worker).
                rank = theirs_r.get(k, (0, 0))
                if rank < mine_r.get(k, (0, 0)):
                    mine_s[k] = theirs_s.get(k, b"")
                    mine_r[k] = rank
        for rtype, n in other.dropped.items():
            self.dropped[rtype] = self.dropped.get(rtype, 0) + n
        for rtype in set(other.counts) | set(other.line_counts):
            self.prune(rtype)

    def _keys(self, resource_type: str) -> list[tuple[Key, int]]:
        """Every key of a type with its count; sampled lines decoded to their codings."""
        out: list[tuple[Key, int]] = list(self.counts.get(resource_type, {}).items())
        samples = self.samples.get(resource_type, {})
        for key, n in self.line_counts.get(resource_type, {}).items():
            out.append((_line_codings(samples.get(key, b""), resource_type), n))
        return out

    def rows(self, top: int = UNMAPPED_TOP) -> list[tuple[str, str, str, str, int]]:
        """(resource_type, system, code, display, count): per type the ``top`` most frequent
        normalised (system, code) pairs, most frequent first, then by system and code."""
        norm_system, norm_code = normalizers()
        out: list[tuple[str, str, str, str, int]] = []
        for rtype in UNMAPPED_TYPES:
            keys = self._keys(rtype)
            if not keys:
                continue
            totals: dict[tuple[str, str], int] = {}
            # per coding, the display of its most frequent spelling (key) with one, the
            # smallest of equally frequent ones: a total order, so the choice depends neither
            # on the order the workers' counters were merged in nor on their number
            displays: dict[tuple[str, str], tuple[int, str]] = {}
            for key, n in keys:
                for system, code, display in _decode(key):
                    s = norm_system(system) if system else ""
                    k = (s, norm_code(s, code) if code else "")
                    totals[k] = totals.get(k, 0) + n
                    if display:
                        best = displays.get(k)
                        if best is None or n > best[0] or (n == best[0] and display < best[1]):
                            displays[k] = (n, display)
            ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            out.extend((rtype, s, k, displays.get((s, k), (0, ""))[1], n) for (s, k), n in ranked)
        return out

    def summary(self, listed: Iterable[tuple[str, str, str, str, int]] = ()) -> dict[str, Any]:
        """Per type: unmapped records, codes listed, records of rare codes not kept."""
        per_listed: dict[str, int] = {}
        for row in listed:
            per_listed[row[0]] = per_listed.get(row[0], 0) + 1
        out: dict[str, Any] = {}
        for rtype in UNMAPPED_TYPES:
            kept = sum(self.counts.get(rtype, {}).values()) + sum(
                self.line_counts.get(rtype, {}).values()
            )
            dropped = self.dropped.get(rtype, 0)
            if not kept and not dropped:
                continue
            entry: dict[str, Any] = {
                "records": kept + dropped,
                "codes_listed": per_listed.get(rtype, 0),
            }
            if dropped:
                entry["records_of_rare_codes_not_kept"] = dropped
            out[rtype] = entry
        return out


def _line_codings(line: bytes, resource_type: str) -> Key:
    """The codings of a sampled raw line's code (medications: their medication concept)."""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(resource, dict):
        return ()
    if resource_type in _MED_TYPES:
        cc = resource.get("medicationCodeableConcept")
    else:
        cc = resource.get("code")
    return _codings(cc)


def _decode(key: Key) -> list[tuple[str, str, str]]:
    """The (system, code, display) codings a key stands for; [("", "", label)] for none."""
    if isinstance(key, tuple):
        return list(key) or [("", "", NO_CODING)]
    if isinstance(key, str):
        return [("", "", key or TEXT_NOT_LISTED)]
    if not key:
        return [("", "", NO_CODING)]
    codings: list[tuple[str, str, str]] = []
    try:
        items = orjson.loads(b"[" + key + b"]")
    except orjson.JSONDecodeError:
        # The slice ended early (a coding with an extension array): read the first coding.
        items = [
            {
                name: orjson.loads(b'"' + m.group(1) + b'"')
                for name, rx in _FIELD.items()
                if (m := rx.search(key)) is not None
            }
        ]
    for item in items:
        if isinstance(item, dict):
            codings.append(
                (_str(item.get("system")), _str(item.get("code")), _str(item.get("display")))
            )
    return codings or [("", "", NO_CODING)]


def _str(x: Any) -> str:
    return x if isinstance(x, str) else ""


class TallyingLineFilter:
    """Wraps a reader line filter: a line it rejects is counted by its code's coding array.

    ``resource_type`` is the file's declared type; None (a mixed NDJSON file) reads each
    rejected line's own resourceType and counts only the types in ``UNMAPPED_TYPES``.
    """

    __slots__ = ("base", "compact", "counter", "pattern", "resource_type", "tally")

    def __init__(
        self, base: Callable[[bytes], bool], tally: Unmapped, resource_type: str | None
    ) -> None:
        self.base = base
        self.tally = tally
        self.resource_type = resource_type
        self.pattern = _pattern(resource_type) if resource_type else None
        self.compact = (
            b'"medicationCodeableConcept":{"coding":['
            if resource_type in _MED_TYPES
            else b'"code":{"coding":['
        )
        self.counter = tally.counter(resource_type) if resource_type else None

    def __call__(self, line: bytes) -> bool:
        if self.base(line):
            return True
        c = self.counter
        if c is not None:
            # Compact JSON (every bulk exporter seen) is found by memmem; else the regex.
            i = line.find(self.compact)
            if i != -1:
                start = i + len(self.compact)
                end = line.find(b"}]", start)
                key = line[start : end + 1] if end != -1 else _coding_array(line, self.pattern)
            else:
                key = _coding_array(line, self.pattern)
            c[key] = c.get(key, 0) + 1
            if len(c) > MAX_KEYS:
                self.tally.prune(self.resource_type or "")
                self.counter = self.tally.counter(self.resource_type or "")
            return False
        m = _RTYPE.search(line)
        rtype = m.group(1).decode() if m is not None else ""
        if rtype in _TYPE_SET:
            self.tally.add(rtype, _coding_array(line, _pattern(rtype)))
        return False


def _coding_array(line: bytes, pattern: re.Pattern[bytes] | None) -> bytes:
    """The raw coding array of the line's code (b"" when none is found)."""
    m = pattern.search(line) if pattern is not None else None
    if m is None:
        return b""
    start = m.end()
    if line.startswith(b"]", start):
        return b""
    # The array ends at "}]" (a "]" alone also closes "[Mass/volume]" in a display).
    end = line.find(b"}]", start)
    if end == -1:
        e = _ARRAY_END.search(line, start)
        end = e.start() if e is not None else -1
    return line[start : end + 1] if end != -1 else b""


def _codings(cc: Any) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(cc, dict):
        return ()
    out = []
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and (isinstance(c.get("code"), str) or c.get("system")):
            out.append((_str(c.get("system")), _str(c.get("code")), _str(c.get("display"))))
    return tuple(out)


def _medication_concept(
    resource: dict[str, Any], medications: dict[str, dict[str, Any]]
) -> tuple[Any, dict[str, Any] | None, str | None] | None:
    """(CodeableConcept, Medication, reference display), or None when a referenced Medication
    is not in the source (that is reported as an error, not as an unmapped code)."""
    cc = resource.get("medicationCodeableConcept")
    if cc is not None:
        return cc, None, None
    ref = resource.get("medicationReference")
    if ref is None:  # R5 CodeableReference
        med = resource.get("medication")
        if isinstance(med, dict) and med.get("concept") is not None:
            return med["concept"], None, None
        ref = med.get("reference") if isinstance(med, dict) else None
    if not isinstance(ref, dict):
        return None, None, None
    display = ref.get("display") if isinstance(ref.get("display"), str) else None
    target = ref.get("reference")
    if not isinstance(target, str):
        return None, None, display
    if target.startswith("#"):
        for c in resource.get("contained") or ():
            if isinstance(c, dict) and c.get("id") == target[1:]:
                return c.get("code"), c, display
        return None, None, display
    mid = reference_id(target, "Medication")
    med_res = medications.get(mid) if mid is not None else None
    if med_res is None:
        return None
    return med_res.get("code"), med_res, display


def code_key(code: Any) -> Key:
    """The key :func:`unmapped_codings` counts for a Condition, Procedure or Observation with
    this ``code`` and a Patient subject."""
    return _codings(code)


def unmapped_codings(
    resource: dict[str, Any],
    medications: dict[str, dict[str, Any]],
    *,
    text: bool = False,
) -> Key | None:
    """The key to count for a parsed resource that gave no row, or None when it is not an
    unmapped record (a type not listed, no Patient subject, an unresolved Medication).

    The caller knows the resource gave no row; with a Patient subject the only reason left is
    that none of its codes (nor, for medications, its text) matched a value set.
    """
    rtype = resource.get("resourceType")
    if rtype not in _TYPE_SET:
        return None
    if rtype == "Medication":
        cc, med, display = resource.get("code"), resource, None
    else:
        subject = resource.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if reference_id(ref, "Patient") is None:
            return None
        if rtype not in _MED_TYPES:
            return _codings(resource.get("code"))
        found = _medication_concept(resource, medications)
        if found is None:
            return None
        cc, med, display = found
    codings = _codings(cc)
    if not codings and med is not None:
        codings = tuple(
            c
            for ing in med.get("ingredient") or ()
            if isinstance(ing, dict)
            for c in _codings(ing.get("itemCodeableConcept"))
        )
    if codings:
        return codings
    if not text:
        return ""
    t = cc.get("text") if isinstance(cc, dict) else None
    t = t if isinstance(t, str) and t.strip() else display
    return t.strip() if isinstance(t, str) and t.strip() else ()


def medication_is_mapped(
    medication: dict[str, Any],
    relevant: frozenset[tuple[str, str]],
    words: Iterable[str],
) -> bool:
    """Whether a Medication resource's code, ingredient codes or names match a value set
    (the same test the flattener applies to a record that references it)."""
    norm_system, norm_code = normalizers()
    cc = medication.get("code")
    ccs = [cc] + [
        ing.get("itemCodeableConcept")
        for ing in medication.get("ingredient") or ()
        if isinstance(ing, dict)
    ]
    texts: list[str] = []
    for one in ccs:
        for system, code, display in _codings(one):
            s = norm_system(system)
            if (s, norm_code(s, code)) in relevant:
                return True
            texts.append(display)
    t = cc.get("text") if isinstance(cc, dict) else None
    if isinstance(t, str):
        texts.append(t)
    low = " ".join(texts).lower()
    return any(w.strip().lower() in low for w in words if w.strip())
