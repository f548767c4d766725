"""The trial as a FHIR ResearchStudy and its candidates as ResearchSubjects on the source server
(``--publish-subjects``), updated in place on re-runs (docs/publishing.md).

Statuses (R4 ResearchSubject.status), first rule that applies:

- a coordinator's contact status (the screening history's decisions, docs/history.md):
  enrolled -> ``on-study``; declined, do-not-contact -> ``withdrawn``;
- a status past screening already on the server (on-study, follow-up, withdrawn, ...) is the
  site's: kept, never overwritten by a screen or a decision (only by a contact status above);
- a coordinator's decision (unless flagged for re-review: new evidence since):
  ineligible -> ``ineligible``, eligible -> ``eligible``, needs information -> ``screening``;
- the screening status: eligible -> ``eligible``, review -> ``potential-candidate``,
  ineligible (a patient published before who no longer meets the criteria) -> ``ineligible``;
  a patient published before and not screened now -> ``not-registered`` (deleted, merged, off
  the crawled patient list), except after the funnel, which fetches only patients with an
  entry code: there the others are ineligible by construction -> ``ineligible``.

A subject once published is never left as a stale candidate: every later run writes the
status above, and never deletes it (its history on the server is the audit trail).

Writes go in transaction Bundles (batch where the server offers only that; one request per
subject where it offers neither) of at most :data:`BUNDLE_ENTRIES` entries, and only for
subjects whose content changed. Subjects are found by their identifier, kept in our own system
(:data:`SUBJECT_SYSTEM`, value ``<trial id>/<patient id>``) and always compared client-side: a
server that ignores a search parameter returns other resources, which are never touched.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_cohort.errors import FhirHttpError, SourceError
from fhir_cohort.fhir.capability import Capability
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.search import SearchQuery

__all__ = [
    "BUNDLE_ENTRIES",
    "CLINICALTRIALS_SYSTEM",
    "SITE_STATUSES",
    "STUDY_SYSTEM",
    "SUBJECT_STATUSES",
    "SUBJECT_SYSTEM",
    "Recruitment",
    "publish_research",
    "recruitment_decisions",
    "research_study",
    "research_subject",
    "study_identifier",
    "subject_status",
]

# HL7 Terminology's NamingSystem "ClinicalTrials.gov" (terminology.hl7.org/NamingSystem/
# ClinicalTrials-Gov): the system of NCT numbers.
CLINICALTRIALS_SYSTEM = "https://clinicaltrials.gov"
# A trial id that is not an NCT number (a local protocol) keeps the Group's system.
STUDY_SYSTEM = "https://fhir-cohort.github.io/screening"
SUBJECT_SYSTEM = "https://fhir-cohort.github.io/research-subject"
SD = "https://fhir-cohort.github.io/StructureDefinition/"
_NCT = re.compile(r"NCT\d{8}")
# Entries per Bundle: a thousand candidates are two requests, and a Bundle stays a few hundred
# kB, well inside what servers accept in one body.
BUNDLE_ENTRIES = 500

_SCREENING = {"eligible": "eligible", "review": "potential-candidate", "ineligible": "ineligible"}
NOT_SCREENED = "not-screened"  # the screening-status extension of a patient not in this run
_CONTACT = {"enrolled": "on-study", "declined": "withdrawn", "do-not-contact": "withdrawn"}
_DECISION = {"eligible": "eligible", "ineligible": "ineligible", "needs-information": "screening"}
# Statuses only a site sets (the person is past screening): a screen does not overwrite them.
SITE_STATUSES = frozenset(
    {
        "follow-up",
        "off-study",
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "pending-on-study",
        "withdrawn",
    }
)
# R4 ResearchSubject.status (research-subject-status, required binding). The R4B models take
# any code, so the binding is checked here.
SUBJECT_STATUSES = frozenset(
    {
        "candidate",
        "eligible",
        "follow-up",
        "ineligible",
        "not-registered",
        "off-study",
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "pending-on-study",
        "potential-candidate",
        "screening",
        "withdrawn",
    }
)
_JSON = {"Content-Type": "application/fhir+json"}


@dataclass(frozen=True)
class Recruitment:
    """A coordinator's record for one patient: the chart-review decision (eligible,
    ineligible, needs information) and the contact status (not contacted, attempt 1-3, could
    not reach, declined, enrolled, do-not-contact). Spelling is free: ``"Do not contact"``,
    ``do_not_contact`` and ``do-not-contact`` are one value."""

    decision: str | None = None
    contact_status: str | None = None


def _code(value: str | None) -> str:
    return re.sub(r"[\s_]+", "-", (value or "").strip().lower())


def subject_status(screening: str | None, recruitment: Recruitment | None = None) -> str:
    """The ResearchSubject.status for a screening status (``None``: not screened in this run)
    and the coordinator's record, if any (module docstring).

    >>> subject_status("review"), subject_status(None)
    ('potential-candidate', 'not-registered')
    >>> subject_status("eligible", Recruitment("eligible", "Do not contact"))
    'withdrawn'
    """
    if recruitment is not None:
        contact = _CONTACT.get(_code(recruitment.contact_status))
        decision = _DECISION.get(_code(recruitment.decision))
        if contact or decision:
            return contact or str(decision)
    if screening is None:
        return "not-registered"
    return _SCREENING[screening]


def recruitment_decisions(
    history: Any, trial_id: str, worklist: Any = None
) -> dict[str, Recruitment]:
    """Patient id -> the coordinator's current decision and contact status for ``trial_id``
    in the screening history (``History.decisions``, docs/history.md). A decision the
    run's ``worklist`` (worklist.csv's table) flags for re-review (an answer changed on new
    evidence since) no longer holds: only its contact status counts until a coordinator
    decides again."""
    from fhir_cohort.history.decisions import FLAG_RE_REVIEW

    if history is None:
        return {}
    stale: set[str] = set()
    if worklist is not None and len(worklist):
        stale = {
            str(p)
            for p, flags in zip(worklist["patient_id"], worklist["flags"], strict=True)
            if FLAG_RE_REVIEW in str(flags)
        }
    return {
        d.patient_id: Recruitment(None if d.patient_id in stale else d.decision, d.contact_status)
        for d in history.decisions(trial_id)
    }


def study_identifier(trial_id: str) -> dict[str, str]:
    """The ResearchStudy's identifier: an NCT number under ClinicalTrials.gov's system, any
    other trial id under fhir-cohort's screening system (as the Group's).

    >>> study_identifier("NCT06038474")["system"]
    'https://clinicaltrials.gov'
    """
    system = CLINICALTRIALS_SYSTEM if _NCT.fullmatch(trial_id) else STUDY_SYSTEM
    return {"system": system, "value": trial_id}


def research_study(
    *,
    trial_id: str,
    title: str,
    trial_version: str,
    as_of: date,
    group_id: str | None = None,
) -> dict[str, Any]:
    """The trial as an R4 ResearchStudy (status active: it is being screened for), enrollment
    the candidate Group when it was published too; validated (R4B models)."""
    from fhir.resources.R4B.researchstudy import ResearchStudy

    study: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "extension": [
            {"url": SD + "screening-as-of", "valueDate": as_of.isoformat()},
            {"url": SD + "criteria-version", "valueString": trial_version},
        ],
        "identifier": [study_identifier(trial_id)],
        "title": title or trial_id,
        "status": "active",
    }
    if group_id:
        study["enrollment"] = [{"reference": f"Group/{group_id}"}]
    ResearchStudy.model_validate(study)
    return study


def _subject_value(trial_id: str, patient_id: str) -> str:
    return f"{trial_id}/{patient_id}"


def research_subject(
    *, trial_id: str, patient_id: str, study_id: str, status: str, screening: str | None
) -> dict[str, Any]:
    """One candidate as an R4 ResearchSubject; ``screening`` (eligible, review, ineligible,
    None: not screened in this run) goes in an extension beside the R4 status. No as-of date: an
    unchanged subject stays byte-equal, so a re-run does not write it again."""
    from fhir.resources.R4B.researchsubject import ResearchSubject

    if status not in SUBJECT_STATUSES:
        raise ValueError(f"not an R4 ResearchSubject status: {status!r}")
    subject = {
        "resourceType": "ResearchSubject",
        "extension": [{"url": SD + "screening-status", "valueCode": screening or NOT_SCREENED}],
        "identifier": [{"system": SUBJECT_SYSTEM, "value": _subject_value(trial_id, patient_id)}],
        "status": status,
        "study": {"reference": f"ResearchStudy/{study_id}"},
        "individual": {"reference": f"Patient/{patient_id}"},
    }
    ResearchSubject.model_validate(subject)
    return subject


# --------------------------------------------------------------------------------------------
# On the wire


def _capability(client: FhirClient) -> Capability:
    """The server's statement; one that cannot be read allows the plainest writes only."""
    try:
        return Capability.from_statement(client.capabilities())
    except FhirHttpError:
        return Capability.from_statement({})


