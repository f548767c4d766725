"""Row builders for small hand-made Tables, and the real bundled Terminology."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from typing import Any

import pytest

from fhir_cohort.criteria import Trial, default_criteria_path, load_criteria
from fhir_cohort.engine.evaluate import EvaluationResult, evaluate
from fhir_cohort.engine.tables import Tables
from fhir_cohort.fhir.wire import date_bounds
from fhir_cohort.terminology import Terminology

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

AS_OF = dt.date(2025, 6, 30)

# Codes verified against the bundled value sets.
SLE = "55464009"
LUPUS_UNSPECIFIED = "200936003"
DISCOID = "200938002"
LN = "68815009"  # lupus nephritis, class not stated
LN_CLASS_IV = "36402006"
CNS_LUPUS = "1144942002"
SEIZURE = "91175000"
PSYCHOSIS = "69322001"
HEADACHE = "25064002"
PREGNANCY = "77386006"
LACTATION = "1260078007"
DELIVERY = "177184002"
HEART_FAILURE = "84114007"
SEVERE = "http://snomed.info/sct|24484000"
ANTI_DSDNA = "5130-0"
HCG = "2106-3"
PREG_STATUS = "82810-3"
PREGNANT_ANSWER = "LA15173-0"
PREDNISONE = "8640"
METHOTREXATE = "6851"
AZATHIOPRINE = "1256"
MMF = "68149"  # mycophenolate mofetil -> moiety mycophenolic acid
MPA = "7145"
RITUXIMAB = "121191"
HCQ = "5521"

_ids = itertools.count(1)
# Captured at import: several conftest modules share the name "conftest" in sys.modules.
_THIS = sys.modules[__name__]


def d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def dr(s: str | None) -> tuple[dt.date | None, dt.date | None]:
    """(low, high) table columns of a FHIR date as flatten stores them: high only if partial."""
    if not s:
        return None, None
    lo, hi = date_bounds(s) or (None, None)
    return lo, (hi if hi != lo else None)


def pat(
    pid: str = "p1",
    birth: str | None = "1980-01-01",
    gender: str | None = "female",
    deceased: bool | None = None,
    deceased_date: dt.date | None = None,
    deceased_high: dt.date | None = None,
) -> tuple:
    return (pid, birth, gender, deceased, deceased_date, deceased_high)


def cond(
    code: str,
    pid: str = "p1",
    *,
    system: str = SNOMED,
    rid: str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    onset: str | None = None,
    abatement: str | None = None,
    has_abatement: bool = False,
    recorded: str | None = None,
    severity: tuple[str, ...] = (),
    abatement_age: tuple[float, str] | None = None,
    resource_type: str = "Condition",
    display: str | None = None,
    text: str | None = None,
) -> tuple:
    return (
        pid,
        resource_type,
        rid or f"c{next(_ids)}",
        system,
        code,
        display or code,
        clinical,
        verification,
        *dr(onset),
        *dr(abatement),
        abatement_age,
        has_abatement or abatement is not None or abatement_age is not None,
        *dr(recorded),
        severity,
        text,
    )


def med(
    code: str | None,
    start: str | None,
    end: str | None = None,
    pid: str = "p1",
    *,
    rule: str = "explicit",
    resource_type: str = "MedicationRequest",
    status: str | None = "active",
    intent: str | None = "order",
    do_not_perform: bool | None = None,
    system: str | None = RXNORM,
    text: str | None = None,
    display: str | None = None,
    rid: str | None = None,
    route_codes: tuple[str, ...] = (),
    route_text: str | None = None,
    form_codes: tuple[str, ...] = (),
    form_text: str | None = None,
    start_late: str | None = None,
    end_early: str | None = None,
) -> tuple:
    return (
        pid,
        resource_type,
        rid or f"m{next(_ids)}",
        status,
        intent,
        do_not_perform,
        system if code else None,
        code,
        display,
        text,
        d(start) if start else None,
        d(end) if end else None,
        rule,
        route_codes,
        route_text,
        form_codes,
        form_text,
        d(start_late) if start_late else None,
        d(end_early) if end_early else None,
    )


def obs(
    code: str,
    date: str | None,
    pid: str = "p1",
    *,
    system: str = LOINC,
    status: str | None = "final",
    value_type: str = "none",
    value_string: str | None = None,
    value_number: float | None = None,
    value_comparator: str | None = None,
    value_unit: str | None = None,
    value_codes: tuple[str, ...] = (),
    ratio: tuple[float, float] | None = None,
    ref_high: float | None = None,
    ref_high_comparator: str | None = None,
    ref_high_string: str | None = None,
    interpretation: tuple[str, ...] = (),
    rid: str | None = None,
    value_unit_code: str | None = None,
) -> tuple:
    return (
        pid,
        rid or f"o{next(_ids)}",
        status,
        system,
        code,
        code,
        *dr(date),
        value_type,
        value_string,
        value_number,
        value_comparator,
        value_unit,
        value_codes,
        ratio[0] if ratio else None,
        ratio[1] if ratio else None,
        ref_high,
        ref_high_comparator,
        ref_high_string,
        interpretation,
        value_unit_code,
    )


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    return Terminology.load()


@pytest.fixture(scope="session")
def trial() -> Trial:
    return load_criteria(default_criteria_path())


class Runner:
    def __init__(self, trial: Trial, terminology: Terminology) -> None:
        self.trial = trial
        self.terminology = terminology

    def __call__(
        self,
        *,
        patients: list[tuple] | None = None,
        conditions: list[tuple] | None = None,
        medications: list[tuple] | None = None,
        observations: list[tuple] | None = None,
        as_of: dt.date = AS_OF,
        trial: Trial | None = None,
    ) -> EvaluationResult:
        tables = Tables.from_rows(
            patients if patients is not None else [pat()],
            conditions or [],
            medications or [],
            observations or [],
        )
        return evaluate(trial or self.trial, tables, self.terminology, as_of)

    def answer(self, criterion_id: str, pid: str = "p1", **kw: Any) -> tuple[str, str]:
        res = self(**kw)
        row = res.answers[
            (res.answers.patient_id == pid) & (res.answers.criterion_id == criterion_id)
        ].iloc[0]
        return row.answer, row.reason


@pytest.fixture()
def run(trial: Trial, terminology: Terminology) -> Runner:
    return Runner(trial, terminology)


def notes(res: EvaluationResult, criterion_id: str, pid: str = "p1") -> list[str]:
    ev = res.evidence
    return list(ev[(ev.patient_id == pid) & (ev.criterion_id == criterion_id)].note)


@pytest.fixture(scope="session")
def b() -> Any:
    """The row builders and code constants of this module (tests/ is not a package)."""
    return _THIS
