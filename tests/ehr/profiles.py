"""Vendor profiles of the EHR emulation: each documented restriction is one small rule.

A rule looks at a parsed request (``Req``) and either rejects it the way the vendor does (HTTP
status + the vendor's kind of OperationOutcome), or changes what is asked upstream / what comes
back (a post-filter, an ignored parameter, a page-size cap). Every rule names the public source
it comes from (the tags of ``reference/ehr-apis.md`` in the shared folder beside the
repository) and carries example requests that break it, so a test can sweep every rule of every
profile (tests/ehr/test_emulation.py).

Where a vendor's behaviour is not documented the rule says what was chosen (``assumed``).
Templates in examples: ``{patient}``, ``{patient2}``, ``{group}``, ``{condition}`` are filled
with ids of the loaded data by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EPIC",
    "EPIC_OO_SYSTEM",
    "ORACLE",
    "PLAIN",
    "PROFILES",
    "Answer",
    "Example",
    "Profile",
    "Req",
    "Rule",
    "epic_outcome",
    "oracle_outcome",
]

# Epic's OperationOutcome coding system for its numeric error codes (seen in Epic answers).
EPIC_OO_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"

# Search parameters that are paging/format controls, not criteria.
CONTROL = frozenset({"_count", "_format", "_summary", "_elements", "_total", "_sort"})
PATIENT_PARAMS = ("patient", "subject")


@dataclass(frozen=True)
class Req:
    """One client request, parsed. ``path`` is relative to the FHIR base, without query."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    form: bool = False  # params came in a POST [type]/_search form body

    @property
    def parts(self) -> list[str]:
        return [p for p in self.path.split("/") if p]

    @property
    def resource_type(self) -> str | None:
        parts = self.parts
        return parts[0] if parts and parts[0][:1].isupper() else None

    @property
    def is_search(self) -> bool:
        parts = self.parts
        if self.method == "GET":
            return len(parts) == 1 and self.resource_type is not None
        return self.method == "POST" and len(parts) == 2 and parts[1] == "_search"

    @property
    def is_read(self) -> bool:
        parts = self.parts
        return self.method == "GET" and len(parts) == 2 and not parts[1].startswith(("$", "_"))

    @property
    def export_level(self) -> str | None:
        """``system`` / ``patient`` / ``group`` for a $export kick-off, else None."""
        parts = self.parts
        if not parts or parts[-1] != "$export" or self.method not in ("GET", "POST"):
            return None
        if len(parts) == 1:
            return "system"
        if parts[0] == "Patient" and len(parts) == 2:
            return "patient"
        if parts[0] == "Group" and len(parts) == 3:
            return "group"
        return "other"

    def names(self) -> list[str]:
        """Parameter names without modifiers (``code:text`` -> ``code``)."""
        return [k.split(":", 1)[0] for k, _ in self.params]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.params if k.split(":", 1)[0] == name]

    def has(self, *names: str) -> bool:
        present = set(self.names())
        return any(n in present for n in names)

    def criteria(self) -> list[str]:
        return [n for n in self.names() if n not in CONTROL]

    def without(self, *names: str) -> Req:
        keep = tuple((k, v) for k, v in self.params if k.split(":", 1)[0] not in names)
        return Req(self.method, self.path, keep, self.headers, self.form)

    def with_count(self, count: int) -> Req:
        keep = tuple((k, v) for k, v in self.params if k != "_count")
        return Req(self.method, self.path, (*keep, ("_count", str(count))), self.headers, self.form)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(
        default_factory=lambda: {"Content-Type": "application/fhir+json"}
    )
    rule: str | None = None  # the rule that produced it (None: the upstream's answer)

    def json(self) -> Any:
        return json.loads(self.body)


def epic_outcome(code: str, display: str, diagnostics: str, severity: str = "fatal") -> dict:
    """Epic's kind: numeric code in ``issue.details.coding`` under Epic's OID [E1]."""
    issue_code = {"fatal": "processing", "warning": "informational"}.get(severity, "processing")
    if code in ("4111", "59108"):
        issue_code = "required"
    elif code in ("4112", "4110"):
        issue_code = "invalid"
    elif code == "4113":
        issue_code = "expired"
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": issue_code,
                "details": {
                    "coding": [{"system": EPIC_OO_SYSTEM, "code": code, "display": display}],
                    "text": display,
                },
                "diagnostics": diagnostics,
            }
        ],
    }


