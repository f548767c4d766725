"""Spec v1.1 'Code systems' through the criteria: WHO ICD-10 and OID spellings decide I2."""

from __future__ import annotations

import pytest

WHO = "http://hl7.org/fhir/sid/icd-10"
WHO_OID = "urn:oid:2.16.840.1.113883.6.3"
CM_OID = "urn:oid:2.16.840.1.113883.6.90"


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (WHO, "M32.1", "met"),  # SLE with organ involvement: every CM M32.1x is SLE
        (WHO_OID, "M321", "met"),
        (WHO, "m32.8", "met"),
        (WHO, "M32.9", "met"),
        (WHO, "M32.0", "not_met"),  # drug-induced
        (WHO, "L93.0", "not_met"),  # discoid
        (WHO, "M32", "unknown"),  # like ICD-10-CM M32: SLE of unspecified type (I2 spec)
        (CM_OID, "M32.14", "met"),
        ("https://hl7.org/fhir/sid/icd-10-cm/", "M32 .14", "met"),
        ("urn:oid:2.16.840.1.113883.6.96", "55464009", "met"),
    ],
)
def test_sle_in_every_spelling(run, b, system, code, expected):
    answer, _ = run.answer("sle", conditions=[b.cond(code, system=system)])
    assert answer == expected
