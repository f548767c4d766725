"""Pure helpers for FHIR wire formats: dates, references, ``system|code`` tokens, search prefixes.

Nothing here does I/O; everything is cheap enough to call once per resource.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

__all__ = [
    "SEARCH_PREFIXES",
    "add_days",
    "date_bounds",
    "duration_days",
    "format_prefixed",
    "format_token",
    "normalize_code",
    "normalize_system",
    "normalizers",
    "parse_date",
    "parse_prefixed",
    "reference_id",
    "split_token",
]

# ---------------------------------------------------------------------------------------------
# Dates

# FHIR date / dateTime / instant: YYYY, YYYY-MM, YYYY-MM-DD, then optionally T<time>[zone].
_DATE_RE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?")


def _parts(s: str) -> tuple[int, int | None, int | None] | None:
    m = _DATE_RE.fullmatch(s.strip())
    if m is None:
        return None
    year = int(m.group(1))
    month = int(m.group(2)) if m.group(2) else None
    day = int(m.group(3)) if m.group(3) else None
    if year < 1 or (month is not None and not 1 <= month <= 12):
        return None
    if day is not None and (month is None or not 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    return year, month, day


def parse_date(s: str | None) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant, as written (offset ignored).

    A partial date gives its first day. Anything unparseable gives None.

    >>> parse_date("2024-03-05T23:30:00-05:00")
    datetime.date(2024, 3, 5)
    >>> parse_date("1990-02")
    datetime.date(1990, 2, 1)
    >>> parse_date("yesterday") is None
    True
    """
    if not s or not isinstance(s, str):
        return None
    # Fast path for the common full date (most dateTimes in real data).
    if len(s) >= 10 and s[4] == "-" and s[7] == "-" and (len(s) == 10 or s[10] == "T"):
        try:
            if len(s) == 10 or _DATE_RE.fullmatch(s):
                return date(int(s[0:4]), int(s[5:7]), int(s[8:10]))
        except ValueError:
            return None
        return None
    p = _parts(s)
    if p is None:
        return None
    return date(p[0], p[1] or 1, p[2] or 1)


def date_bounds(s: str | None) -> tuple[date, date] | None:
    """Earliest and latest calendar date a (possibly partial) FHIR date can denote.

    >>> date_bounds("1990-02")
    (datetime.date(1990, 2, 1), datetime.date(1990, 2, 28))
    >>> date_bounds("1990")
    (datetime.date(1990, 1, 1), datetime.date(1990, 12, 31))
    """
    if not s or not isinstance(s, str):
        return None
    p = _parts(s)
    if p is None:
        return None
    year, month, day = p
    if month is None:
        return date(year, 1, 1), date(year, 12, 31)
    if day is None:
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    d = date(year, month, day)
    return d, d


# ---------------------------------------------------------------------------------------------
# Durations

# UCUM codes (and the human spellings found in `unit`) -> days.
_DAYS_PER_UNIT: dict[str, float] = {
    "d": 1.0, "day": 1.0, "days": 1.0,
    "wk": 7.0, "week": 7.0, "weeks": 7.0,
    "mo": 30.0, "month": 30.0, "months": 30.0,
    "a": 365.0, "yr": 365.0, "year": 365.0, "years": 365.0,
    "h": 1 / 24, "hr": 1 / 24, "hour": 1 / 24, "hours": 1 / 24,
    "min": 1 / 1440, "minute": 1 / 1440, "minutes": 1 / 1440,
}  # fmt: skip


def duration_days(
    quantity: Mapping[str, Any] | None, default_unit: str | None = None
) -> float | None:
    """Length in days of a FHIR Duration/Quantity (UCUM ``code`` first, then ``unit``).

    ``default_unit`` applies when neither is given (MedicationDispense.daysSupply is in days).

    >>> duration_days({"value": 2, "unit": "weeks", "code": "wk"})
    14.0
    >>> duration_days({"value": 3, "code": "mo"})
    90.0
    """
    if not isinstance(quantity, Mapping):
        return None
    value = quantity.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return None
    for key in ("code", "unit"):
        u = quantity.get(key)
        if isinstance(u, str):
            factor = _DAYS_PER_UNIT.get(u.strip().lower() if len(u) > 2 else u.strip())
            if factor is not None:
                return float(value) * factor
    if default_unit is not None and quantity.get("code") is None and quantity.get("unit") is None:
        return float(value) * _DAYS_PER_UNIT[default_unit]
    return None


def add_days(start: date, days: float) -> date | None:
    """``start`` plus a duration in days; a partial day counts as a whole one."""
    try:
        return start + timedelta(days=math.ceil(days))
    except (OverflowError, ValueError):
        return None