def oracle_outcome(code: str, diagnostics: str, severity: str = "error") -> dict:
    """Oracle Health's kind: a plain OperationOutcome, issue code from the FHIR value set [C4]."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def _answer(status: int, outcome: dict, rule: str, **headers: str) -> Answer:
    return Answer(
        status,
        json.dumps(outcome).encode(),
        {"Content-Type": "application/fhir+json", **headers},
        rule,
    )


@dataclass(frozen=True)
class Example:
    """A request that breaks a rule and what the vendor answers: HTTP status and the code a
    client reads (Epic: the numeric code; others: ``issue.code``)."""

    target: str  # path and query relative to the base, templated
    status: int
    code: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)


class Rule:
    """Base: a rule may reject, rewrite the upstream request, or change the answer."""

    name: str = "rule"
    source: str = ""
    assumed: str = ""  # what the emulation chose where the vendor documents nothing
    examples: tuple[Example, ...] = ()

    def reject(self, req: Req, state: Any) -> Answer | None:
        return None

    def rewrite(self, req: Req) -> Req:
        return req

    def respond(self, req: Req, answer: Answer, state: Any) -> Answer:
        return answer


@dataclass(frozen=True)
class _Outcome:
    """How a profile words a rejection."""

    vendor: str  # "epic" | "oracle" | "plain"

    def make(self, status: int, epic: tuple[str, str], fhir_code: str, text: str) -> dict:
        if self.vendor == "epic":
            return epic_outcome(epic[0], epic[1], text)
        return oracle_outcome(fhir_code, text)


class PatientRequired(Rule):
    """Clinical searches must name the patient (or ``_id``)."""

    def __init__(
        self,
        types: Sequence[str],
        *,
        vendor: str,
        status: int,
        epic: tuple[str, str] = ("4111", "Required search parameter missing from request"),
        text: str = "patient is required",
        source: str,
        examples: tuple[Example, ...],
        name: str = "patient_required",
    ) -> None:
        self.types, self.vendor, self.status, self.epic, self.text = (
            frozenset(types),
            _Outcome(vendor),
            status,
            epic,
            text,
        )
        self.name, self.source, self.examples = name, source, examples

    def reject(self, req: Req, state: Any) -> Answer | None:
        if not req.is_search or req.resource_type not in self.types:
            return None
        if req.has(*PATIENT_PARAMS, "_id"):
            return None
        outcome = self.vendor.make(self.status, self.epic, "required", self.text)
        return _answer(self.status, outcome, self.name)


class NoParameters(Rule):
    """A search with no criteria at all (Epic 4110)."""

    name = "no_parameters"
    source = "E1 (4110)"
    examples = (Example("Patient?_count=5", 400, "4110"),)

    def reject(self, req: Req, state: Any) -> Answer | None:
        if req.is_search and not req.criteria():
            outcome = epic_outcome(
                "4110",
                "No parameters are provided in the search request",
                "a search needs at least one parameter",
            )
            return _answer(400, outcome, self.name)
        return None


class OnePatient(Rule):
    """One patient per search: repeated or comma-separated ``patient``/``subject`` rejected."""

    name = "one_patient"
    source = "E1 (4112)"
    assumed = "a comma list patient=a,b is rejected like a repeat (Epic documents the repeat)"
    examples = (
        Example("Condition?patient={patient}&patient={patient2}", 400, "4112"),
        Example("Condition?patient={patient},{patient2}", 400, "4112"),
        Example("Observation?subject={patient},{patient2}&category=laboratory", 400, "4112"),
    )

    def __init__(self, types: Sequence[str]) -> None:
        self.types = frozenset(types)

    def reject(self, req: Req, state: Any) -> Answer | None:
        if not req.is_search or req.resource_type not in self.types:
            return None
        ids = [i for p in PATIENT_PARAMS for v in req.values(p) for i in v.split(",") if i]
        if len({i.rsplit("/", 1)[-1] for i in ids}) > 1:
            outcome = epic_outcome(
                "4112",
                "The resource request contained an invalid combination of parameters",
                "a search may name one patient",
            )
            return _answer(400, outcome, self.name)
        return None


class ObservationCategoryOrCode(Rule):
    """Epic Observation searches need ``category`` or ``code`` besides the patient (59108)."""

    name = "observation_category_or_code"
    source = "E1 (59108)"
    examples = (Example("Observation?patient={patient}", 400, "59108"),)

    def reject(self, req: Req, state: Any) -> Answer | None:
        observation = req.is_search and req.resource_type == "Observation"
        if observation and req.has(*PATIENT_PARAMS) and not req.has("category", "code", "_id"):
            outcome = epic_outcome(
                "59108",
                "Required category missing",
                "either the category or code parameter must be specified",
            )
            return _answer(400, outcome, self.name)
        return None


class UnsupportedParam(Rule):
    """A search parameter the vendor does not offer on these types is rejected (400)."""

    def __init__(
        self,
        name: str,
        types: Sequence[str] | None,
        params: Sequence[str],
        *,
        source: str,
        assumed: str,
        examples: tuple[Example, ...],
    ) -> None:
        self.name, self.types, self.params = name, frozenset(types or ()), tuple(params)
        self.source, self.assumed, self.examples = source, assumed, examples

    def reject(self, req: Req, state: Any) -> Answer | None:
        if not req.is_search or (self.types and req.resource_type not in self.types):
            return None
        bad = [p for p in self.params if req.has(p)]
        if bad:
            text = f"unsupported search parameter(s) for {req.resource_type}: {', '.join(bad)}"
            return _answer(400, oracle_outcome("invalid", text), self.name)
        return None


class ParamNeedsPatient(Rule):
    """Oracle: Observation ``code`` only together with ``patient``/``subject`` [C2]."""

    name = "code_needs_patient"
    source = "C2"
    examples = (
        Example("Observation?code=http://loinc.org|2160-0", 400, "invalid"),
        Example("Observation?_id={observation}&code=http://loinc.org|2160-0", 400, "invalid"),
    )

    def reject(self, req: Req, state: Any) -> Answer | None:
        observation = req.is_search and req.resource_type == "Observation"
        if observation and req.has("code") and not req.has(*PATIENT_PARAMS):
            text = "code may only be searched together with patient or subject"
            return _answer(400, oracle_outcome("invalid", text), self.name)
        return None


class IdAlone(Rule):
    """Oracle: with ``_id`` no other parameter may be given (``_revinclude`` aside) [C1][C2][C3]."""

    name = "id_alone"
    source = "C1, C2, C3"
    examples = (Example("Condition?_id={condition}&clinical-status=active", 400, "invalid"),)

    def __init__(self, types: Sequence[str]) -> None:
        self.types = frozenset(types)

    def reject(self, req: Req, state: Any) -> Answer | None:
        if req.is_search and req.resource_type in self.types and req.has("_id"):
            others = [n for n in req.criteria() if n not in ("_id", "_revinclude")]
            if others:
                text = f"_id may not be combined with: {', '.join(others)}"
                return _answer(400, oracle_outcome("invalid", text), self.name)
        return None


class PatientSearchCap(Rule):
    """Too many patients match a Patient search: Epic 4127 above 100, Oracle 422 above 1,000."""

    def __init__(self, limit: int, *, vendor: str, status: int, source: str) -> None:
        self.limit, self.vendor, self.status, self.source = limit, vendor, status, source
        self.name = "patient_search_cap"
        code = "4127" if vendor == "epic" else "processing"
        self.examples = (Example("Patient?gender=female,male,other,unknown", status, code),)

    def respond(self, req: Req, answer: Answer, state: Any) -> Answer:
        if not (req.is_search and req.resource_type == "Patient" and answer.status == 200):
            return answer
        limit = state.limit(self.name, self.limit)
        total = answer.json().get("total")
        if not isinstance(total, int) or total <= limit:
            return answer
        text = f"more than {limit} patients match; narrow the search"
        if self.vendor == "epic":
            outcome = epic_outcome("4127", "Additional data may exist", text)
        else:
            outcome = oracle_outcome("processing", text)
        return _answer(self.status, outcome, self.name)


class TypeNotOffered(Rule):
    """A resource type the vendor's CapabilityStatement does not list answers 404."""

    name = "type_not_offered"
    assumed = "HTTP 404 with issue code not-supported (the vendors document no answer)"

    def __init__(self, offered: Sequence[str], *, vendor: str, source: str, example: str) -> None:
        self.offered, self.vendor, self.source = frozenset(offered), vendor, source
        code = "4100" if vendor == "epic" else "not-supported"
        self.examples = (Example(f"{example}?patient={{patient}}", 404, code),)

    def reject(self, req: Req, state: Any) -> Answer | None:
        rtype = req.resource_type
        if rtype is None or rtype in self.offered or req.path.startswith("Group/"):
            return None
        text = f"{rtype} is not offered by this server"
        if self.vendor == "epic":
            outcome = epic_outcome(
                "4100", "The resource request contained an invalid parameter", text
            )
        else:
            outcome = oracle_outcome("not-supported", text)
        return _answer(404, outcome, self.name)


