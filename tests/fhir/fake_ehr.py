"""A fake FHIR server (for ``responses``) that enforces vendor-like restrictions the way the
vendors document them: Epic's OperationOutcome 4111 (patient required) and 4112 (several
patients), Oracle's missing ``code`` parameter and ``_count`` cap, a lenient server that
ignores what it does not know. Used by the probe and strategy tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import responses

BASE = "https://ehr.example/fhir"
TYPES = ("Condition", "Observation", "MedicationRequest")
LISTED = (
    *TYPES,
    "Patient",
    "Procedure",
    "Medication",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
)
GROUP = "g1"  # a Group of p1 and p2 (Group/g1 is readable)
PARAMS = ("patient", "subject", "code", "component-code", "date", "_id")


def _rows(rtype: str) -> list[dict[str, Any]]:
    n = 70 if rtype == "Observation" else 3  # 210 rows: more than the _count caps probed
    return [
        {
            "resourceType": rtype,
            "id": f"{rtype[:3].lower()}-{p}-{i}",
            "subject": {"reference": f"Patient/{p}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": f"{i}-0"}]},
        }
        for p in ("p1", "p2", "p3")
        for i in range(n)
    ]


_ROWS = {t: _rows(t) for t in TYPES}


@dataclass
class FakeServer:
    """A FHIR server with three patients' records and the restrictions asked for."""

    software: str = "Fake FHIR"
    patient_required: bool = False  # Epic 4111 / Oracle
    patient_search: bool = True  # Patient?_count=1 allowed
    one_patient: bool = False  # Epic 4112
    code: Mapping[str, str] = field(default_factory=dict)  # type -> rejected | ignored
    max_count: int | None = None
    count_error: bool = False  # a _count above the cap is refused, not cut
    last_updated: str = "honoured"  # honoured | rejected | ignored
    include: bool = True
    export: tuple[str, ...] = ("system",)
    seen: list[str] = field(default_factory=list)

    def rows(self, rtype: str) -> list[dict[str, Any]]:
        return _ROWS.get(rtype, [])

    def outcome(self, code: str) -> tuple[int, dict[str, str], str]:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "details": {"coding": [{"code": code}]},
                    # diagnostics may quote the request: never kept by the probe
                    "diagnostics": "Patient p1 secret",
                }
            ],
        }
        return 400, {}, json.dumps(body)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlsplit(request.url)
        path = url.path.removesuffix("/_search")
        rtype = path.rsplit("/", 1)[-1]
        params = dict(parse_qsl(url.query))
        if request.method == "POST":  # long searches go as POST [type]/_search, form body
            body = request.body.decode() if isinstance(request.body, bytes) else request.body
            params.update(parse_qsl(body or ""))
        self.seen.append(rtype)
        if rtype == "metadata":
            return 200, {}, json.dumps(self.statement())
        if path.endswith(f"/Group/{GROUP}"):
            members = [{"entity": {"reference": f"Patient/{p}"}} for p in ("p1", "p2")]
            return 200, {}, json.dumps({"resourceType": "Group", "id": GROUP, "member": members})
        patient = params.get("patient")
        if rtype == "Patient":
            if not self.patient_search:
                return self.outcome("4111")
            rows = [{"resourceType": "Patient", "id": p} for p in ("p1", "p2", "p3")]
        else:
            if self.patient_required and not patient:
                return self.outcome("4111")
            if patient and "," in patient and self.one_patient:
                return self.outcome("4112")
            rows = self.rows(rtype)
            if patient:
                ids = set(patient.split(","))
                rows = [r for r in rows if r["subject"]["reference"][8:] in ids]
        if "code" in params:
            how = self.code.get(rtype, "honoured")
            if how == "rejected":
                return self.outcome("not-supported")
            if how == "honoured":
                rows = [
                    r for r in rows if params["code"].endswith("|" + r["code"]["coding"][0]["code"])
                ]
        if "_lastUpdated" in params:
            if self.last_updated == "rejected":
                return self.outcome("not-supported")
            if self.last_updated == "honoured":
                rows = []
        if "_include" in params and not self.include:
            return self.outcome("not-supported")
        count = int(params.get("_count", "10"))
        if self.max_count and count > self.max_count:
            if self.count_error:
                return self.outcome("invalid-count")
            count = self.max_count
        page = rows[:count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
            "link": [{"relation": "next", "url": f"{BASE}/{rtype}?page=2"}]
            if len(rows) > count
            else [],
        }
        return 200, {}, json.dumps(bundle)

    def statement(self) -> dict[str, Any]:
        # what it lists is what Epic's statement lists: code too, whatever the searches do
        resources: list[dict[str, Any]] = [
            {"type": t, "searchParam": [{"name": n} for n in PARAMS], "searchInclude": ["*"]}
            for t in LISTED
        ]
        if "group" in self.export:
            # named as Epic's statement names it, after the Bulk Data IG's OperationDefinition
            group_export = {
                "name": "group-export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
            }
            resources.append({"type": "Group", "operation": [group_export]})
        return {
            "resourceType": "CapabilityStatement",
            "software": {"name": self.software},
            "rest": [
                {
                    "mode": "server",
                    "resource": resources,
                    "operation": [{"name": "export"}] if "system" in self.export else [],
                }
            ],
        }


def serve(mock: responses.RequestsMock, server: FakeServer) -> None:
    """Route every type the probe and the funnel ask for to ``server``."""
    for rtype in ("metadata", *LISTED):
        mock.add_callback(responses.GET, f"{BASE}/{rtype}", callback=server)
        mock.add_callback(responses.POST, f"{BASE}/{rtype}/_search", callback=server)
    mock.add_callback(responses.GET, f"{BASE}/Group/{GROUP}", callback=server)
