"""Same-run A/B of the line filter's id recording (issue 9 item 4) on a generated hospital.

The reader records the (type, id) of every line its filter drops, so that a later version of a
resource dropped unparsed still replaces an earlier one that was read (a re-read without the
filter when ids collide). This times read_tables with the recording and with a pass-through
in its place, alternating, in one process:

    .venv/bin/python benchmarks/id_recording.py DIR [--reps 3]

DIR is a hospital folder made by benchmarks/screen_ndjson.py (e.g. its --dir/hospital-100000).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine import read as reader
from fhir_cohort.fhir.sources import open_source
from fhir_cohort.pipeline import relevant_codes
from fhir_cohort.terminology import Terminology


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    terminology = Terminology.load()
    relevant = relevant_codes(load_criteria(default_criteria_path()), terminology)
    words = terminology.medication_names()
    recording = reader._IdRecorder.__call__

    def passthrough(self: reader._IdRecorder, line: bytes) -> bool:
        return self.inner(line)

    times: dict[str, list[float]] = {"recording": [], "pass-through": []}
    for _ in range(args.reps):
        for label, call in (("recording", recording), ("pass-through", passthrough)):
            reader._IdRecorder.__call__ = call  # type: ignore[method-assign]
            t0 = time.perf_counter()
            tables, _ = reader.read_tables(
                open_source(args.folder), relevant=relevant, medication_words=words
            )
            times[label].append(time.perf_counter() - t0)
            print(f"{label}: {times[label][-1]:.1f} s ({len(tables.conditions)} condition rows)")
    a, b = (sum(times[k]) / len(times[k]) for k in ("recording", "pass-through"))
    print(f"mean: recording {a:.1f} s, pass-through {b:.1f} s, ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
