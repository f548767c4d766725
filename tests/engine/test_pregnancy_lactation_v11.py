"""E3 pregnant or lactating under spec v1.1: each rule inside and outside its window, swept over
every code of the value set it reads, one patient per code in one run; male patients are
never assessed. S = 2025-06-30."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_cohort.terminology import default_directory
from fhir_cohort.terminology.codes import SYSTEMS

PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
# Every system's first OID, from the one table of code-system spellings (WHO ICD-10 included).
OID = {cs.uri: f"urn:oid:{cs.oids[0]}" for cs in SYSTEMS if cs.oids}


def members(vs_id: str) -> list[tuple[str, str]]:
    data = json.loads((default_directory() / f"{vs_id}.json").read_text(encoding="utf-8"))
    return sorted(
        (inc["system"], c["code"]) for inc in data["compose"]["include"] for c in inc["concept"]
    )


def answers(
    run: Any,
    b: Any,
    rows: list[tuple[str, Any]],
    *,
    gender: str = "female",
    table: str = "conditions",
) -> dict[str, tuple[str, str]]:
    """One patient per (pid, builder) pair; returns pid -> (answer, reason)."""
    pats = [b.pat(pid, gender=gender) for pid, _ in rows]
    recs = [make(pid) for pid, make in rows]
    res = run(patients=pats, **{table: recs})
    a = res.answers[res.answers.criterion_id == "pregnancy_lactation"]
    return {p: (x, r) for p, x, r in zip(a.patient_id, a.answer, a.reason, strict=True)}


def sweep(run: Any, b: Any, codes: list[tuple[str, str]], make: Any, **kw: Any) -> dict:
    rows = [(f"p{i}", (lambda pid, s=s, c=c: make(pid, s, c))) for i, (s, c) in enumerate(codes)]
    got = answers(run, b, rows, **kw)
    return {codes[int(pid[1:])]: v for pid, v in got.items()}


# ------------------------------------------------------------------ conditions (every code)
def test_every_pregnancy_code_active_within_300_days_excludes(run, b):
    codes = members("pregnancy")
    got = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s, onset="2025-01-01"))
    wrong = {k: v for k, v in got.items() if v[0] != "excluded" or "active pregnancy" not in v[1]}
    assert not wrong, list(wrong.items())[:5]
    old = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s, onset="2024-08-01"))
    assert {v[0] for v in old.values()} == {"clear"}  # 333 days > 300


def test_every_antenatal_code_in_its_oid_spelling_is_pregnancy_not_delivery(run, b):
    codes = [
        (s, c)
        for s, c in members("pregnancy")
        if c[:3] in ("Z34", "O09", "O26", "O36", "O47", "O30", "O48")
    ]
    assert len(codes) > 400
    got = sweep(
        run,
        b,
        codes,
        lambda pid, s, c: b.cond(c.replace(".", ""), pid, system=OID[s], onset="2025-03-01"),
    )
    assert {v for v in got.values()} == {
        ("excluded", "active pregnancy with onset within 300 days")
    }


def test_every_lactation_code_active_excludes_and_resolved_does_not(run, b):
    codes = members("lactation")
    got = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s))
    assert {v for v in got.values()} == {("excluded", "active lactation")}
    gone = sweep(
        run,
        b,
        codes,
        lambda pid, s, c: b.cond(c, pid, system=s, clinical="resolved", abatement="2024-01-01"),
    )
    assert {v[0] for v in gone.values()} == {"clear"}


def test_suppressed_lactation_is_not_lactation(run, b):
    # An active O92.5 is a recent birth (review), never "active lactation" (excluded).
    recent = b.cond("O92.5", system=b.ICD10, onset="2025-05-01")
    assert run.answer("pregnancy_lactation", conditions=[recent]) == (
        "review",
        "possible lactation",
    )
    old = b.cond("O92.5", system=b.ICD10, onset="2024-01-01")
    assert run.answer("pregnancy_lactation", conditions=[old])[0] == "clear"


def test_every_delivery_code_within_365_days_is_review_outside_clear(run, b):
    codes = [(s, c) for s, c in members("delivery")]
    recent = sweep(
        run,
        b,
        codes,
        lambda pid, s, c: b.cond(
            c, pid, system=s, onset="2024-09-01", clinical="resolved", abatement="2024-10-01"
        ),
    )
    assert {v for v in recent.values()} == {("review", "possible lactation")}
    old = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s, onset="2024-06-01"))
    assert {v[0] for v in old.values()} == {"clear"}  # 394 days


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("procedure:completed", "review"),
        ("procedure:in-progress", "review"),
        ("procedure:not-done", "clear"),
        ("procedure:entered-in-error", "clear"),
    ],
)
def test_every_delivery_procedure_completed_within_365_days_is_review(run, b, status, expected):
    codes = [
        (s, c)
        for s, c in members("delivery")
        if s == PCS or (s == b.SNOMED and not c.startswith("O"))
    ]
    assert len([1 for s, _ in codes if s == PCS]) == 10

    def make(pid: str, s: str, c: str) -> tuple:
        return b.cond(
            c,
            pid,
            system=OID[s],
            resource_type="Procedure",
            clinical=status,
            verification=None,
            onset="2024-12-01",
        )

    got = sweep(run, b, codes, make)
    assert {v[0] for v in got.values()} == {expected}
    if expected == "review":
        assert {v[1] for v in got.values()} == {"possible lactation"}


def test_delivery_procedure_outside_365_days_is_clear(run, b):
    proc = b.cond(
        "10D00Z1",
        system=PCS,
        resource_type="Procedure",
        clinical="procedure:completed",
        verification=None,
        onset="2024-06-29",
    )
    assert run.answer("pregnancy_lactation", conditions=[proc])[0] == "clear"
    proc = b.cond(
        "10D00Z1",
        system=PCS,
        resource_type="Procedure",
        clinical="procedure:completed",
        verification=None,
        onset="2024-06-30",
    )
    assert run.answer("pregnancy_lactation", conditions=[proc])[0] == "review"


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ("2025-06-30", "excluded"),
        ("2025-05-31", "excluded"),
        ("2025-05-30", "clear"),
        (None, "review"),
        ("2025-07-01", "clear"),
    ],
)
def test_positive_pregnancy_test_code_within_30_days(run, b, onset, expected):
    spellings = [
        ("http://hl7.org/fhir/sid/icd-10-cm", "Z32.01"),
        ("urn:oid:2.16.840.1.113883.6.90", "Z3201"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "z32.01"),
    ]
    for system, code in spellings:
        # Resolved or not: the test result itself is the fact.
        rec = b.cond(code, system=system, onset=onset, clinical="resolved")
        ans, reason = run.answer("pregnancy_lactation", conditions=[rec])
        assert ans == expected, (system, code)
        if expected == "excluded":
            assert reason == "positive pregnancy test (diagnosis code) within 30 days"


def test_phase_not_coded_is_review_within_365_days(run, b):
    codes = members("pregnancy_or_puerperium")
    got = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s, onset="2025-01-01"))
    assert {v for v in got.values()} == {("review", "pregnancy or puerperium, phase not coded")}
    old = sweep(run, b, codes, lambda pid, s, c: b.cond(c, pid, system=s, onset="2024-01-01"))
    assert {v[0] for v in old.values()} == {"clear"}


# ------------------------------------------------------------------ observations
BF = "63895-7"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-06-30", "excluded"),
        ("2025-05-31", "excluded"),
        ("2025-05-30", "clear"),
        ("2025-07-01", "clear"),
        (None, "review"),
    ],
)
def test_every_breastfeeding_answer_within_30_days_excludes(run, b, date, expected):
    codes = members("breastfeeding_status_breastfeeding")

    def make(pid: str, s: str, c: str) -> tuple:
        return b.obs(BF, date, pid, value_type="codeable", value_codes=(f"{OID[s]}|{c}",))

    got = sweep(run, b, codes, make, table="observations")
    assert {v[0] for v in got.values()} == {expected}
    if expected == "excluded":
        assert {v[1] for v in got.values()} == {"breastfeeding status within 30 days"}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            {
                "value_type": "codeable",
                "value_codes": ("http://loinc.org|LA29253-4",),
                "value_string": "Not currently breastfeeding",
            },
            "clear",
        ),
        ({"value_type": "codeable", "value_codes": ("http://loinc.org|LA4489-6",)}, "clear"),
        ({"value_type": "boolean", "value_string": "true"}, "excluded"),
        ({"value_type": "boolean", "value_string": "false"}, "clear"),
        ({"value_type": "codeable", "value_string": "Currently breastfeeding"}, "excluded"),
        ({"value_type": "string", "value_string": "  BREASTFEEDING "}, "excluded"),
        ({"value_type": "string", "value_string": "no"}, "clear"),
        (
            {
                "value_type": "codeable",
                "value_codes": ("http://loinc.org|LA29252-6",),
                "status": "cancelled",
            },
            "clear",
        ),
        (
            {
                "value_type": "codeable",
                "value_codes": ("http://loinc.org|LA29252-6",),
                "system": "urn:oid:2.16.840.1.113883.6.1",
            },
            "excluded",
        ),
    ],
)
def test_breastfeeding_status_answers(run, b, kw, expected):
    o = b.obs(BF, "2025-06-20", **kw)
    assert run.answer("pregnancy_lactation", observations=[o])[0] == expected


V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
HCG_EQUIVOCAL = [
    {"value_type": "codeable", "interpretation": (f"{V3}|IND",)},
    {"value_type": "quantity", "value_number": 12.0, "value_unit": "mIU/mL"},  # no range
    {"value_type": "quantity", "value_number": 3.0},  # no range
]


@pytest.mark.parametrize("kw", HCG_EQUIVOCAL)
@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-06-20", "review"),
        ("2025-05-31", "review"),
        ("2025-05-30", "clear"),
    ],
)
def test_equivocal_or_rangeless_hcg_within_30_days_is_review(run, b, kw, date, expected):
    codes = members("hcg")
    got = sweep(
        run, b, codes, lambda pid, s, c: b.obs(c, date, pid, system=s, **kw), table="observations"
    )
    assert {v[0] for v in got.values()} == {expected}
    if expected == "review":
        reasons = {v[1] for v in got.values()}
        assert reasons <= {
            "equivocal hCG within 30 days",
            "hCG with no reference range within 30 days",
        }


def test_every_hcg_code_positive_within_30_days_excludes(run, b):
    codes = members("hcg")
    pos = {"value_type": "quantity", "value_number": 120.0, "ref_high": 5.0}
    got = sweep(
        run,
        b,
        codes,
        lambda pid, s, c: b.obs(c, "2025-06-20", pid, system=s, **pos),
        table="observations",
    )
    assert {v for v in got.values()} == {("excluded", "positive hCG within 30 days")}


def test_positive_beats_equivocal_and_negative_is_clear(run, b):
    pos = b.obs(b.HCG, "2025-06-20", value_type="quantity", value_number=120.0, ref_high=5.0)
    eqv = b.obs(b.HCG, "2025-06-21", value_type="quantity", value_number=12.0)
    assert run.answer("pregnancy_lactation", observations=[pos, eqv])[0] == "excluded"
    neg = b.obs(b.HCG, "2025-06-21", value_type="quantity", value_number=1.0, ref_high=5.0)
    assert run.answer("pregnancy_lactation", observations=[neg])[0] == "clear"


# ------------------------------------------------------------------ male: not applicable
def test_male_patient_is_never_assessed(run, b):
    conds = [
        b.cond(b.PREGNANCY, onset="2025-01-01"),
        b.cond(b.LACTATION),
        b.cond("Z32.01", system=b.ICD10, onset="2025-06-20"),
        b.cond(
            "10D00Z1",
            system=PCS,
            resource_type="Procedure",
            clinical="procedure:completed",
            verification=None,
            onset="2025-01-01",
        ),
        b.cond("O24", system=b.ICD10, onset="2025-01-01"),
    ]
    obs = [
        b.obs(BF, "2025-06-20", value_type="codeable", value_codes=("http://loinc.org|LA29252-6",)),
        b.obs(b.HCG, "2025-06-20", value_type="quantity", value_number=120.0, ref_high=5.0),
        b.obs(b.HCG, "2025-06-21", value_type="quantity", value_number=12.0),
    ]
    ans, reason = run.answer(
        "pregnancy_lactation", patients=[b.pat(gender="male")], conditions=conds, observations=obs
    )
    assert (ans, reason) == ("clear", "not applicable (sex male)")
    ans, _ = run.answer(
        "pregnancy_lactation", patients=[b.pat(gender="female")], conditions=conds, observations=obs
    )
    assert ans == "excluded"


def test_every_breastfeeding_status_code_in_every_system_spelling(run, b):
    codes = members("breastfeeding_status")
    assert len(codes) >= 2
    yes = ("http://loinc.org|LA29252-6",)
    for system, code in codes:
        for s in (system, OID[system]):
            o = b.obs(code, "2025-06-20", system=s, value_type="codeable", value_codes=yes)
            assert run.answer("pregnancy_lactation", observations=[o])[0] == "excluded", s
            o = b.obs(code, "2025-06-20", system=s, value_type="boolean", value_string="true")
            assert run.answer("pregnancy_lactation", observations=[o])[0] == "excluded", s


@pytest.mark.parametrize(
    ("date", "kw", "expected"),
    [
        ("2025-06-20", {}, "excluded"),
        ("2025-05-30", {}, "clear"),
        ("2025-06-20", {"value_type": "boolean", "value_string": "false"}, "clear"),
        ("2025-06-20", {"value_type": "boolean", "value_string": "true"}, "excluded"),
    ],
)
def test_every_lactation_finding_recorded_as_an_observation(run, b, date, kw, expected):
    codes = [(s, c) for s, c in members("lactation") if s == b.SNOMED]
    got = sweep(
        run, b, codes, lambda pid, s, c: b.obs(c, date, pid, system=s, **kw), table="observations"
    )
    assert {v[0] for v in got.values()} == {expected}