class ExportGroupOnly(Rule):
    """Bulk Data only at Group level: system and Patient-level $export are refused."""

    name = "export_group_only"
    assumed = "HTTP 404 with issue code not-supported (no documented answer)"

    def __init__(self, *, source: str) -> None:
        self.source = source
        headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
        self.examples = (
            Example("$export", 404, "not-supported", headers=headers),
            Example("Patient/$export", 404, "not-supported", headers=headers),
        )

    def reject(self, req: Req, state: Any) -> Answer | None:
        level = req.export_level
        if level is None or level == "group":
            return None
        text = "only Group-level export is supported (Group/[id]/$export)"
        return _answer(404, oracle_outcome("not-supported", text), self.name)


class ExportParamChecks(Rule):
    """Oracle's kick-off checks [C4][S2]: ``_type`` once (comma list, not repeats), one
    ``_typeFilter`` per type, ``_typeFilter`` only with ``_type`` and only for its types."""

    name = "export_params"
    source = "C4, S2"
    examples = (
        Example(
            "Group/{group}/$export?_type=Patient&_type=Condition",
            400,
            "invalid",
            headers={"Prefer": "respond-async"},
        ),
        Example(
            "Group/{group}/$export?_typeFilter=Condition%3Fclinical-status%3Dactive",
            400,
            "invalid",
            headers={"Prefer": "respond-async"},
        ),
        Example(
            "Group/{group}/$export?_type=Condition"
            "&_typeFilter=Condition%3Fclinical-status%3Dactive"
            "&_typeFilter=Condition%3Fcategory%3Dproblem-list-item",
            400,
            "invalid",
            headers={"Prefer": "respond-async"},
        ),
    )

    def reject(self, req: Req, state: Any) -> Answer | None:
        if req.export_level != "group":
            return None
        types = req.values("_type")
        text = None
        if len(types) > 1:
            text = "_type may be given once (comma-separated)"
        filters = [f for v in req.values("_typeFilter") for f in v.split(",") if f]
        if filters and not types:
            text = "_typeFilter requires _type"
        wanted = {t for v in types for t in v.split(",")}
        ftypes = [f.split("?", 1)[0] for f in filters]
        if len(ftypes) != len(set(ftypes)):
            text = "_typeFilter may hold one query per resource type"
        if wanted and any(t not in wanted for t in ftypes):
            text = "_typeFilter names a type that _type does not"
        if text:
            return _answer(400, oracle_outcome("invalid", text), self.name)
        return None


