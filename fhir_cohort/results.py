"""The result of a screening, as analysts use it in notebooks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fhir_cohort.report.outputs import CANDIDATE_STATUSES, OutputPaths, restore_frame


@dataclass
class ScreeningResult:
    """Everything one screening produced.

    ``patients`` has one row per patient (``patient_id``, ``status``, one column per criterion,
    ``reasons``), ``evidence`` one row per (patient, criterion, record), ``attrition`` the
    trial's attrition table, ``run`` the run record written to run.json, ``eras`` the
    medication eras (agent, start, end, days inside the window), ``labs`` every counted
    autoantibody-style test with its reading and ``unmapped`` the most frequent codes that
    matched no value set (``resource_type, system, code, display, count``). ``changes`` is
    what changed since the trial's previous run in the screening history (changes.csv,
    docs/history.md), None when the run was not recorded in one; ``worklist`` its candidates
    with the chart-review decisions (worklist.csv), None likewise.

    >>> from datetime import date
    >>> from fhir_cohort import screen
    >>> result = screen(as_of=date(2026, 11, 24))
    >>> result.status_counts().to_dict()
    {'eligible': 84, 'review': 48, 'ineligible': 364}
    >>> result.candidates()["status"].iloc[0]
    'eligible'
    >>> print(result.explain("s-eligible-statements").splitlines()[0])
    Patient s-eligible-statements: eligible
    >>> sorted(result.eras.columns)[:3]
    ['agent', 'criterion_id', 'days']
    """

    patients: pd.DataFrame
    evidence: pd.DataFrame
    attrition: pd.DataFrame
    run: dict[str, Any]
    group: dict[str, Any] = field(default_factory=dict)
    criterion_ids: tuple[str, ...] = ()
    paths: OutputPaths | None = None
    eras: pd.DataFrame = field(default_factory=pd.DataFrame)
    labs: pd.DataFrame = field(default_factory=pd.DataFrame)
    unmapped: pd.DataFrame = field(default_factory=pd.DataFrame)
    changes: pd.DataFrame | None = None
    worklist: pd.DataFrame | None = None

    def candidates(self) -> pd.DataFrame:
        """Eligible then review patients (the candidate cohort), in that order."""
        mask = self.patients["status"].isin(CANDIDATE_STATUSES)
        return self.patients[mask].reset_index(drop=True)

    def status_counts(self) -> pd.Series:
        counts = self.patients["status"].value_counts()
        return counts.reindex(["eligible", "review", "ineligible"], fill_value=0)

    def explain(self, patient_id: str) -> str:
        """The criterion-by-criterion story for one patient, with the evidence behind it."""
        row = self.patients[self.patients["patient_id"] == patient_id]
        if row.empty:
            raise KeyError(f"no patient {patient_id!r} in this screening")
        rec = row.iloc[0]
        lines = [f"Patient {patient_id}: {rec['status']}"]
        ev = self.evidence[self.evidence["patient_id"] == patient_id]
        for cid in self.criterion_ids:
            lines.append(f"  {cid}: {rec[cid]}")
            for e in ev[ev["criterion_id"] == cid].itertuples(index=False):
                what = " ".join(
                    str(x)
                    for x in (e.resource_type, e.resource_id, e.code, e.display)
                    if isinstance(x, str) and x
                )
                extra = " ".join(str(x) for x in (e.date, e.value) if isinstance(x, str) and x)
                note = f" - {e.note}" if isinstance(e.note, str) and e.note else ""
                lines.append(f"      {what} {extra}{note}".rstrip())
        if isinstance(rec["reasons"], str) and rec["reasons"]:
            lines.append(f"  reasons: {rec['reasons']}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The attrition table and where the outputs went, as the CLI prints it."""
        lines = [
            f"Screened {len(self.patients)} patients for {self.run.get('trial', {}).get('id')} "
            f"as of {self.run.get('as_of')}",
            "",
            _attrition_text(self.attrition),
            "",
            "status: " + ", ".join(f"{k} {v}" for k, v in self.status_counts().items()),
        ]
        lines += _read_notes(self.run)
        lines += _history_notes(self.run)
        if self.paths is not None:
            lines.append(f"outputs: {self.paths.out_dir} (open report.html in a browser)")
        return "\n".join(lines)


