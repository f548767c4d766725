"""Benchmark: requests taken to publish the demo hospital's ResearchStudy and ResearchSubjects.

    .venv/bin/python benchmarks/publish_requests.py

Starts sekmet-fhir on 127.0.0.1, loads the bundled demo hospital (Encounter skipped), then
screens it from the server three times with ``--publish-group --publish-subjects`` (as of
2026-11-24, the same again, as of 2027-03-01) and prints each run's status counts and
run.json's ``published_research`` (subject counts, write mode, requests). Not a test: nothing
here asserts (docs/publishing.md quotes the figures).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_cohort import ServerOptions, screen
from fhir_cohort.pipeline import DEMO_DATA
from tests.server.sekmet import SekmetServer

RUNS = (date(2026, 11, 24), date(2026, 11, 24), date(2027, 3, 1))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="publish-bench-") as tmp:
        data = Path(tmp) / "demo"
        data.mkdir()
        for path in Path(DEMO_DATA).glob("*.ndjson"):
            if not path.name.startswith("Encounter"):
                shutil.copy(path, data)
        with SekmetServer(Path(tmp) / "server") as server:
            print("resources loaded:", server.load_ndjson_dir(data))
            for as_of in RUNS:
                t0 = time.perf_counter()
                result = screen(
                    server.base_url,
                    as_of=as_of,
                    server=ServerOptions(strategy="full"),
                    publish_group=True,
                    publish_subjects=True,
                )
                seconds = round(time.perf_counter() - t0, 1)
                print(as_of, result.status_counts().to_dict(), f"{seconds} s")
                print(json.dumps(result.run["published_research"]))


if __name__ == "__main__":
    main()