class OneExportAtATime(Rule):
    """One export at a time: Oracle per client and tenant until the job completes [C4]; Epic
    per client and Group until the client DELETEs it [S2]. The emulation serves one client."""

    name = "one_export_at_a_time"
    assumed = "Epic: 429 throttled like Oracle's documented answer"

    def __init__(self, *, per_group: bool, release_on_complete: bool, source: str) -> None:
        self.per_group, self.release_on_complete, self.source = (
            per_group,
            release_on_complete,
            source,
        )
        # The sweep starts one export first (see tests), then this one is refused.
        headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
        self.examples = (
            Example("Group/{group}/$export?_type=Patient", 429, "throttled", headers=headers),
        )

    def key(self, req: Req) -> str:
        return req.parts[1] if self.per_group else "*"

    def reject(self, req: Req, state: Any) -> Answer | None:
        if req.export_level != "group":
            return None
        if state.export_running(self.key(req), self.release_on_complete):
            text = "There is already an export job in-progress for the client and " + (
                "group combination" if self.per_group else "tenant combination"
            )
            return _answer(429, oracle_outcome("throttled", text), self.name)
        return None


class CountCap(Rule):
    """Page size: at most ``maximum`` per page (asked for more, served the maximum), and
    ``default`` when the client names none [C2]."""

    def __init__(self, types: Sequence[str], maximum: int, default: int, *, source: str) -> None:
        self.types, self.maximum, self.default, self.source = (
            frozenset(types),
            maximum,
            default,
            source,
        )
        self.name = "count_cap"

    def rewrite(self, req: Req) -> Req:
        if not req.is_search or req.resource_type not in self.types:
            return req
        asked = req.values("_count")
        if not asked:
            return req.with_count(self.default)
        try:
            n = int(asked[-1])
        except ValueError:
            return req
        return req.with_count(min(n, self.maximum)) if n > self.maximum else req


