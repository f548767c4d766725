"""NDC spellings: one canonical 11-digit form (5-4-2 without hyphens) for every spelling.

FDA publishes 10-digit NDCs in three hyphenated layouts (labeler-product-package 4-4-2, 5-3-2,
5-4-1); claims and RxNorm use the 11-digit 5-4-2 form, made by a leading zero on the short
segment. A 10-digit NDC without hyphens cannot be converted (the short segment is unknown).
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"\d+")
# Segment lengths of the published 10-digit layouts and the 11-digit layout.
_LAYOUTS: frozenset[tuple[int, int, int]] = frozenset({(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2)})


def normalize_ndc(code: str | None) -> str | None:
    """The 11-digit NDC for a hyphenated 10/11-digit or a plain 11-digit spelling, else None.

    >>> normalize_ndc("0310-3040-00")
    '00310304000'
    >>> normalize_ndc("68462-502-01")
    '68462050201'
    >>> normalize_ndc("12345-6789-1")
    '12345678901'
    >>> normalize_ndc(" 00310304000 ")
    '00310304000'
    >>> normalize_ndc("0310304000") is None
    True
    """
    if code is None:
        return None
    text = "".join(code.split())
    if not text:
        return None
    if text.isdigit():
        return text if len(text) == 11 else None
    parts = text.split("-")
    if len(parts) != 3 or not all(_DIGITS.fullmatch(p) for p in parts):
        return None
    lengths = (len(parts[0]), len(parts[1]), len(parts[2]))
    if lengths not in _LAYOUTS:
        return None
    return parts[0].zfill(5) + parts[1].zfill(4) + parts[2].zfill(2)


def ndc_spellings(ndc11: str) -> list[str]:
    """Spellings of an 11-digit NDC seen in data: plain, 5-4-2 and its 10-digit layout(s).

    A 10-digit layout exists when the segment it shortens starts with a zero.

    >>> ndc_spellings("00310304000")
    ['00310304000', '00310-3040-00', '0310-3040-00', '00310-3040-0']
    """
    if len(ndc11) != 11 or not ndc11.isdigit():
        raise ValueError("not an 11-digit NDC")
    lab, prod, pack = ndc11[:5], ndc11[5:9], ndc11[9:]
    out = [ndc11, f"{lab}-{prod}-{pack}"]
    if lab[0] == "0":
        out.append(f"{lab[1:]}-{prod}-{pack}")
    if prod[0] == "0":
        out.append(f"{lab}-{prod[1:]}-{pack}")
    if pack[0] == "0":
        out.append(f"{lab}-{prod}-{pack[1:]}")
    return out
