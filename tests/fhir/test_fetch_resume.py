"""Page-level resume, next-link expiry, journal keys and snapshot reuse of fetch.py, against a
paging server double (what no real server does on demand: expire a next link, change a result
set between two runs). The kill-and-rerun tests against the real server are in
tests/pipeline/test_fetch_kill.py."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from fhir_cohort.errors import FhirHttpError, OptionError
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.fetch import (
    STAGING_DIR,
    FetchPlan,
    FollowUp,
    fetch_all,
    fetch_snapshot,
    mark_used,
    read_state,
)
from tests.fhir.fakes import FakeTime

BASE = "https://ehr.test/fhir"
TYPES = ("Patient", "Condition")
SLE = "http://snomed.info/sct|55464009"


class Pager:
    """A FHIR server double: ``_count``/``_offset`` paging over fixed resources per type.

    ``fail`` maps (type, offset) to a status answered once; ``generation`` is carried by next
    links, and links of an older generation answer 410 Gone (``expire()``, as servers that keep
    paging state do after a restart); ``data`` can be changed between runs.
    """

    def __init__(self, data: dict[str, list[dict[str, Any]]]) -> None:
        self.data = data
        self.fail: dict[tuple[str, int], int] = {}
        self.generation = 0
        self.calls: list[str] = []

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(BASE) + r"/(\w+)(\?.*)?$"),
            callback=self.answer,
        )

    def answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        rtype = parts.path.rsplit("/", 1)[-1]
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.calls.append(f"{rtype}@{q.get('_offset', 'first')}")
        if rtype == "metadata":
            return 200, {}, json.dumps(_cap())
        if "_gen" in q and int(q["_gen"]) != self.generation:
            return 410, {}, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        count, offset = int(q.get("_count", 20)), int(q.get("_offset", 0))
        status = self.fail.pop((rtype, offset), None)
        if status is not None:
            return status, {}, "{}"
        rows = self.rows(rtype, q)
        page = rows[offset : offset + count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(rows),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
            "link": [],
        }
        if offset + count < len(rows):
            keep = {k: v for k, v in q.items() if k not in ("_count", "_offset", "_gen")}
            nxt = f"{BASE}/{rtype}?" + urlencode(
                {**keep, "_count": count, "_offset": offset + count, "_gen": self.generation}
            )
            bundle["link"].append({"relation": "next", "url": nxt})
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle)

    def rows(self, rtype: str, q: dict[str, str]) -> list[dict[str, Any]]:
        rows = self.data.get(rtype, [])
        if "code" in q:
            rows = [r for r in rows if r.get("code") == q["code"]]
        if "patient" in q:
            ids = set(q["patient"].split(","))
            rows = [r for r in rows if r["subject"]["reference"].split("/")[-1] in ids]
        if "_id" in q:
            rows = [r for r in rows if r["id"] in set(q["_id"].split(","))]
        return rows


def _cap() -> dict[str, Any]:
    params = {"Condition": ["code", "patient"], "Patient": ["_id"]}
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": t, "searchParam": [{"name": p} for p in ps]}
                    for t, ps in params.items()
                ],
            }
        ],
    }


def _hospital(n_patients: int = 7, per_patient: int = 2) -> dict[str, list[dict[str, Any]]]:
    patients = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(n_patients)]
    conditions = [
        {
            "resourceType": "Condition",
            "id": f"c{i}-{j}",
            "code": SLE if j == 0 else "other",
            "subject": {"reference": f"Patient/p{i}"},
        }
        for i in range(n_patients)
        for j in range(per_patient)
    ]
    return {"Patient": patients, "Condition": conditions}


def _client(**kw: Any) -> FhirClient:
    clock = FakeTime()
    return FhirClient(BASE, max_retries=0, sleep=clock.sleep, clock=clock.clock, **kw)


def _snapshot(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.glob("*.ndjson"))}


def _plan() -> FetchPlan:
    return FetchPlan(
        entry=(("Condition", "code", (SLE,)),),
        follow_ups=(FollowUp("Patient", patient_param="_id"), FollowUp("Condition")),
        resolve_medications=False,
    )


Fetch = Callable[..., Any]
# Both REST strategies share the journal: every test below runs for each.
STRATEGIES: dict[str, Fetch] = {
    "full": lambda client, cache, **kw: fetch_all(client, TYPES, cache, count=3, **kw),
    "funnel": lambda client, cache, **kw: fetch_snapshot(
        client, _plan(), cache, batch_size=4, workers=1, page_size=3, **kw
    ),
}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request: pytest.FixtureRequest) -> Fetch:
    return STRATEGIES[request.param]


def _reference(fetch: Fetch, tmp_path: Path) -> tuple[dict[str, bytes], int]:
    """The snapshot and request count of an uninterrupted run."""
    pager = Pager(_hospital())
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        fetch(_client(), tmp_path / "reference")
    return _snapshot(tmp_path / "reference"), len(pager.calls)


def _fail_somewhere(pager: Pager, status: int = 500) -> None:
    # the third page of the Condition search (offset 6) fails once, in either strategy
    pager.fail[("Condition", 6)] = status


def test_a_failed_page_resumes_at_its_next_link(strategy: Fetch, tmp_path: Path) -> None:
    want, total = _reference(strategy, tmp_path)
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    cache = tmp_path / "cache"
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            strategy(_client(), cache)
        first = len(pager.calls)
        state = read_state(cache)
        assert state is not None and state["status"] == "in_progress"
        journaled = sum(e["pages"] for e in [*state["completed"].values()])
        partial = list(state["partial"].values())
        assert partial and partial[0]["pages"] == 2 and "_offset=6&" in partial[0]["next"]
        journaled += sum(p["pages"] for p in partial)
        report = strategy(_client(), cache)
    second = len(pager.calls) - first
    assert _snapshot(cache) == want
    # the second run asks only for pages the journal does not hold (the failed one included)
    assert second == total - journaled
    assert report.resumed_pages == 2 and report.restarted_queries == 0
    searches = [c for c in pager.calls[first:] if not c.startswith("metadata")]
    assert searches[0] == "Condition@6"  # continued at the stored next link


def test_a_search_finished_before_another_failed_is_journaled_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy main thread sees the finished and the failed search in one wakeup (CI did)."""
    import concurrent.futures

    import fhir_cohort.fhir.fetch as fetch_mod

    def late_wait(fs: Any, return_when: str = concurrent.futures.ALL_COMPLETED) -> Any:
        done, pending = concurrent.futures.wait(fs, return_when=concurrent.futures.ALL_COMPLETED)
        # the failed search first: a set may iterate in either order
        return sorted(done, key=lambda f: f.exception() is None), pending

    monkeypatch.setattr(fetch_mod, "wait", late_wait)
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    cache = tmp_path / "cache"
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            STRATEGIES["full"](_client(), cache)
        state = read_state(cache)
        assert state is not None
        assert any(k for k in state["completed"])  # the Patient search, finished first
        assert [p["pages"] for p in state["partial"].values()] == [2]
        report = STRATEGIES["full"](_client(), cache)
    assert report.resumed_pages == 2 and report.resumed_queries == 1


