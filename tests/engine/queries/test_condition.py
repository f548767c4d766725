"""The condition and procedure queries: every field's true / false / unknown branches."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from fhir_cohort.criteria.io import parse_criteria
from fhir_cohort.engine.evaluate import frame_rows
from fhir_cohort.engine.evaluators.common import Context
from fhir_cohort.engine.tables import CONDITION_COLUMNS, PATIENT_COLUMNS, Tables
from tests.criteria_variants import shorthand
from tests.engine.queries.oracle_condition_rules import evaluate_rules_on_rows

VALUE = {"met": True, "not_met": False, "unknown": None}
S = dt.date(2025, 6, 30)
DIALYSIS = "265764009"  # a dialysis Procedure code (dialysis_procedures)
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SEVERE = "http://snomed.info/sct|24484000"


def _trial(rule: dict[str, Any], define: dict[str, Any] | None = None) -> Any:
    return parse_criteria(
        {
            "id": "T",
            "title": "t",
            "version": "1",
            "source": "https://example.org",
            "define": define or {},
            "criteria": [{"id": "q", "kind": "inclusion", "title": "q", "rule": rule}],
        }
    )


def ask(run: Any, rule: dict[str, Any], rows: list[tuple], **kw: Any) -> tuple[Any, str]:
    trial = _trial(rule, kw.pop("define", None))
    ans, reason = run.answer("q", conditions=rows, trial=trial, **kw)
    return VALUE[ans], reason


def value(run: Any, rule: dict[str, Any], rows: list[tuple], **kw: Any) -> Any:
    return ask(run, rule, rows, **kw)[0]


SLE_Q = {"type": "condition", "value_sets": ["sle"]}


# --------------------------------------------------------------------------- value sets, status
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, True),
        ({"onset": "2010-01-01"}, True),
        ({"verification": None}, True),  # no verification status: counts
        ({"verification": "refuted"}, False),
        ({"verification": "entered-in-error"}, False),
        ({"verification": "provisional"}, None),
        ({"verification": "differential"}, None),
        ({"verification": "unconfirmed"}, None),
        ({"onset": "2025-07-01"}, False),  # after S: not on record
        ({"recorded": "2025-07-01", "onset": "2020-01-01"}, False),
        ({"onset": "2025-06"}, True),  # June 2025 ends on S
        ({"onset": "2025"}, None),  # may fall after S
        ({"clinical": "resolved", "abatement": "2020-01-01"}, True),  # activity not required
    ],
)
def test_status_rules(run, b, kw, expected):
    assert value(run, SLE_Q, [b.cond(b.SLE, **kw)]) is expected


def test_no_record_is_missing(run, b):
    assert ask(run, SLE_Q, []) == (False, "no qualifying record (sle)")
    assert value(run, {**SLE_Q, "missing": "unknown"}, []) is None
    # A record that does not qualify is not "missing": missing reads only the empty case.
    assert (
        value(run, {**SLE_Q, "missing": "unknown"}, [b.cond(b.SLE, verification="refuted")]) is None
    )
    assert value(run, {**SLE_Q, "missing": "unknown"}, [b.cond(b.SLE)]) is True


def test_status_rules_are_the_query_s_own(run, b):
    rule = {
        **SLE_Q,
        "status_rules": {
            "unconfirmed_statuses": [],
            "ignored_verification_statuses": ["provisional"],
        },
    }
    assert value(run, rule, [b.cond(b.SLE, verification="provisional")]) is False
    assert value(run, rule, [b.cond(b.SLE, verification="differential")]) is True


def test_unknown_and_not_counted_value_sets(run, b):
    rule = {
        **SLE_Q,
        "unknown_value_sets": ["lupus_unspecified"],
        "not_counted_value_sets": ["sle_not_counted"],
    }
    got = ask(run, rule, [b.cond(b.LUPUS_UNSPECIFIED)])
    assert got[0] is None and "type unspecified" in got[1]
    assert value(run, rule, [b.cond(b.LUPUS_UNSPECIFIED), b.cond(b.SLE)]) is True
    res = run(conditions=[b.cond(b.DISCOID)], trial=_trial(rule))
    assert res.answers.answer.tolist() == ["not_met"]
    assert any("does not count" in n for n in b.notes(res, "q"))
    # Without the unknown value set the unspecified code is no record at all.
    assert value(run, SLE_Q, [b.cond(b.LUPUS_UNSPECIFIED)]) is False


# --------------------------------------------------------------------------- require_active
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"clinical": "active"}, True),
        ({"clinical": "relapse"}, True),
        ({"clinical": "resolved"}, False),
        ({"clinical": "remission"}, False),
        ({"clinical": None}, True),  # no status, no abatement
        ({"clinical": None, "abatement": "2024-01-01"}, False),
        ({"clinical": None, "abatement": "2025-08-01"}, True),  # abated after S
        ({"clinical": "resolved", "abatement": "2025-08-01"}, True),
        ({"clinical": None, "has_abatement": True}, None),  # undated abatement
        ({"clinical": None, "abatement": "2025"}, None),  # abatement range holding S
    ],
)
def test_require_active(run, b, kw, expected):
    rule = {"type": "condition", "value_sets": ["lupus_nephritis"], "require_active": True}
    assert value(run, rule, [b.cond(b.LN, **kw)]) is expected
    rule["require_active"] = False
    assert value(run, rule, [b.cond(b.LN, **kw)]) is True


# --------------------------------------------------------------------------- severity, classes
@pytest.mark.parametrize(
    ("severity", "expected"),
    [((), False), (("http://snomed.info/sct|6736007",), False), ((SEVERE,), True)],
)
def test_severity_codes(run, b, severity, expected):
    rule = {"type": "condition", "value_sets": ["lupus_nephritis"], "severity_codes": [SEVERE]}
    assert value(run, rule, [b.cond(b.LN, severity=severity)]) is expected


@pytest.mark.parametrize(
    ("display", "text", "expected"),
    [
        ("Lupus nephritis class IV", None, True),
        ("Lupus nephritis ISN/RPS III-S (A)", None, True),
        ("Lupus nephritis class II", None, False),
        ("Lupus nephritis", "biopsy: WHO class V", True),  # the code's text counts
        ("Lupus nephritis", None, False),
    ],
)
def test_named_classes(run, b, display, text, expected):
    rule = {
        "type": "condition",
        "value_sets": ["lupus_nephritis"],
        "named_classes": ["III", "IV", "V"],
    }
    assert value(run, rule, [b.cond(b.LN, display=display, text=text)]) is expected


# --------------------------------------------------------------------------- windows, date_basis
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"recorded": "2025-04-01"}, True),
        ({"recorded": "2025-04-01", "onset": "2020-01-01"}, True),  # latest of the two
        ({"recorded": "2025-04-01", "onset": "2025-03-31"}, True),
        ({"onset": "2025-04-01"}, True),
        ({"recorded": "2025-04-01"}, True),
        ({"recorded": "2025-03-31"}, False),  # 91 days
        ({"recorded": "2025-03"}, False),  # March ends before S - 90 days (1 April)
        ({"recorded": "2025"}, None),  # straddles S
        ({"recorded": "2025-03-15", "onset": "2025-03"}, False),
        ({"recorded": "2025-04"}, True),
        ({"recorded": "2025-06"}, True),
    ],
)
def test_day_window(run, b, kw, expected):
    rule = {"type": "condition", "value_sets": ["headache"], "within": {"days": 90}}
    assert value(run, rule, [b.cond(b.HEADACHE, **kw)]) is expected


def test_window_edges_in_days_months_years(run, b):
    for within, inside, outside in [
        ({"days": 0}, "2025-06-30", "2025-06-29"),
        ({"months": 1}, "2025-05-30", "2025-05-29"),
        ({"months": 4}, "2025-02-28", "2025-02-27"),  # 30 June - 4 months = 28 Feb (clamped)
        ({"years": 1}, "2024-06-30", "2024-06-29"),
    ]:
        rule = {"type": "condition", "value_sets": ["headache"], "within": within}
        assert value(run, rule, [b.cond(b.HEADACHE, onset=inside)]) is True, within
        assert value(run, rule, [b.cond(b.HEADACHE, onset=outside)]) is False, within
    # A partial date straddling the start of the window.
    rule = {"type": "condition", "value_sets": ["headache"], "within": {"days": 100}}
    assert value(run, rule, [b.cond(b.HEADACHE, onset="2025-03")]) is None  # from 22 March


@pytest.mark.parametrize(
    ("undated", "expected"), [("outside", False), ("inside", True), ("unknown", None)]
)
def test_undated_per_the_window(run, b, undated, expected):
    rule = {
        "type": "condition",
        "value_sets": ["headache"],
        "within": {"days": 90, "undated": undated},
    }
    assert value(run, rule, [b.cond(b.HEADACHE)]) is expected


def test_date_basis(run, b):
    rows = [b.cond(b.PREGNANCY, onset="2024-01-01", recorded="2025-06-01")]
    rule = {"type": "condition", "value_sets": ["pregnancy"], "within": {"days": 300}}
    assert value(run, rule, rows) is True  # latest: the recorded date
    assert value(run, {**rule, "date_basis": "onset"}, rows) is False
    # onset basis falls back on the recorded date when there is no onset.
    rows = [b.cond(b.PREGNANCY, recorded="2025-06-01")]
    assert value(run, {**rule, "date_basis": "onset"}, rows) is True


def test_window_anchored_on_a_definition(run, b):
    define = {"nephritis": {"type": "condition", "value_sets": ["lupus_nephritis"]}}
    rule = {
        "type": "condition",
        "value_sets": ["seizure"],
        "within": {"days": 30, "anchor": "nephritis", "after": True},
    }
    ln = b.cond(b.LN, onset="2024-01-10")
    assert value(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-02-09")], define=define) is True
    assert value(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-02-10")], define=define) is False
    assert value(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-01-09")], define=define) is False
    assert value(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-02")], define=define) is None
    # No nephritis at all: no window, nothing in it.
    assert value(run, rule, [b.cond(b.SEIZURE, onset="2024-02-01")], define=define) is False
    # A provisional nephritis dates nothing: the window cannot be placed.
    prov = b.cond(b.LN, onset="2024-01-10", verification="provisional")
    got = ask(run, rule, [prov, b.cond(b.SEIZURE, onset="2024-02-01")], define=define)
    assert got[0] is None and "anchor gives no date" in got[1]
    # A definition that is only possibly true dates its records: inside is only possible.
    maybe = {"nephritis": {**define["nephritis"], "match": "possible"}}
    got = ask(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-02-01")], define=maybe)
    assert got[0] is None and "anchor is itself unknown" in got[1]
    assert value(run, rule, [ln, b.cond(b.SEIZURE, onset="2024-03-01")], define=maybe) is False
    # The latest nephritis anchors by default, the earliest on request.
    rows = [ln, b.cond(b.LN, onset="2024-06-01"), b.cond(b.SEIZURE, onset="2024-02-01")]
    assert value(run, rule, rows, define=define) is False
    rule["within"]["anchor_event"] = "earliest"
    assert value(run, rule, rows, define=define) is True


# --------------------------------------------------------------------------- min_count, match
def test_min_count_counts_distinct_resources(run, b):
    rule = {"type": "condition", "value_sets": ["seizure"], "min_count": 2}
    one = b.cond(b.SEIZURE, rid="r1")
    same = b.cond("G40.909", system=ICD10, rid="r1")  # the same resource's second coding
    assert value(run, rule, [one]) is False
    assert value(run, rule, [one, same]) is False
    assert value(run, rule, [one, b.cond(b.SEIZURE, rid="r2")]) is True
    got = ask(run, rule, [one, b.cond(b.SEIZURE, rid="r3", verification="provisional")])
    assert got[0] is None and "1 of 2 records counted" in got[1]
    assert ask(run, rule, [one])[1] == "1 qualifying records, fewer than 2"


def test_match_possible(run, b):
    rule = {
        "type": "condition",
        "value_sets": ["headache"],
        "match": "possible",
        "reason": "headache",
    }
    assert ask(run, rule, [b.cond(b.HEADACHE)]) == (None, "headache")
    assert value(run, rule, []) is False
    assert value(run, rule, [b.cond(b.HEADACHE, verification="refuted")]) is False


def test_reasons(run, b):
    rule = {**SLE_Q, "reason": "lupus on record"}
    assert ask(run, rule, [b.cond(b.SLE)]) == (True, "lupus on record")
    assert ask(run, SLE_Q, [b.cond(b.SLE, display="Systemic lupus")]) == (
        True,
        "Systemic lupus on record",
    )
    got = ask(run, rule, [b.cond(b.SLE, verification="provisional")])
    assert got == (None, "provisional: lupus on record")
    got = ask(run, rule, [b.cond(b.SLE, onset="2025")])
    assert got == (None, "lupus on record (partial date may fall after as-of date)")


def test_events_are_the_counted_records_dates(run, b, terminology):
    from fhir_cohort.engine.evaluators.common import PatientData
    from fhir_cohort.engine.queries import REGISTRY
    from fhir_cohort.engine.rules import Scope

    rows = frame_rows(
        Tables.from_rows(
            [b.pat()],
            [
                b.cond(b.SLE, onset="2020-03"),
                b.cond(b.SLE, onset="2021-01-01"),
                b.cond(b.SLE),  # undated: counted, but no event date
                b.cond(b.SLE, onset="2022-01-01", verification="provisional"),
            ],
            [],
            [],
        ).conditions,
        CONDITION_COLUMNS,
        "conditions",
    )
    patients = Tables.from_rows([b.pat()], [], [], []).patients
    patient = frame_rows(patients, PATIENT_COLUMNS, "patients")[0]
    scope = Scope(Context(terminology, S), PatientData(patient, rows), {})
    node = _trial(SLE_Q).criteria[0].rule
    res = REGISTRY["condition"].evaluate(node, scope)
    assert res.value is True
    assert sorted(res.events) == [
        (dt.date(2020, 3, 1), dt.date(2020, 3, 31)),
        (dt.date(2021, 1, 1), dt.date(2021, 1, 1)),
    ]


# --------------------------------------------------------------------------- procedures
def _proc(b, code=DIALYSIS, *, status="completed", performed=None, rid=None):
    return b.cond(
        code,
        resource_type="Procedure",
        clinical=f"procedure:{status}" if status else None,
        verification=None,
        onset=performed,
        rid=rid,
    )


def test_procedure_rows(run, b):
    cond_q = {"type": "condition", "value_sets": ["dialysis_procedures"], "within": {"days": 90}}
    proc_q = {"type": "procedure", "value_sets": ["dialysis_procedures"], "within": {"days": 90}}
    recent = _proc(b, performed="2025-06-01")
    for rule in (cond_q, proc_q):
        assert value(run, rule, [recent]) is True
        assert value(run, rule, [_proc(b, performed="2025-01-01")]) is False
        assert value(run, rule, [_proc(b, status="not-done", performed="2025-06-01")]) is False
        assert (
            value(run, rule, [_proc(b, status="entered-in-error", performed="2025-06-01")]) is False
        )
        assert value(run, rule, [_proc(b, status="stopped", performed="2025-06-01")]) is True
    # A procedure query never reads Condition rows; a condition query reads both.
    cond_row = b.cond(b.SLE)
    assert value(run, {**SLE_Q, "type": "procedure"}, [cond_row]) is False
    assert value(run, SLE_Q, [cond_row]) is True
    # require_active reads a Procedure's status: only in-progress is active.
    active = {**cond_q, "require_active": True}
    assert value(run, active, [_proc(b, status="in-progress", performed="2025-06-01")]) is True
    assert value(run, active, [recent]) is False


# --------------------------------------------------------------------------- E3's condition rules
PREG = {
    "type": "condition",
    "value_sets": ["pregnancy"],
    "require_active": True,
    "date_basis": "onset",
    "within": {"days": 300, "undated": "unknown"},
}
DELIVERY = {
    "type": "condition",
    "value_sets": ["delivery"],
    "match": "possible",
    "within": {"days": 365, "undated": "unknown"},
}


@pytest.mark.parametrize(
    ("rule", "kw", "expected"),
    [
        (PREG, {"onset": "2025-01-01"}, True),
        (PREG, {"onset": "2024-01-01", "recorded": "2025-06-01"}, False),  # old pregnancy
        (PREG, {}, None),  # undated pregnancy: review
        (PREG, {"clinical": "resolved"}, False),  # inactive before the date is read
        (PREG, {"onset": "2024-09"}, None),  # straddles the 300 days
        (PREG, {"onset": "2025-01-01", "verification": "provisional"}, None),
        (DELIVERY, {"onset": "2025-01-01", "clinical": "resolved"}, None),  # possible lactation
        (DELIVERY, {}, None),
        (DELIVERY, {"onset": "2024-01-01"}, False),
    ],
)
def test_pregnancy_and_delivery_rules_are_expressible(run, b, rule, kw, expected):
    code = b.PREGNANCY if rule is PREG else b.DELIVERY
    assert value(run, rule, [b.cond(code, **kw)]) is expected


# --------------------------------------------------------------------------- shorthand equivalence
def _sweep_rows(b) -> list[tuple]:
    """One row per combination of code, statuses, dates and severity/display (E1, E2, E4)."""
    codes = [
        (b.LN, "Lupus nephritis"),
        (b.LN, "Lupus nephritis class IV"),
        (b.LN_CLASS_IV, None),
        (b.CNS_LUPUS, None),
        (b.SEIZURE, None),
        (b.HEADACHE, None),
        (b.HEART_FAILURE, None),
    ]
    clinical = ["active", "resolved", None]
    verification = ["confirmed", "provisional", "refuted"]
    dates = [
        {},
        {"onset": "2025-05-01"},
        {"recorded": "2024-12-01"},
        {"onset": "2025"},
        {"onset": "2025-03"},
        {"onset": "2020-01-01", "abatement": "2025-08-01"},
        {"has_abatement": True},
    ]
    severity = [(), ("http://snomed.info/sct|24484000",)]
    rows = []
    for i, ((code, display), cs, vs, d, sev) in enumerate(
        itertools.product(codes, clinical, verification, dates, severity)
    ):
        rows.append(
            b.cond(code, f"p{i}", clinical=cs, verification=vs, severity=sev, display=display, **d)
        )
    for i, (status, when) in enumerate(
        itertools.product(
            ["completed", "in-progress", "not-done", None],
            [None, "2025-06-01", "2025-03", "2024-01-01"],
        )
    ):
        rows.append(_proc_row(b, f"q{i}", status, when))
    return rows


def _proc_row(b, pid, status, when):
    return b.cond(
        DIALYSIS,
        pid,
        resource_type="Procedure",
        clinical=f"procedure:{status}" if status else None,
        verification=None,
        onset=when,
    )


@pytest.mark.parametrize("criterion_id", ["lupus_nephritis", "cns_lupus", "chronic_illness"])
def test_condition_rules_expansion_gives_the_rule_evaluator_s_answers(
    run, b, terminology, criterion_id
):
    """Every record combination, one per patient and two per patient: the expanded rule tree
    answers as the per-record rule evaluator (worst answer wins) does."""
    rows = _sweep_rows(b)
    pairs = list(rows)
    # Two records per patient too: each record with the next one.
    for i, (r1, r2) in enumerate(zip(rows, rows[1:] + rows[:1], strict=True)):
        pairs.append((f"pair{i}", *r1[1:]))
        pairs.append((f"pair{i}", *r2[1:]))
    pids = sorted({r[0] for r in pairs})
    res = run(patients=[b.pat(pid) for pid in pids], conditions=pairs, as_of=S)
    got = res.answers[res.answers.criterion_id == criterion_id].set_index("patient_id").answer
    crit = shorthand(criterion_id)
    ctx = Context(terminology, S)
    table = frame_rows(
        Tables.from_rows([b.pat()], pairs, [], []).conditions, CONDITION_COLUMNS, "conditions"
    )
    by_pid: dict[str, list[Any]] = {}
    for r in table:
        by_pid.setdefault(r.patient_id, []).append(r)
    for pid in pids:
        worst, _, _ = evaluate_rules_on_rows(
            crit.rules,
            crit.status_rules,
            crit.undated_counts_as_within,
            ctx,
            by_pid.get(pid, []),
            "1980-01-01",
        )
        assert got[pid] == worst, (pid, [r for r in pairs if r[0] == pid])
