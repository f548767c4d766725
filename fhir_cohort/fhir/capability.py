"""What a server says it can do (CapabilityStatement), checked against what a plan needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_cohort.errors import CapabilityError

if TYPE_CHECKING:
    from fhir_cohort.fhir.client import FhirClient

__all__ = ["Capability", "check_plan", "fetch_capability"]

# Parameters every server handles (FHIR R4 3.1.1.5.x) that many statements do not list.
_COMMON_PARAMS = frozenset({"_id", "_lastUpdated"})
# Result parameters: not search parameters, never listed in searchParam.
_RESULT_PARAMS = frozenset(
    {"_count", "_include", "_revinclude", "_sort", "_summary", "_elements", "_total", "_format"}
)


@dataclass(frozen=True)
class Capability:
    """The parts of a CapabilityStatement the fetcher uses."""

    fhir_version: str | None
    search_params: Mapping[str, frozenset[str]]  # resource type -> search parameter names
    includes: Mapping[str, frozenset[str]]  # resource type -> searchInclude values
    export: frozenset[str]  # "system", "patient", "group": where $export is advertised
    software: str | None = None
    # rest.interaction codes ("transaction", "batch", ...) and the types that advertise
    # conditionalCreate: how writes can be sent (fhir_cohort/research.py).
    system_interactions: frozenset[str] = frozenset()
    conditional_create: frozenset[str] = frozenset()

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Capability:
        params: dict[str, frozenset[str]] = {}
        includes: dict[str, frozenset[str]] = {}
        export: set[str] = set()
        interactions: set[str] = set()
        conditional: set[str] = set()
        for rest in statement.get("rest") or []:
            if rest.get("mode", "server") != "server":
                continue
            interactions.update(
                str(i.get("code")) for i in rest.get("interaction") or [] if isinstance(i, dict)
            )
            if any(_is_export(op) for op in rest.get("operation") or []):
                export.add("system")
            for res in rest.get("resource") or []:
                rtype = res.get("type")
                if not isinstance(rtype, str):
                    continue
                names = {p.get("name") for p in res.get("searchParam") or [] if p.get("name")}
                params[rtype] = params.get(rtype, frozenset()) | frozenset(names)
                incs = {str(i) for i in res.get("searchInclude") or []}
                includes[rtype] = includes.get(rtype, frozenset()) | frozenset(incs)
                if res.get("conditionalCreate") is True:
                    conditional.add(rtype)
                if any(_is_export(op) for op in res.get("operation") or []):
                    if rtype == "Patient":
                        export.add("patient")
                    elif rtype == "Group":
                        export.add("group")
        software = (statement.get("software") or {}).get("name")
        return cls(
            fhir_version=statement.get("fhirVersion"),
            search_params=params,
            includes=includes,
            export=frozenset(export),
            software=software,
            system_interactions=frozenset(interactions),
            conditional_create=frozenset(conditional),
        )

    @property
    def supports_export(self) -> bool:
        return bool(self.export)

    def supports_type(self, resource_type: str) -> bool:
        return resource_type in self.search_params

    def supports_param(self, resource_type: str, param: str) -> bool:
        name = param.split(":", 1)[0].split(".", 1)[0]
        if name in _RESULT_PARAMS:
            return True
        if not self.supports_type(resource_type):
            return False
        return name in _COMMON_PARAMS or name in self.search_params[resource_type]

    def supports_include(self, spec: str) -> bool:
        """``Type:param[:Target]``: listed in searchInclude (or ``*`` is)."""
        rtype = spec.split(":", 1)[0]
        incs = self.includes.get(rtype, frozenset())
        return spec in incs or "*" in incs or ":".join(spec.split(":")[:2]) in incs


# The Bulk Data IG's OperationDefinitions: export, patient-export, group-export. Epic's
# CapabilityStatement names its Group operation "group-export" [E4 in ehr-apis.md].
_EXPORT_NAMES = frozenset({"export", "patient-export", "group-export"})


def _is_export(op: Mapping[str, Any]) -> bool:
    name = str(op.get("name") or "").lstrip("$")
    definition = str(op.get("definition") or "").split("|", 1)[0].rstrip("/")
    return name in _EXPORT_NAMES or definition.rsplit("/", 1)[-1] in _EXPORT_NAMES


def fetch_capability(client: FhirClient) -> Capability:
    """``GET [base]/metadata`` parsed (FhirHttpError if it is not a CapabilityStatement)."""
    return Capability.from_statement(client.capabilities())


def check_plan(
    capability: Capability,
    needs: Mapping[str, set[str] | frozenset[str]],
    *,
    raise_on_missing: bool = True,
) -> list[str]:
    """Every resource type / search parameter of ``needs`` the server lacks.

    Raises CapabilityError listing all of them (unless ``raise_on_missing=False``, which returns
    the list), so the user learns everything wrong at once, before any heavy query runs.

    >>> cap = Capability.from_statement({"rest": [{"mode": "server", "resource": [
    ...     {"type": "Condition", "searchParam": [{"name": "code"}, {"name": "patient"}]}]}]})
    >>> check_plan(cap, {"Condition": {"code", "patient"}, "Observation": {"code"}},
    ...            raise_on_missing=False)
    ['resource type Observation is not searchable']
    """
    problems: list[str] = []
    for rtype in sorted(needs):
        if not capability.supports_type(rtype):
            problems.append(f"resource type {rtype} is not searchable")
            continue
        for param in sorted(needs[rtype]):
            if not capability.supports_param(rtype, param):
                problems.append(f"search parameter {rtype}.{param} is not supported")
    if problems and raise_on_missing:
        raise CapabilityError(
            "the FHIR server cannot run the planned queries: " + "; ".join(problems)
        )
    return problems