class IgnoredParam(Rule):
    """Epic ignores a parameter it does not know, with a 4122 warning in the Bundle [E1]; it
    has no ``_lastUpdated`` [S4]."""

    def __init__(self, params: Sequence[str], *, source: str) -> None:
        self.params, self.source = tuple(params), source
        self.name = "ignored_param"

    def rewrite(self, req: Req) -> Req:
        return req.without(*self.params) if req.is_search else req

    def warnings(self, req: Req) -> list[dict]:
        if not req.is_search:
            return []
        out = []
        for p in self.params:
            if req.has(p):
                oo = epic_outcome(
                    "4122",
                    "An unknown query parameter was supplied by the client.",
                    f"{p} is not supported and was ignored",
                    severity="warning",
                )
                oo["issue"][0]["location"] = [f"http.{p}"]
                out.append(oo)
        return out


class PostFilter(Rule):
    """Epic: for these types ``code`` is a post-filter: the server reads all of the patient's
    rows matching the native parameters, then filters [E2][E3]. The answer equals a native
    filter's; the emulator counts the rows read (``Stats.rows_read``)."""

    def __init__(self, types: Sequence[str], params: Sequence[str], *, source: str) -> None:
        self.types, self.params, self.source = frozenset(types), tuple(params), source
        self.name = "post_filter"

    def applies(self, req: Req) -> bool:
        return req.is_search and req.resource_type in self.types and req.has(*self.params)


class NoMetaLastUpdated(Rule):
    """Epic resources carry no ``meta.lastUpdated`` [S4] (SMART Fetch's created-date mode)."""

    name = "no_meta_last_updated"
    source = "S4"


class PagingSessions(Rule):
    """Epic pages a search from a cached session that expires (4113) [E1]."""

    name = "paging_sessions"
    source = "E1 (4113)"


# -- the profiles --------------------------------------------------------------------------------

# Types with patient-scoped searches in the profiles below (the ones screening reads, and the
# ones SMART Fetch crawls by default).
CLINICAL = (
    "AllergyIntolerance",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "EpisodeOfCare",
    "Immunization",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "ServiceRequest",
)

