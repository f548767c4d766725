"""Shared pieces of the domain-query evaluators (engine/queries/): per-patient data, outcome,
evidence and the record rules in common.py."""

from __future__ import annotations

from fhir_cohort.engine.evaluators.common import Context, Evidence, Outcome, PatientData

__all__ = ["Context", "Evidence", "Outcome", "PatientData"]
