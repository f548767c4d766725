"""Code system URIs and code normalisation: the one place that decides how codes compare."""

from __future__ import annotations

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"  # delivery procedures (E3)
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"

_ICD = frozenset({ICD10CM, ICD9CM})

# Alternative spellings seen in real data -> canonical URI (keys compared lower-cased, no
# trailing slash).
_ALIASES: dict[str, str] = {
    "http://snomed.info/sct": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "snomed": SNOMED,
    "snomedct": SNOMED,
    "snomed-ct": SNOMED,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "icd-10-cm": ICD10CM,
    "icd10cm": ICD10CM,
    "http://www.cms.gov/medicare/coding/icd10": ICD10PCS,
    "urn:oid:2.16.840.1.113883.6.4": ICD10PCS,
    "http://hl7.org/fhir/sid/icd-9-cm": ICD9CM,
    "http://hl7.org/fhir/sid/icd-9-cm/diagnosis": ICD9CM,
    "urn:oid:2.16.840.1.113883.6.103": ICD9CM,
    "icd-9-cm": ICD9CM,
    "icd9cm": ICD9CM,
    "http://loinc.org": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "loinc": LOINC,
    "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "https://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "rxnorm": RXNORM,
    "http://hl7.org/fhir/sid/ndc": NDC,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
    "http://terminology.hl7.org/codesystem/v3-observationinterpretation": V3_INTERPRETATION,
    "http://hl7.org/fhir/v3/observationinterpretation": V3_INTERPRETATION,
    "urn:oid:2.16.840.1.113883.5.83": V3_INTERPRETATION,
    "http://terminology.hl7.org/codesystem/v3-orderabledrugform": V3_DRUG_FORM,
    "http://hl7.org/fhir/v3/orderabledrugform": V3_DRUG_FORM,
    "urn:oid:2.16.840.1.113883.5.85": V3_DRUG_FORM,
}


def normalize_system(uri: str | None) -> str:
    """Map common alternative spellings of a code system URI to the canonical one.

    >>> normalize_system("urn:oid:2.16.840.1.113883.6.96")
    'http://snomed.info/sct'
    >>> normalize_system("http://www.nlm.nih.gov/research/umls/rxnorm/")
    'http://www.nlm.nih.gov/research/umls/rxnorm'
    """
    if not uri:
        return ""
    stripped = uri.strip()
    key = stripped.rstrip("/").lower()
    return _ALIASES.get(key, stripped.rstrip("/") if key.startswith("http") else stripped)


def normalize_code(system: str | None, code: str | None) -> str:
    """Normalise a code for comparison: ICD-9/10-CM without dots and upper-cased, others stripped.

    >>> normalize_code("http://hl7.org/fhir/sid/icd-10-cm", " m32.14 ")
    'M3214'
    >>> normalize_code("http://snomed.info/sct", " 55464009 ")
    '55464009'
    """
    if code is None:
        return ""
    if normalize_system(system) in _ICD:
        # Drop every blank, not only the outer ones: ".\r0" must not leave a "\r0" behind.
        return "".join(code.split()).replace(".", "").upper()
    return code.strip()
