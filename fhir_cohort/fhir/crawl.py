"""The crawl: every patient of a list, one search per needed type per patient.

For servers that answer clinical searches only per patient (Epic, Oracle Health): the patient
list comes from a Group's members, a file of FHIR ids or ``system|value`` identifiers (MRNs,
resolved with ``Patient?identifier=``) or an earlier snapshot. Per patient, each type of the
plan is searched with ``patient=<id>`` (several ids per request only when the plan says the
server accepts them); code filters go to the server where it honours them, and a client-side
filter (a callable from the plan: this module knows nothing about criteria) keeps what the
snapshot needs either way.

The crawl reuses the funnel's journal and snapshot (:mod:`fhir_cohort.fhir.fetch`): the searches
of a few patients of one type make one journaled task (a task is the unit a re-run resumes at;
journaling every one-patient search would rewrite the journal thousands of times), staged and
fsynced before the journal names it. Patients the server no longer returns (deleted: a read
would answer 404 or 410) and patients merged into another (``Patient.link`` replaced-by: screened
under the surviving id) are counted in the report, as are identifiers that resolve to no patient
or to several, and patients of the last run who left the list. No ids are reported or logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fhir_cohort.errors import FhirHttpError, OptionError, SourceError
from fhir_cohort.fhir.capability import Capability, check_plan, fetch_capability
from fhir_cohort.fhir.client import FhirClient
from fhir_cohort.fhir.fetch import (
    MEDICATION_TYPES,
    FetchReport,
    FollowUp,
    Reuse,
    _chunks,
    _Fetcher,
    _medication_refs,
    _patient_of,
    _Query,
    _run,
    _Staging,
    _Stopped,
    read_state,
)
from fhir_cohort.fhir.ndjson import iter_ndjson
from fhir_cohort.fhir.search import SearchQuery, iter_entries, iter_pages
from fhir_cohort.fhir.wire import reference_id
from fhir_cohort.progress import ProgressCallback

__all__ = [
    "CREATED_PARAMS",
    "CrawlPlan",
    "CrawlSearch",
    "PatientList",
    "SinceMode",
    "crawl",
    "read_patient_list",
]

log = logging.getLogger("fhir_cohort.fhir")

# Searches of one type for this many patients make one journaled task.
TASK_PATIENTS = 25
# A merge chain (A replaced-by B replaced-by C) is followed this many links at most.
MERGE_DEPTH = 5
# "When was this record created?" search parameters, for servers without _lastUpdated (Epic).
# The same choice as SMART Fetch (smart_fetch/resources.py CREATED_SEARCH_FIELDS): an
# administrative date, not a clinical one. Observation `issued` is not a standard search
# parameter; it is used only where the CapabilityStatement lists it (Epic does). Types absent
# here (Procedure, MedicationStatement, -Dispense, -Administration) have no searchable creation
# date and are fetched whole for every patient on every --since run; edits of records created
# before --since are not seen in this mode (docs/architecture.md, "The crawl").
CREATED_PARAMS: Mapping[str, str] = {
    "Condition": "recorded-date",
    "Observation": "issued",
    "MedicationRequest": "authoredon",
}
SinceMode = Literal["auto", "updated", "created"]
# A FHIR logical id (R4 id datatype).
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
KeepFilter = Callable[[bytes], bool]


class CrawlSearch(FollowUp):
    """One search per patient (or batch): ``resource_type?patient_param=<id>``.

    ``codes`` (with ``code_param``) are sent only where the server honours the parameter;
    ``include`` specs are dropped when the server does not advertise them. ``optional``: a
    second search of the type (a panel by ``component-code``) that, where its parameter cannot
    be sent, makes the type's search a whole-type one filtered on arrival (``CrawlPlan.panels``).

    The fields are the funnel's :class:`~fhir_cohort.fhir.fetch.FollowUp`: a crawl search is a
    follow-up sent per patient list instead of per funnel cohort.
    """


@dataclass(frozen=True)
class CrawlPlan:
    """Plain-data plan of a crawl (built from criteria by ``fhir_cohort.remote``).

    - ``searches``: per-patient searches (Patient itself is always read, by ``_id``).
    - ``batch``: patient ids (and ``_id`` / identifier values) per request; more than 1 only
      where the server accepts comma-separated values (Epic rejects several patients: 4112).
    - ``server_codes``: send code filters where the CapabilityStatement lists the parameter;
      False: never (the server ignores or post-filters them), fetch each type whole.
    - ``keep``: resource type -> a test of the compact JSON line of a resource (the on-disk
      reader's line filter): records it rejects are not staged. Not part of the fingerprint;
      ``keep_key`` names what it keeps (the criteria's codes), and is.
    - ``since_mode``: ``updated`` (``_lastUpdated``), ``created`` (:data:`CREATED_PARAMS`), or
      ``auto``: updated when the CapabilityStatement lists ``_lastUpdated`` for Patient.
    - ``category_required`` / ``observation_categories``: the server refuses an Observation
      search that names the patient but no code unless it names a category (Epic 59108);
      such searches name these categories (comma-separated, one request).
    - ``panels``: how an ``optional`` search (Observation by ``component-code``: a panel
      whose component alone carries the test) is sent: ``param`` (the parameter), ``whole``
      (the patient's Observations of those categories, filtered on arrival by ``keep``) or
      ``auto`` (the parameter where the CapabilityStatement lists it, else whole). An
      optional search is never dropped: where its parameter cannot be sent, the type is
      fetched whole and filtered on arrival; where even that is refused (a category is
      required and none is known), the crawl says so (``unsearched``) and the screen keeps
      the answers that could depend on it from ``eligible``.
    """

    searches: tuple[CrawlSearch, ...]
    resolve_medications: bool = True
    batch: int = 1
    server_codes: bool = True
    since_mode: SinceMode = "auto"
    # Codes per request: all of them in one (a long query goes as POST _search), since every
    # chunk more is one request more per patient.
    code_chunk: int = 1000
    keep: Mapping[str, KeepFilter] = field(default_factory=dict, compare=False, repr=False)
    keep_key: str = ""
    category_required: bool = False
    observation_categories: tuple[str, ...] = ()
    panels: Literal["auto", "param", "whole"] = "auto"
    # ids per ``_id`` read (Patients, Medications) where the server takes a list while it
    # refuses several patients in one search (Epic); None: ``batch``
    id_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "searches", tuple(self.searches))
        if not isinstance(self.batch, int) or self.batch < 1:
            raise OptionError(f"patients per crawl request must be >= 1, not {self.batch!r}")
        if self.since_mode not in ("auto", "updated", "created"):
            raise OptionError(f"since mode must be auto, updated or created: {self.since_mode!r}")
        if self.code_chunk < 1:
            raise OptionError(f"code_chunk must be >= 1, not {self.code_chunk}")
        if self.id_batch is not None and (not isinstance(self.id_batch, int) or self.id_batch < 1):
            raise OptionError(f"id_batch must be >= 1, not {self.id_batch!r}")
        if self.panels not in ("auto", "param", "whole"):
            raise OptionError(f"panels must be auto, param or whole, not {self.panels!r}")
        object.__setattr__(
            self, "observation_categories", tuple(sorted(set(self.observation_categories)))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "searches": [
                {
                    "resource_type": s.resource_type,
                    "patient_param": s.patient_param,
                    "code_param": s.code_param,
                    "codes": list(s.codes),
                    "include": list(s.include),
                    "params": [list(p) for p in s.params],
                    "optional": s.optional,
                }
                for s in self.searches
            ],
            "resolve_medications": self.resolve_medications,
            "batch": self.batch,
            "server_codes": self.server_codes,
            "since_mode": self.since_mode,
            "code_chunk": self.code_chunk,
            "keep": sorted(self.keep),
            "keep_key": self.keep_key,
            "category_required": self.category_required,
            "observation_categories": list(self.observation_categories),
            "panels": self.panels,
            "id_batch": self.id_batch,
        }

    def fingerprint(self) -> str:
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def needs(self, served: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Resource type -> parameters the crawl cannot do without (codes are optional),
        for the types in ``served`` (default: all of the plan's)."""
        keep = None if served is None else set(served)
        out: dict[str, set[str]] = {"Patient": {"_id"}}
        for s in self.searches:
            if not s.optional and (keep is None or s.resource_type in keep):
                out.setdefault(s.resource_type, set()).add(s.patient_param)
        if (
            self.resolve_medications
            and any(s.resource_type in MEDICATION_TYPES for s in self.searches)
            and (keep is None or "Medication" in keep)
        ):
            out.setdefault("Medication", set()).add("_id")
        return out

    def types(self) -> set[str]:
        """Every type the plan reads (Patient, and Medication when it resolves them)."""
        out = {"Patient", *(s.resource_type for s in self.searches)}
        if self.resolve_medications and out & set(MEDICATION_TYPES):
            out.add("Medication")
        return out


@dataclass(frozen=True)
class PatientList:
    """Who to crawl: FHIR ids and ``(system, value)`` identifiers, or a Group read at crawl
    time. ``source`` says where the list came from (``group``, ``file``, ``snapshot``)."""

    ids: tuple[str, ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()
    group: str | None = None
    source: str = "file"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(dict.fromkeys(self.ids)))
        object.__setattr__(self, "identifiers", tuple(dict.fromkeys(self.identifiers)))
        if self.group is not None:
            if not _ID.match(self.group):
                raise OptionError("--group: not a FHIR id (letters, digits, '-', '.'; 1-64)")
            object.__setattr__(self, "source", "group")
        elif not self.ids and not self.identifiers:
            raise OptionError(f"the patient list ({self.source}) names no patient")
        for pid in self.ids:
            if not _ID.match(pid):
                raise OptionError("a patient id of the list is not a FHIR id")

    @classmethod
    def of_group(cls, group_id: str) -> PatientList:
        return cls(group=group_id, source="group")

    def fingerprint(self) -> str:
        raw = json.dumps(
            [self.group, sorted(self.ids), sorted(map(list, self.identifiers))],
            separators=(",", ":"),
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def read_patient_list(path: str | Path) -> PatientList:
    """A patient list from ``path``: a text file (one FHIR id or ``system|value`` identifier a
    line; blank lines and ``#`` comments skipped), or a snapshot or export folder (its
    ``fetch_state.json`` patients, else the ids of its ``Patient*.ndjson`` files).

    Errors name the line number, never the line (it may be an MRN).
    """
    root = Path(path)
    if root.is_dir():
        return _snapshot_patients(root)
    try:
        text = root.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise OptionError(f"--patients {root}: no such file or folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"--patients {root}: cannot read ({type(exc).__name__})") from None
    ids: list[str] = []
    identifiers: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "|" in line:
            system, _, value = line.partition("|")
            if not value.strip():
                raise OptionError(f"--patients {root}:{lineno}: an identifier without a value")
            identifiers.append((system.strip(), value.strip()))
        elif _ID.match(line):
            ids.append(line)
        else:
            raise OptionError(
                f"--patients {root}:{lineno}: neither a FHIR id nor a system|value identifier"
            )
    return PatientList(tuple(ids), tuple(identifiers), source="file")


def _snapshot_patients(root: Path) -> PatientList:
    state = read_state(root)
    if state is not None and state.get("status") == "complete":
        return PatientList(tuple(state.get("patients") or ()), source="snapshot")
    ids: list[str] = []
    files = sorted([*root.glob("Patient*.ndjson"), *root.glob("Patient*.ndjson.gz")])
    for path in files:
        for _, res, _ in iter_ndjson(path):
            # a damaged line names no patient; the screen of that folder reports it
            if isinstance(res, dict) and res.get("resourceType") == "Patient":
                ids.append(str(res.get("id") or ""))
    if not files:
        raise OptionError(f"--patients {root}: a folder without a snapshot or Patient NDJSON")
    return PatientList(tuple(i for i in ids if i), source="snapshot")


def _escape(value: str) -> str:
    """A token part with FHIR search's reserved characters escaped."""
    return re.sub(r"([\\,$|])", r"\\\1", value)


@dataclass(frozen=True)
class _Task(_Query):
    """Several one-patient (or one-batch) searches of one stage, journaled as one."""

    queries: tuple[SearchQuery, ...] = ()

    @property
    def key(self) -> str:
        raw = json.dumps([[q.resource_type, q.params] for q in self.queries], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _task(stage: str, queries: Sequence[SearchQuery]) -> _Task:
    return _Task(stage, queries[0], tuple(queries))


def _line(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


class _Crawler(_Fetcher):
    def __init__(
        self,
        client: FhirClient,
        plan: CrawlPlan,
        patients: PatientList,
        cache_dir: Path,
        *,
        workers: int,
        since: datetime | None,
        progress: ProgressCallback | None,
        page_size: int | None,
        reuse: Reuse,
        run_key: Mapping[str, Any] | None,
        task_patients: int = TASK_PATIENTS,
    ) -> None:
        super().__init__(
            client,
            None,
            cache_dir,
            batch_size=plan.batch,
            workers=workers,
            since=since,
            progress=progress,
            page_size=page_size,
            reuse=reuse,
            run_key=run_key,
        )
        if not isinstance(task_patients, int) or task_patients < 1:
            raise OptionError(f"task_patients must be >= 1, not {task_patients!r}")
        self.strategy = "crawl"
        self.keep_going = True  # one patient's failed search does not stop the others
        self.crawl_plan = plan
        self.list = patients
        self.task_patients = task_patients
        self.cohort: set[str] = set()  # the patients whose records go into the snapshot
        self.known: dict[str, set[str]] = {}  # delta: ids already in the snapshot, per type
        self.not_served: list[str] = []  # types of the plan the server does not serve
        # searches the server allows no way to send (e.g. panels where a category is required
        # and none is known): said in the report, and the screen keeps answers from eligible
        self.unsearched: list[str] = []

    def fingerprint(self) -> str:
        return self.crawl_plan.fingerprint()

    def key(self) -> dict[str, Any]:
        return {**super().key(), "patients": self.list.fingerprint()}

    def _open_journal(self) -> tuple[set[str], bool, dict[str, Any] | None]:
        old = read_state(self.dir)
        previous, delta, complete = super()._open_journal()
        if complete is None and "last_run_patients" not in self.state:
            # whom the last complete crawl of this server screened: who left the list since
            last = None
            if (
                old is not None
                and old.get("status") == "complete"
                and old.get("base_url") == self.state.get("base_url")
                and (old.get("key") or {}).get("strategy") == "crawl"
            ):
                last = sorted(old.get("patients") or [])
            self.state["last_run_patients"] = last
        return previous, delta, complete

    def _keep(self, resource: Mapping[str, Any]) -> bool:
        rtype = resource.get("resourceType")
        if rtype == "Patient":
            return str(resource.get("id")) in self.cohort
        pid = _patient_of(resource, "subject")
        return pid is None or pid in self.cohort

    # -- running tasks ---------------------------------------------------------------------

    def _execute(self, q: _Query) -> tuple[str, dict[str, Any], dict[str, int]]:
        """Run every search of a task to its last page into one staging file, fsynced once
        before the journal names the task; a task interrupted midway is run again whole."""
        if not isinstance(q, _Task):
            return super()._execute(q)
        path = self.staging / f"{q.key}.ndjson"
        staging = _Staging(path, 0)
        entry: dict[str, Any] = {"stage": q.stage, "counts": {}, "pages": 0, "bytes": 0}
        fresh: dict[str, int] = {}
        keep = self.crawl_plan.keep
        try:
            for query in q.queries:
                for bundle in iter_pages(self.client, query, count=self.page_size):
                    if self._stop.is_set():
                        raise _Stopped
                    kept = []
                    for e in iter_entries([bundle]):
                        res = e.resource
                        rtype = str(res["resourceType"])
                        test = keep.get(rtype)
                        if (
                            test is not None
                            and str(res.get("id")) not in self.known.get(rtype, ())
                            and not test(_line(res))
                        ):
                            continue
                        kept.append(res)
                        entry["counts"][rtype] = entry["counts"].get(rtype, 0) + 1
                        fresh[rtype] = fresh.get(rtype, 0) + 1
                    entry["bytes"] = staging.append(kept, sync=False)
                    entry["pages"] += 1
            staging.sync()
        finally:
            staging.close()
        return q.key, entry, fresh

    def _tasks(self, stage: str, queries: Sequence[SearchQuery]) -> list[_Query]:
        return [_task(stage, chunk) for chunk in _chunks(queries, self.task_patients)]  # type: ignore[arg-type]

    def _resources(self, tasks: Iterable[_Query], rtype: str) -> Iterator[dict[str, Any]]:
        for res in self._staged(tasks):
            if res.get("resourceType") == rtype:
                yield res

    # -- the patient list ------------------------------------------------------------------

    def _group_members(self, counts: dict[str, int]) -> list[str]:
        try:
            group = self.client.read("Group", str(self.list.group))
        except FhirHttpError as exc:
            if exc.status in (404, 410):
                raise SourceError(
                    f"Group {self.list.group} is not on the server (HTTP {exc.status})"
                ) from None
            raise
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        ids: list[str] = []
        for member in group.get("member") or []:
            if not isinstance(member, Mapping):
                continue
            ref = member.get("entity")
            pid = reference_id(ref, "Patient") if isinstance(ref, Mapping) else None
            end = str((member.get("period") or {}).get("end") or "")
            if pid is None or not _ID.match(pid):
                counts["group_other_members"] += 1
            elif member.get("inactive") is True or (end and end[:19] < now[: len(end[:19])]):
                counts["group_inactive_members"] += 1
            else:
                ids.append(pid)
        return list(dict.fromkeys(ids))

    def _resolve_identifiers(self, counts: dict[str, int]) -> tuple[list[_Query], set[str]]:
        """``Patient?identifier=system|value``: (the tasks, whose Patients are staged; the ids
        of patients exactly one identifier of the list names)."""
        wanted = self.list.identifiers
        tokens = [f"{_escape(s)}|{_escape(v)}" for s, v in wanted]
        queries = [
            SearchQuery("Patient", (("identifier", ",".join(b)),))
            for b in _chunks(tokens, self.crawl_plan.batch)
        ]
        tasks = self._tasks("identifiers", queries)
        self.run_stage("identifiers", tasks)
        owners: dict[tuple[str, str], set[str]] = {w: set() for w in wanted}
        for res in self._resources(tasks, "Patient"):
            for ident in res.get("identifier") or []:
                if not isinstance(ident, Mapping):
                    continue
                pair = (str(ident.get("system") or ""), str(ident.get("value") or ""))
                if pair in owners and res.get("id"):
                    owners[pair].add(str(res["id"]))
        resolved: set[str] = set()
        for pids in owners.values():
            if not pids:
                counts["identifiers_unresolved"] += 1
            elif len(pids) > 1:
                counts["identifiers_ambiguous"] += 1  # refusing to guess which one is meant
            else:
                resolved |= pids
        counts["identifiers_resolved"] = len(wanted) - (
            counts["identifiers_unresolved"] + counts["identifiers_ambiguous"]
        )
        return tasks, resolved

    def _read_patients(
        self, listed: list[str], have: dict[str, dict[str, Any]], counts: dict[str, int]
    ) -> tuple[list[_Query], set[str]]:
        """``Patient?_id=``, then the survivors of merges: (the tasks, the ids to screen)."""
        tasks: list[_Query] = []
        todo = [p for p in listed if p not in have]
        todo += sorted({s for r in have.values() if (s := _survivor(r)) and s not in have})
        for _round in range(MERGE_DEPTH + 1):
            if not todo:
                break
            queries = [
                SearchQuery("Patient", (("_id", ",".join(b)),))
                for b in _chunks(todo, self.crawl_plan.id_batch or self.crawl_plan.batch)
            ]
            stage_tasks = self._tasks("patients", queries)
            self.run_stage("patients", stage_tasks)
            tasks += stage_tasks
            for res in self._resources(stage_tasks, "Patient"):
                if res.get("id"):
                    have[str(res["id"])] = res
            todo = sorted({s for p in list(have) if (s := _survivor(have[p])) and s not in have})
        cohort: set[str] = set()
        for pid in listed:
            seen = {pid}
            while pid in have and (nxt := _survivor(have[pid])) is not None:
                if nxt in seen or len(seen) > MERGE_DEPTH:
                    pid = ""
                    break
                seen.add(nxt)
                pid = nxt
            if len(seen) > 1:
                counts["merged"] += 1
            if pid in have and _survivor(have[pid]) is None:
                cohort.add(pid)
            elif len(seen) > 1:
                counts["merged_unresolved"] += 1
            else:
                counts["not_found"] += 1
        return tasks, cohort

    # -- the crawl -------------------------------------------------------------------------

    def _since_param(self, rtype: str, cap: Capability) -> tuple[str, str] | None:
        if self.since is None:
            return None
        if self.since_mode == "updated":
            return ("_lastUpdated", f"gt{self.since}")
        param = CREATED_PARAMS.get(rtype)
        if param and param in cap.search_params.get(rtype, frozenset()):
            return (param, f"gt{self.since}")
        return None  # no searchable creation date: the whole type, every run

    def _routes(self, cap: Capability) -> list[tuple[CrawlSearch, tuple[str, ...] | None]]:
        """Per search of the plan, what is sent: (the search, its codes or None for the whole
        type, filtered on arrival). An optional search (a panel by ``component-code``) whose
        parameter cannot be sent turns its type's search into a whole-type one; a code search
        is kept beside it only where the whole-type search is narrowed to some categories
        (records outside them are still found by their code)."""
        plan = self.crawl_plan
        routes: list[tuple[CrawlSearch, tuple[str, ...] | None]] = []
        self.unsearched = []
        types = [t for t in dict.fromkeys(s.resource_type for s in plan.searches)]
        for rtype in types:
            if rtype in self.not_served:
                continue
            group = [s for s in plan.searches if s.resource_type == rtype]

            def sendable(s: CrawlSearch) -> bool:
                if not (s.codes and plan.server_codes):
                    return False
                if s.optional and plan.panels != "auto":
                    return plan.panels == "param"
                return cap.supports_param(s.resource_type, s.code_param)

            main = [s for s in group if not s.optional]
            whole = any(not sendable(s) for s in group)
            narrowed = rtype == "Observation" and plan.category_required
            if whole and narrowed and not plan.observation_categories:
                # the patient alone is refused and no category is known: only code searches
                self.unsearched += [
                    f"{s.resource_type} by {s.code_param}" for s in group if not sendable(s)
                ]
                routes += [(s, s.codes) for s in group if sendable(s)]
                continue
            if whole:
                base = main[0] if main else CrawlSearch(rtype)
                routes.append((base, None))
                if narrowed:
                    routes += [(s, s.codes) for s in main if sendable(s)]
            else:
                routes += [(s, s.codes) for s in group]
        return routes

    def _searches(self, patients: Sequence[str], delta: bool, cap: Capability) -> list[_Query]:
        plan = self.crawl_plan
        tasks: list[_Query] = []
        for s, codes_sent in self._routes(cap):
            code_chunks: list[tuple[str, ...] | None] = (
                list(_chunks(codes_sent, plan.code_chunk)) if codes_sent else [None]
            )
            # a category where the server wants one: on every Observation search without a
            # code (a component-code search is one)
            category = (
                s.resource_type == "Observation"
                and plan.category_required
                and plan.observation_categories
                and (codes_sent is None or s.code_param != "code")
            )
            since = self._since_param(s.resource_type, cap) if delta else None
            queries = []
            for batch in _chunks(patients, plan.batch):
                for codes in code_chunks:
                    params: list[tuple[str, str]] = [(s.patient_param, ",".join(batch))]
                    if codes is not None:
                        params.append((s.code_param, ",".join(codes)))
                    if category:
                        params.append(("category", ",".join(plan.observation_categories)))
                    params.extend(s.params)
                    params.extend(("_include", i) for i in s.include if cap.supports_include(i))
                    if since is not None:
                        params.append(since)
                    queries.append(SearchQuery(s.resource_type, tuple(params)))
            tasks += self._tasks("crawl", queries)
        return tasks

    def _stages(self, previous: set[str], delta: bool) -> tuple[list[_Query], int]:
        plan = self.crawl_plan
        cap = fetch_capability(self.client)
        # A type the server does not serve at all (Epic has no MedicationStatement, Oracle
        # Health no Medication, MedicationStatement or MedicationDispense) holds no record
        # this server can give, by any path: skipped and reported. A served type that cannot
        # be searched per patient stops the crawl before any heavy request.
        served = {t for t in plan.types() if t == "Patient" or cap.supports_type(t)}
        self.not_served = sorted(plan.types() - served)
        if self.not_served:
            log.warning(
                "the server serves no %s: the crawl skips %s",
                ", ".join(self.not_served),
                "it" if len(self.not_served) == 1 else "them",
            )
        check_plan(cap, plan.needs(served))
        self.since_mode = plan.since_mode
        if self.since_mode == "auto":
            listed = "_lastUpdated" in cap.search_params.get("Patient", frozenset())
            self.since_mode = "updated" if listed else "created"
        counts = dict.fromkeys(
            (
                "listed",
                "group_inactive_members",
                "group_other_members",
                "identifiers",
                "identifiers_resolved",
                "identifiers_unresolved",
                "identifiers_ambiguous",
                "not_found",
                "merged",
                "merged_unresolved",
                "screened",
                "new_since_last_run",
                "left_since_last_run",
            ),
            0,
        )
        listed = list(self.list.ids)
        if self.list.group is not None:
            listed = self._group_members(counts)
        self._start()
        have: dict[str, dict[str, Any]] = {}
        tasks: list[_Query] = []
        if self.list.identifiers:
            counts["identifiers"] = len(self.list.identifiers)
            id_tasks, resolved = self._resolve_identifiers(counts)
            tasks += id_tasks
            for res in self._resources(id_tasks, "Patient"):
                if str(res.get("id")) in resolved:
                    have[str(res["id"])] = res
            listed += sorted(resolved - set(listed))
        counts["listed"] = len(listed)
        patient_tasks, cohort = self._read_patients(listed, have, counts)
        tasks += patient_tasks
        self.cohort = cohort
        self.patients = set(cohort)
        counts["screened"] = len(cohort)
        last = self.state.get("last_run_patients")
        if last is not None:
            counts["new_since_last_run"] = len(cohort - set(last))
            counts["left_since_last_run"] = len(set(last) - cohort)
        self.state["cohort"] = {
            "source": self.list.source,
            **counts,
            "since_mode": self.since_mode if self.since is not None else None,
            "types_not_served": self.not_served,
        }
        self._routes(cap)  # what cannot be searched is known before any clinical request
        self.state["cohort"]["unsearched"] = list(self.unsearched)
        if self.unsearched:
            log.warning(
                "the server allows no search for %s: answers that could depend on them are "
                "kept from eligible",
                ", ".join(self.unsearched),
            )

        new = sorted(cohort - previous) if delta else sorted(cohort)
        old = sorted(cohort & previous) if delta else []
        if delta:
            for rtype in plan.keep:
                self.known[rtype] = self._snapshot_ids(rtype)
        follow = self._searches(new, False, cap) + self._searches(old, True, cap)
        self.run_stage("crawl", follow)
        tasks += follow

        if plan.resolve_medications and "Medication" not in self.not_served:
            have_meds: set[str] = set()
            wanted: set[str] = set()
            for res in self._staged(follow):
                if res.get("resourceType") == "Medication" and res.get("id"):
                    have_meds.add(str(res["id"]))
                wanted.update(_medication_refs(res))
            if delta:
                have_meds.update(self._snapshot_ids("Medication"))
            missing = sorted(wanted - have_meds)
            meds = self._tasks(
                "medications",
                [
                    SearchQuery("Medication", (("_id", ",".join(b)),))
                    for b in _chunks(missing, plan.id_batch or plan.batch)
                ],
            )
            self.run_stage("medications", meds)
            tasks += meds
        return tasks, len(new)

    def run(self) -> FetchReport:
        report = super().run()
        # one line per kind of search, not one per patient
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for q in report.queries:
            key = (str(q.get("stage")), str(q.get("query")))
            row = merged.setdefault(
                key, {"stage": key[0], "query": key[1], "tasks": 0, "resources": 0, "resumed": 0}
            )
            row["tasks"] += 1
            row["resources"] += int(q.get("resources") or 0)
            row["resumed"] += int(bool(q.get("resumed")))
        report.queries = list(merged.values())
        return report


def _survivor(patient: Mapping[str, Any]) -> str | None:
    """The id a merged Patient was replaced by (``link`` of type replaced-by), else None."""
    for link in patient.get("link") or []:
        if isinstance(link, Mapping) and link.get("type") == "replaced-by":
            other = link.get("other")
            pid = reference_id(other, "Patient") if isinstance(other, Mapping) else None
            if pid and _ID.match(pid) and pid != patient.get("id"):
                return pid
    return None


def crawl(
    client: FhirClient,
    plan: CrawlPlan,
    patients: PatientList,
    cache_dir: str | Path,
    *,
    workers: int = 4,
    since: datetime | None = None,
    progress: ProgressCallback | None = None,
    page_size: int | None = None,
    reuse: Reuse = "never",
    run_key: Mapping[str, Any] | None = None,
    task_patients: int = TASK_PATIENTS,
) -> FetchReport:
    """Crawl ``patients`` into ``<Type>.ndjson`` files plus ``fetch_state.json`` in
    ``cache_dir``: the funnel's snapshot, journal, resume and reuse rules
    (:func:`fhir_cohort.fhir.fetch.fetch_snapshot`), with the patient list in the journal key.

    With ``since`` the snapshot's patients get only what changed (``_lastUpdated``, or a
    creation date where the server lacks it: ``plan.since_mode``) merged in; patients new to
    the snapshot are fetched whole; patients no longer screened (deleted, merged away, left
    the list) are dropped from it. The report's ``cohort`` counts them (no ids).
    """
    crawler = _Crawler(
        client,
        plan,
        patients,
        Path(cache_dir),
        workers=workers,
        since=since,
        progress=progress,
        page_size=page_size,
        reuse=reuse,
        run_key=run_key,
        task_patients=task_patients,
    )
    return _run(crawler, cache_dir)
