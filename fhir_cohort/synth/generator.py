"""Deterministic synthetic hospital: Bulk-style NDJSON plus ``expected.csv``.

Patients are generated and written one at a time (constant memory). The same ``seed`` and
``as_of`` give byte-identical files: one ``random.Random`` per patient seeded from
(seed, index), no wall-clock values, gzip headers with mtime 0.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO

import orjson
import pandas as pd

from fhir_cohort.synth import codes as C
from fhir_cohort.synth import fhirbuild as fb
from fhir_cohort.synth.fhirbuild import Ctx, Resource
from fhir_cohort.synth.scenarios import SCENARIOS, Scenario, age_answer, status_of

RESOURCE_TYPES: tuple[str, ...] = (
    "Patient",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
    "Medication",
    "Observation",
    "Procedure",
    "Encounter",
)
EXPECTED_FILE = "expected.csv"
EXPECTED_COLUMNS: tuple[str, ...] = ("patient_id", "status", *C.CRITERIA, "scenario")
BACKGROUND = "background"


@dataclass(frozen=True)
class PatientRecord:
    """One generated patient: its resources (Patient first) and expected answers."""

    patient_id: str
    scenario: str
    answers: dict[str, str]
    resources: list[Resource]

    @property
    def status(self) -> str:
        return status_of(self.answers)


@dataclass
class GenerationSummary:
    out_dir: Path
    n_patients: int = 0
    n_scenario: int = 0
    n_background: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def n_resources(self) -> int:
        return sum(self.resources.values())


# --- scenario patients ----------------------------------------------------------------------


def build_scenario(sc: Scenario, as_of: date) -> PatientRecord:
    ctx = Ctx(sc.patient_id, as_of)
    deceased = None if sc.deceased is None else ctx.day(sc.deceased)
    resources: list[Resource] = [
        fb.patient(
            ctx,
            gender=sc.gender,
            birth_date=sc.birth(as_of),
            deceased=deceased,
            deceased_boolean=sc.deceased_boolean,
            family="Scenario",
            given=sc.name,
        )
    ]
    for spec in sc.resources:
        resources.extend(spec(ctx))
    # Noise that no criterion reads.
    resources.append(fb.encounter(ctx, at=-30))
    resources.append(fb.observation(ctx, C.GLUCOSE, at=-30, quantity=(95, "mg/dL")))
    return PatientRecord(sc.patient_id, sc.name, sc.answers(as_of), resources)


# --- background patients --------------------------------------------------------------------

_FAMILIES = ("Smith", "Garcia", "Nguyen", "Okafor", "Kowalski", "Haddad", "Lindqvist", "Rossi")
_GIVEN_F = ("Ana", "Maria", "Grace", "Yuki", "Amara", "Lena")
_GIVEN_M = ("John", "Omar", "Luis", "Kenji", "Tomas", "Ivan")


def _patient_rng(seed: int, index: int) -> random.Random:
    # Independent stream per patient: patient i does not depend on how others were drawn.
    return random.Random(seed * 1_000_003 + index)


def build_background(index: int, seed: int, as_of: date) -> PatientRecord:
    """A non-lupus patient with everyday noise; its answers are known by construction."""
    rng = _patient_rng(seed, index)
    pid = f"bg-{index:06d}"
    ctx = Ctx(pid, as_of)
    female = rng.random() < 0.5
    gender = "female" if female else "male"
    answers: dict[str, str] = dict(C.NO_RECORD_ANSWERS)

    r = rng.random()
    birth: date | None
    if r < 0.02:
        birth = None
        age_years = 45
    else:
        age_years = rng.randint(2, 17) if r < 0.10 else rng.randint(18, 90)
        birth = fb.years_before(as_of, age_years) - timedelta(days=rng.randint(1, 300))
    deceased: date | None = None
    if birth is not None and age_years >= 18 and rng.random() < 0.03:
        deceased = as_of - timedelta(days=rng.randint(1, 300))
    birth_raw = None if birth is None else birth.isoformat()
    answers["age"] = age_answer(birth_raw, deceased, as_of)
    max_back = 3000 if birth is None else min(3000, (as_of - birth).days - 1)

    def back(lo: int, hi: int) -> int:
        """A day offset in [-hi, -lo], never before birth."""
        hi = max(lo, min(hi, max_back))
        return -rng.randint(lo, hi)

    res: list[Resource] = [
        fb.patient(
            ctx,
            gender=gender,
            birth_date=birth_raw,
            deceased=None if deceased is None else deceased.isoformat(),
            family=rng.choice(_FAMILIES),
            given=rng.choice(_GIVEN_F if female else _GIVEN_M),
        )
    ]

    # Everyday chronic conditions and their drugs.
    if age_years >= 18 and rng.random() < 0.4:
        onset = back(200, 3000)
        res.append(fb.condition(ctx, rng.choice((C.HYPERTENSION, C.HYPERTENSION_I10)), onset=onset))
        res += fb.med_request(ctx, C.LISINOPRIL, authored=onset + 1, supply_days=90, repeats=3)
        res += fb.med_statement(ctx, C.LISINOPRIL, at=back(10, 100))
    if age_years >= 18 and rng.random() < 0.25:
        onset = back(200, 3000)
        res.append(fb.condition(ctx, rng.choice((C.DIABETES_T2, C.DIABETES_E119)), onset=onset))
        res += fb.med_statement(ctx, C.METFORMIN, start=onset + 5, status="active")
    if age_years >= 30 and rng.random() < 0.3:
        for k in range(rng.randint(1, 4)):
            res += fb.dispense(ctx, C.ATORVASTATIN, handed=-30 - 90 * k, days_supply=90)
    if rng.random() < 0.1:
        # A short prednisone burst: a glucocorticoid far below 12 weeks.
        res += fb.dispense(ctx, C.PREDNISONE, handed=back(20, 600), days_supply=5)

    # E2 noise: headaches, epilepsy, seizures.
    r = rng.random()
    if r < 0.08:
        res.append(fb.condition(ctx, rng.choice((C.HEADACHE, C.MIGRAINE)), onset=back(5, 85)))
        answers["cns_lupus"] = "review"
    elif r < 0.16:
        res.append(fb.condition(ctx, C.HEADACHE, onset=back(120, 2000)))
    elif r < 0.19:
        res.append(fb.condition(ctx, C.EPILEPSY, onset=back(400, 3000)))
    elif r < 0.21:
        res.append(fb.condition(ctx, C.SEIZURE, onset=back(20, 330)))
        answers["cns_lupus"] = "review"

    # E3 noise: pregnancies and deliveries in women 18-50.
    if female and birth is not None and 18 <= age_years <= 50:
        r = rng.random()
        if r < 0.06:
            res.append(fb.condition(ctx, C.PREGNANCY, onset=back(20, 250)))
            answers["pregnancy_lactation"] = "excluded"
        elif r < 0.10:
            onset = back(600, 1500)
            res.append(
                fb.condition(
                    ctx, C.PREGNANCY, onset=onset, clinical="resolved", abatement=onset + 270
                )
            )
        elif r < 0.13:
            day = back(30, 330)
            res.append(
                fb.condition(
                    ctx, C.DELIVERY_O80, onset=day, clinical=None, category="encounter-diagnosis"
                )
            )
            answers["pregnancy_lactation"] = "review"

    # E4 noise: heart failure and cancers, active or resolved.
    r = rng.random()
    if age_years >= 18:
        if r < 0.05:
            res.append(
                fb.condition(
                    ctx, rng.choice((C.HEART_FAILURE, C.HEART_FAILURE_I509)), onset=back(100, 3000)
                )
            )
            answers["chronic_illness"] = "review"
        elif r < 0.08:
            res.append(
                fb.condition(ctx, rng.choice((C.MALIGNANCY, C.BREAST_CANCER)), onset=back(30, 1000))
            )
            answers["chronic_illness"] = "review"
        elif r < 0.11:
            onset = back(1500, 3000)
            res.append(
                fb.condition(
                    ctx, C.BREAST_CANCER, onset=onset, clinical="resolved", abatement=onset + 400
                )
            )

    # I4 noise: some negative anti-dsDNA tests (in or before the 365-day lookback).
    r = rng.random()
    if r < 0.08:
        res.append(
            fb.observation(
                ctx,
                C.DSDNA_IU,
                at=back(5, 360),
                quantity=(rng.randint(1, 25), "[IU]/mL"),
                ref_high=30,
                ref_unit="[IU]/mL",
                interpretation=C.I_NORMAL,
            )
        )
        answers["autoantibody"] = "not_met"
    elif r < 0.11:
        res.append(
            fb.observation(
                ctx,
                C.DSDNA_IU,
                at=back(400, 1500),
                quantity=(rng.randint(1, 25), "[IU]/mL"),
                ref_high=30,
                ref_unit="[IU]/mL",
                interpretation=C.I_NORMAL,
            )
        )

    # Visits with routine labs and vitals (the bulk of the volume).
    for _ in range(rng.randint(7, 16)):
        day = back(1, 1500)
        res.append(fb.encounter(ctx, at=day))
        res.append(fb.observation(ctx, C.GLUCOSE, at=day, quantity=(rng.randint(70, 180), "mg/dL")))
        res.append(
            fb.observation(
                ctx, C.CREATININE, at=day, quantity=(round(rng.uniform(0.5, 1.6), 2), "mg/dL")
            )
        )
        res.append(
            fb.observation(
                ctx,
                C.BODY_WEIGHT,
                at=day,
                category="vital-signs",
                quantity=(round(rng.uniform(45, 120), 1), "kg"),
            )
        )
        res.append(
            fb.observation(
                ctx,
                C.HEART_RATE,
                at=day,
                category="vital-signs",
                quantity=(rng.randint(55, 100), "/min"),
            )
        )
    if age_years >= 45 and rng.random() < 0.2:
        res.append(fb.procedure(ctx, C.COLONOSCOPY, at=back(30, 2000)))

    return PatientRecord(pid, BACKGROUND, answers, res)


# --- streaming ------------------------------------------------------------------------------


def iter_patients(
    n_background: int, seed: int, as_of: date, *, scenarios: bool = True
) -> Iterator[PatientRecord]:
    """Yield scenario patients, then background patients, one at a time."""
    if scenarios:
        for sc in SCENARIOS:
            yield build_scenario(sc, as_of)
    for i in range(n_background):
        yield build_background(i, seed, as_of)


class _Writers:
    """One output file per (resource type, shard); a patient goes to shard ``i % n``."""

    def __init__(self, out_dir: Path, files_per_type: int, use_gzip: bool) -> None:
        self.handles: dict[tuple[str, int], IO[bytes]] = {}
        self.paths: list[Path] = []
        suffix = ".ndjson.gz" if use_gzip else ".ndjson"
        for rtype in RESOURCE_TYPES:
            for k in range(files_per_type):
                path = out_dir / f"{rtype}.{k:03d}{suffix}"
                raw = open(path, "wb")  # noqa: SIM115 - closed in close()
                fh: IO[bytes]
                if use_gzip:
                    # filename="" and mtime=0 keep the gzip header reproducible.
                    fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
                    self._raw = getattr(self, "_raw", [])
                    self._raw.append(raw)
                else:
                    fh = io.BufferedWriter(raw, buffer_size=1 << 20)
                self.handles[(rtype, k)] = fh
                self.paths.append(path)

    def write(self, rtype: str, shard: int, resource: Resource) -> None:
        self.handles[(rtype, shard)].write(orjson.dumps(resource) + b"\n")

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        for raw in getattr(self, "_raw", []):
            raw.close()


def generate(
    out_dir: str | Path,
    n_background: int,
    seed: int,
    as_of: date,
    *,
    scenarios: bool = True,
    files_per_type: int = 1,
    gzip: bool = False,
) -> GenerationSummary:
    """Write the synthetic hospital to ``out_dir`` and return what was written."""
    if files_per_type < 1:
        raise ValueError("files_per_type must be >= 1")
    if n_background < 0:
        raise ValueError("n_background must be >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = GenerationSummary(out_dir=out, resources=dict.fromkeys(RESOURCE_TYPES, 0))
    writers = _Writers(out, files_per_type, gzip)
    expected_path = out / EXPECTED_FILE
    try:
        with open(expected_path, "w", newline="", encoding="utf-8") as ef:
            ew = csv.writer(ef, lineterminator="\n")
            ew.writerow(EXPECTED_COLUMNS)
            for i, rec in enumerate(iter_patients(n_background, seed, as_of, scenarios=scenarios)):
                shard = i % files_per_type
                for resource in rec.resources:
                    rtype = resource["resourceType"]
                    writers.write(rtype, shard, resource)
                    summary.resources[rtype] += 1
                ew.writerow(
                    [
                        rec.patient_id,
                        rec.status,
                        *(rec.answers[c] for c in C.CRITERIA),
                        rec.scenario,
                    ]
                )
                summary.n_patients += 1
                if rec.scenario == BACKGROUND:
                    summary.n_background += 1
                else:
                    summary.n_scenario += 1
    finally:
        writers.close()
    summary.files = [*writers.paths, expected_path]
    return summary


def load_expected(directory: str | Path) -> pd.DataFrame:
    """The expected answers of a generated folder, one row per patient (all as strings)."""
    return pd.read_csv(Path(directory) / EXPECTED_FILE, dtype=str, keep_default_na=False)
