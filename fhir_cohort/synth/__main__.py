"""``python -m fhir_cohort.synth``: write a synthetic hospital to a folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date

from fhir_cohort.synth.generator import generate


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fhir_cohort.synth",
        description="Write a deterministic synthetic hospital (Bulk NDJSON + expected.csv).",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--patients",
        type=int,
        default=300,
        help="number of background patients (scenario patients come on top)",
    )
    p.add_argument("--seed", type=int, default=20261124, help="random seed")
    p.add_argument(
        "--as-of",
        type=_date,
        default=date.today(),
        help="screening date S the expectations assume (default: today)",
    )
    p.add_argument("--no-scenarios", action="store_true", help="background patients only")
    p.add_argument(
        "--files-per-type",
        type=int,
        default=1,
        help="split each resource type over this many files",
    )
    p.add_argument("--gzip", action="store_true", help="write .ndjson.gz")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.patients < 0 or args.files_per_type < 1:
        build_parser().error("--patients must be >= 0 and --files-per-type >= 1")
    summary = generate(
        args.out,
        args.patients,
        args.seed,
        args.as_of,
        scenarios=not args.no_scenarios,
        files_per_type=args.files_per_type,
        gzip=args.gzip,
    )
    sys.stdout.write(
        f"{summary.n_patients} patients ({summary.n_scenario} scenario, "
        f"{summary.n_background} background), {summary.n_resources} resources -> {args.out}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
