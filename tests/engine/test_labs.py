"""Lab result interpretation: precedence rules, titers, comparators, words."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria import LabRules
from fhir_cohort.engine.evaluators.common import Context
from fhir_cohort.engine.labs import (
    EQUIVOCAL,
    NEGATIVE,
    POSITIVE,
    Number,
    compare_to_high,
    interpret,
    match_words,
    parse_number,
    parse_reference_text,
    parse_titer,
)
from fhir_cohort.engine.tables import OBSERVATION_COLUMNS

Row = namedtuple("Row", OBSERVATION_COLUMNS)  # type: ignore[misc]
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SCT = "http://snomed.info/sct"


def row(**kw):
    base = dict.fromkeys(OBSERVATION_COLUMNS)
    base.update(value_type="none", value_codes=(), interpretation_codes=())
    base.update(kw)
    return Row(**base)


@pytest.fixture(scope="module")
def ctx(terminology):
    return Context(terminology, dt.date(2025, 6, 30))


RULES = LabRules()


@pytest.mark.parametrize(
    ("kw", "expected", "rule"),
    [
        ({"interpretation_codes": (f"{V3}|POS",)}, POSITIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|H",)}, POSITIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|HH",)}, POSITIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|AA",)}, POSITIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|NEG",)}, NEGATIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|N",)}, NEGATIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|L",)}, NEGATIVE, "interpretation"),
        ({"interpretation_codes": (f"{V3}|IND",)}, EQUIVOCAL, "interpretation"),
        ({"interpretation_codes": (f"{V3}|E",)}, EQUIVOCAL, "interpretation"),
        # interpretation beats everything else
        (
            {
                "interpretation_codes": (f"{V3}|NEG",),
                "value_type": "string",
                "value_string": "positive",
            },
            NEGATIVE,
            "interpretation",
        ),
        (
            {
                "interpretation_codes": (f"{V3}|N",),
                "value_type": "quantity",
                "value_number": 500.0,
                "ref_high": 10.0,
            },
            NEGATIVE,
            "interpretation",
        ),
        ({"value_type": "codeable", "value_codes": (f"{SCT}|10828004",)}, POSITIVE, "coded value"),
        ({"value_type": "codeable", "value_codes": (f"{SCT}|260385009",)}, NEGATIVE, "coded value"),
        # coded value beats a string
        (
            {
                "value_type": "codeable",
                "value_codes": (f"{SCT}|260385009",),
                "value_string": "positive",
            },
            NEGATIVE,
            "coded value",
        ),
        ({"value_type": "string", "value_string": "Detected"}, POSITIVE, "string"),
        ({"value_type": "string", "value_string": "NOT DETECTED"}, NEGATIVE, "string"),
        ({"value_type": "string", "value_string": "non-reactive"}, NEGATIVE, "string"),
        ({"value_type": "string", "value_string": "Reactive"}, POSITIVE, "string"),
        ({"value_type": "string", "value_string": "absent"}, NEGATIVE, "string"),
        ({"value_type": "string", "value_string": "borderline"}, EQUIVOCAL, "string"),
        ({"value_type": "string", "value_string": "Indeterminate."}, EQUIVOCAL, "string"),
        ({"value_type": "quantity", "value_number": 45.0, "ref_high": 30.0}, POSITIVE, "reference"),
        ({"value_type": "quantity", "value_number": 30.0, "ref_high": 30.0}, NEGATIVE, "reference"),
        ({"value_type": "quantity", "value_number": 12.0, "ref_high": 30.0}, NEGATIVE, "reference"),
        (
            {
                "value_type": "quantity",
                "value_number": 300.0,
                "value_comparator": ">",
                "ref_high": 300.0,
            },
            POSITIVE,
            "reference",
        ),
        (
            {
                "value_type": "quantity",
                "value_number": 10.0,
                "value_comparator": "<",
                "ref_high": 30.0,
            },
            NEGATIVE,
            "reference",
        ),
        ({"value_type": "quantity", "value_number": 45.0}, EQUIVOCAL, "no reference range"),
        (
            {
                "value_type": "ratio",
                "ratio_numerator": 1.0,
                "ratio_denominator": 320.0,
                "ref_high_string": "1:80",
            },
            POSITIVE,
            "reference",
        ),
        (
            {
                "value_type": "ratio",
                "ratio_numerator": 1.0,
                "ratio_denominator": 40.0,
                "ref_high_string": "<1:80",
            },
            NEGATIVE,
            "reference",
        ),
        (
            {
                "value_type": "ratio",
                "ratio_numerator": 1.0,
                "ratio_denominator": 80.0,
                "ref_high_string": "1:80",
            },
            NEGATIVE,
            "reference",
        ),
        (
            {
                "value_type": "ratio",
                "ratio_numerator": 1.0,
                "ratio_denominator": 80.0,
                "ref_high_string": "<1:80",
            },
            NEGATIVE,
            "reference",
        ),  # v1.1: "<1:80" gives high 1:80
        (
            {
                "value_type": "ratio",
                "ratio_numerator": 1.0,
                "ratio_denominator": 320.0,
                "ref_high": 80.0,
            },
            POSITIVE,
            "reference",
        ),  # high as a Quantity
        (
            {"value_type": "string", "value_string": "1:320", "ref_high_string": "<1:80"},
            POSITIVE,
            "reference",
        ),
        (
            {"value_type": "string", "value_string": ">1:640", "ref_high_string": "1:80"},
            POSITIVE,
            "reference",
        ),
        ({"value_type": "string", "value_string": "1:320"}, EQUIVOCAL, "no reference range"),
        ({"value_type": "string", "value_string": "see comment"}, EQUIVOCAL, "none"),
        ({"value_type": "none"}, EQUIVOCAL, "none"),
    ],
)
def test_precedence(ctx, kw, expected, rule):
    reading = interpret(row(**kw), RULES, ctx)
    assert (reading.result, reading.rule) == (expected, rule)


@given(
    st.integers(1, 5),
    st.integers(1, 100000),
    st.sampled_from(["", ">", "<", ">=", "<="]),
    st.sampled_from(["", " "]),
)
def test_parse_titer_roundtrip(num, dilution, comp, space):
    t = parse_titer(f"{comp}{num}{space}:{space}{dilution}")
    assert t is not None
    assert t.value == pytest.approx(dilution / num)
    assert t.comparator == (comp or None)
    assert t.titer


@given(st.text(alphabet="abcxyz -", max_size=12))
def test_parse_titer_rejects_words(text):
    assert parse_titer(text) is None


@given(st.floats(0, 1e6, allow_nan=False), st.floats(0, 1e6, allow_nan=False))
def test_plain_comparison_is_a_strict_above(v, h):
    got = compare_to_high(Number(v, None, False), Number(h, None, False))
    assert got == (POSITIVE if v > h else NEGATIVE)


@given(st.integers(1, 10000), st.integers(1, 10000))
def test_titer_orders_by_dilution(a, h):
    got = compare_to_high(parse_number(f"1:{a}"), parse_number(f"1:{h}"))
    assert got == (POSITIVE if a > h else NEGATIVE)


def test_words_are_data():
    rules = LabRules(positive_strings=["pos"], negative_strings=["neg"], equivocal_strings=[])
    assert match_words("POS", rules) == POSITIVE
    assert match_words("positive", rules) is None
    assert match_words("neg.", rules) == NEGATIVE


# --------------------------------------------------------------------------- spec v1.1 (labs)

V2 = "http://terminology.hl7.org/CodeSystem/v2-0078"
V2_SPELLINGS = (
    V2,
    "http://hl7.org/fhir/v2/0078",
    "urn:oid:2.16.840.1.113883.12.78",
    "https://terminology.hl7.org/CodeSystem/v2-0078/",
)
V3_SPELLINGS = (
    V3,
    "http://hl7.org/fhir/v3/ObservationInterpretation",
    "urn:oid:2.16.840.1.113883.5.83",
)
# Spec rule 1, by flag.
RULE_1 = {"POS": POSITIVE, "DET": POSITIVE, "H": POSITIVE, "HH": POSITIVE, "HU": POSITIVE,
          "A": POSITIVE, "AA": POSITIVE, "NEG": NEGATIVE, "ND": NEGATIVE, "N": NEGATIVE,
          "L": NEGATIVE, "IND": EQUIVOCAL, "E": EQUIVOCAL}  # fmt: skip


@pytest.mark.parametrize("system", V2_SPELLINGS + V3_SPELLINGS)
@pytest.mark.parametrize(("flag", "expected"), sorted(RULE_1.items()))
def test_interpretation_flags_in_v2_and_v3(ctx, system, flag, expected):
    if flag == "E" and system in V2_SPELLINGS:
        pytest.skip("HL7 v2 table 0078 has no E (docs/value_sets.md)")
    reading = interpret(row(interpretation_codes=(f"{system}|{flag}",)), RULES, ctx)
    assert (reading.result, reading.rule) == (expected, "interpretation")


DEGREES = (
    "weakly",
    "weak",
    "low",
    "low-level",
    "high",
    "strongly",
    "strong",
    "moderately",
    "mildly",
    "slightly",
    "faintly",
    "very weakly",
)


@pytest.mark.parametrize("degree", DEGREES)
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (RULES.positive_strings, POSITIVE),
        (RULES.negative_strings, NEGATIVE),
    ],
)
def test_degree_words_read_as_the_word_after_them(ctx, degree, words, expected):
    for word in words:
        for text in (f"{degree} {word}", f"{degree.upper()} {word.title()}.", f"{degree}-{word}"):
            reading = interpret(row(value_type="string", value_string=text), RULES, ctx)
            assert reading.result == expected, text


@pytest.mark.parametrize("text", ["trace", "Trace", "TRACE.", "trace positive", "trace amount"])
def test_trace_is_equivocal(ctx, text):
    assert interpret(row(value_type="string", value_string=text), RULES, ctx).result == EQUIVOCAL


@pytest.mark.parametrize(("text", "value", "comparator", "titer"), [
    ("<30 IU/mL", 30.0, "<", False),
    ("< 30", 30.0, "<", False),
    ("<=30 U/mL", 30.0, "<=", False),
    ("\u226430", 30.0, "<=", False),
    ("0-30", 30.0, None, False),
    ("0 - 30 IU/mL", 30.0, None, False),
    ("0.0-7.9 U/mL", 7.9, None, False),
    ("0 to 30", 30.0, None, False),
    ("<1:80", 80.0, "<", True),
    ("< 1:40", 40.0, "<", True),
    ("1:80", 80.0, None, True),
    ("Negative: <20 Units", 20.0, "<", False),
    ("Normal <1:40", 40.0, "<", True),
    ("30 IU/mL", 30.0, None, False),
])  # fmt: skip
def test_parse_reference_text_examples(text, value, comparator, titer):
    assert parse_reference_text(text) == Number(value, comparator, titer)


@pytest.mark.parametrize(
    "text",
    [">60", "normal", "", "negative", "30-0", "0-1:80", "Negative <20; Positive >30", ">=1:40"],
)
def test_parse_reference_text_gives_no_high(text):
    assert parse_reference_text(text) is None


_UNITS = st.sampled_from(["", " IU/mL", " U/mL", "IU/mL", " AU/mL", " mg/dL", " %", " {titer}"])
_SP = st.sampled_from(["", " ", "  "])


@given(st.integers(0, 10**6), st.integers(0, 99), _UNITS, _SP, st.sampled_from(["<", "<="]))
def test_reference_text_below_gives_its_number(whole, frac, unit, sp, comp):
    x = float(f"{whole}.{frac}")
    assert parse_reference_text(f"{comp}{sp}{whole}.{frac}{unit}") == Number(x, comp, False)


@given(
    st.integers(0, 1000),
    st.integers(0, 1000),
    _UNITS,
    _SP,
    st.sampled_from(["-", " - ", "\u2013", " to "]),
)
def test_reference_text_range_gives_its_upper_end(a, b, unit, sp, dash):
    lo, hi = min(a, b), max(a, b)
    got = parse_reference_text(f"{lo}{unit}{dash}{sp}{hi}{unit}")
    assert got == Number(float(hi), None, False)


@given(st.integers(1, 100000), _SP, st.sampled_from(["<", "<=", ""]))
def test_reference_text_titer_gives_its_dilution(dilution, sp, comp):
    got = parse_reference_text(f"{comp}{sp}1{sp}:{sp}{dilution}")
    assert got == Number(float(dilution), comp or None, True)


def _spec_comparator_oracle(comp: str | None, x: float, high: float) -> str:
    """Spec rule 4 + v1.1 'Comparators', written out case by case."""
    if comp is None:
        return POSITIVE if x > high else NEGATIVE
    if comp == ">" and x >= high:
        return POSITIVE
    if comp == ">=" and x > high:
        return POSITIVE
    if comp in ("<", "<=") and x <= high:
        return NEGATIVE
    return EQUIVOCAL


_FLOATS = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


@given(
    st.sampled_from([None, ">", ">=", "<", "<="]),
    _FLOATS,
    _FLOATS,
    st.sampled_from([None, "<", "<="]),
    st.booleans(),
)
def test_comparator_table_is_the_spec(comp, x, high, high_comp, titer):
    got = compare_to_high(Number(x, comp, titer), Number(high, high_comp, titer))
    assert got == _spec_comparator_oracle(comp, x, high)


@pytest.mark.parametrize("comp", [None, ">", ">=", "<", "<="])
@pytest.mark.parametrize("delta", [-1.0, 0.0, 1.0])
def test_comparator_table_at_the_boundary(comp, delta):
    got = compare_to_high(Number(30.0 + delta, comp, False), Number(30.0, None, False))
    assert got == _spec_comparator_oracle(comp, 30.0 + delta, 30.0)


@pytest.mark.parametrize(("kw", "expected", "rule"), [
    # reference range given only as text (v1.1)
    ({"value_type": "quantity", "value_number": 45.0, "ref_high_string": "<30 IU/mL"},
     POSITIVE, "reference"),
    ({"value_type": "quantity", "value_number": 30.0, "ref_high_string": "<30 IU/mL"},
     NEGATIVE, "reference"),
    ({"value_type": "quantity", "value_number": 12.0, "ref_high_string": "0-30"},
     NEGATIVE, "reference"),
    ({"value_type": "quantity", "value_number": 31.0, "ref_high_string": "0-30"},
     POSITIVE, "reference"),
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 160.0,
      "ref_high_string": "< 1:40"}, POSITIVE, "reference"),
    ({"value_type": "quantity", "value_number": 200.0, "value_comparator": ">",
      "ref_high_string": "<30"}, POSITIVE, "reference"),
    ({"value_type": "quantity", "value_number": 10.0, "value_comparator": ">",
      "ref_high_string": "<30"}, EQUIVOCAL, "reference"),
    ({"value_type": "quantity", "value_number": 30.0, "value_comparator": ">=",
      "ref_high_string": "<30"}, EQUIVOCAL, "reference"),
    ({"value_type": "quantity", "value_number": 50.0, "value_comparator": "<",
      "ref_high_string": "0-30"}, EQUIVOCAL, "reference"),
    ({"value_type": "string", "value_string": "<10", "ref_high_string": "0-30"},
     NEGATIVE, "reference"),
    # a titer against a reference in other units has no common scale
    ({"value_type": "string", "value_string": "1:320", "ref_high_string": "<30 IU/mL"},
     EQUIVOCAL, "reference in other units"),
    ({"value_type": "quantity", "value_number": 45.0, "ref_high_string": "normal"},
     EQUIVOCAL, "no reference range"),
    # valueCodeableConcept with text only reads like a valueString (v1.1)
    ({"value_type": "codeable", "value_string": "Weakly positive"}, POSITIVE, "string"),
    ({"value_type": "codeable", "value_string": "NEGATIVE"}, NEGATIVE, "string"),
    ({"value_type": "codeable", "value_string": "1:640", "ref_high_string": "<1:80"},
     POSITIVE, "reference"),
    ({"value_type": "codeable", "value_string": "trace"}, EQUIVOCAL, "string"),
])  # fmt: skip
def test_v11_readings(ctx, kw, expected, rule):
    reading = interpret(row(**kw), RULES, ctx)
    assert (reading.result, reading.rule) == (expected, rule)


# ----------------------------------------------------------- whole resources through flatten


def _read(terminology, ctx, resource):
    from fhir_cohort.engine.flatten import Flattener

    f = Flattener(terminology.codes(["autoantibodies"]), ())
    out = []
    for table, r in f.flatten(resource, "x:1"):
        assert table == "observations"
        o = Row(*r)
        out.append((o.code, interpret(o, RULES, ctx).result))
    return out


def _panel(component: dict) -> dict:
    return {"resourceType": "Observation", "id": "ena", "status": "final",
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2025-05-01",
            "code": {"text": "ENA panel"}, "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "5130-2"}]},
                 "valueString": "positive"},  # not a value set test: gives no row
                component]}  # fmt: skip


@pytest.mark.parametrize(("component", "expected"), [
    ({"valueString": "Weakly positive"}, POSITIVE),
    ({"valueQuantity": {"value": 45, "unit": "AU/mL"}, "referenceRange": [{"text": "<20 AU/mL"}]},
     POSITIVE),
    ({"valueQuantity": {"value": 12}, "referenceRange": [{"text": "Negative: <20"}]}, NEGATIVE),
    ({"valueQuantity": {"value": 12}, "referenceRange": [{"low": {"value": 0}},
                                                         {"high": {"value": 20}}]}, NEGATIVE),
    ({"valueCodeableConcept": {"text": "Detected"}}, POSITIVE),
    ({"valueCodeableConcept": {"coding": [{"display": "Not detected"}]}}, NEGATIVE),
    ({"valueQuantity": {"value": 3}, "interpretation": [
        {"coding": [{"system": "http://hl7.org/fhir/v2/0078", "code": "H"}]}]}, POSITIVE),
    ({"valueString": "trace"}, EQUIVOCAL),
])  # fmt: skip
def test_panel_component_counts_as_its_test(terminology, ctx, component, expected):
    """v1.1: a panel component carrying a test of the value set is that test's result."""
    vs = terminology.value_set("autoantibodies")
    for system, code in sorted(vs.concepts):
        comp = {"code": {"coding": [{"system": system, "code": code}]}, **component}
        assert _read(terminology, ctx, _panel(comp)) == [(code, expected)], code