@dataclass(eq=False)
class MultiScreeningResult(Mapping[str, ScreeningResult]):
    """Several trials screened in one pass: a mapping trial id -> :class:`ScreeningResult`
    (in the order the criteria were given), plus ``trials``, the cross-trial table
    (``patient_id, trial_id, status, reasons``; ``trials.csv``), and ``out_dir`` when the
    outputs were written (``OUT/<trial id>/``, ``OUT/trials.csv``, ``OUT/index.html``).
    """

    results: dict[str, ScreeningResult]
    trials: pd.DataFrame
    out_dir: Path | None = None

    def __getitem__(self, trial_id: str) -> ScreeningResult:
        return self.results[trial_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def status_counts(self) -> pd.DataFrame:
        """One row per trial: eligible, review and ineligible counts."""
        rows = {tid: r.status_counts() for tid, r in self.results.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        return frame.reindex(columns=["eligible", "review", "ineligible"], fill_value=0)

    def summary(self) -> str:
        """Each trial's counts and where the outputs went, as the CLI prints it."""
        first = next(iter(self.results.values()), None)
        run = first.run if first is not None else {}
        patients = len(first.patients) if first is not None else 0
        lines = [
            f"Screened {patients} patients for {len(self)} trials in one pass as of "
            f"{run.get('as_of')}",
            "",
            self.status_counts().rename_axis("trial").to_string(),
            "",
            *_read_notes(run),
            *(
                f"{tid}: {line}"
                for tid, r in self.results.items()
                for line in _history_notes(r.run)
            ),
        ]
        if self.out_dir is not None:
            lines += [
                f"outputs: {self.out_dir}/<trial id>/ per trial, {self.out_dir}/trials.csv "
                "(patient x trial); open index.html in a browser",
            ]
        return "\n".join(lines)


def _read_notes(run: dict[str, Any]) -> list[str]:
    """What the fetch and the read did, as summary lines (shared by every trial of a pass)."""
    lines = []
    fetch = (run.get("source") or {}).get("fetch")
    if fetch:
        traffic = fetch.get("export") or fetch
        lines.append(
            f"fetched by {fetch.get('strategy')} ({fetch.get('why')}): "
            f"{traffic.get('requests')} requests, "
            f"{(traffic.get('bytes_received') or traffic.get('bytes') or 0) / 1e6:.1f} MB, "
            f"{traffic.get('seconds')} s"
        )
        if fetch.get("cohort"):
            lines.append(_cohort_note(fetch["cohort"]))
    skipped = sum(run.get("skipped", {}).values()) if run.get("skipped") else 0
    if skipped:
        lines.append(f"skipped {skipped} malformed resources (see run.json)")
    unresolved = (run.get("unresolved_references") or {}).get("total") or 0
    if unresolved:
        word = "reference" if unresolved == 1 else "references"
        lines.append(f"{unresolved} {word} did not resolve (see run.json)")
    dropped = sum(((run.get("duplicates") or {}).get("copies_dropped") or {}).values())
    if dropped:
        word = "copy" if dropped == 1 else "copies"
        lines.append(f"dropped {dropped} duplicate or superseded {word} (see run.json)")
    return lines


def _cohort_note(c: dict[str, Any]) -> str:
    """The crawl's patient list in counts (no ids): who was screened and who was not, why."""
    parts = [f"crawled {c.get('screened', 0)} of {c.get('listed', 0)} listed patients"]
    for key, words in (
        ("not_found", "not on the server (deleted)"),
        ("merged", "merged (screened under the surviving id)"),
        ("merged_unresolved", "merged into a record not found"),
        ("identifiers_unresolved", "identifiers matching no patient"),
        ("identifiers_ambiguous", "identifiers matching several patients (left out)"),
        ("group_inactive_members", "inactive Group members left out"),
        ("new_since_last_run", "new since the last run"),
        ("left_since_last_run", "screened last run but no longer"),
    ):
        if c.get(key):
            parts.append(f"{c[key]} {words}")
    if c.get("types_not_served"):
        parts.append(f"the server serves no {', '.join(c['types_not_served'])} (skipped)")
    if c.get("unsearched"):
        parts.append(
            f"the server allows no search for {', '.join(c['unsearched'])}: those records may "
            "be missing, so no patient whose answers read them is eligible without review"
        )
    return "; ".join(parts)


def _history_notes(run: dict[str, Any]) -> list[str]:
    """What changed since the trial's previous run in the history (counts), if recorded."""
    record = run.get("history")
    if not record:
        return []
    if record.get("previous_run_id") is None:
        return [f"history: run {record.get('run_id')}, the first of this trial in {record['path']}"]
    c = record.get("changes") or {}
    line = (
        f"since {record.get('previous_as_of')} (run {record.get('previous_run_id')}): "
        f"{c.get('new_candidate', 0)} new candidates, {c.get('status_changed', 0)} status "
        f"changes, {c.get('answer_changed', 0)} with changed answers, "
        f"{c.get('evidence_changed', 0)} with changed evidence, "
        f"{c.get('no_longer_in_source', 0)} no longer in the source (changes.csv)"
    )
    lines = [line + ("; the criteria changed" if record.get("criteria_changed") else "")]
    return lines + _decision_notes(record)


def _decision_notes(record: dict[str, Any]) -> list[str]:
    """The chart-review overlay in the summary: re-reviews due, declined not offered as new."""
    parts = []
    if record.get("re_review"):
        parts.append(f"{record['re_review']} decided patients back for re-review (new evidence)")
    if record.get("withheld_declined"):
        parts.append(
            f"{record['withheld_declined']} declined or do-not-contact patients not listed as new"
        )
    if "review_queue" in record:
        parts.append(f"{record['review_queue']} in the review queue (worklist.csv)")
    return ["decisions: " + ", ".join(parts)] if parts else []


def _attrition_text(attrition: pd.DataFrame) -> str:
    """The attrition table for a terminal: short titles, only the answer columns in use."""
    table = attrition.copy()
    if "title" in table:
        table["title"] = table["title"].map(
            lambda t: t if not isinstance(t, str) or len(t) <= 44 else t[:43] + "…"
        )
    answers = [
        c for c in ("met", "not_met", "unknown", "clear", "excluded", "review") if c in table
    ]
    keep = [c for c in ("step", "criterion_id", "title", "remaining") if c in table]
    return table[keep + answers].to_string(index=False)


def load_results(out_dir: str | Path) -> ScreeningResult:
    """Reopen a past run's outputs from its folder.

    Text the CSVs quote against formula injection (a leading ``'``, see
    :func:`~fhir_cohort.report.outputs.neutralise_cell`) is read back as it was.

    >>> import tempfile
    >>> from datetime import date
    >>> from fhir_cohort import screen
    >>> out = tempfile.mkdtemp()
    >>> first = screen(as_of=date(2026, 11, 24), out_dir=out)
    >>> again = load_results(out)
    >>> again.patients.equals(first.patients.astype(str).replace("nan", ""))
    True
    >>> len(again.eras) == len(first.eras)
    True
    """
    paths = OutputPaths.in_dir(Path(out_dir))
    run = json.loads(paths.run.read_text(encoding="utf-8"))
    # The CSVs quote cells a spreadsheet would run as formulas: take the quotes off again.
    patients = restore_frame(pd.read_csv(paths.patients, dtype=str, keep_default_na=False))
    evidence = restore_frame(pd.read_csv(paths.evidence, dtype=str, keep_default_na=False))
    attrition = restore_frame(pd.read_csv(paths.attrition))
    eras = pd.read_parquet(paths.eras) if paths.eras.exists() else pd.DataFrame()
    labs = pd.read_parquet(paths.labs) if paths.labs.exists() else pd.DataFrame()
    unmapped = (
        restore_frame(pd.read_csv(paths.unmapped, dtype={"count": "int64"}, keep_default_na=False))
        if paths.unmapped.exists()
        else pd.DataFrame()
    )
    group = json.loads(paths.group.read_text(encoding="utf-8"))
    changes = (
        restore_frame(pd.read_csv(paths.changes, dtype=str, keep_default_na=False))
        if paths.changes.exists()
        else None
    )
    worklist = (
        restore_frame(pd.read_csv(paths.worklist, dtype=str, keep_default_na=False)).astype(
            {"version": "int64"}
        )
        if paths.worklist.exists()
        else None
    )
    ids = tuple(run.get("criteria", {}).get("criterion_ids", ()))
    return ScreeningResult(
        patients=patients,
        evidence=evidence,
        attrition=attrition,
        run=run,
        group=group,
        criterion_ids=ids,
        paths=paths,
        eras=eras,
        labs=labs,
        unmapped=unmapped,
        changes=changes,
        worklist=worklist,
    )