def _identifiers(resource: Mapping[str, Any], system: str) -> set[str]:
    return {
        str(i.get("value"))
        for i in resource.get("identifier") or []
        if isinstance(i, Mapping) and i.get("system") == system and i.get("value")
    }


def _find(
    client: FhirClient, query: SearchQuery, rtype: str, system: str
) -> Iterable[tuple[str, dict[str, Any]]]:
    """(identifier value, resource) of every ``rtype`` the search returns that carries an
    identifier in ``system``: checked here, whatever the server did with the parameters."""
    for entry in client.iter_resources(query):
        res = entry.resource
        if entry.mode == "outcome" or res.get("resourceType") != rtype or not res.get("id"):
            continue
        for value in _identifiers(res, system):
            yield value, res


def upsert_by_identifier(
    client: FhirClient, resource: Mapping[str, Any], capability: Capability | None = None
) -> tuple[str, str]:
    """PUT ``resource`` over the one of its type with the same (first) identifier, or POST it.
    Returns (id, "created" | "updated"). Two on the server with it: SourceError, no guess.
    A ``capability`` that does not list the type's ``identifier`` search parameter: the
    whole type is searched and the identifier compared here (a server refuses, or worse
    ignores, a parameter it does not know)."""
    rtype = str(resource["resourceType"])
    ident = resource["identifier"][0]
    params: tuple[tuple[str, str], ...] = (("_elements", "id,identifier"),)
    if capability is None or capability.supports_param(rtype, "identifier"):
        params = (("identifier", f"{ident['system']}|{ident['value']}"), *params)
    query = SearchQuery(rtype, params)
    found = _find(client, query, rtype, ident["system"])
    ids = sorted({r["id"] for value, r in found if value == ident["value"]})
    if len(ids) > 1:
        raise SourceError(
            f"{len(ids)} {rtype} resources on the server carry identifier {ident['value']!r}; "
            "refusing to guess which to update"
        )
    if ids:
        resp = client.request(
            "PUT", f"{rtype}/{ids[0]}", json_body={**resource, "id": ids[0]}, headers=_JSON
        )
        action = "updated"
    else:
        resp = client.request("POST", rtype, json_body=dict(resource), headers=_JSON)
        action = "created"
    saved = client.decode(resp, resource_type=rtype) if resp.content else {}
    rid = saved.get("id") or (ids[0] if ids else None)
    if rid is None:  # some servers answer 201 with only a Location header
        rid = _location_id(resp.headers.get("Location") or "")
    if not rid:
        raise FhirHttpError(f"the server did not say which id the new {rtype} got", status=201)
    return str(rid), action


