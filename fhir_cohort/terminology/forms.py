"""Is a medication used non-systemically (topical, eye, ear, nose, inhaled, rectal, mouth)?

Codes are checked against the value sets `non_systemic_routes` / `non_systemic_forms`; free text
(route and dose-form codings' displays and text, RxNorm product names such as "hydrocortisone 1%
Topical Cream") by the words below. The words cover every display of those value sets (SNOMED CT
incl. dm+d, HL7 v3, EDQM; a test checks it) and the RxNorm dose-form names.
"""

from __future__ import annotations

import re

# Words in the criteria-file syntax: whole words or phrases, a trailing * matches any word
# ending. Transdermal, sublingual, buccal and vaginal are deliberately absent (systemic, or not in
# the spec's list); "cutaneous" never matches inside "subcutaneous" (word boundaries).
NON_SYSTEMIC_WORDS: tuple[str, ...] = (
    # skin
    "topical*",
    "cutaneous",
    "dermal spray",
    "skin",
    "scalp",
    "hair",
    "nail",
    "shampoo",
    "cream",
    "ointment",
    "lotion",
    "gel",
    "foam",
    "paste",
    "liniment",
    "collodion",
    "poultice",
    "paint",
    "plaster",
    "dressing",
    "stick",
    "bath",
    "wash",
    "epilesional",
    "perianal",
    "perineal",
    "aerosol",
    # eye
    "ophthalmic",
    "ocular",
    "conjunctival",
    "subconjunctival",
    "intraocular",
    "intravitreal",
    "retrobulbar",
    "peribulbar",
    "intracameral",
    "lacrimal",
    "eye",
    "eyes",
    "eye drop*",
    # ear
    "otic",
    "auricular",
    "ear",
    "ears",
    "ear drop*",
    "transtympanic",
    # nose
    "nasal",
    "intranasal",
    "nose",
    "nostril*",
    "endosinusial",
    # lungs
    "inhal*",
    "nebuli*",
    "respiratory",
    "endotracheopulmonary",
    "dry powder inhaler",
    "metered dose inhaler",
    # rectum
    "rectal",
    "per rectum",
    "rectum",
    "enema",
    "suppositor*",
    # mouth
    "oral paste",
    "oromucosal",
    "oropharyngeal",
    "mouthwash",
    "mouth rinse",
    "rinse",
    "gargle",
    "dental",
    "gingival",
    "periodontal",
    "toothpaste",
)


def words_pattern(words: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """Compile criteria-file words (trailing * = any word ending) to one case-free pattern."""

    def one(w: str) -> str:
        w = w.strip().lower()
        return re.escape(w[:-1]) + r"[a-z]*" if w.endswith("*") else re.escape(w)

    alts = sorted((one(w) for w in words if w.strip()), key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(alts) + r")(?![a-z])", re.IGNORECASE)


_NON_SYSTEMIC_RE = words_pattern(NON_SYSTEMIC_WORDS)


def is_non_systemic_text(text: str | None) -> bool:
    """True when route / dose-form / product-name text names a local route or dose form.

    >>> is_non_systemic_text("hydrocortisone 10 MG/ML Topical Cream")
    True
    >>> is_non_systemic_text("budesonide 0.25 MG/ML Inhalation Suspension")
    True
    >>> is_non_systemic_text("Ocular use")
    True
    >>> is_non_systemic_text("prednisone 5 MG Oral Tablet")
    False
    >>> is_non_systemic_text("Injection, subcutaneous")
    False
    """
    if not text:
        return False
    return _NON_SYSTEMIC_RE.search(text) is not None
