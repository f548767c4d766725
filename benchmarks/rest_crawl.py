"""Benchmark: crawl a Group of patients from an emulated EHR, fhir-cohort vs SMART Fetch.

    .venv/bin/python benchmarks/rest_crawl.py --patients 10000 --group-size 1000 \\
        --smart-fetch $TMPDIR/smart-fetch-venv/bin/smart-fetch

SMART Fetch (PyPI ``smart-fetch``) is not a dependency of fhir-cohort: install it into a venv
of its own (``python3 -m venv $TMPDIR/smart-fetch-venv && $TMPDIR/smart-fetch-venv/bin/pip install
smart-fetch==1.0.3``) and name its executable with ``--smart-fetch`` (default: ``smart-fetch``
on PATH; without it that comparison is left out and said so).

1. generates the hospital of benchmarks/rest_funnel.py (cached in --workdir): background
   patients plus copies of the 112 scenario patients, the lupus cohort;
2. starts sekmet-fhir on 127.0.0.1, loads it (Encounter left out, as rest_funnel does) and a
   Group of --group-size patients: every scenario patient plus a fixed sample of the others;
3. for each profile (Epic-like, Oracle-like: tests/ehr/profiles.py) puts the EHR emulation
   (tests/ehr/emulator.py) in front of the server and crawls the Group with (a) fhir-cohort
   (``screen(url, ServerOptions(strategy="crawl", bulk_group=...))``) and (b) SMART Fetch
   (``smart-fetch crawl --group ... --type <the types the trial reads>``), counting at the
   emulator what each client asked: requests, bytes sent to it, refusals, wall time;
4. prints the per-patient lower bound (Group members x the types the trial needs that the
   profile serves, plus the Group read) and the ratios against issue 11's targets; checks that
   the crawl's patients.csv rows equal the on-disk screen's rows for the same patients.

Each emulator also keeps per-member accounting (``CountingEmulator``: requests and bytes by
the patient a request names and the type it searches, and whether that search has pages left),
kept in ``--json``. SMART Fetch's six-category Observation searches take seconds each on
sekmet-fhir at 10,000 patients: ``--smart-fetch-timeout SECONDS`` stops it and compares both
clients on exactly the members it finished (``like_for_like``); ``--like-for-like A.json
B.json`` does the same from two earlier runs' ``--json`` (fhir-cohort's and SMART Fetch's run
one at a time, e.g. ``--skip smart-fetch`` then ``--skip fhir-cohort``);
``--smart-fetch-without Observation`` measures the rest of SMART Fetch's crawl whole.

fhir-cohort's crawl is ``--strategy crawl`` (issue 11 item 1); before it is in the checkout
that run is reported as not available. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.* and benchmarks.*, as the test suite imports them

from benchmarks.rest_funnel import AS_OF, ensure_hospital, iter_hospital  # noqa: E402
from tests.ehr.emulator import EhrEmulator  # noqa: E402
from tests.ehr.profiles import PROFILES, TypeNotOffered  # noqa: E402
from tests.server.sekmet import SekmetServer  # noqa: E402

GROUP_ID = "crawl-benchmark"
SEED = 20261202
TARGET_VS_SMART_FETCH = 1.0  # no more requests or bytes than SMART Fetch
TARGET_LOWER_BOUND = 1.2


# -- data ---------------------------------------------------------------------------------------


def load(server: SekmetServer, root: Path, meta: dict[str, Any], flat: Path) -> dict[str, Any]:
    """Load the hospital; write what was loaded as one NDJSON folder (the on-disk screen's
    source, so both read the same records)."""
    counts: dict[str, int] = {}
    flat.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    patients: list[str] = []

    def tee() -> Any:
        for res in iter_hospital(root, meta["copies"], counts):
            rtype = res["resourceType"]
            if rtype not in files:
                files[rtype] = (flat / f"{rtype}.ndjson").open("wb")
            files[rtype].write(orjson.dumps(res) + b"\n")
            if rtype == "Patient":
                patients.append(res["id"])
            yield res

    t0 = time.perf_counter()
    try:
        loaded = load_store(server, tee())
    finally:
        for fh in files.values():
            fh.close()
    return {
        "resources": loaded,
        "seconds": round(time.perf_counter() - t0, 1),
        "counts": counts,
        "patients": patients,
    }


def load_store(server: SekmetServer, resources: Any, chunk: int = 5000) -> int:
    """Write ``resources`` into the (stopped) server's own store with sekmet-fhir's own
    ``Store.update``: the row, its version and its search index, exactly what a PUT writes
    (validation is off on this server; no subscription or simulator is set up to react), in
    one SQLite transaction per ``chunk`` resources instead of one HTTP transaction Bundle per
    500. Loading the 10,000-patient hospital over HTTP took about 80 minutes on the shared
    machine (serialising, parsing and the server's per-request work); this takes minutes."""
    from sekmet.fhir.store import SCHEMA, Store

    store = Store(str(Path(server.settings["data_dir"]) / "sekmet.db"))
    # The search index's B-trees are built once at the end (the same CREATE INDEX statements,
    # sekmet's SCHEMA) instead of updated per row; no fsync per transaction (a failed load is
    # loaded again).
    indexes = [
        r[0]
        for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' "
            "AND tbl_name='idx' AND sql IS NOT NULL"
        )
        if r[0] != "idx_res"  # Store's re-index deletes a resource's rows by it
    ]
    for name in indexes:
        store.conn.execute(f"DROP INDEX {name}")
    store.conn.execute("PRAGMA synchronous=OFF")
    n = 0
    batch: list[Any] = []

    def flush() -> None:
        with store.transaction():
            for res in batch:
                store.update(res, origin="external")
        batch.clear()

    try:
        for res in resources:
            batch.append(res)
            n += 1
            if len(batch) >= chunk:
                flush()
        if batch:
            flush()
        store.conn.executescript(SCHEMA)  # the dropped indexes, as sekmet creates them
    finally:
        store.conn.close()
    return n


