"""A few cheap requests that find what a FHIR server really does, before any heavy fetch.

The CapabilityStatement alone is not enough: Epic lists ``code`` on Condition but refuses any
Condition search without a patient (error 4111), Oracle Health has no ``code`` on Condition,
some servers silently ignore a parameter they do not know. So the probe asks, with
``_count=1`` where it can:

- ``Condition?_count=1``: may the server be searched without a patient (2xx, or a 4xx with an
  OperationOutcome)? Its first row's subject, or ``Patient?_count=1``, or the caller's
  ``patient``, gives the patient the patient-scoped probes use;
- per type, the same search with a ``code`` no record has: no rows means the server filters
  (when the search without it had rows), rows mean it ignores ``code``, a 4xx that it refuses
  the parameter;
- ``patient=<id>,<an id that does not exist>``: rows of the patient mean several patients per
  request work; a 4xx (Epic 4112) or no rows mean they do not;
- ``_count`` 1000, then 200, then 100 (the documented caps): the page size returned when a
  next link shows the server cut the page, or the refusal;
- ``MedicationRequest?_include=MedicationRequest:medication`` and ``_lastUpdated`` in the far
  future (no rows: honoured; rows: ignored; 4xx: refused);
- Bulk levels from the CapabilityStatement; ``_typeFilter`` from the server's own $export
  OperationDefinition when it serves one.

At most :data:`MAX_PROBE_REQUESTS` requests (retries aside). The evidence kept for run.json is
the query shape, the status and the OperationOutcome's codes: no ids, no diagnostics text (it
may echo a patient), no resource content. The result is combined with the vendor's documented
limits (``profiles/<vendor>.yaml``, vendor recognised from the CapabilityStatement): what the
probe measured wins, then the CapabilityStatement, then the documentation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import requests

from fhir_cohort.errors import FhirHttpError
from fhir_cohort.fhir.capability import Capability
from fhir_cohort.fhir.server_profile import (
    UNKNOWN,
    US_CORE_CATEGORIES,
    Fact,
    ServerProfile,
    combine,
    describe,
    detect_vendor,
    vendor_file,
)

if TYPE_CHECKING:
    from fhir_cohort.fhir.client import FhirClient

__all__ = [
    "MAX_PROBE_REQUESTS",
    "PROBE_TYPES",
    "probe",
    "probe_capabilities",
    "probe_population",
]

log = logging.getLogger("fhir_cohort.fhir")

MAX_PROBE_REQUESTS = 19
PROBE_TYPES = ("Condition", "Observation", "MedicationRequest")
# A code no record carries, in each type's usual system (a system-less token would also match
# nothing, but some servers want a system).
_SYSTEMS = {
    "Condition": "http://snomed.info/sct",
    "Procedure": "http://snomed.info/sct",
    "Observation": "http://loinc.org",
    "MedicationRequest": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "MedicationStatement": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "MedicationDispense": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "MedicationAdministration": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
NO_SUCH_CODE = "fhir-cohort-probe-no-such-code"
NO_SUCH_PATIENT = "fhir-cohort-probe-no-such-patient"
FAR_FUTURE = "gt2999-01-01"
# Page sizes asked, largest first: what the funnel asks for, then documented caps (Oracle
# Observation 200, HealthLake 100).
COUNT_STEPS = (1000, 200, 100)
# A refusal the probe reads as an answer ("not supported here"); 401/403 stay auth errors,
# 429 and 5xx are retried by the client.
_REFUSALS = (400, 404, 405, 406, 409, 410, 412, 422, 501)


@dataclass(frozen=True)
class _Answer:
    """One probe request's outcome, without content: status, row count, the patients of the
    rows (kept in memory for the next probes, never logged), next link, outcome codes."""

    query: str  # the shape, ids replaced: "Condition?patient=<id>&_count=1"
    status: int
    rows: int = 0
    included: int = 0
    subjects: tuple[str, ...] = ()
    has_next: bool = False
    outcome: tuple[str, ...] = ()
    bundle: bool = True  # a 2xx that is no Bundle (an OperationOutcome) is a refusal too

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.bundle

    def evidence(self) -> str:
        what = f"GET {self.query} -> HTTP {self.status}"
        if self.ok:
            what += f", {self.rows} row{'s' if self.rows != 1 else ''}"
            if self.has_next:
                what += " and a next link"
        elif not self.bundle and 200 <= self.status < 300:
            what += " but no Bundle" + (
                f" (OperationOutcome {', '.join(self.outcome)})" if self.outcome else ""
            )
        elif self.outcome:
            what += f" (OperationOutcome {', '.join(self.outcome)})"
        return what


def _outcome_codes(body: Any) -> tuple[str, ...]:
    """issue.code and details.coding.code of an OperationOutcome: Epic's 4111, 'not-supported'.
    Diagnostics text is left out: it may quote the request's patient."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ()
    codes: list[str] = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        details = issue.get("details")
        for coding in (details.get("coding") or []) if isinstance(details, Mapping) else []:
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                codes.append(coding["code"][:40])
        if isinstance(issue.get("code"), str):
            codes.append(issue["code"][:40])
    return tuple(dict.fromkeys(codes))


