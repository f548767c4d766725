"""The shipped criteria file as a document, and trials that differ from it in one criterion.

Shorthand criteria are expanded into rule trees on load, so a test that changes a shorthand's
field changes the document and loads it again (as a user editing the file would).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml
from pydantic import TypeAdapter

from fhir_cohort.criteria import Trial, default_criteria_path
from fhir_cohort.criteria.io import parse_criteria
from fhir_cohort.criteria.models import Shorthand


@cache
def _document() -> dict[str, Any]:
    return yaml.safe_load(default_criteria_path().read_text(encoding="utf-8"))


def shipped_document() -> dict[str, Any]:
    """A fresh copy of the shipped NCT06038474 document."""
    return copy.deepcopy(_document())


def shorthand(criterion_id: str, doc: dict[str, Any] | None = None) -> Any:
    """The shorthand model of one criterion as written in the file."""
    doc = doc or _document()
    (item,) = [c for c in doc["criteria"] if c["id"] == criterion_id]
    return TypeAdapter(Shorthand).validate_python(item)


def variant(criterion_id: str, **update: Any) -> Trial:
    """The shipped trial with keys of one criterion replaced."""
    doc = shipped_document()
    (item,) = [c for c in doc["criteria"] if c["id"] == criterion_id]
    item.update(update)
    return parse_criteria(doc)