@pytest.mark.parametrize("why", ["expired", "changed"])
def test_a_rejected_next_link_restarts_that_search_without_mixing_pages(
    strategy: Fetch, tmp_path: Path, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    cache = tmp_path / "cache"
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            strategy(_client(), cache)
        if why == "expired":
            pager.generation += 1  # every stored link now answers 410 Gone
        else:
            # the server's data changed: the old offsets would splice two result sets
            extra = {"resourceType": "Condition", "id": "c-new", "code": SLE}
            pager.data["Condition"].insert(0, {**extra, "subject": {"reference": "Patient/p0"}})
        pager.calls.clear()
        with caplog.at_level(logging.INFO, logger="fhir_cohort.fhir"):
            report = strategy(_client(), cache)
    assert report.restarted_queries == 1
    assert "restarting it from its first page" in caplog.text
    assert "p0" not in caplog.text  # the log names the query without patient ids
    rows = [json.loads(x) for x in (cache / "Condition.ndjson").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    expected = {r["id"] for r in pager.data["Condition"]}
    if strategy is STRATEGIES["funnel"] and why == "changed":
        assert set(ids) <= expected  # the funnel asked for its cohort only
    else:
        assert set(ids) == expected


def test_a_page_appended_but_not_journaled_is_cut_off(strategy: Fetch, tmp_path: Path) -> None:
    """A crash between the staging append and the journal rename leaves extra bytes."""
    want, _ = _reference(strategy, tmp_path)
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    cache = tmp_path / "cache"
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            strategy(_client(), cache)
        key = next(iter(read_state(cache)["partial"]))  # type: ignore[index]
        with (cache / STAGING_DIR / f"{key}.ndjson").open("a") as fh:
            fh.write('{"resourceType":"Condition","id":"ghost","code":"x"}\n{"resourceTy')
        strategy(_client(), cache)
    assert _snapshot(cache) == want


@pytest.mark.parametrize("change", ["base_url", "page_size", "run", "plan"])
def test_a_journal_of_another_command_is_not_resumed(
    tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    kw: dict[str, Any] = {"run_key": {"as_of": "2026-11-24"}}
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            fetch_all(_client(), TYPES, cache, count=3, **kw)
        count, types = 3, TYPES
        if change == "page_size":
            count = 4
        elif change == "run":
            kw["run_key"] = {"as_of": "2026-11-25"}
        elif change == "plan":
            types = ("Condition", "Patient")
        client = _client()
        if change == "base_url":
            other = "https://ehr.test/fhir/r4"
            client = FhirClient(other, max_retries=0)
            rsps.add_callback(
                responses.GET,
                re.compile(re.escape(other) + r"/(\w+)(\?.*)?$"),
                callback=pager.answer,
            )
        pager.calls.clear()
        with caplog.at_level(logging.INFO, logger="fhir_cohort.fhir"):
            report = fetch_all(client, types, cache, count=count, **kw)
    assert f"is for another {change}: starting over" in caplog.text
    assert report.resumed_pages == 0 and report.resumed_queries == 0
    assert pager.calls[0].endswith("@first")


def test_a_complete_snapshot_is_reused_only_when_allowed(strategy: Fetch, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pager = Pager(_hospital())
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        strategy(_client(), cache, reuse="unused")
        want = _snapshot(cache)

        def requests_of(**kw: Any) -> int:
            before = len(pager.calls)
            report = strategy(_client(), cache, **kw)
            assert _snapshot(cache) == want
            assert report.reused == (len(pager.calls) == before)
            return len(pager.calls) - before

        # the fetching run never finished (nothing marked it used): reused, 0 requests
        assert requests_of(reuse="unused") == 0
        assert requests_of(reuse="never") > 0
        assert mark_used(cache)
        # a finished run's snapshot is stale by default, reused only when the user says so
        assert requests_of(reuse="unused") > 0
        assert mark_used(cache)
        assert requests_of(reuse="always") == 0
        # a snapshot file changed on disk is never reused
        (cache / "Patient.ndjson").write_text("")
        assert requests_of(reuse="always") > 0


def test_files_are_private(strategy: Fetch, tmp_path: Path) -> None:
    pager = Pager(_hospital())
    _fail_somewhere(pager)
    cache = tmp_path / "cache"
    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(FhirHttpError):
            strategy(_client(), cache)
        staged = list((cache / STAGING_DIR).iterdir())
        assert staged and all(p.stat().st_mode & 0o077 == 0 for p in staged)
        strategy(_client(), cache)
    for path in cache.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path.name


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda c, d: fetch_snapshot(c, _plan(), d, batch_size=0), "batch_size"),
        (lambda c, d: fetch_snapshot(c, _plan(), d, workers=0), "workers"),
        (lambda c, d: fetch_snapshot(c, _plan(), d, page_size=0), "count"),
        (lambda c, d: fetch_snapshot(c, _plan(), d, reuse="sometimes"), "reuse"),
        (lambda c, d: fetch_all(c, TYPES, d, count=0), "count"),
        (lambda c, d: fetch_all(c, TYPES, d, workers=-1), "workers"),
        (
            lambda c, d: FetchPlan(
                entry=(("Condition", "code", (SLE,)),), follow_ups=(), code_chunk=0
            ),
            "code_chunk",
        ),
        (lambda c, d: FetchPlan(entry=(), follow_ups=()), "entry search"),
        (lambda c, d: FetchPlan(entry=(("Condition", "code", ()),), follow_ups=()), "no codes"),
    ],
)
def test_bad_options_are_option_errors_before_any_request(
    tmp_path: Path, call: Callable[[FhirClient, Path], Any], word: str
) -> None:
    with responses.RequestsMock() as rsps:  # any request would fail the test
        with pytest.raises(OptionError, match=word):
            call(_client(), tmp_path)
        assert not rsps.calls
    assert not (tmp_path / "fetch_state.json").exists()


def test_ctrl_c_keeps_every_finished_page(strategy: Fetch, tmp_path: Path) -> None:
    """KeyboardInterrupt (from the progress callback, as from a terminal): the journal keeps
    what was done and the re-run asks only for the rest."""
    want, total = _reference(strategy, tmp_path)
    cache = tmp_path / "cache"
    pager = Pager(_hospital())

    def interrupt(event: Any) -> None:
        if event.done == 1 and event.step in ("full", "follow-up"):
            raise KeyboardInterrupt

    with responses.RequestsMock() as rsps:
        pager.install(rsps)
        with pytest.raises(KeyboardInterrupt):
            strategy(_client(), cache, progress=interrupt)
        state = read_state(cache)
        assert state is not None and state["status"] == "in_progress"
        held = sum(e["pages"] for e in [*state["completed"].values(), *state["partial"].values()])
        assert held > 0
        first = len(pager.calls)
        strategy(_client(), cache)
    assert _snapshot(cache) == want
    assert len(pager.calls) - first <= total - held