def make_group(server: SekmetServer, patients: list[str], size: int) -> list[str]:
    """Every scenario patient (ids ``s-``/``s<k>-``: the lupus cohort and its near misses),
    then a fixed sample of the background up to ``size``."""
    scenario = sorted(p for p in patients if p.startswith("s") and "-" in p[:4])
    others = sorted(set(patients) - set(scenario))
    rest = max(0, size - len(scenario))
    members = scenario[:size] + random.Random(SEED).sample(others, min(rest, len(others)))
    group = {
        "resourceType": "Group",
        "id": GROUP_ID,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members],
    }
    server.load_resources([group])
    return members


def needed_types() -> list[str]:
    from fhir_cohort.criteria.io import default_criteria_path, load_criteria
    from fhir_cohort.requirements import requirements
    from fhir_cohort.terminology import Terminology

    trial = load_criteria(default_criteria_path())
    return sorted(requirements(trial, Terminology.load()).resource_types)


# Patient resources by ``Patient?_id=a,b,...``: Epic lists ``_id`` with several ids and caps a
# Patient search at 100 results (4127).
PATIENT_IDS_PER_REQUEST = 100


def lower_bound(members: int, types: list[str], profile: str) -> int:
    """What a one-patient-per-request server allows: one search per member per clinical type
    the trial reads and the profile serves (Medications come ``_include``-d, or contained),
    the members' Patient resources 100 ids a request, and the Group read."""
    clinical = [t for t in types if t not in ("Patient", "Medication") and _served(profile, t)]
    patients = -(-members // PATIENT_IDS_PER_REQUEST)
    return members * len(clinical) + patients + 1


def _served(profile: str, rtype: str) -> bool:
    rule = PROFILES[profile].rule(TypeNotOffered)
    return not isinstance(rule, TypeNotOffered) or rtype in rule.offered


# -- per-member accounting ----------------------------------------------------------------------

_NEXT = re.compile(rb'"relation"\s*:\s*"next"')


class CountingEmulator(EhrEmulator):
    """The emulator, plus what each request cost per member and type: requests and bytes by
    the ``patient`` (or ``subject``) it named (an Epic-like next page repeats the query;
    anything naming no single patient goes under ""), whether that member's search of that
    type is still open (its last page had a next link) and when it closed. A SMART Fetch run
    stopped part way is then compared on the members it finished (``like_for_like``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._t0 = time.monotonic()
        self._acct_lock = threading.Lock()
        # (member, type) -> [requests, bytes, open, seconds when its last page came]
        self.acct: dict[tuple[str, str], list[Any]] = {}
        self.first: dict[str, float] = {}  # type -> seconds of its first request

    def _handle(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        status, out, data = super()._handle(method, path, body, headers)
        parts = urlsplit(path)
        prefix = urlsplit(self.base_url).path.rstrip("/")
        segs = parts.path.removeprefix(prefix).strip("/").split("/")
        # a search (GET, or POST to _search: its parameters then in the body, so under "");
        # else a read or an operation
        rtype = segs[0] if len(segs) == 1 or segs[1:] == ["_search"] else f"{segs[0]}/*"
        named = [v for k, v in parse_qsl(parts.query) if k in ("patient", "subject")]
        ids = [i.removeprefix("Patient/") for v in named for i in v.split(",")]
        member = ids[0] if len(ids) == 1 else ""
        now = round(time.monotonic() - self._t0, 3)
        with self._acct_lock:
            self.first.setdefault(rtype, now)
            row = self.acct.setdefault((member, rtype), [0, 0, False, now])
            row[0] += 1
            row[1] += len(data)
            row[2] = status == 200 and bool(_NEXT.search(data))
            row[3] = now
        return status, out, data

    def accounting(self) -> dict[str, Any]:
        with self._acct_lock:
            by_member: dict[str, dict[str, list[Any]]] = {}
            for (member, rtype), (n, size, still_open, t) in self.acct.items():
                by_member.setdefault(member, {})[rtype] = [n, size, still_open, t]
            return {"by_member": by_member, "first": dict(self.first)}


def like_for_like(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """fhir-cohort and a SMART Fetch run that stopped part way, on the members SMART Fetch
    finished: the types it searched at all, every one closed (no next page left) for those
    members. Measured: both clients' requests and bytes for exactly those members and types,
    and SMART Fetch's rate per member on its slowest type. Not measured (left to the caller
    to project): the types and members it never reached, and its Medication reads, which come
    after the crawl."""
    mine = ours["accounting"]["by_member"]
    them = theirs["accounting"]["by_member"]
    started = sorted({t for m, row in them.items() if m for t in row})
    done = sorted(
        m for m, row in them.items() if m and all(t in row and not row[t][2] for t in started)
    )
    per_type: dict[str, Any] = {}
    for rtype in started:
        a = [mine.get(m, {}).get(rtype, [0, 0]) for m in done]
        b = [them[m][rtype] for m in done]
        per_type[rtype] = {
            "fhir-cohort": [sum(r[0] for r in a), sum(r[1] for r in a)],
            "smart-fetch": [sum(r[0] for r in b), sum(r[1] for r in b)],
        }
    other = sorted({t for m in done for t in mine.get(m, {})} - set(started))
    extra = {
        t: [sum(mine.get(m, {}).get(t, [0, 0])[0] for m in done),
            sum(mine.get(m, {}).get(t, [0, 0])[1] for m in done)]
        for t in other
    }  # fmt: skip

    # the type it was on when stopped (fewest members closed): its pace, members closed per
    # second since its first request
    def closed(t: str) -> list[float]:
        return [row[t][3] for m, row in them.items() if m and t in row and not row[t][2]]

    slow = min(started, key=lambda t: len(closed(t)), default=None)
    rate = None
    if slow is not None:
        times = closed(slow)
        since = theirs["accounting"]["first"].get(slow)
        if times and since is not None:
            rate = {"type": slow, "members": len(times), "seconds": round(max(times) - since, 1)}
    return {
        "members": len(done),
        "types": started,
        "per_type": per_type,
        "fhir-cohort_other_types": extra,
        "smart_fetch_rate": rate,
    }


# -- the two crawls -----------------------------------------------------------------------------


def crawl_available() -> bool:
    from fhir_cohort.remote import STRATEGIES

    return "crawl" in STRATEGIES


def run_fhir_cohort(url: str, cache: Path, out: Path, concurrency: int) -> dict[str, Any]:
    if not crawl_available():
        return {"error": "--strategy crawl is not in this checkout yet (issue 11 item 1)"}
    from fhir_cohort.pipeline import screen
    from fhir_cohort.remote import ServerOptions

    for d in (cache, out):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        result = screen(
            url,
            as_of=AS_OF,
            out_dir=out,
            # auto: the probe, then the crawl fitted to what it found (the README's command)
            server=ServerOptions(
                strategy="auto", bulk_group=GROUP_ID, cache_dir=cache, concurrency=concurrency
            ),
        )
    except Exception as exc:  # report what stopped it; the emulator's counts say how far
        return {"error": f"{type(exc).__name__}: {exc}", "wall": time.perf_counter() - t0}
    fetch = result.run["source"]["fetch"]
    return {
        "wall": time.perf_counter() - t0,
        "fetch_seconds": fetch.get("seconds"),
        "why": fetch.get("why"),
        "probe_requests": (fetch.get("server_profile") or {}).get("requests"),
        "searches": {q["query"]: q["tasks"] for q in fetch.get("queries") or []},
        "patients_table": result.patients,
        "status": result.patients["status"].value_counts().to_dict(),
    }


# SMART Fetch crawls these types; Medications come from its "medication" hydration task (the
# references of MedicationRequest and MedicationDispense), as fhir-cohort _include-s them.
SMART_FETCH_TYPES = (
    "Patient", "Encounter", "AllergyIntolerance", "Condition", "Device", "DiagnosticReport",
    "DocumentReference", "EpisodeOfCare", "Immunization", "MedicationDispense",
    "MedicationRequest", "Observation", "Procedure", "ServiceRequest",
)  # fmt: skip


def start_smart_fetch(exe: str, url: str, out: Path, types: list[str]) -> Any:
    """``smart-fetch export --export-mode crawl`` of the Group, limited to the trial's types
    SMART Fetch crawls, hydrating Medications only (its other tasks fetch what screening does
    not read); started in the background (``finish_smart_fetch`` waits for it)."""
    shutil.rmtree(out, ignore_errors=True)
    crawled = [t for t in types if t in SMART_FETCH_TYPES]
    cmd = [exe, "export", str(out), "--export-mode", "crawl", "--fhir-url", url]
    cmd += ["--group", GROUP_ID, "--type", ",".join(crawled), "--hydration-tasks", "medication"]
    cmd += ["--no-compression"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, crawled, time.perf_counter()


def run_smart_fetch(
    exe: str | None, url: str, out: Path, types: list[str], cap: float | None = None
) -> dict[str, Any]:
    if not exe:
        return {"error": "smart-fetch not found (pip install smart-fetch in a venv of its own)"}
    return finish_smart_fetch(start_smart_fetch(exe, url, out, types), out, cap)


def finish_smart_fetch(started: Any, out: Path, cap: float | None = None) -> dict[str, Any]:
    """Wait for SMART Fetch; past ``cap`` seconds from its start, stop it (SIGTERM) and report
    how far it got (the emulator's per-member accounting says which members it finished)."""
    proc, crawled, t0 = started
    stopped = False
    try:
        left = None if cap is None else max(1.0, cap - (time.perf_counter() - t0))
        stdout, stderr = proc.communicate(timeout=left)
    except subprocess.TimeoutExpired:
        stopped = True
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    resources: dict[str, int] = {}
    failed = 0
    for path in sorted(out.rglob("*.ndjson")):
        if path.is_symlink() or path.name.startswith("log."):
            continue  # the managed export's links to its latest files; the export log
        with path.open("rb") as fh:
            n = sum(1 for line in fh if line.strip())
        if path.parent.name == "error":
            failed += n
        else:
            rtype = path.name.split(".", 1)[0]
            resources[rtype] = resources.get(rtype, 0) + n
    run: dict[str, Any] = {"wall": wall, "resources": resources, "error_outcomes": failed}
    run["types"] = crawled
    if stopped:
        run["stopped_after"] = round(wall, 1)
        run["error"] = f"stopped after {wall:.0f} s (--smart-fetch-timeout): not finished"
    elif proc.returncode != 0:
        tail = (stderr.strip() or stdout.strip())[-500:]
        run["error"] = f"exit {proc.returncode}: {tail}"
    return run


def run_profile(
    args: Any, name: str, upstream: str, work: Path, types: list[str]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Both crawls of one profile, each through its own emulator in front of the same server
    (so each one's requests and bytes are counted apart); with --concurrent at the same time
    (wall times then share the machine), else one after the other."""
    tools = [t for t in ("fhir-cohort", "smart-fetch") if t not in args.skip]
    sf_types = [t for t in types if t not in args.smart_fetch_without]
    emulators = {t: CountingEmulator(upstream, PROFILES[name]).start() for t in tools}
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    try:
        started = None
        if "smart-fetch" in tools and args.smart_fetch and args.concurrent:
            print(f"\n{name}-like: SMART Fetch crawl (in the background)...", flush=True)
            url = emulators["smart-fetch"].base_url
            started = start_smart_fetch(args.smart_fetch, url, work / "smart-fetch", sf_types)
        if "fhir-cohort" in tools:
            print(f"\n{name}-like: fhir-cohort crawl...", flush=True)
            ehr = emulators["fhir-cohort"]
            run = run_fhir_cohort(ehr.base_url, work / "cache", work / "out", args.concurrency)
            run["accounting"] = ehr.accounting()
            out["fhir-cohort"] = (run, ehr.stats.as_dict())
        if "smart-fetch" in tools:
            ehr = emulators["smart-fetch"]
            cap = args.smart_fetch_timeout
            if started is not None:
                run = finish_smart_fetch(started, work / "smart-fetch", cap)
            else:
                print(f"\n{name}-like: SMART Fetch crawl...", flush=True)
                sf_out = work / "smart-fetch"
                run = run_smart_fetch(args.smart_fetch, ehr.base_url, sf_out, sf_types, cap)
            run["accounting"] = ehr.accounting()
            out["smart-fetch"] = (run, ehr.stats.as_dict())
    finally:
        for ehr in emulators.values():
            ehr.stop()
    return out


def _served_folder(flat: Path, work: Path, profile: str) -> Path:
    """The loaded records of the types ``profile`` serves (an EHR without MedicationStatement
    has none to give): links to ``flat``'s files, the on-disk screen's source."""
    folder = work / f"served-{profile}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in flat.glob("*.ndjson"):
        if _served(profile, path.name.split(".", 1)[0]):
            (folder / path.name).symlink_to(path)
    return folder


def screen_on_disk(flat: Path, out: Path) -> Any:
    from fhir_cohort.pipeline import screen

    shutil.rmtree(out, ignore_errors=True)
    return screen(flat, as_of=AS_OF, out_dir=out).patients


def compare(crawl: Any, disk: Any, members: list[str]) -> str:
    key = "patient_id"
    c = crawl.set_index(key).sort_index()
    d = disk.set_index(key).sort_index()
    d = d.loc[d.index.intersection(members)]
    same = len(c) == len(d) and c.astype(str).equals(d.loc[c.index].astype(str))
    return f"crawl rows identical to the on-disk screen's for the {len(d)} members: {same}"


# -- figures ------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def print_like_for_like(name: str, ours: dict[str, Any], theirs: dict[str, Any]) -> Any:
    lfl = like_for_like(ours, theirs)
    print(f"\n{name}-like, on the {lfl['members']} members SMART Fetch finished (measured):")
    print(f"  {'type':<22}{'fc requests':>12}{'fc bytes':>12}{'SF requests':>12}{'SF bytes':>12}")
    tot = [0, 0, 0, 0]
    for rtype, row in lfl["per_type"].items():
        vals = [*row["fhir-cohort"], *row["smart-fetch"]]
        tot = [x + y for x, y in zip(tot, vals, strict=True)]
        print(f"  {rtype:<22}{vals[0]:>12}{vals[1]:>12}{vals[2]:>12}{vals[3]:>12}")
    print(f"  {'together':<22}{tot[0]:>12}{tot[1]:>12}{tot[2]:>12}{tot[3]:>12}")
    for rtype, (n, size) in lfl["fhir-cohort_other_types"].items():
        print(f"  fhir-cohort also: {rtype} {n} requests, {size} bytes (SMART Fetch: none)")
    if lfl["smart_fetch_rate"]:
        r = lfl["smart_fetch_rate"]
        print(f"  SMART Fetch's {r['type']}: {r['members']} members in {r['seconds']} s")
    return lfl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--group-size", type=int, default=1_000)
    ap.add_argument("--lupus-fraction", type=float, default=0.02)
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fhir-cohort-crawl-bench"
    )
    ap.add_argument("--profile", action="append", choices=["epic", "oracle", "plain"])
    ap.add_argument("--smart-fetch", default=shutil.which("smart-fetch"), metavar="EXE")
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--skip", action="append", default=[], choices=["fhir-cohort", "smart-fetch"])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--smart-fetch-timeout",
        type=float,
        metavar="SECONDS",
        help="stop SMART Fetch after this long and compare on the members it finished "
        "(per-member accounting at the emulator)",
    )
    ap.add_argument(
        "--smart-fetch-without",
        action="append",
        default=[],
        metavar="TYPE",
        help="leave TYPE out of SMART Fetch's crawl (e.g. Observation: the rest of its crawl, "
        "measured whole, when its Observations are measured on part of the Group)",
    )
    ap.add_argument(
        "--like-for-like",
        nargs=2,
        type=Path,
        metavar=("OURS_JSON", "THEIRS_JSON"),
        help="only compare two --json files of earlier runs (fhir-cohort's in the first, a "
        "stopped SMART Fetch's in the second) on the members SMART Fetch finished, per profile",
    )
    ap.add_argument(
        "--reload",
        action="store_true",
        help="load the server again (by default a server folder loaded by an earlier run with "
        "the same hospital and Group size is reused)",
    )
    ap.add_argument(
        "--load-only", action="store_true", help="generate and load the server, then stop"
    )
    ap.add_argument(
        "--concurrent",
        action="store_true",
        help="run SMART Fetch and fhir-cohort at the same time (each through its own emulator: "
        "requests and bytes apart, wall times sharing the machine)",
    )
    args = ap.parse_args(argv)
    profiles = args.profile or ["epic", "oracle"]
    if args.like_for_like:
        ours, theirs = (json.loads(p.read_text())["runs"] for p in args.like_for_like)
        for name in profiles:
            a, b = ours.get(f"{name}/fhir-cohort"), theirs.get(f"{name}/smart-fetch")
            if a and b:
                print_like_for_like(name, a, b)
        return 0

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}"
    )
    root = work / f"hospital-{args.patients}"
    meta = ensure_hospital(root, args.patients, args.lupus_fraction)
    types = needed_types()
    print(
        f"hospital: {meta['patients']} patients ({meta['copies']} x 112 scenario); "
        f"the trial reads {', '.join(types)}"
    )
    if args.concurrency is None:
        from fhir_cohort.remote import ServerOptions

        args.concurrency = ServerOptions().concurrency
    server_dir = work / f"server-{args.patients}-{args.group_size}"
    flat = work / f"flat-{args.patients}"
    marker = server_dir / "loaded.json"
    want = {k: meta[k] for k in ("patients", "copies", "seed")} | {"group": args.group_size}
    reuse = not args.reload and marker.exists()
    if reuse and json.loads(marker.read_text()).get("want") != want:
        reuse = False
    if not reuse:
        shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(flat, ignore_errors=True)
    server = SekmetServer(server_dir)
    figures: dict[str, Any] = {"patients": meta["patients"], "types": types, "runs": {}}
    try:
        if not reuse:  # into the store before the server starts (load_store)
            print("loading the server's store...", flush=True)
            loaded = load(server, root, meta, flat)
        server.start(timeout=120)
        if reuse:
            loaded = json.loads(marker.read_text())["loaded"]
            members = loaded["members"]
            print(f"server: reused {server_dir} (loaded {loaded['resources']} resources before)")
        else:
            loaded["members"] = members = make_group(
                server, loaded.pop("patients"), args.group_size
            )
            marker.write_text(json.dumps({"want": want, "loaded": loaded}))
            print(f"load: {loaded['resources']} resources in {loaded['seconds']} s")
        print(f"Group {GROUP_ID}: {len(members)} patients")
        if args.load_only:
            return 0
        loaded = {k: v for k, v in loaded.items() if k != "members"}
        figures["load"] = loaded
        figures["group"] = len(members)
        disks: dict[Path, Any] = {}
        for name in profiles:
            runs = run_profile(args, name, server.base_url, work, types)
            for tool, (run, stats) in runs.items():
                run.update(requests=stats["requests"], bytes=stats["bytes"], emulator=stats)
                if "patients_table" in run:
                    served = _served_folder(flat, work, name)
                    if served not in disks:
                        print("on-disk screen of the same records...", flush=True)
                        disks[served] = screen_on_disk(served, work / f"disk-out-{served.name}")
                    run["check"] = compare(run.pop("patients_table"), disks[served], members)
                figures["runs"][f"{name}/{tool}"] = run
                print(f"{name}-like, {tool}:")
                shown = {k: v for k, v in run.items() if k not in ("emulator", "accounting")}
                print(f"  {json.dumps(shown)}")
                print(f"  refused: {stats['rejected']}; statuses: {stats['statuses']}")

        print(f"\n{'profile/tool':<24}{'requests':>9}{'bytes':>11}{'wall s':>8}{'vs LB':>7}")
        for key, r in figures["runs"].items():
            bound = lower_bound(len(members), types, key.split("/")[0])
            r["lower_bound"] = bound
            r["vs_lower_bound"] = round(r["requests"] / bound, 2)
            wall = r.get("wall", float("nan"))
            flag = "  (failed: see above)" if "error" in r else ""
            print(
                f"{key:<24}{r['requests']:>9}{mb(r['bytes']):>11}{wall:>8.1f}"
                f"{r['vs_lower_bound']:>7.2f}{flag}"
            )
        print(
            "\nlower bound: members x clinical types the trial reads that the profile serves "
            f"+ Patients {PATIENT_IDS_PER_REQUEST} a request + the Group read"
        )
        for name in profiles:
            ours = figures["runs"].get(f"{name}/fhir-cohort")
            theirs = figures["runs"].get(f"{name}/smart-fetch")
            if ours and "error" not in ours:
                x = ours["vs_lower_bound"]
                print(
                    f"  {name}: fhir-cohort {x:.2f}x the lower bound (<= {TARGET_LOWER_BOUND}x "
                    f"{'met' if x <= TARGET_LOWER_BOUND else 'MISSED'})"
                )
            if ours and theirs and "error" not in ours and "error" not in theirs:
                rq = ours["requests"] / theirs["requests"]
                by = ours["bytes"] / theirs["bytes"]
                ok = rq <= TARGET_VS_SMART_FETCH and by <= TARGET_VS_SMART_FETCH
                print(
                    f"  {name}: fhir-cohort / SMART Fetch: requests {rq:.2f}x, bytes {by:.2f}x "
                    f"(<= 1x {'met' if ok else 'MISSED'})"
                )
            if ours and "check" in ours:
                print(f"  {name}: {ours['check']}")
            if ours and theirs and "stopped_after" in theirs and "accounting" in ours:
                ours["like_for_like"] = print_like_for_like(name, ours, theirs)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, default=str))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()  # its folder stays for the next run (--reload to load again)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