# ----------------------------------------------------------------- the I4 criterion, end to end


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"interpretation": ("http://hl7.org/fhir/v2/0078|POS",)}, "met"),
        ({"interpretation": ("urn:oid:2.16.840.1.113883.12.78|NEG",)}, "not_met"),
        ({"value_type": "string", "value_string": "Low positive"}, "met"),
        ({"value_type": "string", "value_string": "trace"}, "unknown"),
        ({"value_type": "quantity", "value_number": 45.0, "ref_high_string": "<30 IU/mL"}, "met"),
        ({"value_type": "quantity", "value_number": 12.0, "ref_high_string": "0-30"}, "not_met"),
        ({"value_type": "quantity", "value_number": 200.0, "value_comparator": ">",
          "ref_high_string": "<30"}, "met"),
        ({"value_type": "quantity", "value_number": 10.0, "value_comparator": ">",
          "ref_high_string": "<30"}, "unknown"),
        ({"value_type": "codeable", "value_string": "Weakly positive"}, "met"),
        ({"value_type": "ratio", "ratio": (1.0, 80.0), "ref_high_string": "<1:80"}, "not_met"),
    ],
)  # fmt: skip
def test_autoantibody_criterion_v11(run, b, kw, expected):
    answer, _ = run.answer("autoantibody", observations=[b.obs(b.ANTI_DSDNA, "2025-05-01", **kw)])
    assert answer == expected