# Epic R4 CapabilityStatement (sandbox, "Epic May 2026") [E4]: search parameters per type
# (abridged to the types screening and SMART Fetch read; the long tail of parameters of the
# less used types left out). Its 59 types include no MedicationStatement.
EPIC_SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "Condition": (
        "abatement-date", "category", "clinical-status", "code", "encounter", "onset-date",
        "patient", "recorded-date", "subject", "_count", "_id", "abatement-string", "asserter",
        "body-site", "evidence", "evidence-detail", "identifier", "onset-info", "severity",
        "stage", "verification-status",
    ),
    "Observation": (
        "based-on", "category", "code", "date", "focus", "issued", "patient", "subject",
        "_count", "_id", "combo-code", "component-code", "derived-from", "device", "encounter",
        "has-member", "identifier", "method", "part-of", "performer", "specimen", "status",
        "value-concept", "value-date", "value-string",
    ),
    "MedicationRequest": (
        "category", "date", "intent", "patient", "status", "subject", "_count", "_id",
        "authoredon", "code", "encounter", "identifier", "intended-dispenser",
        "intended-performer", "medication", "priority", "requester",
    ),
    "MedicationAdministration": (
        "context", "effective-time", "patient", "performer", "request", "status", "subject",
        "_count", "_id", "code", "device", "identifier", "medication",
    ),
    "MedicationDispense": (
        "category", "patient", "subject", "_count", "_id", "code", "context", "identifier",
        "medication", "performer", "prescription", "status", "type",
    ),
    "Procedure": (
        "category", "code", "date", "identifier", "patient", "subject", "_count", "_id",
        "based-on", "encounter", "location", "performer", "reason-code", "status",
    ),
    "Encounter": (
        "class", "date", "identifier", "patient", "subject", "_count", "_id", "status", "type",
    ),
    "DiagnosticReport": (
        "category", "code", "date", "identifier", "patient", "subject", "_count", "_id",
        "issued", "status",
    ),
    "AllergyIntolerance": ("clinical-status", "patient", "_count", "_id", "code"),
    "Immunization": ("patient", "date", "status", "_count", "_id"),
    "Device": ("patient", "type", "_count", "_id"),
    "DocumentReference": ("patient", "subject", "category", "date", "type", "_count", "_id"),
    "EpisodeOfCare": ("patient", "type", "status", "_count", "_id"),
    "ServiceRequest": ("patient", "subject", "category", "code", "status", "_count", "_id"),
    "Patient": (
        "address", "address-city", "address-postalcode", "address-state", "birthdate",
        "family", "gender", "given", "identifier", "name", "telecom", "_count", "_id",
        "active", "death-date", "email", "phone",
    ),
    "Group": ("_count", "_id"),
    "Medication": ("_count", "_id"),
    "Practitioner": ("_count", "_id", "identifier", "name"),
    "Organization": ("_count", "_id", "name"),
    "Location": ("_count", "_id", "name"),
}  # fmt: skip

# Oracle Health Millennium R4 (fhir.cerner.com, content/millennium/r4/**: each type's search
# parameter table) [C1][C2][C3]: no ``code`` on Condition or MedicationRequest; Observation
# ``code`` with the patient; ``_revinclude=Provenance:target``. No Medication,
# MedicationStatement or MedicationDispense in Millennium R4.
ORACLE_SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "Condition": (
        "_id", "patient", "subject", "clinical-status", "category", "_revinclude", "encounter",
        "_lastUpdated",
    ),
    "Observation": (
        "_id", "patient", "subject", "code", "date", "_lastUpdated", "category", "_count",
        "_revinclude",
    ),
    "MedicationRequest": (
        "_id", "patient", "status", "intent", "-timing-boundsPeriod", "_lastUpdated", "_count",
        "_revinclude",
    ),
    "MedicationAdministration": (
        "_id", "patient", "status", "performer", "effective-time", "_count",
    ),
    "Procedure": ("_id", "patient", "subject", "date", "_revinclude", "_lastUpdated"),
    "Encounter": (
        "_id", "patient", "subject", "account", "identifier", "date", "_count", "status",
        "_revinclude", "_lastUpdated",
    ),
    "DiagnosticReport": (
        "_id", "patient", "encounter", "date", "_lastUpdated", "_count", "category", "code",
        "_revinclude",
    ),
    "AllergyIntolerance": ("_id", "patient", "clinical-status", "_revinclude", "_lastUpdated"),
    "Immunization": ("_id", "patient", "date", "_lastUpdated", "target-disease", "_revinclude"),
    "Device": ("_id", "patient", "_revinclude"),
    "DocumentReference": (
        "_id", "patient", "encounter", "type", "_count", "category", "_revinclude", "date",
        "period", "_lastUpdated",
    ),
    "ServiceRequest": (
        "_id", "patient", "subject", "code", "_lastUpdated", "_count", "_revinclude",
    ),
    "Patient": (
        "_id", "identifier", "name", "family", "given", "birthdate", "phone", "email",
        "address-postalcode", "gender", "_count", "_revinclude",
    ),
    "Group": ("_id",),
    "Practitioner": ("_id", "identifier", "family", "name", "active", "given", "_count"),
    "Organization": ("_id", "identifier", "type", "_count", "name", "address"),
    "Location": ("_id", "type", "identifier", "_count", "address", "name", "organization"),
}  # fmt: skip


