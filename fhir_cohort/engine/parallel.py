"""Evaluate patients on several cores: the engine is a pure function partitionable by patient.

Partitions are taken by a stable hash of the patient id, each child process (forked, so it
inherits the tables instead of receiving them pickled) evaluates its own patients, and the
results are concatenated; outputs are sorted afterwards, so the result does not depend on the
number of workers.
"""

from __future__ import annotations

import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from typing import Any

import pandas as pd

from fhir_cohort.criteria import Trial
from fhir_cohort.engine.evaluate import EvaluationResult, evaluate
from fhir_cohort.engine.tables import Tables

# Below this many patients one process is faster than starting others.
PARALLEL_MIN_PATIENTS = 20_000

_STATE: tuple[Trial, Tables, Any, date, int] | None = None


def _part(ids: pd.Series, index: int, parts: int) -> pd.Series:
    return ids.map(lambda pid: zlib.crc32(str(pid).encode()) % parts == index)


def _subset(tables: Tables, index: int, parts: int) -> Tables:
    def keep(df: pd.DataFrame) -> pd.DataFrame:
        return df[_part(df["patient_id"], index, parts)] if len(df) else df

    return Tables(
        patients=keep(tables.patients),
        conditions=keep(tables.conditions),
        medications=keep(tables.medications),
        observations=keep(tables.observations),
    )


def _evaluate_part(index: int) -> EvaluationResult:
    assert _STATE is not None
    trial, tables, terminology, as_of, parts = _STATE
    return evaluate(trial, _subset(tables, index, parts), terminology, as_of)


def evaluate_parallel(
    trial: Trial, tables: Tables, terminology: Any, as_of: date, workers: int
) -> EvaluationResult:
    """:func:`~fhir_cohort.engine.evaluate.evaluate` over ``workers`` processes when there are
    enough patients to pay for them; the same rows either way."""
    if workers <= 1 or len(tables.patients) < PARALLEL_MIN_PATIENTS:
        return evaluate(trial, tables, terminology, as_of)
    global _STATE
    _STATE = (trial, tables, terminology, as_of, workers)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = list(pool.map(_evaluate_part, range(workers)))
    finally:
        _STATE = None
    return EvaluationResult(
        answers=pd.concat([p.answers for p in parts], ignore_index=True),
        evidence=pd.concat([p.evidence for p in parts], ignore_index=True),
        status=pd.concat([p.status for p in parts], ignore_index=True),
    )