def _location_id(location: str) -> str:
    """``[base/]Type/id[/_history/n]`` -> ``id``."""
    return location.split("/_history")[0].rstrip("/").rsplit("/", 1)[-1]


_OWN_KEYS = ("resourceType", "extension", "identifier", "status", "study", "individual")


def _unchanged(existing: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    return all(existing.get(k) == body.get(k) for k in _OWN_KEYS)


@dataclass
class _Plan:
    entries: list[dict[str, Any]]
    counts: dict[str, int]
    statuses: dict[str, int]


def _plan(
    *,
    trial_id: str,
    study_id: str,
    statuses: Mapping[str, str],
    existing: Mapping[str, dict[str, Any]],
    recruitment: Mapping[str, Recruitment],
    conditional: bool,
    unscreened: str | None,
) -> _Plan:
    """The Bundle entries: a subject for every candidate and for every patient published
    before, written only where it changed."""
    counts = {
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "kept_site_status": 0,
        "decisions_applied": 0,  # subjects whose status a coordinator's record decided
    }
    by_status: dict[str, int] = {}
    entries: list[dict[str, Any]] = []
    candidates = {p for p, s in statuses.items() if s in ("eligible", "review")}
    # a patient the coordinators keep in play (decided eligible, needs information,
    # enrolled) is published whatever the screen says now
    in_play = {
        p
        for p, rec in recruitment.items()
        if p in statuses and subject_status(None, rec) in ("eligible", "screening", "on-study")
    }
    listed = candidates | in_play
    before = set(existing) - listed
    for pid in sorted(listed) + sorted(before):
        screening = statuses.get(pid, unscreened)
        old = existing.get(pid)
        rec = recruitment.get(pid)
        status = subject_status(screening, rec)
        contact = rec is not None and _code(rec.contact_status) in _CONTACT
        if old is not None and old.get("status") in SITE_STATUSES and not contact:
            # Past screening on the site's word (enrolled, in follow-up): only a contact
            # status recorded here (enrolled, declined) changes it, never a screening.
            counts["kept_site_status"] += 1
            by_status[str(old["status"])] = by_status.get(str(old["status"]), 0) + 1
            continue
        body = research_subject(
            trial_id=trial_id, patient_id=pid, study_id=study_id, status=status, screening=screening
        )
        by_status[status] = by_status.get(status, 0) + 1
        if status != subject_status(screening, None):
            counts["decisions_applied"] += 1
        if old is not None:
            if _unchanged(old, body):
                counts["unchanged"] += 1
                continue
            rid = str(old["id"])
            entries.append(
                {
                    "resource": {**body, "id": rid},
                    "request": {"method": "PUT", "url": f"ResearchSubject/{rid}"},
                }
            )
            counts["updated"] += 1
        else:
            request: dict[str, str] = {"method": "POST", "url": "ResearchSubject"}
            if conditional:
                # a retried or repeated POST finds the subject instead of making a second one
                value = _subject_value(trial_id, pid)
                request["ifNoneExist"] = f"identifier={SUBJECT_SYSTEM}|{value}"
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": body,
                    "request": request,
                }
            )
            counts["created"] += 1
    return _Plan(entries, counts, dict(sorted(by_status.items())))


