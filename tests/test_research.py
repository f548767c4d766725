"""ResearchStudy and ResearchSubjects on a real FHIR server (sekmet-fhir, tests/conftest_server.py).

One server for the module: the publishing tests each use their own trial id (their own study),
the end-to-end screens a few scenario patients loaded into it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import requests
from fhir.resources.R4B.researchsubject import ResearchSubject

from fhir_cohort import FhirHttpError, ServerOptions, SourceError, research
from fhir_cohort.fhir.capability import Capability
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.history import open_history
from fhir_cohort.pipeline import screen
from fhir_cohort.research import (
    CLINICALTRIALS_SYSTEM,
    STUDY_SYSTEM,
    SUBJECT_SYSTEM,
    Recruitment,
    publish_research,
    recruitment_decisions,
    research_study,
    research_subject,
    subject_status,
)
from fhir_cohort.synth.generator import iter_patients
from tests.cli_main import run_main

AS_OF = date(2026, 11, 24)
# R4 research-subject-status, as the brief lists it (research.SUBJECT_STATUSES is checked
# against this copy, not the other way round).
R4_STATUSES = {
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

# --------------------------------------------------------------------------- pure


DECISIONS = [None, "eligible", "ineligible", "needs information", "Needs_Information"]
CONTACTS = [
    None,
    "not contacted",
    "attempt 1",
    "attempt 2",
    "attempt 3",
    "could not reach",
    "declined",
    "enrolled",
    "do-not-contact",
    "Do not contact",
]


def expected(screening: str | None, decision: str | None, contact: str | None) -> str:
    contact_code = (contact or "").lower().replace(" ", "-")
    decision_code = (decision or "").lower().replace(" ", "-").replace("_", "-")
    if contact_code == "enrolled":
        return "on-study"
    if contact_code in ("declined", "do-not-contact"):
        return "withdrawn"
    if decision_code:
        return {"eligible": "eligible", "ineligible": "ineligible"}.get(decision_code, "screening")
    return {
        "eligible": "eligible",
        "review": "potential-candidate",
        "ineligible": "ineligible",
        None: "not-registered",
    }[screening]


def test_subject_status_of_every_screening_decision_and_contact_status() -> None:
    seen = set()
    for screening, decision, contact in itertools.product(
        ["eligible", "review", "ineligible", None], DECISIONS, CONTACTS
    ):
        rec = None if decision is None and contact is None else Recruitment(decision, contact)
        got = subject_status(screening, rec)
        assert got == expected(screening, decision, contact), (screening, decision, contact)
        seen.add(got)
        # every one is an R4 status the models accept, in a subject that validates
        research_subject(
            trial_id="NCT06038474", patient_id="p-1", study_id="s", status=got, screening=screening
        )
    assert seen <= R4_STATUSES and research.SUBJECT_STATUSES == R4_STATUSES
    assert research.SITE_STATUSES <= R4_STATUSES
    assert {"eligible", "potential-candidate", "on-study", "withdrawn", "screening"} <= seen


def test_an_invalid_status_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError):
        research_subject(
            trial_id="T", patient_id="p", study_id="s", status="recruited", screening="eligible"
        )
    with pytest.raises(ValueError):
        ResearchSubject.model_validate({"resourceType": "ResearchSubject", "status": "eligible"})


@pytest.mark.parametrize(
    ("trial_id", "system"),
    [("NCT06038474", CLINICALTRIALS_SYSTEM), ("LOCAL-7", STUDY_SYSTEM), ("nct0603", STUDY_SYSTEM)],
)
def test_study_identifier_is_the_nct_number_only_for_nct_ids(trial_id: str, system: str) -> None:
    study = research_study(
        trial_id=trial_id, title="", trial_version="1", as_of=AS_OF, group_id="g1"
    )
    assert study["identifier"] == [{"system": system, "value": trial_id}]
    assert study["title"] == trial_id and study["status"] == "active"
    assert study["enrollment"] == [{"reference": "Group/g1"}]
    assert "enrollment" not in research_study(
        trial_id=trial_id, title="t", trial_version="1", as_of=AS_OF
    )


def test_capability_reads_write_interactions() -> None:
    cap = Capability.from_statement(
        {
            "rest": [
                {
                    "mode": "server",
                    "interaction": [{"code": "batch"}],
                    "resource": [
                        {"type": "ResearchSubject", "conditionalCreate": True, "searchParam": []}
                    ],
                }
            ]
        }
    )
    assert cap.system_interactions == {"batch"}
    assert cap.conditional_create == {"ResearchSubject"}


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(sekmet_factory: Callable[..., Any]) -> Any:
    return sekmet_factory()


def subjects_on(server: Any, trial_id: str) -> dict[str, dict[str, Any]]:
    """patient id -> the trial's ResearchSubject on the server, read without our code; two
    with one identifier fail the test."""
    bundle = requests.get(
        f"{server.base_url}/ResearchSubject",
        params={"_count": "1000"},
        headers={"Accept": "application/fhir+json"},
        timeout=30,
    ).json()
    found: dict[str, dict[str, Any]] = {}
    for entry in bundle.get("entry", []):
        res = entry["resource"]
        for ident in res.get("identifier", []):
            if ident["system"] == SUBJECT_SYSTEM and ident["value"].startswith(f"{trial_id}/"):
                pid = ident["value"].split("/", 1)[1]
                assert pid not in found, f"two subjects for {pid}"
                found[pid] = res
    return found


def studies_on(server: Any, system: str, trial_id: str) -> list[dict[str, Any]]:
    bundle = requests.get(
        f"{server.base_url}/ResearchStudy",
        params={"_count": "1000"},
        headers={"Accept": "application/fhir+json"},
        timeout=30,
    ).json()
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if {"system": system, "value": trial_id} in e["resource"].get("identifier", [])
    ]


WRITE_MODES = {
    "transaction": {"transaction", "batch"},
    "batch": {"batch"},
    "single": set(),
}


@pytest.mark.integration
@pytest.mark.parametrize("mode", sorted(WRITE_MODES))
def test_publish_creates_then_updates_in_place_in_every_write_mode(
    server: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = research._capability

    def capability(client: FhirClient) -> Capability:
        cap = real(client)
        return Capability(**{**vars(cap), "system_interactions": frozenset(WRITE_MODES[mode])})

    monkeypatch.setattr(research, "_capability", capability)
    trial = f"NCT0000000{sorted(WRITE_MODES).index(mode)}"
    client = FhirClient(server.base_url)

    def publish(statuses: dict[str, str], **kw: Any) -> dict[str, Any]:
        return publish_research(
            client, trial_id=trial, title="t", trial_version="1", as_of=AS_OF,
            statuses=statuses, **kw,
        )  # fmt: skip

    first = publish({"p1": "eligible", "p2": "review", "p3": "ineligible", "p4": "eligible"})
    assert first["writes"] == mode and first["study"]["action"] == "created"
    assert first["subjects"]["created"] == 3
    before = subjects_on(server, trial)
    assert {p: s["status"] for p, s in before.items()} == {
        "p1": "eligible",
        "p2": "potential-candidate",
        "p4": "eligible",
    }
    assert all(s["study"]["reference"] == f"ResearchStudy/{first['study']['id']}"
               for s in before.values())  # fmt: skip

    # p1, p2 change status, p3 becomes a candidate, p4 leaves the source
    second = publish({"p1": "review", "p2": "eligible", "p3": "eligible"})
    assert second["study"] == {**first["study"], "action": "updated"}
    assert second["subjects"] | {"status": None} == {
        "created": 1,
        "updated": 3,
        "unchanged": 0,
        "kept_site_status": 0,
        "decisions_applied": 0,
        "status": None,
    }
    after = subjects_on(server, trial)
    assert {p: s["status"] for p, s in after.items()} == {
        "p1": "potential-candidate",
        "p2": "eligible",
        "p3": "eligible",
        "p4": "not-registered",
    }
    assert all(after[p]["id"] == before[p]["id"] for p in before)  # in place, same ids
    assert len(studies_on(server, CLINICALTRIALS_SYSTEM, trial)) == 1

    # the same again: nothing to write, no duplicate
    third = publish({"p1": "review", "p2": "eligible", "p3": "eligible"})
    assert third["subjects"]["unchanged"] == 4 and third["subjects"]["updated"] == 0
    assert subjects_on(server, trial) == after


@pytest.mark.integration
def test_site_statuses_stay_and_coordinator_contact_statuses_win(server: Any) -> None:
    client = FhirClient(server.base_url)
    trial = "LOCAL-SITE"

    def publish(statuses: dict[str, str], **kw: Any) -> dict[str, Any]:
        return publish_research(
            client, trial_id=trial, title="t", trial_version="1", as_of=AS_OF,
            statuses=statuses, **kw,
        )  # fmt: skip

    publish({"a": "eligible", "b": "eligible", "c": "review"})
    subjects = subjects_on(server, trial)
    enrolled = {**subjects["a"], "status": "on-study"}  # the site enrolls a, by hand
    put = requests.put(
        f"{server.base_url}/ResearchSubject/{enrolled['id']}",
        data=json.dumps(enrolled),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert put.ok
    # a now screens ineligible (the trial's own drug?), b declined, c is decided ineligible
    rec = {
        "a": Recruitment("ineligible", "not_contacted"),  # a decision does not undo enrolment
        "b": Recruitment(contact_status="declined"),
        "c": Recruitment("ineligible"),
    }
    out = publish({"a": "ineligible", "b": "eligible", "c": "review"}, recruitment=rec)
    assert out["subjects"]["kept_site_status"] == 1
    assert out["subjects"]["decisions_applied"] == 2
    got = {p: s["status"] for p, s in subjects_on(server, trial).items()}
    assert got == {"a": "on-study", "b": "withdrawn", "c": "ineligible"}
    assert len(studies_on(server, STUDY_SYSTEM, trial)) == 1


@pytest.mark.integration
def test_after_the_funnel_a_patient_no_longer_fetched_is_ineligible(server: Any) -> None:
    client = FhirClient(server.base_url)
    kw: dict[str, Any] = dict(trial_id="LOCAL-FUNNEL", title="t", trial_version="1", as_of=AS_OF)
    publish_research(client, statuses={"x": "eligible", "y": "review"}, **kw)
    publish_research(client, statuses={"x": "eligible"}, unscreened_ineligible=True, **kw)
    y = subjects_on(server, "LOCAL-FUNNEL")["y"]
    assert y["status"] == "ineligible"
    assert y["extension"][0]["valueCode"] == "ineligible"


@pytest.mark.integration
def test_many_candidates_take_a_few_bundles_not_a_request_each(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(research, "BUNDLE_ENTRIES", 40)
    client = FhirClient(server.base_url)
    client.capabilities()  # fetched by the screen before; not what is measured here
    kw: dict[str, Any] = dict(trial_id="LOCAL-MANY", title="t", trial_version="1", as_of=AS_OF)
    statuses = {f"m{i:03d}": ("eligible", "review")[i % 2] for i in range(100)}
    first = publish_research(client, statuses=statuses, **kw)
    # study search, study POST, three Bundles of 40, 40 and 20
    assert first["requests"] == 2 + 3 and first["subjects"]["created"] == 100
    flipped = {p: "review" if s == "eligible" else "eligible" for p, s in statuses.items()}
    second = publish_research(client, statuses=flipped, **kw)
    # study search, study PUT, one page of subjects, three Bundles
    assert second["requests"] == 3 + 3 and second["subjects"]["updated"] == 100
    assert len(subjects_on(server, "LOCAL-MANY")) == 100


def test_conditional_create_only_where_the_server_searches_subjects_by_identifier() -> None:
    plan = research._plan(
        trial_id="T",
        study_id="s",
        statuses={"p": "eligible"},
        existing={},
        recruitment={},
        conditional=True,
        unscreened=None,
    )
    (entry,) = plan.entries
    assert entry["request"] == {
        "method": "POST",
        "url": "ResearchSubject",
        "ifNoneExist": f"identifier={SUBJECT_SYSTEM}|T/p",
    }
    assert entry["fullUrl"].startswith("urn:uuid:")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def loaded(server: Any) -> dict[str, str]:
    """A few scenario patients (candidates and not) on the server: id -> expected status."""
    wanted = {"eligible": 5, "review": 3, "ineligible": 3}
    chosen: dict[str, str] = {}
    resources: list[dict[str, Any]] = []
    for rec in iter_patients(0, 5, AS_OF):
        if wanted.get(rec.status, 0) > 0:
            wanted[rec.status] -= 1
            chosen[rec.patient_id] = rec.status
            resources += [r for r in rec.resources if r["resourceType"] != "Encounter"]
    server.load_resources(resources)
    return chosen


@pytest.mark.integration
def test_screen_publishes_study_and_subjects_and_a_rerun_updates_them(
    server: Any, loaded: dict[str, str], tmp_path: Path
) -> None:
    """Through the CLI (the flags) and then the Python API, as a coordinator's weekly run,
    with decisions recorded in the history between the two."""
    history = tmp_path / "history.sqlite"
    argv = ["screen", "--source", server.base_url, "--as-of", AS_OF.isoformat(), "-q"]
    res = run_main([*argv, "--out", str(tmp_path / "one"), "--history", str(history),
                    "--strategy", "full", "--publish-group", "--publish-subjects"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = json.loads((tmp_path / "one" / "run.json").read_text())
    published = run["published_research"]
    candidates = {p for p, s in loaded.items() if s != "ineligible"}
    assert published["subjects"]["created"] == len(candidates) == 8
    (study,) = studies_on(server, CLINICALTRIALS_SYSTEM, "NCT06038474")
    assert study["enrollment"] == [{"reference": f"Group/{run['published_group']['id']}"}]
    first = subjects_on(server, "NCT06038474")
    assert set(first) == candidates
    assert {p: s["status"] for p, s in first.items()} == {
        p: {"eligible": "eligible", "review": "potential-candidate"}[loaded[p]] for p in candidates
    }

    # The coordinators decide; one candidate is deleted from the EHR (merged away).
    gone, enrolled, declined, *_ = sorted(p for p in candidates if loaded[p] == "eligible")
    reviewed = sorted(p for p in candidates if loaded[p] == "review")[0]
    saves = {
        enrolled: {"decision": "eligible", "contact_status": "enrolled"},
        declined: {"contact_status": "declined"},
        reviewed: {"decision": "eligible"},
    }
    with open_history(history) as h:
        for pid, fields in saves.items():
            h.save_decision("NCT06038474", pid, who="coordinator", expected_version=0, **fields)
    assert requests.delete(f"{server.base_url}/Patient/{gone}", timeout=30).ok
    again = screen(
        server.base_url,
        as_of=AS_OF,
        server=ServerOptions(strategy="full"),
        publish_group=True,
        publish_subjects=True,
        history=history,
    )
    second = again.run["published_research"]
    assert second["study"]["id"] == study["id"] and second["study"]["action"] == "updated"
    assert second["subjects"]["updated"] == 4 and second["subjects"]["created"] == 0
    assert second["subjects"]["decisions_applied"] == 3
    after = subjects_on(server, "NCT06038474")
    assert {p: s["id"] for p, s in after.items()} == {p: s["id"] for p, s in first.items()}
    changed = {p: s["status"] for p, s in after.items() if s["status"] != first[p]["status"]}
    assert changed == {
        gone: "not-registered",
        enrolled: "on-study",
        declined: "withdrawn",
        reviewed: "eligible",
    }
    assert after[gone]["extension"][0]["valueCode"] == "not-screened"
    assert after[reviewed]["extension"][0]["valueCode"] == "review"  # the screen's own answer
    assert len(studies_on(server, CLINICALTRIALS_SYSTEM, "NCT06038474")) == 1


# --------------------------------------------------------------------------- errors


def test_publish_subjects_needs_a_server_source(tmp_path: Path) -> None:
    res = run_main(["screen", "--out", str(tmp_path), "--no-history", "--publish-subjects"])
    assert res.returncode == 4 and "needs a FHIR server" in res.stderr


class _Answers:
    """A client whose Bundles come back with the given entry statuses."""

    base_url = "http://127.0.0.1:1/fhir"

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        return {"entry": [{"response": {"status": s}} for s in self.statuses]}


@pytest.mark.parametrize(
    "answers",
    [["201 Created", "400 Bad Request"], ["201 Created"], ["412 Precondition Failed"] * 2],
)
def test_a_batch_entry_that_failed_is_an_error_without_content(answers: list[str]) -> None:
    plan = research._plan(
        trial_id="T",
        study_id="s",
        statuses={"secret-patient-1": "eligible", "secret-patient-2": "review"},
        existing={},
        recruitment={},
        conditional=False,
        unscreened=None,
    )
    with pytest.raises(FhirHttpError) as caught:
        research._send(_Answers(answers), plan.entries, "batch")  # type: ignore[arg-type]
    assert "ResearchSubject writes" in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.integration
def test_two_subjects_with_one_identifier_are_refused_not_guessed(server: Any) -> None:
    client = FhirClient(server.base_url)
    kw: dict[str, Any] = dict(trial_id="LOCAL-DUP", title="t", trial_version="1", as_of=AS_OF)
    publish_research(client, statuses={"secret-pid": "eligible"}, **kw)
    copy = dict(subjects_on(server, "LOCAL-DUP")["secret-pid"])
    del copy["id"], copy["meta"]
    assert requests.post(
        f"{server.base_url}/ResearchSubject",
        data=json.dumps(copy),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    ).ok
    with pytest.raises(SourceError, match="refusing to guess") as caught:
        publish_research(client, statuses={"secret-pid": "review"}, **kw)
    assert "secret" not in str(caught.value)


# --------------------------------------------------------------------------- decisions


def test_a_decision_flagged_for_re_review_no_longer_holds_but_its_contact_status_does() -> None:
    class History:
        def decisions(self, trial_id: str) -> list[SimpleNamespace]:
            return [
                SimpleNamespace(patient_id="a", decision="eligible", contact_status="declined"),
                SimpleNamespace(patient_id="b", decision="ineligible", contact_status="attempt_1"),
                SimpleNamespace(
                    patient_id="c", decision="eligible", contact_status="not_contacted"
                ),
            ]

    worklist = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "flags": ["re-review: new evidence", "new", "re-review: new evidence"],
        }
    )
    got = recruitment_decisions(History(), "T", worklist)
    assert got == {
        "a": Recruitment(None, "declined"),
        "b": Recruitment("ineligible", "attempt_1"),
        "c": Recruitment(None, "not_contacted"),
    }
    assert [subject_status("review", got[p]) for p in "abc"] == [
        "withdrawn",
        "ineligible",
        "potential-candidate",  # back in review: the screen's answer until decided again
    ]
    assert recruitment_decisions(None, "T") == {}


def test_patients_the_coordinators_keep_in_play_are_published_whatever_the_screen() -> None:
    recruitment = {
        "kept": Recruitment("eligible"),  # decided eligible; screens ineligible now
        "enrolled": Recruitment(contact_status="enrolled"),
        "out": Recruitment("ineligible", "not_contacted"),
        "gone": Recruitment("eligible"),  # not screened at all: nothing to say about them
    }
    plan = research._plan(
        trial_id="T",
        study_id="s",
        statuses={"kept": "ineligible", "enrolled": "ineligible", "out": "ineligible"},
        existing={},
        recruitment=recruitment,
        conditional=False,
        unscreened=None,
    )
    made = {e["resource"]["individual"]["reference"]: e["resource"]["status"] for e in plan.entries}
    assert made == {"Patient/enrolled": "on-study", "Patient/kept": "eligible"}
    assert plan.counts["decisions_applied"] == 2
