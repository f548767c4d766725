"""The observation query: each test (positive result, answer, numeric value with UCUM units,
a result on record) true / false / unknown, windows and their edges, pick latest, min_count,
match and missing; S = 2025-06-30 (tests/engine/conftest.py)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fhir_cohort.criteria import Trial
from fhir_cohort.engine.evaluators.common import Context, PatientData
from fhir_cohort.engine.rules import Scope, evaluate_expr
from fhir_cohort.engine.tables import OBSERVATION_COLUMNS
from fhir_cohort.engine.units import compare, convert

Row = namedtuple("Row", OBSERVATION_COLUMNS)  # type: ignore[misc]

WORDS = {"met": True, "not_met": False, "unknown": None}
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
HCG = "2106-3"
BF = "63895-7"


def trial(query: dict[str, Any]) -> Trial:
    return Trial.model_validate(
        {
            "id": "T",
            "title": "t",
            "version": "1",
            "source": "test",
            "criteria": [
                {
                    "id": "q",
                    "kind": "inclusion",
                    "title": "q",
                    "rule": {"type": "observation", **query},
                }
            ],
        }
    )


def ask(run: Any, query: dict[str, Any], obs: list[tuple]) -> tuple[bool | None, str]:
    ans, reason = run.answer("q", observations=obs, trial=trial(query))
    return WORDS[ans], reason


POS = {"interpretation": (f"{V3}|POS",)}
NEG = {"interpretation": (f"{V3}|NEG",)}
EQV = {"interpretation": (f"{V3}|IND",)}
POSITIVE = {"value_sets": ["hcg"], "result": "positive", "within": {"days": 30}}


# ------------------------------------------------------------------ result: positive
@pytest.mark.parametrize(
    ("rows", "query", "expected"),
    [
        ([("2025-06-20", POS)], {}, True),
        ([("2025-06-20", NEG)], {}, False),
        ([("2025-06-20", EQV)], {}, None),
        ([("2025-06-20", EQV)], {"equivocal": "false"}, False),
        ([("2025-06-20", NEG), ("2025-06-21", EQV)], {}, None),
        ([("2025-06-20", NEG), ("2025-06-21", POS)], {}, True),
        # positive only before the window
        ([("2025-04-01", POS)], {}, None),
        ([("2025-04-01", POS)], {"positive_before_window": "false"}, False),
        ([("2025-04-01", POS)], {"positive_before_window": "false", "missing": "unknown"}, None),
        ([("2025-04-01", POS), ("2025-06-20", NEG)], {}, None),
        ([("2025-04-01", POS), ("2025-06-20", NEG)], {"pick": "latest"}, False),
        # undated: outside by default, then an old positive
        ([(None, POS)], {}, None),
        ([(None, POS)], {"positive_before_window": "false"}, False),
        ([(None, POS)], {"within": {"days": 30, "undated": "inside"}}, True),
        ([(None, POS)], {"within": {"days": 30, "undated": "unknown"}}, None),
        # a partial date straddling the window start (May 2025 vs 2025-05-31)
        ([("2025-05", POS)], {}, None),
        ([("2025-05", NEG)], {}, False),
        ([("2025-05", NEG)], {"missing": "unknown"}, None),
        # a year holding S and later days: unknown; wholly after S: never read
        ([("2025", POS)], {}, None),
        ([("2025-07-01", POS)], {}, False),
        ([("2025-07-01", POS)], {"missing": "unknown"}, None),
        # nothing on record
        ([], {}, False),
        ([], {"missing": "unknown"}, None),
        # match: possible turns a match into unknown only
        ([("2025-06-20", POS)], {"match": "possible"}, None),
        ([("2025-06-20", NEG)], {"match": "possible"}, False),
        # status that does not count
        ([("2025-06-20", {**POS, "status": "cancelled"})], {}, False),
    ],
)
def test_result_positive(run, b, rows, query, expected):
    obs = [b.obs(HCG, d, **kw) for d, kw in rows]
    assert ask(run, {**POSITIVE, **query}, obs)[0] is expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [("2025-06-30", True), ("2025-05-31", True), ("2025-05-30", None), ("2025-07-01", False)],
)
def test_window_edges_are_inclusive(run, b, date, expected):
    assert ask(run, POSITIVE, [b.obs(HCG, date, **POS)])[0] is expected


def test_months_window_uses_calendar_months(run, b):
    q = {**POSITIVE, "within": {"months": 1}}
    assert ask(run, q, [b.obs(HCG, "2025-05-30", **POS)])[0] is True
    assert ask(run, q, [b.obs(HCG, "2025-05-29", **POS)])[0] is None  # older positive


def test_pick_latest_decides_by_the_latest_result(run, b):
    q = {**POSITIVE, "pick": "latest"}
    pos_then_neg = [b.obs(HCG, "2025-06-10", **POS), b.obs(HCG, "2025-06-20", **NEG)]
    neg_then_pos = [b.obs(HCG, "2025-06-10", **NEG), b.obs(HCG, "2025-06-20", **POS)]
    assert ask(run, q, pos_then_neg)[0] is False
    assert ask(run, q, neg_then_pos)[0] is True
    assert ask(run, {**POSITIVE}, pos_then_neg)[0] is True  # pick any
    # Same day, different results: the latest is not one result.
    same_day = [b.obs(HCG, "2025-06-20", **POS), b.obs(HCG, "2025-06-20", **NEG)]
    assert ask(run, q, same_day)[0] is None
    # A partial date that may be later than the dated negative.
    assert ask(run, q, [b.obs(HCG, "2025-06-10", **NEG), b.obs(HCG, "2025-06", **POS)])[0] is None


def test_pick_earliest_decides_by_the_first_result(run, b):
    q = {**POSITIVE, "pick": "earliest"}
    pos_then_neg = [b.obs(HCG, "2025-06-10", **POS), b.obs(HCG, "2025-06-20", **NEG)]
    neg_then_pos = [b.obs(HCG, "2025-06-10", **NEG), b.obs(HCG, "2025-06-20", **POS)]
    assert ask(run, q, pos_then_neg)[0] is True
    assert ask(run, q, neg_then_pos)[0] is False
    # The mirror of latest: same day disagreeing, or a partial date that may come first.
    same_day = [b.obs(HCG, "2025-06-10", **POS), b.obs(HCG, "2025-06-10", **NEG)]
    assert ask(run, q, same_day)[0] is None
    assert ask(run, q, [b.obs(HCG, "2025-06-20", **NEG), b.obs(HCG, "2025-06", **POS)])[0] is None
    # A partial date wholly after the first dated result cannot be the first.
    later = [b.obs(HCG, "2025-05-30", **NEG), b.obs(HCG, "2025-06", **POS)]
    assert ask(run, {**q, "within": {"days": 60}}, later)[0] is False


@pytest.mark.parametrize("pick", ["latest", "earliest"])
def test_pick_one_agrees_with_any_on_a_single_result(run, b, pick):
    for result in (POS, NEG, EQV):
        rows = [b.obs(HCG, "2025-06-10", **result)]
        assert ask(run, {**POSITIVE, "pick": pick}, rows)[0] == ask(run, POSITIVE, rows)[0]


def test_min_count_counts_distinct_resources(run, b):
    q = {**POSITIVE, "min_count": 2}
    one = [b.obs(HCG, "2025-06-10", rid="x", **POS), b.obs(HCG, "2025-06-10", rid="x", **POS)]
    two = [b.obs(HCG, "2025-06-10", rid="x", **POS), b.obs(HCG, "2025-06-12", rid="y", **POS)]
    maybe = [b.obs(HCG, "2025-06-10", rid="x", **POS), b.obs(HCG, "2025-06-12", rid="y", **EQV)]
    assert ask(run, q, one)[0] is False
    assert ask(run, q, two)[0] is True
    assert ask(run, q, maybe)[0] is None


@pytest.mark.parametrize("pick", ["latest", "earliest"])
def test_pick_one_takes_one_result(pick):
    with pytest.raises(ValidationError, match="min_count must be 1"):
        trial({**POSITIVE, "pick": pick, "min_count": 2})


def test_one_test_per_query():
    with pytest.raises(ValidationError, match="one test"):
        trial({**POSITIVE, "answer_texts": ["yes"]})


def test_events_are_the_qualifying_results(b, terminology):
    rows = [
        Row(*b.obs(HCG, "2025-06-20", **POS)),
        Row(*b.obs(HCG, "2025-06-25", **NEG)),
        Row(*b.obs(HCG, "2025-05", **POS)),  # may lie outside: not an event
    ]
    scope = Scope(Context(terminology, b.AS_OF), PatientData(None, observations=rows), {})
    node = trial(POSITIVE).criteria[0].rule
    res = evaluate_expr(node, scope)
    assert res.value is True
    assert res.events == [(b.d("2025-06-20"), b.d("2025-06-20"))]
    assert res.reason.startswith("positive 2106-3 on 2025-06-20")


def test_window_anchored_on_a_result_reads_its_date(run, b):
    q = {
        "value_sets": ["hcg"],
        "result": "positive",
        "within": {"days": 5, "anchor": "first_positive", "after": True},
    }
    t = Trial.model_validate(
        {
            "id": "T",
            "title": "t",
            "version": "1",
            "source": "test",
            "define": {
                "first_positive": {"type": "observation", **POSITIVE, "within": {"days": 60}}
            },
            "criteria": [
                {
                    "id": "q",
                    "kind": "inclusion",
                    "title": "q",
                    "rule": {
                        "type": "observation",
                        **q,
                        "value_sets": ["breastfeeding_status"],
                        "result": None,
                        "answer_texts": ["yes"],
                    },
                }
            ],
        }
    )
    first = b.obs(HCG, "2025-06-10", **POS)
    near = b.obs(BF, "2025-06-12", value_type="string", value_string="yes")
    far = b.obs(BF, "2025-06-20", value_type="string", value_string="yes")
    assert run.answer("q", observations=[first, near], trial=t)[0] == "met"
    assert run.answer("q", observations=[first, far], trial=t)[0] == "not_met"
    assert run.answer("q", observations=[near], trial=t)[0] == "not_met"  # no anchor event


# ------------------------------------------------------------------ answers
ANSWER = {
    "value_sets": ["breastfeeding_status"],
    "answer_value_sets": ["breastfeeding_status_breastfeeding"],
    "answer_texts": ["breastfeeding", "yes", "true"],
    "within": {"days": 30},
}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"value_type": "codeable", "value_codes": ("http://loinc.org|LA29252-6",)}, True),
        ({"value_type": "codeable", "value_codes": ("http://loinc.org|LA29253-4",)}, False),
        # a coded other answer wins over its text
        (
            {
                "value_type": "codeable",
                "value_codes": ("http://loinc.org|LA29253-4",),
                "value_string": "breastfeeding",
            },
            False,
        ),
        ({"value_type": "codeable", "value_string": "Breastfeeding"}, True),
        ({"value_type": "boolean", "value_string": "true"}, True),
        ({"value_type": "boolean", "value_string": "false"}, False),
        ({"value_type": "string", "value_string": "  YES "}, True),
        ({"value_type": "string", "value_string": "no"}, False),
    ],
)
def test_answers(run, b, kw, expected):
    assert ask(run, ANSWER, [b.obs(BF, "2025-06-20", **kw)])[0] is expected


def test_answer_with_partial_date_is_unknown(run, b):
    yes = {"value_type": "boolean", "value_string": "true"}
    assert ask(run, {**ANSWER, "label": "breastfeeding status"}, [b.obs(BF, "2025-05", **yes)]) == (
        None,
        "breastfeeding status, date too imprecise to place within 30 days",
    )


def test_finding_on_record_without_a_test(run, b):
    q = {"value_sets": ["lactation"], "within": {"days": 30}}
    code = "1260078007"
    sn = {"system": b.SNOMED}
    assert ask(run, q, [b.obs(code, "2025-06-20", **sn)])[0] is True
    no = {"value_type": "boolean", "value_string": "false"}
    assert ask(run, q, [b.obs(code, "2025-06-20", **sn, **no)])[0] is False
    assert ask(run, q, [])[0] is False


# ------------------------------------------------------------------ numeric values
def value_query(cmp: str, v: float, unit: str, **kw: Any) -> dict[str, Any]:
    return {
        "value_sets": ["hcg"],
        "value": {"comparator": cmp, "value": v, "unit": unit},
        "within": {"days": 30},
        **kw,
    }


def q_obs(b: Any, value: float, code: str | None, unit: str | None = None, **kw: Any) -> tuple:
    return b.obs(
        HCG,
        "2025-06-20",
        value_type="quantity",
        value_number=value,
        value_unit=unit if unit is not None else code,
        value_unit_code=code,
        **kw,
    )


# (result value, result UCUM code, threshold value, threshold unit): result == threshold
SAME_AMOUNT = [
    (1500.0, "mg/g", 1.5, "g/g"),
    (1.5, "g/g", 1500.0, "mg/g"),
    (1.5, "10*3/uL", 1.5, "10*9/L"),
    (1500.0, "/uL", 1.5, "10*9/L"),
    (12.5, "g/dL", 125.0, "g/L"),
    (60.0, "mL/min/{1.73_m2}", 1.0, "mL/s/{1.73_m2}"),
    (45.0, "%", 0.45, "1"),
    (150.0, "mg/dL", 1.5, "g/L"),
    (2.0, "mmol/L", 2000.0, "umol/L"),
]


@pytest.mark.parametrize(("value", "code", "t", "unit"), SAME_AMOUNT)
def test_ucum_conversions_sweep(run, b, value, code, t, unit):
    o = [q_obs(b, value, code)]
    assert ask(run, value_query(">=", t, unit), o)[0] is True
    assert ask(run, value_query("<=", t, unit), o)[0] is True
    assert ask(run, value_query(">", t, unit), o)[0] is False
    assert ask(run, value_query("<", t, unit), o)[0] is False
    assert ask(run, value_query("=", t, unit), o)[0] is True
    assert convert(value, code, unit) == pytest.approx(t)


@pytest.mark.parametrize(
    ("code", "unit", "why"),
    [
        ("mg/dL", "mmol/L", "cannot be converted"),  # needs a molar mass: never guessed
        ("g/g", "mg/mmol", "cannot be converted"),
        ("mL/min", "mL/min/{1.73_m2}", "annotation"),  # not the same measure
        ("mL/min/1.73m2", "mL/min/{1.73_m2}", "annotation"),  # unit text, not UCUM
        ("furlongs", "g/L", "not a UCUM unit"),
    ],
)
def test_unconvertible_units_are_unknown_with_the_reason(run, b, code, unit, why):
    res = run(observations=[q_obs(b, 1.0, code)], trial=trial(value_query(">=", 1, unit)))
    assert list(res.answers.answer) == ["unknown"]
    assert why in " ".join(res.evidence.note)


def test_missing_unit_is_unknown_unless_unitless(run, b):
    o = [q_obs(b, 70.0, None)]
    assert ask(run, value_query(">=", 60, "mL/min/{1.73_m2}"), o)[0] is None
    assert ask(run, value_query(">=", 1, "1"), o)[0] is True  # e.g. a score


def test_unit_text_is_read_as_ucum_when_there_is_no_code(run, b):
    assert ask(run, value_query(">=", 1.5, "g/L"), [q_obs(b, 150.0, None, "mg/dL")])[0] is True


@pytest.mark.parametrize(
    ("cmp", "value", "op", "t", "expected"),
    [
        ("<", 5.0, "<", 5.0, True),
        ("<", 5.0, "<=", 5.0, True),
        ("<", 5.0, ">=", 5.0, False),
        ("<", 5.0, ">", 4.0, None),
        ("<=", 5.0, "<", 5.0, None),
        (">", 60.0, ">=", 60.0, True),
        (">", 60.0, ">", 60.0, True),
        (">", 60.0, "<", 90.0, None),
        (">=", 60.0, ">", 60.0, None),
        (">=", 60.0, ">=", 60.0, True),
        ("<", 0.5, "=", 1.0, False),
        ("<", 0.5, "!=", 1.0, True),
    ],
)
def test_comparators_on_results(run, b, cmp, value, op, t, expected):
    o = [q_obs(b, value, "g/L", value_comparator=cmp)]
    assert ask(run, value_query(op, t, "g/L"), o)[0] is expected


@pytest.mark.parametrize(
    ("text", "op", "t", "expected"),
    [
        ("1,500", ">=", 1500.0, True),
        ("1,500", "<", 1500.0, False),
        ("<0.5", "<", 1.0, True),
        ("<0.5", ">", 0.1, None),
        ("1,5", ">=", 1.0, None),  # a decimal comma or a list: not read
        ("high", ">=", 1.0, None),
    ],
)
def test_numbers_in_value_strings(run, b, text, op, t, expected):
    o = [b.obs(HCG, "2025-06-20", value_type="string", value_string=text)]
    assert ask(run, value_query(op, t, "1"), o)[0] is expected


def test_pick_latest_value(run, b):
    q = value_query(">=", 60, "mL/min/{1.73_m2}", pick="latest")
    old_low = q_obs(b, 40.0, "mL/min/{1.73_m2}")
    new_high = b.obs(
        HCG,
        "2025-06-25",
        value_type="quantity",
        value_number=70.0,
        value_unit_code="mL/min/{1.73_m2}",
    )
    assert ask(run, q, [old_low, new_high])[0] is True
    assert ask(run, q, [old_low])[0] is False
    assert ask(run, {**q, "pick": "any"}, [old_low, new_high])[0] is True


# ------------------------------------------------------------------ numeric compare (property)
_num = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_cmp = st.sampled_from([None, "<", "<=", ">", ">="])
_op = st.sampled_from([">", ">=", "<", "<=", "=", "!="])


def _holds(x: float, op: str, t: float) -> bool:
    return {
        ">": x > t,
        ">=": x >= t,
        "<": x < t,
        "<=": x <= t,
        "=": x == t,
        "!=": x != t,
    }[op]


def _stands_for(v: float, c: str | None) -> list[float]:
    """Sample values a result ``c v`` may stand for (v itself when the result allows it)."""
    eps = max(abs(v) * 1e-9, 1e-9)
    return {
        None: [v],
        "<": [v - eps, v - 1, v - 1e6],
        "<=": [v, v - eps, v - 1e6],
        ">": [v + eps, v + 1, v + 1e6],
        ">=": [v, v + eps, v + 1e6],
    }[c]


@settings(max_examples=400, deadline=None)
@given(v=_num, c=_cmp, op=_op, t=_num)
def test_compare_is_sound(v, c, op, t):
    """True only if every value the result stands for passes, False only if none does."""
    got = compare(v, c, op, t)
    samples = [x for x in _stands_for(v, c) if x != v or c in (None, "<=", ">=")]
    if got is True:
        assert all(_holds(x, op, t) for x in samples)
    elif got is False:
        assert not any(_holds(x, op, t) for x in samples)
    if c is None:
        assert got is _holds(v, op, t)


@settings(max_examples=200, deadline=None)
@given(v=st.floats(0, 1e6, allow_nan=False), t=st.floats(0, 1e6, allow_nan=False))
def test_converted_compare_matches_plain_compare(v, t):
    """mg/dL against a g/L threshold answers as the same amounts compared by hand."""
    got = compare(convert(v, "mg/dL", "g/L"), None, ">=", t)
    assert got is (round(v / 100, 9) >= round(t, 9)) or abs(v / 100 - t) < 1e-9