def _existing_subjects(
    client: FhirClient, trial_id: str, study_id: str, capability: Capability
) -> dict[str, dict[str, Any]]:
    """patient id -> our ResearchSubject of this trial on the server (by identifier)."""
    query = SearchQuery("ResearchSubject")
    if capability.supports_param("ResearchSubject", "study"):
        query = query.with_param("study", f"ResearchStudy/{study_id}")
    prefix = f"{trial_id}/"
    found: dict[str, dict[str, Any]] = {}
    for value, res in _find(client, query, "ResearchSubject", SUBJECT_SYSTEM):
        if not value.startswith(prefix):
            continue
        pid = value[len(prefix) :]
        if pid in found and found[pid]["id"] != res["id"]:
            raise SourceError(
                f"two ResearchSubjects on the server carry one identifier of trial {trial_id}; "
                "refusing to guess which to update"
            )
        found[pid] = res
    return found


def _chunks(items: Sequence[dict[str, Any]], n: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def _send(client: FhirClient, entries: list[dict[str, Any]], mode: str) -> None:
    """Write ``entries`` in Bundles (``transaction``/``batch``) or one request each."""
    if mode == "single":
        for e in entries:
            req = e["request"]
            headers = dict(_JSON)
            if req.get("ifNoneExist"):
                headers["If-None-Exist"] = req["ifNoneExist"]
            client.request(req["method"], req["url"], json_body=e["resource"], headers=headers)
        return
    for chunk in _chunks(entries, BUNDLE_ENTRIES):
        answer = client.transaction({"resourceType": "Bundle", "type": mode, "entry": chunk})
        got = answer.get("entry") or []
        failed = [
            str((r.get("response") or {}).get("status") or "no status")
            for r in got
            if not str((r.get("response") or {}).get("status") or "").startswith("2")
        ]
        if len(got) != len(chunk) or failed:
            # Status lines only: an entry's outcome may quote the resource (a patient).
            statuses = sorted(set(failed)) or [f"{len(got)} answers to {len(chunk)} entries"]
            raise FhirHttpError(
                f"{len(failed) or len(chunk)} of {len(chunk)} ResearchSubject writes in a "
                f"{mode} Bundle failed ({', '.join(statuses)}); a re-run writes what is missing",
                method="POST",
                url=client.base_url,
            )


def publish_research(
    client: FhirClient,
    *,
    trial_id: str,
    title: str,
    trial_version: str,
    as_of: date,
    statuses: Mapping[str, str],
    group_id: str | None = None,
    recruitment: Mapping[str, Recruitment] | None = None,
    unscreened_ineligible: bool = False,
) -> dict[str, Any]:
    """Write the ResearchStudy and the ResearchSubjects (module docstring). ``statuses``:
    every screened patient's id -> eligible / review / ineligible; ``unscreened_ineligible``:
    a patient not in it is ineligible (the funnel fetched only patients with an entry code),
    else not screened. Returns the record run.json keeps: the study's id and action, subject
    counts, the requests it took."""
    before = client.stats.snapshot()["requests"]
    capability = _capability(client)
    study = research_study(
        trial_id=trial_id, title=title, trial_version=trial_version, as_of=as_of, group_id=group_id
    )
    study_id, study_action = upsert_by_identifier(client, study, capability)
    existing = (
        _existing_subjects(client, trial_id, study_id, capability)
        if study_action == "updated"
        else {}  # a new study: no subject can point at it yet
    )
    interactions = capability.system_interactions
    mode = (
        "transaction"
        if "transaction" in interactions
        else "batch"
        if "batch" in interactions
        else "single"
    )
    # ifNoneExist searches by identifier: only where the server says it searches by it
    conditional = "ResearchSubject" in capability.conditional_create and (
        capability.supports_param("ResearchSubject", "identifier")
    )
    plan = _plan(
        trial_id=trial_id,
        study_id=study_id,
        statuses=statuses,
        existing=existing,
        recruitment=recruitment or {},
        conditional=conditional,
        unscreened="ineligible" if unscreened_ineligible else None,
    )
    _send(client, plan.entries, mode)
    return {
        "study": {"id": study_id, "action": study_action, "identifier": study["identifier"][0]},
        "subjects": {**plan.counts, "status": plan.statuses},
        "writes": mode,
        "conditional_create": conditional,
        "requests": int(client.stats.snapshot()["requests"]) - int(before),
    }