@dataclass(frozen=True)
class Profile:
    name: str
    vendor: str  # "epic" | "oracle" | "plain"
    rules: tuple[Rule, ...] = ()
    software: Mapping[str, str] | None = None
    publisher: str | None = None
    search_params: Mapping[str, tuple[str, ...]] | None = None  # CapabilityStatement rewrite
    search_include: tuple[str, ...] | None = None
    search_revinclude: tuple[str, ...] | None = None
    page_size: int = 20  # a session page when the client names no _count (Epic)

    def rule(self, kind: type[Rule]) -> Rule | None:
        return next((r for r in self.rules if isinstance(r, kind)), None)

    def capability(self, upstream: dict) -> dict:
        """The CapabilityStatement as the vendor publishes it: the vendor's types and search
        parameters (Epic lists ``code`` on Condition though a search needs the patient), only
        Group-level export, no ``_lastUpdated`` on Epic."""
        if self.vendor == "plain" or self.search_params is None:
            return upstream
        cs = json.loads(json.dumps(upstream))
        cs["software"] = dict(self.software or {})
        if self.publisher:
            cs["publisher"] = self.publisher
        for rest in cs.get("rest") or []:
            rest.pop("operation", None)  # no system-level $export
            resources = []
            for res in rest.get("resource") or []:
                rtype = res.get("type")
                if rtype not in self.search_params:
                    continue
                res = dict(res)
                res["interaction"] = [{"code": "read"}, {"code": "search-type"}]
                res["searchParam"] = [
                    {"name": n, "type": _param_type(n)} for n in self.search_params[rtype]
                ]
                for key, value in (
                    ("searchInclude", self.search_include),
                    ("searchRevInclude", self.search_revinclude),
                ):
                    if value is None:
                        res.pop(key, None)
                    else:
                        res[key] = list(value)
                res.pop("operation", None)
                if rtype == "Group":
                    res["operation"] = [
                        {
                            "name": "export" if self.vendor == "oracle" else "group-export",
                            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
                        }
                    ]
                resources.append(res)
            rest["resource"] = resources
        return cs


_TOKEN = {"code", "category", "clinical-status", "status", "intent", "identifier", "gender", "_id"}
_DATE = {"date", "birthdate", "_lastUpdated", "onset-date", "recorded-date", "authoredon"}
_REF = {"patient", "subject", "encounter", "medication", "performer", "requester"}


def _param_type(name: str) -> str:
    if name in _TOKEN or name.endswith("-code") or name.endswith("status"):
        return "token"
    if name in _DATE or name.endswith("date") or name.endswith("Period"):
        return "date"
    if name in _REF:
        return "reference"
    if name == "_count":
        return "number"
    if name in ("_revinclude", "_include"):
        return "special"
    return "string"


PLAIN = Profile("plain", "plain")