def supply_end(start: date, days: float) -> date | None:
    """Last day covered by a supply of ``days`` starting on ``start`` (inclusive end).

    A 30-day supply handed over on Jan 1 covers Jan 1 .. Jan 30; every interval end in the
    tidy tables is inclusive, like an effectivePeriod.end. A supply of under one day still
    covers its start day.

    >>> supply_end(date(2024, 1, 1), 30)
    datetime.date(2024, 1, 30)
    >>> supply_end(date(2024, 1, 1), 0.5)
    datetime.date(2024, 1, 1)
    """
    return add_days(start, max(math.ceil(days), 1) - 1)


# ---------------------------------------------------------------------------------------------
# References


def reference_id(
    ref: str | Mapping[str, Any] | None, expected_type: str | None = None
) -> str | None:
    """The logical id a reference points at, or None when it cannot be read.

    Accepts ``Type/id``, ``Type/id/_history/v``, absolute URLs ending so, ``urn:uuid:X`` (gives X),
    ``#local`` (contained; gives ``local``) and a Reference dict. With ``expected_type`` a reference
    naming another type gives None (``urn:uuid``/``#`` carry no type and are accepted).
    Conditional references (``Patient?identifier=...``) give None.

    >>> reference_id("https://x/fhir/Patient/123/_history/2", "Patient")
    '123'
    >>> reference_id("Practitioner/9", "Patient") is None
    True
    """
    if isinstance(ref, Mapping):
        ref = ref.get("reference")
    if not isinstance(ref, str) or not ref:
        return None
    if ref[0] == "#":
        return ref[1:] or None
    if ref.startswith("urn:"):
        if ref.startswith("urn:uuid:") and len(ref) > 9:
            return ref[9:]
        return None
    if "?" in ref:
        return None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rid or not rtype[:1].isupper():
        return None
    if expected_type is not None and rtype != expected_type:
        return None
    return rid


# ---------------------------------------------------------------------------------------------
# Tokens: FHIR search escaping (\| \, \$ \\) so any text survives a round trip.

_ESCAPE_CHARS = frozenset("\\|,$")


def _escape(s: str) -> str:
    if not any(c in _ESCAPE_CHARS for c in s):
        return s
    return "".join("\\" + c if c in _ESCAPE_CHARS else c for c in s)


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def format_token(system: str | None, code: str) -> str:
    """``system|code``; ``None`` system gives just ``code`` (any system), ``""`` gives ``|code``.

    >>> format_token("http://loinc.org", "82810-3")
    'http://loinc.org|82810-3'
    """
    if system is None:
        return _escape(code)
    return f"{_escape(system)}|{_escape(code)}"


def split_token(token: str) -> tuple[str | None, str]:
    """Inverse of :func:`format_token`: split on the first unescaped ``|``.

    >>> split_token("http://snomed.info/sct|55464009")
    ('http://snomed.info/sct', '55464009')
    >>> split_token("55464009")
    (None, '55464009')
    >>> split_token("|x")
    ('', 'x')
    """
    i = 0
    while i < len(token):
        c = token[i]
        if c == "\\":
            i += 2
            continue
        if c == "|":
            return _unescape(token[:i]), _unescape(token[i + 1 :])
        i += 1
    return None, _unescape(token)


# ---------------------------------------------------------------------------------------------
# Search prefixes (number, date and quantity parameters)

SEARCH_PREFIXES: frozenset[str] = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})


def parse_prefixed(value: str) -> tuple[str, str]:
    """Split a search value into (prefix, rest); no prefix means ``eq``.

    >>> parse_prefixed("ge2024-01-01")
    ('ge', '2024-01-01')
    >>> parse_prefixed("2024-01-01")
    ('eq', '2024-01-01')
    """
    if len(value) > 2 and value[:2] in SEARCH_PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def format_prefixed(prefix: str, value: str, *, omit_eq: bool = False) -> str:
    """``prefix`` + ``value`` (``ValueError`` for an unknown prefix).

    >>> format_prefixed("le", "2024-01-01")
    'le2024-01-01'
    """
    if prefix not in SEARCH_PREFIXES:
        raise ValueError(f"unknown search prefix {prefix!r}")
    if omit_eq and prefix == "eq":
        return value
    return prefix + value


# ---------------------------------------------------------------------------------------------
# System / code normalisation: the implementation lives in fhir_cohort.terminology. It is
# resolved lazily so that terminology may itself import this module without a cycle.

_norm_impl: tuple[Callable[[str], str], Callable[[str, str], str]] | None = None


def normalizers() -> tuple[Callable[[str], str], Callable[[str, str], str]]:
    """The (normalize_system, normalize_code) pair of ``fhir_cohort.terminology``, for hot loops."""
    global _norm_impl
    if _norm_impl is None:
        from fhir_cohort.terminology import normalize_code as nc
        from fhir_cohort.terminology import normalize_system as ns

        _norm_impl = (ns, nc)
    return _norm_impl


def normalize_system(system: str) -> str:
    """Canonical URI of a code system (delegates to ``fhir_cohort.terminology``)."""
    return normalizers()[0](system)


def normalize_code(system: str, code: str) -> str:
    """Canonical spelling of a code in a system (delegates to ``fhir_cohort.terminology``)."""
    return normalizers()[1](system, code)
