"""Per-criterion branches of the shipped NCT06038474 criteria: I1, I2, I4, E1-E4."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.criteria_variants import variant


# ----------------------------------------------------------------------------------- I1 age
@pytest.mark.parametrize(
    ("birth", "as_of", "expected"),
    [
        ("2007-06-30", "2025-06-30", "met"),  # 18th birthday on S
        ("2007-07-01", "2025-06-30", "not_met"),  # one day short
        ("2007-05", "2025-06-30", "met"),  # every day of May 2007 gives 18
        ("2007", "2025-06-30", "unknown"),  # Jan 1 -> 18, Dec 31 -> 17
        ("2007-06", "2025-06-15", "unknown"),
        ("2004-02-29", "2022-02-28", "not_met"),  # leap-day birthday completes on Mar 1
        ("2004-02-29", "2022-03-01", "met"),
        ("1950-01-01T00:00:00Z", "2025-06-30", "met"),
        (None, "2025-06-30", "unknown"),
        ("garbage", "2025-06-30", "unknown"),
        ("2030-01-01", "2025-06-30", "not_met"),
    ],
)
def test_age(run, b, birth, as_of, expected):
    ans, _ = run.answer("age", patients=[b.pat(birth=birth)], as_of=b.d(as_of))
    assert ans == expected


def test_age_deceased(run, b):
    before = b.pat(deceased=True, deceased_date=b.d("2025-01-01"))
    after = b.pat("p2", deceased=True, deceased_date=b.d("2025-07-01"))
    no_date = b.pat("p3", deceased=True)
    res = run(patients=[before, after, no_date])
    got = dict(
        zip(
            res.answers[res.answers.criterion_id == "age"].patient_id,
            res.answers[res.answers.criterion_id == "age"].answer,
            strict=True,
        )
    )
    assert got == {"p1": "not_met", "p2": "met", "p3": "not_met"}


def test_age_max_years(run, b, trial):
    t2 = variant("age", max_years=65)
    assert run.answer("age", patients=[b.pat(birth="1950-01-01")], trial=t2)[0] == "not_met"
    assert run.answer("age", patients=[b.pat(birth="1970-01-01")], trial=t2)[0] == "met"


# ----------------------------------------------------------------------------------- I2 SLE
@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (lambda b: [b.cond(b.SLE, onset="2010-01-01")], "met"),
        (lambda b: [b.cond(b.SLE)], "met"),  # undated counts
        (lambda b: [b.cond("M32.14", system=b.ICD10)], "met"),  # dotted ICD-10-CM
        (lambda b: [b.cond(b.SLE, clinical="resolved", abatement="2020-01-01")], "met"),
        (lambda b: [b.cond(b.LUPUS_UNSPECIFIED)], "unknown"),
        (lambda b: [b.cond(b.SLE, verification="provisional")], "unknown"),
        (lambda b: [b.cond(b.SLE, verification="differential")], "unknown"),
        (lambda b: [b.cond(b.SLE, verification="refuted")], "not_met"),
        (lambda b: [b.cond(b.SLE, verification="entered-in-error")], "not_met"),
        (lambda b: [b.cond(b.DISCOID)], "not_met"),
        (lambda b: [b.cond("M32.0", system=b.ICD10)], "not_met"),  # drug-induced
        (lambda b: [b.cond(b.SLE, onset="2025-07-01")], "not_met"),  # after S
        (lambda b: [b.cond(b.SLE, recorded="2025-07-01")], "not_met"),
        (lambda b: [b.cond(b.SLE, verification="refuted"), b.cond(b.LUPUS_UNSPECIFIED)], "unknown"),
        (lambda b: [b.cond(b.LUPUS_UNSPECIFIED), b.cond(b.SLE)], "met"),
    ],
)
def test_sle(run, b, rows, expected):
    assert run.answer("sle", conditions=rows(b))[0] == expected


def test_sle_evidence_notes(run, b):
    res = run(
        conditions=[
            b.cond(b.SLE, verification="refuted"),
            b.cond(b.DISCOID),
            b.cond(b.SLE, onset="2026-01-01"),
        ]
    )
    notes = b.notes(res, "sle")
    assert "refuted" in notes
    assert "after as-of date" in notes
    assert any("does not count" in n for n in notes)


# ----------------------------------------------------------------------------------- I4
def _pos(b, date: str, **kw):
    return b.obs(b.ANTI_DSDNA, date, interpretation=(f"{b.V3}|POS",), **kw)


def _neg(b, date: str, **kw):
    return b.obs(b.ANTI_DSDNA, date, interpretation=(f"{b.V3}|NEG",), **kw)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (lambda b: [_pos(b, "2025-01-01")], "met"),
        (lambda b: [_pos(b, "2024-06-30")], "met"),  # exactly S - 365 days
        (lambda b: [_pos(b, "2024-06-29")], "unknown"),  # positive only before L
        (lambda b: [_pos(b, "2020-01-01"), _neg(b, "2025-01-01")], "unknown"),
        (lambda b: [_neg(b, "2025-01-01")], "not_met"),
        (lambda b: [_neg(b, "2025-01-01"), _neg(b, "2025-02-01")], "not_met"),
        (
            lambda b: [
                _neg(b, "2025-01-01"),
                b.obs(b.ANTI_DSDNA, "2025-02-01", value_type="quantity", value_number=40.0),
            ],
            "unknown",
        ),  # equivocal: no reference range
        (lambda b: [], "unknown"),
        (lambda b: [_neg(b, "2020-01-01")], "unknown"),  # tested only before L
        (lambda b: [_pos(b, "2025-07-02")], "unknown"),  # after S: ignored
        (lambda b: [_pos(b, "2025-01-01", status="cancelled")], "unknown"),
        (lambda b: [_pos(b, "2025-01-01", status="preliminary")], "met"),
        (
            lambda b: [_pos(b, "2025-01-01", status="entered-in-error"), _neg(b, "2025-02-01")],
            "not_met",
        ),
        (
            lambda b: [
                b.obs(
                    b.ANTI_DSDNA,
                    "2025-01-01",
                    value_type="ratio",
                    ratio=(1, 320),
                    ref_high_string="<1:80",
                )
            ],
            "met",
        ),
        (
            lambda b: [
                b.obs(b.ANTI_DSDNA, "2025-01-01", value_type="string", value_string="Not detected")
            ],
            "not_met",
        ),
    ],
)
def test_autoantibody(run, b, rows, expected):
    assert run.answer("autoantibody", observations=rows(b))[0] == expected


# The exact reasons E1/E2 give (a substring check against "" would pass for any reason).
# Clear: no rule's query found a qualifying record (what each record was is in the evidence).
NONE_ACTIVE = (
    "no qualifying record (lupus_nephritis_severe_class); no qualifying record (lupus_nephritis)"
)
NONE_CNS = (
    "no qualifying record (cns_lupus); no qualifying record (seizure, psychosis, "
    "organic_brain_syndrome); no qualifying record (headache)"
)
LN_ACTIVE = "active lupus nephritis class III, IV or V"
# A class code that is only possibly active or confirmed may meet E1's class rule and its
# severity-not-recorded rule: the reason names both.
LN_REVIEW = "active lupus nephritis, severity not recorded"
ATTRIBUTION = "seizure, psychosis or organic brain syndrome; attribution to SLE unknown"
HEADACHE = "headache; may re-screen when resolved"


# ----------------------------------------------------------------------------------- E1
@pytest.mark.parametrize(
    ("rows", "expected", "reason"),
    [
        (lambda b: [b.cond(b.LN_CLASS_IV)], "excluded", LN_ACTIVE),
        (
            lambda b: [b.cond(b.LN, severity=(b.SEVERE,))],
            "excluded",
            "active severe lupus nephritis",
        ),
        (lambda b: [b.cond(b.LN)], "review", "active lupus nephritis, severity not recorded"),
        (
            lambda b: [b.cond(b.LN, severity=("http://snomed.info/sct|6736007",))],
            "review",
            "active lupus nephritis, severity not recorded",
        ),  # moderate
        (lambda b: [b.cond(b.LN_CLASS_IV, clinical="resolved")], "clear", NONE_ACTIVE),
        (lambda b: [b.cond(b.LN_CLASS_IV, clinical="inactive")], "clear", NONE_ACTIVE),
        (lambda b: [b.cond(b.LN_CLASS_IV, clinical="remission")], "clear", NONE_ACTIVE),
        (lambda b: [b.cond(b.LN_CLASS_IV, clinical="relapse")], "excluded", LN_ACTIVE),
        (lambda b: [b.cond(b.LN_CLASS_IV, clinical=None)], "excluded", LN_ACTIVE),
        (
            lambda b: [b.cond(b.LN_CLASS_IV, clinical=None, abatement="2024-01-01")],
            "clear",
            NONE_ACTIVE,
        ),
        # v1.1: no clinicalStatus and an undated abatement: activity unknown -> review
        (
            lambda b: [b.cond(b.LN_CLASS_IV, clinical=None, has_abatement=True)],
            "review",
            f"{LN_ACTIVE} (activity at as-of date unknown); "
            f"{LN_REVIEW} (activity at as-of date unknown)",
        ),
        # abated after S: still active at S (past screening reproduced)
        (
            lambda b: [b.cond(b.LN_CLASS_IV, clinical="resolved", abatement="2025-08-01")],
            "excluded",
            LN_ACTIVE,
        ),
        (
            lambda b: [b.cond(b.LN_CLASS_IV, verification="provisional")],
            "review",
            f"provisional: {LN_ACTIVE}; provisional: {LN_REVIEW}",
        ),
        (lambda b: [b.cond(b.LN_CLASS_IV, verification="refuted")], "clear", NONE_ACTIVE),
        (lambda b: [b.cond(b.LN_CLASS_IV, onset="2025-08-01")], "clear", NONE_ACTIVE),
        (lambda b: [b.cond(b.LN), b.cond(b.LN_CLASS_IV)], "excluded", LN_ACTIVE),
    ],
)
def test_lupus_nephritis(run, b, rows, expected, reason):
    assert run.answer("lupus_nephritis", conditions=rows(b)) == (expected, reason)


def test_inactive_nephritis_is_shown_in_evidence(run, b):
    res = run(conditions=[b.cond(b.LN_CLASS_IV, clinical="resolved", abatement="2023-01-01")])
    assert b.notes(res, "lupus_nephritis") == ["inactive"]


# ----------------------------------------------------------------------------------- E2
@pytest.mark.parametrize(
    ("rows", "expected", "reason"),
    [
        (lambda b: [b.cond(b.CNS_LUPUS, onset="2010-01-01")], "excluded", "active CNS lupus"),
        (lambda b: [b.cond(b.SEIZURE, recorded="2024-07-01")], "review", ATTRIBUTION),
        (lambda b: [b.cond(b.SEIZURE, recorded="2024-06-30")], "review", ATTRIBUTION),
        (lambda b: [b.cond(b.SEIZURE, recorded="2024-06-29")], "clear", NONE_CNS),
        (lambda b: [b.cond(b.PSYCHOSIS, onset="2025-01-01")], "review", ATTRIBUTION),
        (lambda b: [b.cond(b.SEIZURE)], "review", ATTRIBUTION),  # undated: cannot rule out
        (lambda b: [b.cond(b.HEADACHE, recorded="2025-04-01")], "review", HEADACHE),
        (
            lambda b: [b.cond(b.HEADACHE, recorded="2025-04-01", clinical="resolved")],
            "clear",
            NONE_CNS,
        ),
        (lambda b: [b.cond(b.HEADACHE, recorded="2025-03-01")], "clear", NONE_CNS),  # 121 days
        (
            lambda b: [b.cond(b.HEADACHE, recorded="2025-05-01"), b.cond(b.CNS_LUPUS)],
            "excluded",
            "active CNS lupus",
        ),
        (
            lambda b: [
                b.cond(b.HEADACHE, recorded="2025-05-01"),
                b.cond(b.SEIZURE, recorded="2025-05-01"),
            ],
            "review",
            f"{ATTRIBUTION}; {HEADACHE}",
        ),
    ],
)
def test_cns(run, b, rows, expected, reason):
    assert run.answer("cns_lupus", conditions=rows(b)) == (expected, reason)


def test_cns_old_records_noted(run, b):
    res = run(conditions=[b.cond(b.HEADACHE, recorded="2024-01-01")])
    assert b.notes(res, "cns_lupus") == ["older than 90 days"]


# ----------------------------------------------------------------------------------- E3
HCG_POS = {"value_type": "quantity", "value_number": 120.0, "ref_high": 5.0}


@pytest.mark.parametrize(
    ("gender", "conds", "obs", "expected"),
    [
        ("female", lambda b: [b.cond(b.PREGNANCY, onset="2025-01-01")], lambda b: [], "excluded"),
        (
            "female",
            lambda b: [b.cond(b.PREGNANCY, onset="2024-08-01")],
            lambda b: [],
            "clear",
        ),  # 333 days > 300
        (
            "female",
            lambda b: [b.cond(b.PREGNANCY, onset="2025-01-01", clinical="resolved")],
            lambda b: [],
            "clear",
        ),
        ("female", lambda b: [b.cond(b.PREGNANCY)], lambda b: [], "review"),  # undated
        ("male", lambda b: [b.cond(b.PREGNANCY, onset="2025-01-01")], lambda b: [], "clear"),
        (None, lambda b: [b.cond(b.PREGNANCY, onset="2025-01-01")], lambda b: [], "excluded"),
        ("female", lambda b: [b.cond(b.LACTATION)], lambda b: [], "excluded"),
        ("female", lambda b: [b.cond(b.LACTATION, clinical="resolved")], lambda b: [], "clear"),
        (
            "female",
            lambda b: [
                b.cond(
                    b.DELIVERY,
                    resource_type="Procedure",
                    clinical=None,
                    verification=None,
                    onset="2024-12-01",
                )
            ],
            lambda b: [],
            "review",
        ),
        (
            "female",
            lambda b: [
                b.cond(
                    b.DELIVERY,
                    resource_type="Procedure",
                    clinical="procedure:completed",
                    verification=None,
                    onset="2024-01-01",
                )
            ],
            lambda b: [],
            "clear",
        ),
        (
            "female",
            lambda b: [],
            lambda b: [
                b.obs(
                    b.PREG_STATUS,
                    "2025-06-15",
                    value_type="codeable",
                    value_codes=(f"{b.LOINC}|{b.PREGNANT_ANSWER}",),
                )
            ],
            "excluded",
        ),
        (
            "female",
            lambda b: [],
            lambda b: [
                b.obs(
                    b.PREG_STATUS,
                    "2025-05-01",
                    value_type="codeable",
                    value_codes=(f"{b.LOINC}|{b.PREGNANT_ANSWER}",),
                )
            ],
            "clear",
        ),  # 60 days
        ("female", lambda b: [], lambda b: [b.obs(b.HCG, "2025-06-20", **HCG_POS)], "excluded"),
        ("female", lambda b: [], lambda b: [b.obs(b.HCG, "2025-05-20", **HCG_POS)], "clear"),
        (
            "female",
            lambda b: [],
            lambda b: [
                b.obs(b.HCG, "2025-06-20", value_type="quantity", value_number=2.0, ref_high=5.0)
            ],
            "clear",
        ),
        (
            "female",
            lambda b: [
                b.cond(
                    b.DELIVERY,
                    resource_type="Procedure",
                    clinical=None,
                    verification=None,
                    onset="2024-12-01",
                )
            ],
            lambda b: [b.obs(b.HCG, "2025-06-20", **HCG_POS)],
            "excluded",
        ),
    ],
)
def test_pregnancy_lactation(run, b, gender, conds, obs, expected):
    ans, reason = run.answer(
        "pregnancy_lactation",
        patients=[b.pat(gender=gender)],
        conditions=conds(b),
        observations=obs(b),
    )
    assert ans == expected
    if expected == "review":
        assert reason


def test_pregnancy_is_dated_by_its_onset_not_a_late_recorded_date(run, b):
    old = b.cond(b.PREGNANCY, onset="2024-04-01", recorded="2025-06-20")  # S = 2025-06-30
    assert run.answer("pregnancy_lactation", conditions=[old])[0] == "clear"
    new = b.cond(b.PREGNANCY, onset="2025-01-01", recorded="2025-01-02")
    assert run.answer("pregnancy_lactation", conditions=[new])[0] == "excluded"
    undated_onset = b.cond(b.PREGNANCY, recorded="2025-06-01")
    assert run.answer("pregnancy_lactation", conditions=[undated_onset])[0] == "excluded"


def test_delivery_reason_is_possible_lactation(run, b):
    ans, reason = run.answer(
        "pregnancy_lactation",
        conditions=[
            b.cond(
                b.DELIVERY,
                resource_type="Procedure",
                clinical=None,
                verification=None,
                onset="2025-01-01",
            )
        ],
    )
    assert (ans, reason) == ("review", "possible lactation")


# ----------------------------------------------------------------------------------- E4
def test_chronic_illness(run, b):
    assert run.answer("chronic_illness", conditions=[b.cond(b.HEART_FAILURE)]) == (
        "review",
        "major chronic illness: confirm it is well managed",
    )
    ans, _ = run.answer(
        "chronic_illness",
        conditions=[b.cond(b.HEART_FAILURE, clinical="resolved", abatement="2020-01-01")],
    )
    assert ans == "clear"


def test_evidence_dates_are_iso_strings(run, b):
    res = run(conditions=[b.cond(b.HEART_FAILURE, onset="2020-02-03")])
    dates = res.evidence[res.evidence.criterion_id == "chronic_illness"].date.tolist()
    assert dates == [dt.date(2020, 2, 3).isoformat()]