_EPIC_CLINICAL = [t for t in CLINICAL if t in EPIC_SEARCH_PARAMS]
EPIC = Profile(
    "epic",
    "epic",
    rules=(
        TypeNotOffered(
            EPIC_SEARCH_PARAMS, vendor="epic", source="E4", example="MedicationStatement"
        ),
        NoParameters(),
        PatientRequired(
            _EPIC_CLINICAL,
            vendor="epic",
            status=400,
            source="E1 (4111)",
            examples=(
                Example("Condition?category=problem-list-item", 400, "4111"),
                Example("Condition?code=http://snomed.info/sct|55464009", 400, "4111"),
                Example("Observation?code=http://loinc.org|2160-0", 400, "4111"),
                Example("MedicationRequest?status=active", 400, "4111"),
            ),
        ),
        OnePatient(_EPIC_CLINICAL),
        ObservationCategoryOrCode(),
        PatientSearchCap(100, vendor="epic", status=400, source="E1 (4127)"),
        ExportGroupOnly(source="E4"),
        OneExportAtATime(per_group=True, release_on_complete=False, source="S2"),
        IgnoredParam(("_lastUpdated",), source="E1 (4122), S4"),
        PostFilter(("Condition", "MedicationRequest"), ("code",), source="E2, E3"),
        NoMetaLastUpdated(),
        PagingSessions(),
    ),
    software={"name": "Epic", "version": "May 2026", "releaseDate": "2026-05-11"},
    publisher="Epic",
    search_params=EPIC_SEARCH_PARAMS,
    search_include=("*",),
    search_revinclude=("Provenance:target",),
)

_ORACLE_CLINICAL = [t for t in CLINICAL if t in ORACLE_SEARCH_PARAMS]
ORACLE = Profile(
    "oracle",
    "oracle",
    rules=(
        TypeNotOffered(
            ORACLE_SEARCH_PARAMS, vendor="oracle", source="C1-C3", example="MedicationStatement"
        ),
        UnsupportedParam(
            "no_code_param",
            ("Condition", "MedicationRequest"),
            ("code",),
            source="C1, C3",
            assumed="rejected with 400 invalid (as the Bulk docs answer unsupported parameters)",
            examples=(
                Example(
                    "Condition?patient={patient}&code=http://snomed.info/sct|55464009",
                    400,
                    "invalid",
                ),
                Example("MedicationRequest?patient={patient}&code=12345", 400, "invalid"),
            ),
        ),
        UnsupportedParam(
            "no_component_code",
            ("Observation",),
            ("component-code", "combo-code"),
            source="C2",
            assumed="rejected with 400 invalid, as code on Condition (not in the parameter table)",
            examples=(
                Example(
                    "Observation?patient={patient}&component-code=http://loinc.org|8480-6",
                    400,
                    "invalid",
                ),
            ),
        ),
        ParamNeedsPatient(),
        PatientRequired(
            _ORACLE_CLINICAL,
            vendor="oracle",
            status=400,
            text="no supported search parameters provided",
            source="C1, C2, C3 (r4.md client errors)",
            examples=(
                Example("Condition?category=problem-list-item", 400, "required"),
                Example("Observation?category=laboratory", 400, "required"),
                Example("MedicationRequest?status=active", 400, "required"),
                Example("Procedure?date=ge2020-01-01", 400, "required"),
            ),
        ),
        IdAlone(("Condition", "Observation", "MedicationRequest", "Procedure")),
        UnsupportedParam(
            "include_unsupported",
            None,
            ("_include",),
            source="C1, C2, C3",
            assumed="_include is not documented (only _revinclude=Provenance:target): 400",
            examples=(
                Example(
                    "MedicationRequest?patient={patient}&_include=MedicationRequest:medication",
                    400,
                    "invalid",
                ),
            ),
        ),
        PatientSearchCap(1000, vendor="oracle", status=422, source="patient.md"),
        ExportGroupOnly(source="C6"),
        ExportParamChecks(),
        OneExportAtATime(per_group=False, release_on_complete=True, source="C4"),
        CountCap(("Observation",), 200, 50, source="C2"),
    ),
    software={"name": "Millennium", "version": "R4"},
    publisher="Oracle Health",  # how SMART Fetch (cumulus-fhir-support) tells Oracle apart
    search_params=ORACLE_SEARCH_PARAMS,
    search_include=None,
    search_revinclude=("Provenance:target",),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PLAIN, EPIC, ORACLE)}
