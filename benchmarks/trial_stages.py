"""CPU of each stage of each trial of a one-pass screen, in one process.

Runs ``pipeline.screen_many`` (or ``screen`` for one criteria file) on a hospital folder with a
history beside the outputs, as the CLI does, and times with ``time.process_time`` the steps
``_screen_trial`` calls for every trial (evaluate, attrition, patients table, evidence order,
Group, history record, outputs). The read's workers are other processes: only the main
process's CPU is counted, the part an extra trial of a pass adds. Run it with ``PYTHONPATH``
set to another checkout to compare two versions of the package in the same minutes.

    python benchmarks/trial_stages.py DIR/hospital-100000 CRITERIA [CRITERIA ...]

The variants of ``benchmarks/screen_ndjson.py --trials 3`` (NCT06038474 with other ids and age
limits) are written by its ``trial_files``. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

AS_OF = dt.date(2026, 11, 24)
# pipeline's names for the per-trial steps, in the order _screen_trial runs them
STAGES = (
    "evaluate",
    "attrition",
    "detail_tables",
    "patients_table",
    "sort_evidence",
    "candidate_group",
    "_record",
    "_write",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("criteria", type=Path, nargs="+")
    args = parser.parse_args()

    import fhir_cohort.pipeline as pipeline

    spent: dict[str, list[float]] = collections.defaultdict(list)

    def timed(name: str) -> None:
        inner = getattr(pipeline, name)

        @functools.wraps(inner)
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return inner(*a, **k)
            finally:
                spent[name].append(time.process_time() - t0)

        setattr(pipeline, name, wrapper)

    for name in ("_read_once", *STAGES):
        timed(name)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.process_time()
        if len(args.criteria) > 1:
            pipeline.screen_many(
                args.source,
                criteria=args.criteria,
                as_of=AS_OF,
                out_dir=out,
                history=Path(out) / "history.sqlite",
            )
        else:
            pipeline.screen(
                args.source,
                criteria=args.criteria[0],
                as_of=AS_OF,
                out_dir=out,
                history=Path(out) / "history.sqlite",
            )
        total = time.process_time() - t0
    print(f"main process CPU {total:.2f} s; read (main process) {sum(spent['_read_once']):.2f} s")
    print("stage (per trial, CPU s): " + ", ".join(p.name for p in args.criteria))
    for name in STAGES:
        print(f"  {name:16s}" + "".join(f"{s:8.2f}" for s in spent.get(name, [])))
    per_trial = [
        sum(spent[n][i] for n in STAGES if i < len(spent[n])) for i in range(len(args.criteria))
    ]
    print(f"  {'sum':16s}" + "".join(f"{s:8.2f}" for s in per_trial))


if __name__ == "__main__":
    main()
