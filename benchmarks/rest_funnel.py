"""Benchmark: screen a synthetic hospital served over FHIR REST, three ways, in one run.

    .venv/bin/python benchmarks/rest_funnel.py --patients 10000

1. generates the hospital (cached in --workdir) with ~2% lupus patients: the generator's
   background patients never have lupus, so the 112 scenario patients (~107 with a lupus code)
   are added ``copies`` times, copy k>0 with every id rewritten ``s-...`` -> ``s<k>-...``;
2. starts sekmet-fhir on 127.0.0.1 and loads everything but Encounter (noise no criterion
   reads) by PUT transaction Bundles of 500 entries, timed on its own;
3. screens it (a) with fhir-cohort's funnel (``screen(url, ServerOptions(strategy="funnel"))``,
   plus the same funnel with the whole cohort in one batch), (b) with a naive full pull of the
   same resource types by the same client (``fetch_all``), screened from disk afterwards, and
   (c) with FHIR-PYrate pulling the same types into DataFrames;
4. prints requests, bytes, wall time, the ratios against the targets of issue 3 and the lower
   bound on requests. Not a test: nothing here asserts; the targets are reported.

The server is stopped at the end, on error and on Ctrl-C (with --keep-server it stays up until
Ctrl-C once the figures are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.server.sekmet, as the test suite imports it

from fhir_cohort.fhir.client import FhirClient  # noqa: E402
from fhir_cohort.fhir.fetch import MEDICATION_TYPES, fetch_all  # noqa: E402
from fhir_cohort.pipeline import screen  # noqa: E402
from fhir_cohort.remote import ServerOptions  # noqa: E402
from tests.server.sekmet import SekmetServer  # noqa: E402

AS_OF = date(2026, 11, 24)
SEED = 20261124
PAGE = 1000  # sekmet-fhir's MAX_COUNT, and the _count every client here asks for
LUPUS_PER_SCENARIO_COPY = 107  # scenario patients carrying a lupus code (sle met or unknown)
SKIPPED_TYPES = ("Encounter",)
# What the funnel fetches for NCT06038474, so the full pulls are compared like for like.
PULL_TYPES = (
    "Patient",
    "Condition",
    *MEDICATION_TYPES,
    "Medication",
    "Observation",
    "Procedure",
)
TARGET_BYTES = 20.0
TARGET_WALL = 5.0
TARGET_LOWER_BOUND = 2.0


# -- the hospital --------------------------------------------------------------------------------


def ensure_hospital(root: Path, patients: int, lupus_fraction: float) -> dict[str, Any]:
    """Generate (or reuse) ``root``: copy0/ with background + scenarios, copyK/ scenarios only."""
    from fhir_cohort.synth import generate

    copies = max(1, math.ceil(lupus_fraction * patients / LUPUS_PER_SCENARIO_COPY))
    n_scenarios = 112
    background = max(0, patients - copies * n_scenarios)
    meta_path = root / "benchmark.json"
    want = {
        "patients": patients,
        "copies": copies,
        "background": background,
        "seed": SEED,
        "as_of": AS_OF.isoformat(),
    }
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in want} == want:
            return meta
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    for k in range(copies):
        generate(root / f"copy{k}", background if k == 0 else 0, SEED, AS_OF)
    meta = {**want, "generate_seconds": round(time.perf_counter() - t0, 1)}
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _rename(value: str, prefix: str) -> str:
    if value.startswith("s-"):
        return prefix + value[2:]
    rtype, sep, rid = value.partition("/")
    if sep and rid.startswith("s-"):
        return f"{rtype}/{prefix}{rid[2:]}"
    return value


def _rewrite_ids(node: Any, prefix: str) -> Any:
    """Scenario ids are fixed per scenario name: rename ids, references and identifier values."""
    if isinstance(node, dict):
        out = {}
        for key, val in node.items():
            if key in ("id", "reference", "value") and isinstance(val, str):
                out[key] = _rename(val, prefix)
            else:
                out[key] = _rewrite_ids(val, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_ids(v, prefix) for v in node]
    return node


def iter_hospital(root: Path, copies: int, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Every resource to load (Encounter skipped); raises on an id collision."""
    seen: set[tuple[str, str]] = set()
    for k in range(copies):
        for path in sorted((root / f"copy{k}").glob("*.ndjson")):
            rtype = path.name.split(".", 1)[0]
            if rtype in SKIPPED_TYPES:
                continue
            with path.open("rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    res = orjson.loads(line)
                    if k:
                        res = _rewrite_ids(res, f"s{k}-")
                    key = (res["resourceType"], res["id"])
                    if key in seen:
                        raise RuntimeError(f"id collision: {key[0]}/{key[1]} in copy{k}")
                    seen.add(key)
                    counts[rtype] = counts.get(rtype, 0) + 1
                    yield res


# -- the three ways ------------------------------------------------------------------------------


def run_funnel(url: str, cache: Path, batch_size: int, concurrency: int) -> dict[str, Any]:
    if cache.exists():
        shutil.rmtree(cache)  # a fresh fetch, not a resumed or delta one
    t0 = time.perf_counter()
    result = screen(
        url,
        as_of=AS_OF,
        server=ServerOptions(
            strategy="funnel", cache_dir=cache, batch_size=batch_size, concurrency=concurrency
        ),
    )
    wall = time.perf_counter() - t0
    fetch = result.run["source"]["fetch"]
    return {
        "requests": fetch["requests"],
        "bytes": fetch["bytes_received"],
        "fetch_seconds": fetch["seconds"],
        "wall": wall,
        "queries": len(fetch["queries"]),
        "entry_resources": sum(q["resources"] for q in fetch["queries"] if q["stage"] == "entry"),
        "by_stage": _by_stage(fetch["queries"]),
        "resources": fetch["resources"],
        "patients": fetch["patients"],
        "patients_table": result.patients,
        "status": result.patients["status"].value_counts().to_dict(),
    }


def run_bulk(url: str, cache: Path, type_filter: bool = True) -> dict[str, Any]:
    """Bulk Data $export (with or without the criteria's _typeFilter) + screen of the folder."""
    if cache.exists():
        shutil.rmtree(cache)
    t0 = time.perf_counter()
    options = ServerOptions(strategy="bulk", cache_dir=cache, bulk_type_filter=type_filter)
    result = screen(url, as_of=AS_OF, server=options)
    wall = time.perf_counter() - t0
    export = result.run["source"]["fetch"]["export"]
    return {
        "requests": export["requests"],
        "bytes": export["bytes"],
        "fetch_seconds": export["seconds"],
        "wall": wall,
        "resources": export.get("resources"),
        "patients_table": result.patients,
        "status": result.patients["status"].value_counts().to_dict(),
    }


def _by_stage(queries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for q in queries:
        out[q["stage"]] = out.get(q["stage"], 0) + 1
    return out


def run_naive(url: str, cache: Path) -> dict[str, Any]:
    if cache.exists():
        shutil.rmtree(cache)
    with FhirClient(url, timeout=(10, 600)) as client:
        report = fetch_all(client, PULL_TYPES, cache, count=PAGE)
    t0 = time.perf_counter()
    result = screen(cache, as_of=AS_OF)  # the same engine on the pulled snapshot
    screen_seconds = time.perf_counter() - t0
    return {
        "requests": report.requests,
        "bytes": report.bytes_received,
        "fetch_seconds": report.seconds,
        "screen_seconds": screen_seconds,
        "wall": report.seconds + screen_seconds,
        "resources": report.resources,
        "patients_table": result.patients,
        "status": result.patients["status"].value_counts().to_dict(),
    }


def run_pyrate(url: str) -> dict[str, Any]:
    try:
        import fhir_pyrate
        import requests
        from fhir_pyrate import Pirate
    except ImportError as exc:
        return {"error": f"cannot import fhir_pyrate: {exc} (pip install fhir-pyrate)"}
    counter = {"requests": 0, "bytes": 0}

    def count(resp: requests.Response, *args: object, **kwargs: object) -> None:
        counter["requests"] += 1
        counter["bytes"] += len(resp.content)

    session = requests.Session()
    session.headers["Accept"] = "application/fhir+json"
    session.hooks["response"].append(count)
    rows: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        pirate = Pirate(base_url=url, auth=session, num_processes=1)
        for rtype in PULL_TYPES:
            df = pirate.steal_bundles_to_dataframe(
                resource_type=rtype, request_params={"_count": PAGE}
            )
            rows[rtype] = 0 if df is None else len(df)
    except Exception as exc:  # report whatever stops it, with what it did so far
        return {
            "error": f"{type(exc).__name__}: {exc}",
            **counter,
            "rows": rows,
            "version": fhir_pyrate.__version__ if hasattr(fhir_pyrate, "__version__") else "?",
        }
    finally:
        session.close()
    wall = time.perf_counter() - t0
    from importlib.metadata import version

    return {
        **counter,
        "wall": wall,
        "fetch_seconds": wall,
        "resources": rows,
        "version": version("fhir-pyrate"),
    }


# -- figures ------------------------------------------------------------------------------------


def lower_bounds(resources: dict[str, int], entry_resources: int) -> tuple[int, int]:
    """Requests a perfect client needs at PAGE resources per page.

    strict: entry pages + every follow-up resource in full pages, as if one search could return
    all types (``Patient?_id=...&_revinclude=...``); per-type: one search per follow-up type, at
    least one page each, + the CapabilityStatement read the funnel does first. Medications come
    with ``_include`` on the medication searches, so they are counted in those pages.
    """
    entry_pages = max(1, math.ceil(entry_resources / PAGE))
    follow = sum(resources.get(t, 0) for t in PULL_TYPES)
    strict = entry_pages + math.ceil(follow / PAGE)
    per_type = 1 + entry_pages
    for rtype in ("Patient", "Condition", *MEDICATION_TYPES, "Observation", "Procedure"):
        per_type += max(1, math.ceil(resources.get(rtype, 0) / PAGE))
    return strict, per_type


def compare_tables(funnel: Any, naive: Any) -> str:
    """The funnel's rows equal the naive pull's for the same patients; others are ineligible."""
    key = "patient_id"
    f = funnel.set_index(key).sort_index()
    n = naive.set_index(key).sort_index()
    common = n.loc[n.index.intersection(f.index)]
    same = common.astype(str).equals(f.loc[common.index].astype(str)) and len(common) == len(f)
    rest = n.drop(index=f.index, errors="ignore")
    rest_ok = bool((rest["status"] == "ineligible").all())
    return (
        f"funnel rows identical to the full pull's for its {len(f)} patients: {same}; "
        f"the other {len(rest)} patients all ineligible: {rest_ok}"
    )


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--lupus-fraction", type=float, default=0.02)
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fhir-cohort-rest-bench"
    )
    ap.add_argument(
        "--keep-server",
        action="store_true",
        help="leave sekmet-fhir up after the figures, until Ctrl-C",
    )
    ap.add_argument("--batch-size", type=int, default=ServerOptions().batch_size)
    ap.add_argument("--concurrency", type=int, default=ServerOptions().concurrency)
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["naive", "pyrate", "bulk", "bulk-filtered"],
        help="leave out a slow comparison (repeatable)",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    # SIGTERM ends like Ctrl-C, so the finally below stops the server.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}"
    )
    t0 = time.perf_counter()
    meta = ensure_hospital(work / f"hospital-{args.patients}", args.patients, args.lupus_fraction)
    print(
        f"hospital: {meta['patients']} patients = {meta['background']} background + "
        f"{meta['copies']} x 112 scenario ({time.perf_counter() - t0:.1f} s, cached in {work})"
    )

    server_dir = work / f"server-{os.getpid()}"
    server = SekmetServer(server_dir)
    figures: dict[str, Any] = {"patients": meta["patients"], "cores": os.cpu_count()}
    try:
        server.start(timeout=60)
        url = server.base_url
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        loaded = server.load_resources(
            iter_hospital(work / f"hospital-{args.patients}", meta["copies"], counts)
        )
        load_s = time.perf_counter() - t0
        print(
            f"load: {loaded} resources by transaction Bundles of 500 in {load_s:.1f} s "
            f"({loaded / load_s:.0f}/s); Encounter skipped; {json.dumps(counts)}"
        )
        figures["load"] = {"resources": loaded, "seconds": round(load_s, 1), "counts": counts}

        runs: dict[str, dict[str, Any]] = {}
        print("\nfunnel (default options)...", flush=True)
        runs["funnel"] = run_funnel(url, work / "funnel", args.batch_size, args.concurrency)
        cohort = runs["funnel"]["patients"]
        print(f"funnel (one batch of {cohort} ids)...", flush=True)
        runs["funnel_one_batch"] = run_funnel(
            url, work / "funnel1", max(1, cohort), args.concurrency
        )
        if "bulk" not in args.skip:
            print("bulk $export (no _typeFilter) + screen of the exported folder...", flush=True)
            runs["bulk_whole_types"] = run_bulk(url, work / "bulk", type_filter=False)
        if "bulk-filtered" not in args.skip:
            print("bulk $export (criteria _typeFilter) + screen of the folder...", flush=True)
            runs["bulk"] = run_bulk(url, work / "bulk-filtered")
        if "naive" not in args.skip:
            print("naive full pull (fetch_all) + screen from disk...", flush=True)
            runs["naive"] = run_naive(url, work / "naive")
        if "pyrate" not in args.skip:
            print("FHIR-PYrate steal_bundles_to_dataframe...", flush=True)
            runs["pyrate"] = run_pyrate(url)

        f = runs["funnel"]
        lb_strict, lb = lower_bounds(f["resources"], f["entry_resources"])
        print(
            f"\nlupus cohort found by the entry query: {cohort} patients "
            f"({cohort / meta['patients']:.1%})"
        )
        print(f"\n{'way':<22}{'requests':>9}{'bytes':>12}{'fetch s':>9}{'wall s':>8}")
        for name, r in runs.items():
            if "error" in r:
                print(f"{name:<22} failed: {r['error']}")
                continue
            print(
                f"{name:<22}{r['requests']:>9}{mb(r['bytes']):>12}"
                f"{r['fetch_seconds']:>9.1f}{r['wall']:>8.1f}"
            )
        print(f"funnel queries by stage: {f['by_stage']}; resources: {f['resources']}")
        print(
            f"lower bound on requests: {lb_strict} (entry pages + all follow-up resources / "
            f"{PAGE}); {lb} with one search per type (>= 1 page each) + metadata"
        )
        print("\nratios (target):")
        for base in ("naive", "pyrate"):
            b = runs.get(base)
            if not b or "error" in b:
                continue
            for name in ("funnel", "funnel_one_batch"):
                r = runs[name]
                bytes_x = b["bytes"] / r["bytes"]
                wall_x = b["wall"] / r["wall"]
                print(
                    f"  {base}/{name}: bytes {bytes_x:.1f}x (>= {TARGET_BYTES:g}x "
                    f"{'met' if bytes_x >= TARGET_BYTES else 'MISSED'}), wall {wall_x:.1f}x "
                    f"(>= {TARGET_WALL:g}x {'met' if wall_x >= TARGET_WALL else 'MISSED'}), "
                    f"fetch only {b['fetch_seconds'] / r['fetch_seconds']:.1f}x"
                )
        for name in ("funnel", "funnel_one_batch"):
            for label, bound in (("strict", lb_strict), ("per-type", lb)):
                x = runs[name]["requests"] / bound
                print(
                    f"  {name}/{label} lower bound: {x:.2f}x (<= {TARGET_LOWER_BOUND:g}x "
                    f"{'met' if x <= TARGET_LOWER_BOUND else 'MISSED'})"
                )
        if "naive" in runs:
            print(
                "\ncheck: "
                + compare_tables(runs["funnel"]["patients_table"], runs["naive"]["patients_table"])
            )
        figures["cohort"] = cohort
        figures["lower_bound"] = {"strict": lb_strict, "per_type": lb}
        figures["runs"] = {
            k: {kk: vv for kk, vv in v.items() if kk != "patients_table"} for k, v in runs.items()
        }
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, default=str))
        if args.keep_server:
            print(f"\nserver kept at {url} (data in {server_dir}); Ctrl-C to stop it")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
