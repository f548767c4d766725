"""Code system URIs and code normalisation: the one place that decides how codes compare.

Every code system the criteria read is listed once in :data:`SYSTEMS` with its canonical FHIR
URI, its HL7 OID and the other spellings real data uses (older HL7 URIs, bare names). Lookups
ignore case, surrounding blanks, a trailing slash and ``http`` vs ``https``; an OID matches as
``urn:oid:<oid>`` and bare (CDA style). ICD codes compare without dots and blanks, upper-cased.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from fhir_cohort.terminology.ndc import normalize_ndc

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO international edition
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v2-0078"
V3_DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
V2_ROUTE = "http://terminology.hl7.org/CodeSystem/v2-0162"
EDQM = "http://standardterms.edqm.eu"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"  # as VSAC expansions spell it


@dataclass(frozen=True)
class CodeSystem:
    """One code system: canonical URI, HL7 OIDs and other spellings seen in real data."""

    name: str
    uri: str
    oids: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    icd: bool = False  # codes compare without dots/blanks, upper-cased


# OIDs as HL7's OID registry and the FHIR NamingSystems give them (docs/architecture.md).
SYSTEMS: tuple[CodeSystem, ...] = (
    CodeSystem("SNOMED CT", SNOMED, ("2.16.840.1.113883.6.96",),
               ("snomed", "snomedct", "snomed-ct")),
    CodeSystem("ICD-10-CM", ICD10CM, ("2.16.840.1.113883.6.90",),
               ("icd-10-cm", "icd10cm"), icd=True),
    CodeSystem("ICD-10 (WHO)", ICD10, ("2.16.840.1.113883.6.3",),
               ("icd-10", "icd10", "http://id.who.int/icd/release/10",
                "http://id.who.int/icd/release/10/2019"),
               icd=True),
    CodeSystem("ICD-9-CM", ICD9CM, ("2.16.840.1.113883.6.103",),
               ("http://hl7.org/fhir/sid/icd-9-cm/diagnosis", "icd-9-cm", "icd9cm"), icd=True),
    CodeSystem("LOINC", LOINC, ("2.16.840.1.113883.6.1",), ("loinc",)),
    CodeSystem("RxNorm", RXNORM, ("2.16.840.1.113883.6.88",), ("rxnorm",)),
    CodeSystem("NDC", NDC, ("2.16.840.1.113883.6.69",), ("ndc",)),
    CodeSystem("v3 ObservationInterpretation", V3_INTERPRETATION, ("2.16.840.1.113883.5.83",),
               ("http://hl7.org/fhir/v3/ObservationInterpretation",)),
    CodeSystem("v2 table 0078 (interpretation)", V2_INTERPRETATION, ("2.16.840.1.113883.12.78",),
               ("http://hl7.org/fhir/v2/0078", "hl70078")),
    CodeSystem("v3 orderableDrugForm", V3_DRUG_FORM, ("2.16.840.1.113883.5.85",),
               ("http://hl7.org/fhir/v3/orderableDrugForm",)),
    CodeSystem("v3 RouteOfAdministration", V3_ROUTE, ("2.16.840.1.113883.5.112",),
               ("http://hl7.org/fhir/v3/RouteOfAdministration",)),
    CodeSystem("v2 table 0162 (route)", V2_ROUTE, ("2.16.840.1.113883.12.162",),
               ("http://hl7.org/fhir/v2/0162", "hl70162")),
    CodeSystem("EDQM Standard Terms", EDQM, ("0.4.0.127.0.16.1.1.2.1",),
               ("https://standardterms.edqm.eu", "edqm")),
    # Procedure systems (delivery, dialysis). URIs and OIDs as US Core's list of externally
    # published code systems and the VSAC expansions in cqframework's eCQM content give them.
    CodeSystem("ICD-10-PCS", ICD10PCS, ("2.16.840.1.113883.6.4",), ("icd-10-pcs", "icd10pcs")),
    CodeSystem("CPT", CPT, ("2.16.840.1.113883.6.12",), ("cpt",)),
    CodeSystem("HCPCS Level II", HCPCS, ("2.16.840.1.113883.6.285", "2.16.840.1.113883.6.14"),
               ("http://terminology.hl7.org/CodeSystem/HCPCS",
                "https://bluebutton.cms.gov/resources/codesystem/hcpcs", "hcpcs")),
)  # fmt: skip

_ICD = frozenset(s.uri for s in SYSTEMS if s.icd)
ICD_SYSTEMS: frozenset[str] = _ICD


def _key(uri: str) -> str:
    """Lookup key: lower case, no blanks around, no trailing slash, http for https."""
    key = uri.strip().rstrip("/").lower()
    if key.startswith("https://"):
        key = "http://" + key[8:]
    return key


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for s in SYSTEMS:
        for spelling in (s.uri, *s.aliases):
            out[_key(spelling)] = s.uri
        for oid in s.oids:
            out[_key(f"urn:oid:{oid}")] = s.uri
            out[_key(oid)] = s.uri
    return out


_ALIASES: dict[str, str] = _aliases()
# A SNOMED CT edition URI ("http://snomed.info/sct/999000011000000103", UK with dm+d) sent as the
# system: FHIR puts the edition in Coding.version, but the codes are SNOMED CT codes.
_SNOMED_EDITION = re.compile(r"http://snomed\.info/sct/\d+(?:/version/\d+)?")


@functools.cache
def search_spellings(uri: str) -> tuple[str, ...]:
    """How servers may have stored a system: its canonical URI and ``urn:oid`` per HL7 OID."""
    for s in SYSTEMS:
        if s.uri == uri:
            return (s.uri, *(f"urn:oid:{oid}" for oid in s.oids))
    return (uri,)


def spellings(system: CodeSystem) -> list[str]:
    """Standard spellings of a system: URI (http, https, trailing slash) and urn:oid per OID."""
    out = [system.uri, system.uri + "/"]
    if system.uri.startswith("http://"):
        out.append("https://" + system.uri[7:])
    out += [f"urn:oid:{oid}" for oid in system.oids]
    return out


def normalize_system(uri: str | None) -> str:
    """Map common alternative spellings of a code system URI to the canonical one.

    >>> normalize_system("urn:oid:2.16.840.1.113883.6.96")
    'http://snomed.info/sct'
    >>> normalize_system("https://www.nlm.nih.gov/research/umls/rxnorm/")
    'http://www.nlm.nih.gov/research/umls/rxnorm'
    >>> normalize_system("http://hl7.org/fhir/v2/0078")
    'http://terminology.hl7.org/CodeSystem/v2-0078'
    """
    if not uri:
        return ""
    key = _key(uri)
    hit = _ALIASES.get(key)
    if hit is not None:
        return hit
    if _SNOMED_EDITION.fullmatch(key):
        return SNOMED
    stripped = uri.strip()
    return stripped.rstrip("/") if key.startswith("http") else stripped


def normalize_code(system: str | None, code: str | None) -> str:
    """Normalise a code for comparison: ICD without dots and blanks, upper-cased; others stripped.

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
    if normalize_system(system) == NDC:  # every NDC layout -> 11 digits (terminology/ndc.py)
        return normalize_ndc(code) or code.strip()
    return code.strip()
