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


@pytest.mark.parametrize(("kw", "expected", "rule"), [
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
    ({"interpretation_codes": (f"{V3}|NEG",), "value_type": "string",
      "value_string": "positive"}, NEGATIVE, "interpretation"),
    ({"interpretation_codes": (f"{V3}|N",), "value_type": "quantity", "value_number": 500.0,
      "ref_high": 10.0}, NEGATIVE, "interpretation"),
    ({"value_type": "codeable", "value_codes": (f"{SCT}|10828004",)}, POSITIVE, "coded value"),
    ({"value_type": "codeable", "value_codes": (f"{SCT}|260385009",)}, NEGATIVE, "coded value"),
    # coded value beats a string
    ({"value_type": "codeable", "value_codes": (f"{SCT}|260385009",),
      "value_string": "positive"}, NEGATIVE, "coded value"),
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
    ({"value_type": "quantity", "value_number": 300.0, "value_comparator": ">",
      "ref_high": 300.0}, POSITIVE, "reference"),
    ({"value_type": "quantity", "value_number": 10.0, "value_comparator": "<",
      "ref_high": 30.0}, NEGATIVE, "reference"),
    ({"value_type": "quantity", "value_number": 45.0}, EQUIVOCAL, "no reference range"),
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 320.0,
      "ref_high_string": "1:80"}, POSITIVE, "reference"),
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 40.0,
      "ref_high_string": "<1:80"}, NEGATIVE, "reference"),
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 80.0,
      "ref_high_string": "1:80"}, NEGATIVE, "reference"),
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 80.0,
      "ref_high_string": "<1:80"}, POSITIVE, "reference"),   # normal is below 1:80
    ({"value_type": "ratio", "ratio_numerator": 1.0, "ratio_denominator": 320.0,
      "ref_high": 80.0}, POSITIVE, "reference"),              # high as a Quantity
    ({"value_type": "string", "value_string": "1:320", "ref_high_string": "<1:80"}, POSITIVE,
     "reference"),
    ({"value_type": "string", "value_string": ">1:640", "ref_high_string": "1:80"}, POSITIVE,
     "reference"),
    ({"value_type": "string", "value_string": "1:320"}, EQUIVOCAL, "no reference range"),
    ({"value_type": "string", "value_string": "see comment"}, EQUIVOCAL, "none"),
    ({"value_type": "none"}, EQUIVOCAL, "none"),
])
def test_precedence(ctx, kw, expected, rule):
    reading = interpret(row(**kw), RULES, ctx)
    assert (reading.result, reading.rule) == (expected, rule)


@given(st.integers(1, 5), st.integers(1, 100000), st.sampled_from(["", ">", "<", ">=", "<="]),
       st.sampled_from(["", " "]))
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
