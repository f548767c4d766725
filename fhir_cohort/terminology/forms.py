"""Is a medication used non-systemically (topical, eye, ear, nose, inhaled, rectal, mouth)?

Codes are checked against the value sets `non_systemic_routes` / `non_systemic_forms`; free text
(route text, dose form text, RxNorm product names such as "hydrocortisone 1% Topical Cream") by
dose-form words, because public SNOMED / RxNorm dose-form ids could not be verified.
"""

from __future__ import annotations

import re

# Word patterns of RxNorm dose forms and route words that mean local (non-systemic) use.
# Transdermal patches are systemic and deliberately absent.
_NON_SYSTEMIC_WORDS: tuple[str, ...] = (
    r"topical",
    r"cutaneous",
    r"dermal spray",
    r"cream",
    r"ointment",
    r"lotion",
    r"shampoo",
    r"ophthalmic",
    r"eye drops?",
    r"otic",
    r"ear drops?",
    r"nasal",
    r"intranasal",
    r"inhal\w*",  # inhalation, inhaled, inhaler, inhalant
    r"nebuli[sz]\w*",
    r"dry powder inhaler",
    r"metered dose inhaler",
    r"respiratory",
    r"rectal",
    r"per rectum",
    r"enema",
    r"suppositor\w*",
    r"oral paste",
    r"oromucosal",
    r"mouthwash",
    r"dental",
    r"gingival",
    r"oropharyngeal",
)
_NON_SYSTEMIC_RE = re.compile(
    r"(?<![a-z])(?:" + "|".join(_NON_SYSTEMIC_WORDS) + r")(?![a-z])", re.IGNORECASE
)


def is_non_systemic_text(text: str | None) -> bool:
    """True when route / dose-form / product-name text names a local route or dose form.

    >>> is_non_systemic_text("hydrocortisone 10 MG/ML Topical Cream")
    True
    >>> is_non_systemic_text("budesonide 0.25 MG/ML Inhalation Suspension")
    True
    >>> is_non_systemic_text("prednisone 5 MG Oral Tablet")
    False
    """
    if not text:
        return False
    return _NON_SYSTEMIC_RE.search(text) is not None
