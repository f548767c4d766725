"""Benchmark: the crawl's plan options on a Group of a synthetic hospital over FHIR REST.

    .venv/bin/python benchmarks/crawl_options.py --patients 1000

1. generates (or reuses) the hospital of ``benchmarks/rest_funnel.py`` in --workdir;
2. starts sekmet-fhir on 127.0.0.1, loads it (Encounter skipped) and PUTs a Group of every
   patient (or the first --group-size);
3. crawls the Group with codes filtered on arrival only (``server_codes=False``), screens the
   snapshot, crawls it again with --batch patients per request, and crawls the first --sample
   members with the criteria's codes sent to the server (the default plan: each such request
   costs sekmet a scan of its Observation code index, ~0.5-2 s, so the whole Group would take
   an hour here); screens the hospital folder on disk;
4. prints requests, bytes and wall time against the per-patient lower bound (patients x needed
   types, + the CapabilityStatement and the Group read) and whether the crawl's patients.csv
   equals the on-disk screen's. Not a test: nothing here asserts.

No EHR is emulated here (plain sekmet-fhir): the figures are the crawl's own cost, per plan
option; benchmarks/rest_crawl.py compares the crawl with SMART Fetch's behind the emulation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.rest_funnel import AS_OF, ensure_hospital, iter_hospital  # noqa: E402
from fhir_cohort.criteria import default_criteria_path, load_criteria  # noqa: E402
from fhir_cohort.fhir.client import FhirClient  # noqa: E402
from fhir_cohort.fhir.crawl import PatientList, crawl  # noqa: E402
from fhir_cohort.pipeline import screen  # noqa: E402
from fhir_cohort.remote import ServerOptions, crawl_plan  # noqa: E402
from fhir_cohort.requirements import Requirements  # noqa: E402
from fhir_cohort.terminology import Terminology  # noqa: E402
from tests.server.sekmet import SekmetServer  # noqa: E402

GROUP = "crawl-benchmark"


def _group(server: SekmetServer, ids: list[str]) -> None:
    body = {
        "resourceType": "Group",
        "id": GROUP,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids],
    }
    resp = server.session.put(f"{server.base_url}/Group/{GROUP}", json=body)
    resp.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--lupus-fraction", type=float, default=0.02)
    ap.add_argument("--concurrency", type=int, default=ServerOptions().concurrency)
    ap.add_argument("--batch", type=int, default=10, help="patients per request, batched run")
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fhir-cohort-rest-bench"
    )
    ap.add_argument("--sample", type=int, default=100, help="members crawled with codes sent")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores")
    root = work / f"hospital-{args.patients}"
    meta = ensure_hospital(root, args.patients, args.lupus_fraction)
    figures: dict[str, Any] = {"patients": meta["patients"]}
    # the loaded server folder is kept for the next run (loading takes minutes)
    server_dir = work / f"server-crawl-{args.patients}"
    loaded_mark = server_dir / "loaded.json"
    server = SekmetServer(server_dir)
    try:
        server.start(timeout=60)
        url = server.base_url
        if not loaded_mark.exists():
            counts: dict[str, int] = {}
            t0 = time.perf_counter()
            loaded = server.load_resources(iter_hospital(root, meta["copies"], counts))
            print(f"load: {loaded} resources in {time.perf_counter() - t0:.0f} s; {counts}")
            loaded_mark.write_text(json.dumps(counts))
        ids = sorted(
            json.loads(line)["id"]
            for k in range(meta["copies"])
            for path in (root / f"copy{k}").glob("Patient*.ndjson")
            for line in path.read_text().splitlines()
            if line.strip()
        )
        if meta["copies"] > 1:
            raise SystemExit("use a lupus fraction that needs one scenario copy (ids rewritten)")
        _group(server, ids)
        needs = Requirements.of(load_criteria(default_criteria_path()), Terminology.load())
        types = sorted(t for t in needs.resource_types if t != "Medication")
        lower = len(ids) * len(types) + 2  # + metadata + Group read
        print(f"group: {len(ids)} patients; needed types {types}; lower bound {lower} requests")

        runs: dict[str, dict[str, Any]] = {}
        terminology = Terminology.load()
        sample = PatientList(tuple(ids[: args.sample]))
        for name, kw, plist in (
            ("Group, codes filtered on arrival", {"server_codes": False}, None),
            (
                f"Group, {args.batch} patients per request",
                {"server_codes": False, "batch": args.batch},
                None,
            ),
            (f"first {args.sample}, codes sent to the server", {}, sample),
        ):
            folder = work / f"crawl-{len(runs)}"
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            report = crawl(
                FhirClient(url, timeout=(10, 600)),
                crawl_plan(needs, terminology, **kw),
                plist or PatientList.of_group(GROUP),
                folder,
                workers=args.concurrency,
            )
            n = len(plist.ids) if plist else len(ids)
            runs[name] = {
                "patients": n,
                "requests": report.requests,
                "bytes": report.bytes_received,
                "fetch_seconds": report.seconds,
                "wall": round(time.perf_counter() - t0, 1),
                "lower_bound": n * len(types) + (2 if plist is None else 1),
                "folder": folder,
            }
            print(name, {k: v for k, v in runs[name].items() if k != "folder"}, flush=True)
        first = next(iter(runs.values()))
        t0 = time.perf_counter()
        result = screen(first.pop("folder"), as_of=AS_OF, out_dir=work / "crawl-out")
        print(f"screen of the crawl's snapshot: {time.perf_counter() - t0:.1f} s")
        for r in runs.values():
            r.pop("folder", None)
        t0 = time.perf_counter()
        disk = screen(root / "copy0", as_of=AS_OF, out_dir=work / "disk-out").patients
        disk_wall = time.perf_counter() - t0
        same = (
            result.patients.sort_values("patient_id")
            .reset_index(drop=True)
            .astype(str)
            .equals(disk.sort_values("patient_id").reset_index(drop=True).astype(str))
        )
        print(f"\n{'way':<40}{'requests':>9}{'x bound':>8}{'MB':>8}{'fetch s':>9}{'wall s':>8}")
        for name, r in runs.items():
            print(
                f"{name:<40}{r['requests']:>9}{r['requests'] / r['lower_bound']:>8.2f}"
                f"{r['bytes'] / 1e6:>8.1f}{r['fetch_seconds']:>9.1f}{r['wall']:>8.1f}"
            )
        print(f"on-disk screen of the same hospital: {disk_wall:.1f} s")
        print(f"crawl patients.csv equals the on-disk screen's: {same}")
        print(f"status: {result.patients['status'].value_counts().to_dict()}")
        figures.update(runs=runs, lower_bound=lower, same_as_disk=same, types=types)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
