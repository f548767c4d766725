"""Classes I-VI named in free text or a coding display, as Roman numerals (a condition
query's ``named_classes``).

"class IV", "ISN/RPS IV-G (A)", "WHO class III+V", "class 4": the classes a text names after the
word "class" or a classification name (ISN/RPS, WHO, with an optional year), with the
subclass and activity marks those classifications add. Pure: no I/O, no state.
"""

from __future__ import annotations

import re

ROMAN = ("I", "II", "III", "IV", "V", "VI")
_ARABIC = {str(i + 1): r for i, r in enumerate(ROMAN)}

# One class: a Roman (longest first) or Arabic numeral not glued to further letters or digits,
# then an optional ISN/RPS subclass: -G / -S (IV-G, III-S) and activity (A), (C), (A/C).
_NUM = r"(VI|IV|V|III|II|I|[1-6])(?![A-Za-z0-9])"
_SUB = r"(?:\s*-?\s*[GS](?![A-Za-z0-9]))?(?:\s*\(\s*(?:A|C|A\s*/\s*C)\s*\))?"
_SEP = r"\s*(?:\+|/|,|&|\band\b|\bplus\b)\s*(?:class\s*)?"
# What introduces a class: the word "class", or a classification name (ISN/RPS, WHO, with an
# optional year such as "ISN/RPS 2003"), optionally followed by "class".
_PREFIX = (
    r"(?:\bclass(?:es)?\b|(?<![A-Za-z])(?:ISN\s*/\s*RPS|ISN|RPS|WHO)(?![A-Za-z])"
    r"(?:\s*\(?\s*(?:19|20)\d\d\s*\)?)?(?:\s*class(?:es)?\b)?)"
)
_LIST = re.compile(
    _PREFIX + r"\s*[:#]?\s*" + _NUM + _SUB + r"((?:" + _SEP + _NUM + _SUB + r")*)",
    re.IGNORECASE,
)
_ONE = re.compile(_NUM, re.IGNORECASE)


def named_classes(text: str | None) -> frozenset[str]:
    """Roman numerals of every class the text names.

    >>> sorted(named_classes("Lupus nephritis, ISN/RPS class III+V"))
    ['III', 'V']
    >>> sorted(named_classes("SLE glomerulonephritis syndrome, WHO class VI"))
    ['VI']
    >>> sorted(named_classes("ISN/RPS IV-G (A)"))
    ['IV']
    >>> sorted(named_classes("lupus nephritis"))
    []
    """
    if not text:
        return frozenset()
    out: set[str] = set()
    for m in _LIST.finditer(text):
        out.add(_canon(m.group(1)))
        for extra in _ONE.finditer(_strip_subclasses(m.group(2) or "")):
            out.add(_canon(extra.group(1)))
    return frozenset(out)


def names_class_in(text: str | None, classes: list[str] | tuple[str, ...] | frozenset[str]) -> bool:
    """Whether the text names one of ``classes`` (Roman numerals)."""
    wanted = {c.upper() for c in classes}
    return not named_classes(text).isdisjoint(wanted)


def _canon(num: str) -> str:
    return _ARABIC.get(num, num.upper())


def _strip_subclasses(tail: str) -> str:
    """The separator tail without subclass letters and activity marks (so "G", "A" are not read
    as numerals)."""
    tail = re.sub(r"\(\s*(?:A|C|A\s*/\s*C)\s*\)", " ", tail, flags=re.IGNORECASE)
    tail = re.sub(r"(?<=[IVX1-6])\s*-?\s*[GS](?![A-Za-z0-9])", " ", tail, flags=re.IGNORECASE)
    return re.sub(r"\bclass\b|\band\b|\bplus\b", " ", tail, flags=re.IGNORECASE)
