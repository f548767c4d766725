"""Column names of the tidy tables that flatten produces and evaluators read.

See docs/architecture.md for the meaning of each column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

PATIENT_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "birth_date_raw",
    "gender",
    "deceased",
    "deceased_date",
    "deceased_high",
)

CONDITION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "resource_type",
    "resource_id",
    "system",
    "code",
    "display",
    "clinical_status",
    "verification_status",
    "onset_date",
    "onset_high",
    "abatement_date",
    "abatement_high",
    "abatement_age",
    "has_abatement",
    "recorded_date",
    "recorded_high",
    "severity_codes",
    "code_text",
)

MEDICATION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "resource_type",
    "resource_id",
    "status",
    "intent",
    "do_not_perform",
    "system",
    "code",
    "display",
    "text",
    "start",
    "end",
    "end_rule",
    "route_codes",
    "route_text",
    "form_codes",
    "form_text",
    # Partial dates are ranges (spec v1.1): start/end above are the widest reading (a partial
    # start at its first day, a partial end at its last day); these the narrowest. Equal to
    # start/end for full dates; None (e.g. rows built by hand) means the same as start/end.
    "start_late",
    "end_early",
)

OBSERVATION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "resource_id",
    "status",
    "system",
    "code",
    "display",
    "date",
    "date_high",
    "value_type",
    "value_string",
    "value_number",
    "value_comparator",
    "value_unit",
    "value_codes",
    "ratio_numerator",
    "ratio_denominator",
    "ref_high",
    "ref_high_comparator",
    "ref_high_string",
    "interpretation_codes",
    # valueQuantity.code when its system is UCUM (value_unit keeps the unit text, else code).
    "value_unit_code",
)

END_RULES: tuple[str, ...] = ("explicit", "to_asof", "unknown", "per_dose")


def empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class Tables:
    """The four tidy tables; every evaluator reads only these."""

    patients: pd.DataFrame = field(default_factory=lambda: empty_frame(PATIENT_COLUMNS))
    conditions: pd.DataFrame = field(default_factory=lambda: empty_frame(CONDITION_COLUMNS))
    medications: pd.DataFrame = field(default_factory=lambda: empty_frame(MEDICATION_COLUMNS))
    observations: pd.DataFrame = field(default_factory=lambda: empty_frame(OBSERVATION_COLUMNS))

    @classmethod
    def from_rows(
        cls,
        patients: list[tuple],
        conditions: list[tuple],
        medications: list[tuple],
        observations: list[tuple],
    ) -> Tables:
        """Build tables from row tuples in the column order above."""

        def frame(rows: list[tuple], cols: tuple[str, ...]) -> pd.DataFrame:
            if not rows:
                return empty_frame(cols)
            return pd.DataFrame.from_records(rows, columns=list(cols))

        return cls(
            patients=frame(patients, PATIENT_COLUMNS),
            conditions=frame(conditions, CONDITION_COLUMNS),
            medications=frame(medications, MEDICATION_COLUMNS),
            observations=frame(observations, OBSERVATION_COLUMNS),
        )


# Resource types whose rows name a patient; records without a Patient resource are counted
# per type (spec v1.1), never dropped silently.
ROW_RESOURCE_TYPES: tuple[str, ...] = (
    "Condition",
    "Procedure",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
)


def records_without_patient(tables: Tables) -> dict[str, int]:
    """Distinct records per resource type (of those that gave rows) whose subject has no
    Patient resource in the source: the engine screens patients, so these cannot count."""
    known = set(tables.patients["patient_id"].dropna().astype(str))
    counts = dict.fromkeys(ROW_RESOURCE_TYPES, 0)
    for frame in (tables.conditions, tables.medications, tables.observations):
        if frame.empty:
            continue
        # a set look-up per row: pandas' isin of Arrow strings converts the set per call
        pids = frame["patient_id"].astype(str).tolist()
        orphans = frame.loc[[pid not in known for pid in pids]]
        if orphans.empty:
            continue
        if "resource_type" in orphans.columns:
            keys = orphans[["resource_type", "resource_id"]].drop_duplicates()
            for rtype, n in keys["resource_type"].value_counts().items():
                counts[str(rtype)] = counts.get(str(rtype), 0) + int(n)
        else:
            counts["Observation"] += int(orphans["resource_id"].nunique())
    return counts
