"""Lab result interpretation: positive / negative / equivocal, by the spec's I4 precedence.

1. interpretation codes; 2. coded value; 3. value string words; 4. number or titer against
referenceRange.high; 5. anything else is equivocal.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, NamedTuple

from fhir_cohort.criteria.models import LabRules
from fhir_cohort.engine.evaluators.common import Evidence, after_as_of, iso

POSITIVE = "positive"
NEGATIVE = "negative"
EQUIVOCAL = "equivocal"

_TITER = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*([-+]?\d+(?:\.\d+)?)\s*$")
# Thousands grouped by commas ("1,500", "12,000.5"); "1,5" (a decimal comma?) is not read.
_GROUPED = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?)\s*$")


class Reading(NamedTuple):
    result: str  # positive | negative | equivocal
    rule: str  # which rule decided: interpretation | coded value | string | reference | none
    value: str  # the value as read, for evidence


class Number(NamedTuple):
    value: float
    comparator: str | None  # None, "<", "<=", ">", ">="
    titer: bool


def _clean_comparators(text: str) -> str:
    return (
        text.replace("\u2264", "<=").replace("\u2265", ">=").replace("=<", "<=").replace("=>", ">=")
    )


def parse_titer(text: str | None) -> Number | None:
    """'1:320' -> 320 (the dilution); '>1:640' keeps the comparator; None if not a titer.

    >>> parse_titer("1:320")
    Number(value=320.0, comparator=None, titer=True)
    >>> parse_titer("<1:80").comparator
    '<'
    >>> parse_titer("positive") is None
    True
    """
    if not text:
        return None
    m = _TITER.match(_clean_comparators(text))
    if not m:
        return None
    num, den = float(m.group(2)), float(m.group(3))
    if num <= 0:
        return None
    return Number(den / num, m.group(1), True)


def parse_number(text: str | None, grouping: bool = False) -> Number | None:
    """A plain number with an optional comparator ('>200', '45.1'); titers via parse_titer.
    With ``grouping``, thousands separated by commas too ('1,500').

    >>> parse_number("1,500") is None, parse_number("1,500", grouping=True).value
    (True, 1500.0)
    """
    if not text:
        return None
    t = parse_titer(text)
    if t is not None:
        return t
    m = _NUMBER.match(_clean_comparators(text))
    if not m and grouping:
        m = _GROUPED.match(_clean_comparators(text))
    if not m:
        return None
    return Number(float(m.group(2).replace(",", "")), m.group(1), False)


# Reference text (v1.1: a range given only as text gives the high): "<30 IU/mL", "<= 30",
# "0-30", "0 - 30 U/mL", "0 to 30", "<1:80", "< 1:40", optionally after a label
# ("Negative: <20", "Normal <1:40", "Ref. range 0-30").
_NUM = r"\d+(?:\.\d+)?"
_VAL = rf"(?:{_NUM}\s*:\s*{_NUM}|{_NUM})"
_UNIT = r"(?:\s*[a-z%/*^0-9.\[\]{}]+(?:\s*/\s*[a-z0-9.\[\]{}]+)?)?"
_LABEL = r"(?:(?:negative|normal|reference(?:\s+range)?|ref\.?(?:\s+range)?|range)\s*[:=]?\s*)?"
_REF_BELOW = re.compile(rf"^\s*{_LABEL}(<=|<)\s*({_VAL}){_UNIT}\s*$", re.IGNORECASE)
_REF_BARE = re.compile(rf"^\s*{_LABEL}({_VAL}){_UNIT}\s*$", re.IGNORECASE)
_REF_RANGE = re.compile(
    rf"^\s*{_LABEL}({_VAL}){_UNIT}\s*(?:-|\u2013|to)\s*({_VAL}){_UNIT}\s*$", re.IGNORECASE
)


def parse_reference_text(text: str | None) -> Number | None:
    """The high a reference range written as text gives (v1.1), or None when it gives none.

    ``<X`` and ``<=X`` give X; a range ``A-B`` gives B (both ends of one kind, A <= B); a lone
    cut-off ``X`` gives X. A high compares by its number alone: rule 4 reads "at or below the
    high" as negative, so 1:80 against "<1:80" is negative.

    >>> parse_reference_text("<30 IU/mL")
    Number(value=30.0, comparator='<', titer=False)
    >>> parse_reference_text("0-30").value
    30.0
    >>> parse_reference_text("< 1:40")
    Number(value=40.0, comparator='<', titer=True)
    >>> parse_reference_text(">60") is None
    True
    """
    if not text:
        return None
    t = _clean_comparators(text)
    m = _REF_BELOW.match(t)
    if m:
        high = parse_number(m.group(2))
        return None if high is None else Number(high.value, m.group(1), high.titer)
    m = _REF_RANGE.match(t)
    if m:
        low, high = parse_number(m.group(1)), parse_number(m.group(2))
        if low is None or high is None or low.titer != high.titer or low.value > high.value:
            return None
        return Number(high.value, None, high.titer)
    m = _REF_BARE.match(t)
    if m:  # a single cut-off ("1:80", "30 U/mL") is the high
        high = parse_number(m.group(1))
        return None if high is None else Number(high.value, None, high.titer)
    return None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def _fmt(n: Number) -> str:
    core = f"1:{n.value:g}" if n.titer else f"{n.value:g}"
    return f"{n.comparator or ''}{core}"


def observation_value(row: Any, grouping: bool = False) -> Number | None:
    """The row's numeric reading: quantity, ratio (titer) or a numeric/titer string (a
    valueString, or the text of a valueCodeableConcept, which v1.1 reads like one)."""
    if (
        row.value_type == "ratio"
        and _is_num(row.ratio_numerator)
        and _is_num(row.ratio_denominator)
    ):
        if row.ratio_numerator > 0:
            return Number(row.ratio_denominator / row.ratio_numerator, None, True)
        return None
    if _is_num(row.value_number):
        return Number(float(row.value_number), row.value_comparator or None, False)
    if row.value_type in ("string", "codeable") and isinstance(row.value_string, str):
        return parse_number(row.value_string, grouping)
    return None


def reference_high(row: Any, titer: bool) -> Number | None:
    """referenceRange.high as a number, else the high its text gives ('<30 IU/mL', '<1:80')."""
    if _is_num(row.ref_high):
        v = float(row.ref_high)
        # A titer's high written as the ratio's value (1/80 = 0.0125) reads as dilution 80.
        if titer and 0 < v < 1:
            v = 1 / v
        return Number(v, row.ref_high_comparator or None, titer)
    if row.ref_high_string:
        return parse_reference_text(str(row.ref_high_string))
    return None


def compare_to_high(value: Number, high: Number) -> str:
    """Rule 4 with the v1.1 comparator table; the high compares by its number alone.

    ============  ==========================  ===========================
    value         positive (above the high)   negative (at or below)
    ============  ==========================  ===========================
    ``X``         X > high                    X <= high
    ``>X``        X >= high                   never (else equivocal)
    ``>=X``       X > high                    never (else equivocal)
    ``<X``        never                       X <= high (else equivocal)
    ``<=X``       never                       X <= high (else equivocal)
    ============  ==========================  ===========================
    """
    h = high.value
    v, c = value.value, value.comparator
    if c in (None, "", "="):
        return POSITIVE if v > h else NEGATIVE
    if c == ">":
        return POSITIVE if v >= h else EQUIVOCAL
    if c == ">=":
        return POSITIVE if v > h else EQUIVOCAL
    if c in ("<", "<="):
        return NEGATIVE if v <= h else EQUIVOCAL
    return EQUIVOCAL


def _norm_text(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").split()).strip(" .;:!")


# Degree words before a result word ("weakly positive", "low positive", "strongly reactive"):
# v1.1 reads them as the word itself (a weak positive is detectable, so positive).
_DEGREE = re.compile(
    r"^(?:(?:very|weakly|weak|low-level|low|highly|high|strongly|strong|moderately|moderate|"
    r"mildly|mild|slightly|faintly|faint)[\s-]+)+"
)


def _match_table(t: str, table: list[tuple[str, str]]) -> str | None:
    for word, result in table:
        if t == _norm_text(word):
            return result
    for word, result in table:
        if re.match(rf"{re.escape(_norm_text(word))}\b", t):
            return result
    return None


def match_words(text: str, rules: LabRules) -> str | None:
    """Word rule (3): exact phrase, else the phrase opening the text; longest phrase first.
    A degree word in front ("weakly positive", "low positive") reads as the phrase after it.

    >>> from fhir_cohort.criteria.models import LabRules
    >>> match_words("Not detected", LabRules())
    'negative'
    >>> match_words("POSITIVE (high)", LabRules())
    'positive'
    >>> match_words("Weakly positive", LabRules())
    'positive'
    """
    t = _norm_text(text)
    if not t:
        return None
    table = [(w, POSITIVE) for w in rules.positive_strings]
    table += [(w, NEGATIVE) for w in rules.negative_strings]
    table += [(w, EQUIVOCAL) for w in rules.equivocal_strings]
    table.sort(key=lambda p: -len(p[0]))
    found = _match_table(t, table)
    if found is not None:
        return found
    stripped = _DEGREE.sub("", t)
    if stripped and stripped != t:
        return _match_table(stripped, table)
    return None


def interpret(row: Any, rules: LabRules, ctx: Any) -> Reading:
    """Apply the precedence rules to one observation row."""
    interp = tuple(row.interpretation_codes or ())
    for vs_ids, result in (
        (rules.interpretation_positive, POSITIVE),
        (rules.interpretation_negative, NEGATIVE),
        (rules.interpretation_equivocal, EQUIVOCAL),
    ):
        if ctx.token_in(vs_ids, interp):
            return Reading(result, "interpretation", ",".join(interp))
    codes = tuple(row.value_codes or ())
    for vs_ids, result in (
        (rules.result_positive, POSITIVE),
        (rules.result_negative, NEGATIVE),
        (rules.result_equivocal, EQUIVOCAL),
    ):
        if ctx.token_in(vs_ids, codes):
            return Reading(result, "coded value", ",".join(codes))
    if row.value_string:
        word = match_words(str(row.value_string), rules)
        if word is not None:
            return Reading(word, "string", str(row.value_string))
    value = observation_value(row)
    if value is not None:
        high = reference_high(row, value.titer)
        shown = _fmt(value) + (f" {row.value_unit}" if row.value_unit and not value.titer else "")
        if high is None:
            return Reading(EQUIVOCAL, "no reference range", shown)
        if high.titer != value.titer:
            # A titer against "<30 IU/mL" (or a number against "<1:80"): no common scale.
            return Reading(EQUIVOCAL, "reference in other units", f"{shown} (ref {_fmt(high)})")
        result = compare_to_high(value, high)
        return Reading(result, "reference", f"{shown} (ref high {_fmt(high)})")
    shown = str(row.value_string or ",".join(codes) or "")
    return Reading(EQUIVOCAL, "none", shown)


# --------------------------------------------------------------------------- rows


def observation_evidence(row: Any, reading: Reading | None, note: str) -> Evidence:
    return Evidence(
        "Observation",
        row.resource_id,
        row.system,
        row.code,
        row.display,
        iso(row.date),
        reading.value if reading else None,
        note,
    )


def observation_high(row: Any) -> dt.date | None:
    """Latest day a partial effective date can denote (None: same as ``row.date``)."""
    return getattr(row, "date_high", None)


def counted_rows(
    vs_ids: list[str], rules: LabRules, ctx: Any, rows: list[Any]
) -> tuple[list[Any], list[Evidence]]:
    """Rows of a test in ``vs_ids`` whose status counts and that are not dated after S under
    every reading of a partial date; evidence for the rest."""
    out: list[Any] = []
    skipped: list[Evidence] = []
    # ctx.first_vs(vs_ids, ...) is None, without its call per row (the hot loop of a pass):
    # a coding with no value set of vs_ids, or no system or code (no memberships then).
    wanted = frozenset(vs_ids)
    memberships = ctx.memberships
    for row in rows:
        if wanted.isdisjoint(memberships(row.system, row.code)):
            continue
        if row.status is not None and row.status not in rules.counted_statuses:
            skipped.append(observation_evidence(row, None, f"status {row.status}"))
            continue
        if after_as_of(row.date, ctx.as_of, observation_high(row)) is True:
            skipped.append(observation_evidence(row, None, "after as-of date"))
            continue
        out.append(row)
    return out, skipped


def read_tests(
    vs_ids: list[str], rules: LabRules, ctx: Any, rows: list[Any]
) -> tuple[list[tuple[Any, Reading]], list[Evidence]]:
    """Counted test rows (:func:`counted_rows`) with their reading; evidence for the rest."""
    out, skipped = counted_rows(vs_ids, rules, ctx, rows)
    return [(row, interpret(row, rules, ctx)) for row in out], skipped
