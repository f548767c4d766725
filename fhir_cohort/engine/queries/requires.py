"""What each domain query type needs from the data (``QueryType.requires``), by type name.

``fhir_cohort.requirements`` asks a type's registration first and falls back to this table,
so a query module that does not name its ``requires`` yet is still covered. Each function
says only what is particular to its type: every value set field of a node (``value_set_ref``)
is read anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_cohort.requirements import Needs, value_sets_of


def patient(node: Any, needs: Needs) -> None:
    needs.resources("Patient")
    if node.min_age is not None or node.max_age is not None:
        needs.fields("birth_date_raw")
    if node.sexes is not None or node.sexes_not is not None:
        needs.fields("gender")
    if node.deceased_is_false:
        needs.fields("deceased", "deceased_date", "deceased_high")


def condition(node: Any, needs: Needs) -> None:
    # Procedure rows coded in the value sets count too (a dialysis procedure).
    needs.resources("Condition", "Procedure")
    needs.window(node.within)
    if node.missing == "false":
        # No record at all -> false. Only Condition resources are searched for the entry:
        # a patient whose only such record is a Procedure is not fetched by the funnel.
        needs.entry([*node.value_sets, *node.unknown_value_sets])


def procedure(node: Any, needs: Needs) -> None:
    needs.resources("Procedure")
    needs.window(node.within)


def observation(node: Any, needs: Needs) -> None:
    # Every value set of the node, answer and result codes too: LOINC answer codes (LA...)
    # never match Observation.code, so searching them costs nothing, and the tokens stay those
    # of every value set the observation criteria name (as before the language).
    needs.observations(value_sets_of(node))
    if node.result == "positive" and node.positive_before_window == "unknown":
        needs.lookback(None)  # a positive result before the window still matters
    else:
        needs.window(node.within)


def medication(node: Any, needs: Needs) -> None:
    # Not-counted agents are shown in the evidence: their records are read like the others.
    needs.medications([*node.value_sets, *getattr(node, "not_counted_value_sets", ())])
    # An exposure that started long before the window and runs into it counts.
    needs.lookback(None)


# query type name -> requires(node, needs)
REQUIRES: dict[str, Callable[[Any, Needs], None]] = {
    "patient": patient,
    "condition": condition,
    "procedure": procedure,
    "observation": observation,
    "medication": medication,
}