def _subject(resource: Mapping[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            parts = ref["reference"].split("/")
            if len(parts) == 2 and parts[0] == "Patient" and parts[1]:
                return parts[1]
    return None


class _Prober:
    def __init__(self, client: FhirClient, budget: int) -> None:
        self.client = client
        self.budget = budget
        self.sent = 0

    def get(self, rtype: str, params: Sequence[tuple[str, str]]) -> _Answer | None:
        """One search; None when the budget is spent (the fact stays unknown)."""
        if self.sent >= self.budget:
            return None
        self.sent += 1
        shown = "&".join(f"{k}={v}" for k, v in params if k not in ("patient", "_id"))
        for key in ("_id", "patient"):  # ids are never kept: their count is
            if any(k == key for k, _ in params):
                ids = next(v for k, v in params if k == key).count(",") + 1
                masked = f"{key}=<{ids} id{'s' if ids > 1 else ''}>"
                shown = masked + (f"&{shown}" if shown else "")
        query = f"{rtype}?{shown}"

        def consume(resp: requests.Response) -> _Answer:
            try:
                body = resp.json()
            except ValueError:
                body = None
            if not 200 <= resp.status_code < 300:
                return _Answer(query, resp.status_code, outcome=_outcome_codes(body))
            if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
                return _Answer(query, resp.status_code, outcome=_outcome_codes(body), bundle=False)
            rows = included = 0
            subjects: list[str] = []
            for entry in body.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, Mapping) else None
                if not isinstance(res, Mapping):
                    continue
                mode = (entry.get("search") or {}).get("mode") or "match"
                if res.get("resourceType") == "OperationOutcome" or mode == "outcome":
                    continue
                if mode == "include" or res.get("resourceType") != rtype:
                    included += 1
                    continue
                rows += 1
                sub = _subject(res)
                if sub:
                    subjects.append(sub)
            has_next = any(
                isinstance(link, Mapping) and link.get("relation") == "next"
                for link in body.get("link") or []
            )
            return _Answer(query, resp.status_code, rows, included, tuple(subjects), has_next)

        answer = self.client.exchange(
            "GET", rtype, consume, params=list(params), search=True, ok_statuses=_REFUSALS
        )
        log.debug("probe: %s", answer.evidence())
        return answer


def probe_capabilities(client: FhirClient) -> tuple[ServerProfile, ServerProfile | None]:
    """The profile the CapabilityStatement gives (Bulk levels, ``code`` parameters a type does
    not list, includes) and the recognised vendor's documented profile (None if unknown)."""
    statement = client.capabilities()
    cap = Capability.from_statement(statement)
    found = detect_vendor(statement, client.base_url)
    vendor = None
    if found is not None:
        name, why = found
        vendor = replace(vendor_file(name).profile, vendor=name, vendor_why=why)
    where = "GET metadata"
    codes: dict[str, Fact[str]] = {}
    for rtype in PROBE_TYPES:
        if (
            cap.supports_type(rtype)
            and cap.search_params[rtype]
            and "code" not in (cap.search_params[rtype])
        ):
            codes[rtype] = Fact("rejected", "capabilities", f"{where}: {rtype} lists no code")
    includes = UNKNOWN
    if cap.supports_include("MedicationRequest:medication"):
        includes = Fact(True, "capabilities", f"{where}: searchInclude lists it")
    export = (
        Fact(cap.export, "capabilities", f"{where}: $export on {', '.join(sorted(cap.export))}")
        if cap.export
        else Fact(frozenset[str](), "capabilities", f"{where}: no $export operation")
    )
    return (
        ServerProfile(
            software=cap.software,
            code_honoured=codes,
            include_medication=includes,
            bulk_levels=export,
        ),
        vendor,
    )


def probe_population(client: FhirClient) -> Fact[bool]:
    """One request: may the server be searched without a patient (``Condition?_count=1``)?"""
    answer = _Prober(client, 1).get("Condition", [("_count", "1")])
    assert answer is not None
    return Fact(answer.ok, "probe", answer.evidence())


def probe(
    client: FhirClient,
    *,
    types: Iterable[str] = PROBE_TYPES,
    patient: str | Callable[[], str | None] | None = None,
    budget: int = MAX_PROBE_REQUESTS,
) -> ServerProfile:
    """Probe the server behind ``client``; the profile combines what the probe measured, the
    CapabilityStatement and the recognised vendor's documentation (in that order of trust).

    ``patient`` (an id, e.g. the first of a Group or patient list, or a callable that finds one
    with one request: called only when the server cannot be searched without a patient) lets
    the patient-scoped probes run there. Never more than ``budget`` requests besides the
    CapabilityStatement.
    """
    before = client.stats.requests
    from_caps, vendor = probe_capabilities(client)
    p = _Prober(client, budget)
    types = tuple(dict.fromkeys(types))
    facts: dict[str, Any] = {}
    notes: list[str] = []

    # 1. searched without a patient?
    pop = p.get("Condition", [("_count", "1")])
    assert pop is not None
    facts["population_search"] = Fact(pop.ok, "probe", pop.evidence())
    scope: list[tuple[str, str]] = []
    witness: dict[str, _Answer] = {}  # type -> an answer with rows in this scope
    if callable(patient):
        find, patient = patient, None
        if not pop.ok and p.sent < p.budget:
            p.sent += 1
            patient = find()
    if not pop.ok:
        if patient is None:
            found = p.get("Patient", [("_count", "1")])
            if found is not None and found.ok and found.subjects:
                patient = found.subjects[0]
        if patient is None:
            notes.append("no patient to probe patient-scoped searches with (give a Group or list)")
        else:
            scope = [("patient", patient)]

    # 2. code honoured, per type
    can_search = pop.ok or bool(scope)
    # Observation searches without a code, as the server takes them: with a category where
    # it refuses the patient alone (Epic 59108)
    obs_scope = list(scope)
    for rtype in types if can_search else ():
        plain = pop if rtype == "Condition" and pop.ok else p.get(rtype, [*scope, ("_count", "1")])
        if rtype == "Observation" and plain is not None:
            plain, obs_scope = _observation_scope(p, plain, scope, vendor, facts)
        if plain is not None and plain.ok and plain.rows:
            witness[rtype] = plain
        token = f"{_SYSTEMS.get(rtype, 'http://loinc.org')}|{NO_SUCH_CODE}"
        coded = p.get(rtype, [*scope, ("code", token), ("_count", "1")])
        if coded is None:
            continue
        if not coded.ok:
            if plain is not None and plain.ok:  # refused because of code, not of the scope
                facts.setdefault("code", {})[rtype] = Fact("rejected", "probe", coded.evidence())
        elif coded.rows:
            facts.setdefault("code", {})[rtype] = Fact(
                "ignored", "probe", coded.evidence(), "rows with another code came back"
            )
        elif rtype in witness:
            facts.setdefault("code", {})[rtype] = Fact(
                "honoured", "probe", f"{witness[rtype].evidence()}; {coded.evidence()}"
            )
    # Observation component-code (a panel whose component carries the test), in the scope
    # an Observation search without a code needs
    if "Observation" in types and can_search:
        token = f"http://loinc.org|{NO_SUCH_CODE}"
        comp = p.get("Observation", [*obs_scope, ("component-code", token), ("_count", "1")])
        seen = witness.get("Observation")
        if comp is not None and not comp.ok and seen is not None:
            facts["component_code"] = Fact("rejected", "probe", comp.evidence())
        elif comp is not None and comp.ok and comp.rows:
            facts["component_code"] = Fact(
                "ignored", "probe", comp.evidence(), "rows with other codes came back"
            )
        elif comp is not None and comp.ok and seen is not None:
            facts["component_code"] = Fact(
                "honoured", "probe", f"{seen.evidence()}; {comp.evidence()}"
            )

    # 3. several patients per request: the rows of a patient known to have some must come back
    # when a second (non-existent) patient is named too
    base_type = next((t for t in ("Condition", *types) if t in witness), None)
    known: tuple[str, str] | None = None
    if pop.ok and pop.subjects:
        known = ("Condition", pop.subjects[0])
    elif scope and patient is not None and base_type is not None:
        known = (base_type, patient)
    if known is not None:
        both = p.get(known[0], [("patient", f"{known[1]},{NO_SUCH_PATIENT}"), ("_count", "1")])
        if both is not None:
            works = both.ok and both.rows > 0
            note = "" if works or not both.ok else "the known patient's rows did not come back"
            facts["multi_patient"] = Fact(works, "probe", both.evidence(), note)

    # 3b. several ids in one _id read: the known patient must come back beside one that does
    # not exist (Epic documents it; Oracle Health only for MedicationRequest)
    if known is not None:
        ids = p.get("Patient", [("_id", f"{known[1]},{NO_SUCH_PATIENT}")])
        if ids is not None:
            facts["id_list"] = Fact(ids.ok and ids.rows > 0, "probe", ids.evidence())

    # 4. the largest page: a page cut short (a next link, fewer rows than asked) shows the cap;
    # a refusal tries the next size. A page that holds every row shows nothing about a cap,
    # unless a bigger size was refused before it.
    big_type = next((t for t in ("Observation", "Condition", *types) if t in witness), None)
    if big_type is not None:
        refused: list[str] = []
        big_scope = obs_scope if big_type == "Observation" else scope
        for n in COUNT_STEPS:
            page = p.get(big_type, [*big_scope, ("_count", str(n))])
            if page is None:
                break
            if not page.ok:
                refused.append(page.evidence())
                continue
            seen = "; ".join([*refused, page.evidence()])
            if page.has_next:
                cut = page.rows < n
                facts["max_count"] = Fact(
                    page.rows if cut else n, "probe", seen, "the page was cut" if cut else ""
                )
            elif refused:
                facts["max_count"] = Fact(n, "probe", seen, "larger pages were refused")
            else:
                notes.append(f"_count={n} accepted and every row fit in one page: no cap seen")
            break
        else:
            notes.append("every _count probed was refused: " + "; ".join(refused))

    # 5. _include of Medication
    if "MedicationRequest" in types and can_search:
        inc = p.get(
            "MedicationRequest",
            [*scope, ("_include", "MedicationRequest:medication"), ("_count", "1")],
        )
        if inc is not None:
            facts["include_medication"] = Fact(inc.ok, "probe", inc.evidence())

    # 6. _lastUpdated
    if base_type is not None:
        lu_scope = obs_scope if base_type == "Observation" else scope
        lu = p.get(base_type, [*lu_scope, ("_lastUpdated", FAR_FUTURE), ("_count", "1")])
        if lu is not None:
            if not lu.ok:
                facts["last_updated"] = Fact(False, "probe", lu.evidence())
            else:
                facts["last_updated"] = Fact(
                    lu.rows == 0,
                    "probe",
                    lu.evidence(),
                    "" if lu.rows == 0 else "ignored: rows came back for a far-future date",
                )

    # 7. _typeFilter: only the server's own OperationDefinition says (the IG's lists it anyway)
    type_filter = _type_filter(client, p)

    probed = ServerProfile(
        population_search=facts["population_search"],
        code_honoured=facts.get("code", {}),
        multi_patient=facts.get("multi_patient", UNKNOWN),
        max_count=facts.get("max_count", UNKNOWN),
        include_medication=facts.get("include_medication", UNKNOWN),
        last_updated=facts.get("last_updated", UNKNOWN),
        type_filter=type_filter,
        observation_category_required=facts.get("category_required", UNKNOWN),
        observation_categories=facts.get("categories", UNKNOWN),
        component_code=facts.get("component_code", UNKNOWN),
        id_list=facts.get("id_list", UNKNOWN),
        notes=tuple(notes),
    )
    layers = [probed, from_caps, *([vendor] if vendor is not None else [])]
    profile = combine(*layers)
    profile = replace(profile, requests=client.stats.requests - before)
    log.info("server profile (%d requests): %s", profile.requests, describe(profile, types))
    return profile


def _observation_scope(
    p: _Prober,
    plain: _Answer,
    scope: list[tuple[str, str]],
    vendor: ServerProfile | None,
    facts: dict[str, Any],
) -> tuple[_Answer, list[tuple[str, str]]]:
    """``Observation?<scope>`` was answered ``plain``: where it was refused, the same search
    with the categories the vendor documents (else US Core's, as SMART Fetch names them) says
    whether a category is what was missing. Returns the answer to use as the Observation
    witness and the scope an Observation search without a code needs."""
    if plain.ok:
        facts["category_required"] = Fact(False, "probe", plain.evidence())
        return plain, scope
    documented = vendor.observation_categories.value if vendor is not None else None
    cats = sorted(documented) if documented else list(US_CORE_CATEGORIES)
    with_cats = [*scope, ("category", ",".join(cats))]
    answer = p.get("Observation", [*with_cats, ("_count", "1")])
    if answer is None or not answer.ok:
        return plain, scope
    seen = f"{plain.evidence()}; {answer.evidence()}"
    facts["category_required"] = Fact(True, "probe", seen)
    facts["categories"] = Fact(frozenset(cats), "probe", answer.evidence())
    return answer, with_cats


def _type_filter(client: FhirClient, p: _Prober) -> Fact[bool]:
    """``_typeFilter`` from the $export OperationDefinition the server itself serves."""
    statement = client.capabilities()
    for rest in statement.get("rest") or []:
        ops = list(rest.get("operation") or [])
        for res in rest.get("resource") or []:
            ops.extend(res.get("operation") or [])
        for op in ops:
            name = str(op.get("name") or "").lstrip("$")
            ref = str(op.get("definition") or "")
            if "export" not in name or not ref:
                continue
            local = ref.startswith("OperationDefinition/") or ref.startswith(
                client.base_url + "/OperationDefinition/"
            )
            if not local or p.sent >= p.budget:
                continue
            p.sent += 1
            try:
                body = client.get_json(ref)
            except FhirHttpError:  # a missing or odd definition leaves the fact unknown
                return UNKNOWN
            names = {str(x.get("name")) for x in body.get("parameter") or [] if isinstance(x, dict)}
            path = ref.removeprefix(client.base_url + "/")
            return Fact("_typeFilter" in names, "probe", f"GET {path}: parameters")
    return UNKNOWN
