"""NDC spellings: every published layout normalises to the same 11 digits (property tests)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.terminology import normalize_code
from fhir_cohort.terminology.ndc import ndc_spellings, normalize_ndc

NDC = "http://hl7.org/fhir/sid/ndc"
digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


def _num(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


ndc11 = _num(11)


@given(ndc11)
def test_every_spelling_of_an_ndc_normalises_to_it(code: str) -> None:
    spellings = ndc_spellings(code)
    assert spellings[0] == code
    for s in spellings:
        assert normalize_ndc(s) == code
        assert normalize_ndc(f" {s}\t") == code
        assert normalize_code(NDC, s) == code
        assert normalize_code("urn:oid:2.16.840.1.113883.6.69", s) == code


@given(_num(4), _num(4), _num(2))
def test_4_4_2_pads_the_labeler(a: str, b: str, c: str) -> None:
    assert normalize_ndc(f"{a}-{b}-{c}") == f"0{a}{b}{c}"


@given(_num(5), _num(3), _num(2))
def test_5_3_2_pads_the_product(a: str, b: str, c: str) -> None:
    assert normalize_ndc(f"{a}-{b}-{c}") == f"{a}0{b}{c}"


@given(_num(5), _num(4), _num(1))
def test_5_4_1_pads_the_package(a: str, b: str, c: str) -> None:
    assert normalize_ndc(f"{a}-{b}-{c}") == f"{a}{b}0{c}"


@given(st.text(max_size=16))
def test_result_is_none_or_eleven_digits_and_idempotent(text: str) -> None:
    out = normalize_ndc(text)
    assert out is None or (len(out) == 11 and out.isdigit() and normalize_ndc(out) == out)


@given(st.integers(min_value=1, max_value=16).filter(lambda n: n != 11).flatmap(_num))
def test_unhyphenated_codes_other_than_11_digits_are_ambiguous(code: str) -> None:
    assert normalize_ndc(code) is None
    assert normalize_code(NDC, code) == code  # left as written, never guessed


@given(_num(3), _num(4), _num(2))
def test_unpublished_layouts_are_rejected(a: str, b: str, c: str) -> None:
    assert normalize_ndc(f"{a}-{b}-{c}") is None
    assert normalize_ndc(f"{a}{b}-{c}") is None
