"""The screening's output files: patients, evidence, attrition, unmapped codes, FHIR Group,
run record."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from fhir_cohort.engine.unmapped import UNMAPPED_COLUMNS
from fhir_cohort.files import private_dir, private_writer

STATUS_ORDER: tuple[str, ...] = ("eligible", "review", "ineligible")
CANDIDATE_STATUSES: frozenset[str] = frozenset({"eligible", "review"})

# Written in OUT when several trials are screened in one pass (pipeline.screen_many).
TRIALS_NAME = "trials.csv"
TRIALS_COLUMNS: tuple[str, ...] = ("patient_id", "trial_id", "status", "reasons")

EVIDENCE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "criterion_id",
    "resource_type",
    "resource_id",
    "system",
    "code",
    "display",
    "date",
    "value",
    "note",
)


@dataclass(frozen=True)
class OutputPaths:
    out_dir: Path
    patients: Path
    evidence: Path
    attrition: Path
    group: Path
    run: Path
    eras: Path
    labs: Path
    unmapped: Path
    changes: Path
    worklist: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> OutputPaths:
        return cls(
            out_dir=out_dir,
            patients=out_dir / "patients.csv",
            evidence=out_dir / "evidence.csv",
            attrition=out_dir / "attrition.csv",
            group=out_dir / "group.json",
            run=out_dir / "run.json",
            eras=out_dir / "medication_eras.parquet",
            labs=out_dir / "lab_results.parquet",
            unmapped=out_dir / "unmapped.csv",
            changes=out_dir / "changes.csv",
            worklist=out_dir / "worklist.csv",
        )


def patients_table(
    answers: pd.DataFrame,
    status: pd.DataFrame,
    criterion_ids: Sequence[str],
) -> pd.DataFrame:
    """One row per patient: id, status, one column per criterion answer, reasons.

    Sorted eligible first, then review, then ineligible, then by patient id, so two runs over
    the same data (disk or server) produce byte-identical files.
    """
    fast = _patients_table_arrow(answers, status, criterion_ids)
    return fast if fast is not None else _patients_table_pandas(answers, status, criterion_ids)


def _patients_table_pandas(
    answers: pd.DataFrame, status: pd.DataFrame, criterion_ids: Sequence[str]
) -> pd.DataFrame:
    """:func:`patients_table` for any input, in pandas (pivot, join, sort)."""
    wide = answers.pivot(index="patient_id", columns="criterion_id", values="answer")
    wide = wide.reindex(columns=list(criterion_ids))
    # categorical answers (engine/evaluate.py) as the text they stand for, as the files hold it
    wide = wide.astype(
        {
            c: t.categories.dtype
            for c, t in wide.dtypes.items()
            if isinstance(t, pd.CategoricalDtype)
        }
    )
    table = status.set_index("patient_id")[["status", "reasons"]].join(wide, how="left")
    table = table.reset_index()[["patient_id", "status", *criterion_ids, "reasons"]]
    rank = table["status"].map({s: i for i, s in enumerate(STATUS_ORDER)})
    table = table.assign(_rank=rank).sort_values(["_rank", "patient_id"], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)


def _arrow_text(column: pd.Series) -> Any:
    """``column``'s Arrow strings (a ChunkedArray, no copy) when it is Arrow-backed text
    (pandas' default ``str``), else None."""
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return column.array.__arrow_array__()
    return None


def _patients_table_arrow(
    answers: pd.DataFrame, status: pd.DataFrame, criterion_ids: Sequence[str]
) -> pd.DataFrame | None:
    """:func:`patients_table`'s frame built from integer codes (the answers' categories, row
    positions, one stable sort in Arrow) instead of pandas' pivot, join and sort of text:
    the same rows, order, values and dtypes. None, for the general path, unless the input is
    what the engine makes: text in Arrow, categorical criterion ids and answers, unique
    patient ids, one answer per patient and criterion, every criterion answered at least once,
    every answer's patient in ``status`` and statuses all known."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = list(criterion_ids)
    names = ["patient_id", "status", *ids, "reasons"]
    if len(set(names)) != len(names) or answers.empty or status.empty:
        return None
    pid, stat, reasons = (_arrow_text(status[c]) for c in ("patient_id", "status", "reasons"))
    answer_pid = _arrow_text(answers["patient_id"])
    crit_type, answer_type = answers["criterion_id"].dtype, answers["answer"].dtype
    if (
        pid is None
        or stat is None
        or reasons is None
        or answer_pid is None
        or not isinstance(crit_type, pd.CategoricalDtype)
        or not isinstance(answer_type, pd.CategoricalDtype)
        or pid.null_count
        or answer_pid.null_count
    ):
        return None
    categories = answer_type.categories
    answer_texts = _arrow_text(pd.Series(categories))
    if answer_texts is None:
        return None
    rank = pc.index_in(stat, value_set=pa.array(STATUS_ORDER))
    row = pc.index_in(answer_pid, value_set=pid.combine_chunks())
    if rank.null_count or row.null_count:
        return None
    by_id = pc.sort_indices(pid).to_numpy()  # stable, by code point as pandas sorts text
    sorted_pid = pid.take(by_id)
    if len(pid) > 1 and pc.any(pc.equal(sorted_pid[1:], sorted_pid[:-1])).as_py():
        return None
    crit_codes = answers["criterion_id"].cat.codes.to_numpy()
    if (crit_codes < 0).any():
        return None
    n, k = len(pid), len(crit_type.categories)
    rows = row.to_numpy().astype(np.int64)
    # pivot refuses two answers for one patient and criterion: the general path raises it
    seen = np.zeros(n * k, dtype=bool)
    seen[rows * k + crit_codes] = True
    if int(seen.sum()) != len(rows):
        return None
    del seen
    position = {c: i for i, c in enumerate(ids)}
    column_of = np.array([position.get(c, -1) for c in crit_type.categories], dtype=np.int64)
    cols = column_of[crit_codes]
    kept = cols >= 0
    # a criterion nobody was answered for is a column of floats in the general path
    if (np.bincount(cols[kept], minlength=len(ids)) == 0).any():
        return None
    answer_codes = answers["answer"].cat.codes.to_numpy()
    grid = np.full((len(ids), n), -1, dtype=answer_codes.dtype)  # a criterion's row, contiguous
    grid[cols[kept], rows[kept]] = answer_codes[kept]
    # eligible, review, ineligible; within each by patient id (stable: ties keep their order)
    order = by_id[np.argsort(rank.to_numpy()[by_id], kind="stable")]
    texts = answer_texts.combine_chunks()
    answer_dtype = categories.dtype
    data: dict[str, Any] = {
        "patient_id": pd.arrays.ArrowStringArray(pid.take(order), dtype=status["patient_id"].dtype),
        "status": pd.arrays.ArrowStringArray(stat.take(order), dtype=status["status"].dtype),
    }
    for j, cid in enumerate(ids):
        codes = grid[j][order]
        cells = texts.take(pa.array(codes, mask=codes < 0))
        data[cid] = pd.arrays.ArrowStringArray(cells, dtype=answer_dtype)
    data["reasons"] = pd.arrays.ArrowStringArray(reasons.take(order), dtype=status["reasons"].dtype)
    return pd.DataFrame(data)


def sort_evidence(evidence: pd.DataFrame, criterion_ids: Sequence[str]) -> pd.DataFrame:
    ev = evidence.reindex(columns=list(EVIDENCE_COLUMNS))
    # the last three only order rows the others tie (one record's codings in two systems):
    # a total order, so the file never follows the order the read's workers finished in
    keys = ["patient_id", "_c", "date", "resource_type", "resource_id", "code", "note"]
    keys += ["system", "display", "value"]
    rows = _evidence_order(ev, criterion_ids, keys)
    if rows is None:
        return _sort_evidence_pandas(ev, criterion_ids, keys)
    return ev.take(rows).reset_index(drop=True)


def _sort_evidence_pandas(
    ev: pd.DataFrame, criterion_ids: Sequence[str], keys: list[str]
) -> pd.DataFrame:
    """:func:`sort_evidence` for any columns, in pandas (``_c``: the criterion's rank)."""
    order = {c: i for i, c in enumerate(criterion_ids)}
    ev = ev.assign(_c=ev["criterion_id"].map(order))
    ev = ev.sort_values(keys, kind="stable", na_position="first")
    return ev.drop(columns="_c").reset_index(drop=True)


def _evidence_order(ev: pd.DataFrame, criterion_ids: Sequence[str], keys: list[str]) -> Any:
    """The row order of :func:`sort_evidence` from one Arrow sort (:func:`_arrow_order`),
    with ``_c`` the criterion's position in ``criterion_ids`` (missing when not in it, first
    as pandas' NaN). None (pandas sorts) unless every column is Arrow-backed text and the ids
    are unique."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(set(criterion_ids)) != len(criterion_ids):
        return None
    columns = {c: _arrow_text(ev[c]) for c in ev.columns}
    if any(v is None for v in columns.values()):
        return None
    ids = pa.array(list(criterion_ids), pa.string())
    columns["_c"] = pc.index_in(columns["criterion_id"], value_set=ids)
    return _arrow_order({k: columns[k] for k in keys}, nulls_first=True)


def _arrow_order(keys: Mapping[str, Any], *, nulls_first: bool) -> Any:
    """The row positions (numpy) of a stable sort by ``keys`` (Arrow columns, first key
    first), as pandas' ``sort_values(kind="stable")`` orders them: text by code point (the
    byte order of UTF-8, which Arrow sorts by), missing cells first or last."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table(dict(keys))
    placement = "at_start" if nulls_first else "at_end"
    if int(pa.__version__.split(".")[0]) >= 25:  # null placement per key since pyarrow 25
        rows = pc.sort_indices(table, sort_keys=[(k, "ascending", placement) for k in keys])
    else:
        rows = pc.sort_indices(
            table, sort_keys=[(k, "ascending") for k in keys], null_placement=placement
        )
    return rows.to_numpy()


def sort_details(frame: pd.DataFrame, criterion_ids: Sequence[str]) -> pd.DataFrame:
    """medication_eras or lab_results in their documented order (README, "Outputs"): by
    patient id, then the criteria in the trial's order, then a test's date, then every other
    column left to right (eras: requirement, agent, value set, start, end, days; labs:
    resource id, system, code, ...), so the row order is that of the data, not of the workers
    that read it: a total order, rows it ties are equal."""
    if frame.empty or "patient_id" not in frame.columns or "criterion_id" not in frame.columns:
        return frame.reset_index(drop=True)
    order = {c: i for i, c in enumerate(criterion_ids)}
    rest = [c for c in frame.columns if c not in ("patient_id", "criterion_id", "date")]
    if "date" in frame.columns:
        rest.insert(0, "date")
    ranked = frame.assign(_c=frame["criterion_id"].map(order))
    ranked = ranked.sort_values(
        ["patient_id", "_c", *rest], kind="stable", na_position="first", ignore_index=True
    )
    return ranked.drop(columns="_c")


# CSV formula injection (OWASP): a spreadsheet runs a cell that starts with one of these as a
# formula (=HYPERLINK(...) in a display). "'" is escaped too, so a value that began with a
# quote reads back unchanged: restore_cell strips exactly one leading quote, always.
FORMULA_STARTS = frozenset("=+-@\t\r")
_QUOTE = "'"
# A plain decimal number ("-1.5", "+3", "-2e-3") is data, not a formula: left as it is.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise_cell(value: object) -> object:
    """``value`` as written to a CSV: text a spreadsheet would take for a formula gets a
    leading ``'`` (and so does text that already starts with one); anything else unchanged.

    >>> [neutralise_cell(v) for v in ("=1+2", "-1.5", "-1.5 mg/dL", "@x", "'a", "a=b", 3)]
    ["'=1+2", '-1.5', "'-1.5 mg/dL", "'@x", "''a", 'a=b', 3]
    """
    if not isinstance(value, str) or not value:
        return value
    first = value[0]
    if first == _QUOTE or (first in FORMULA_STARTS and not _NUMBER.fullmatch(value)):
        return _QUOTE + value
    return value


def restore_cell(value: object) -> object:
    """The inverse of :func:`neutralise_cell`, for reading the CSVs back."""
    if isinstance(value, str) and value.startswith(_QUOTE):
        return value[1:]
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell passed through :func:`neutralise_cell`."""
    out = frame.copy()
    starts = [*FORMULA_STARTS, _QUOTE]
    for col in out.columns:
        column = out[col]
        if isinstance(column.dtype, pd.StringDtype):
            # A text column none of whose cells starts like a formula or a quote is left as it
            # is (the per-cell map would return it unchanged, same dtype): one vectorised test.
            if not column.str.slice(0, 1).isin(starts).any():
                continue
            out[col] = column.map(neutralise_cell, na_action="ignore")
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            out[col] = column.map(neutralise_cell, na_action="ignore")
    return out


def restore_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as read from one of our CSVs, with the added quotes taken off again."""
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col].dtype):
            frame[col] = frame[col].map(restore_cell, na_action="ignore")
    return frame


SD = "https://fhir-cohort.github.io/StructureDefinition/"
GROUP_IDENTIFIER_SYSTEM = "https://fhir-cohort.github.io/screening"


def candidate_group(
    patients: pd.DataFrame,
    *,
    trial_id: str,
    trial_version: str,
    as_of: date,
    evidence: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """A FHIR R4 Group (type person, actual) of the candidates, eligible first.

    Its identifier is the trial id alone, so publishing it again updates the same Group; the
    as-of date and criteria version are extensions. Each member carries its status, its
    reasons, and a reference to every resource of its evidence.
    """
    from fhir.resources.R4B.group import Group

    candidates = patients[patients["status"].isin(CANDIDATE_STATUSES)]
    cited: dict[str, list[tuple[str, str]]] = {}
    if evidence is not None and not evidence.empty:
        ev = evidence[evidence["patient_id"].isin(set(candidates["patient_id"]))]
        for pid, cid, rtype, rid in zip(
            ev["patient_id"],
            ev["criterion_id"],
            ev["resource_type"],
            ev["resource_id"],
            strict=True,
        ):
            if isinstance(rtype, str) and rtype and isinstance(rid, str) and rid:
                ref = (f"{rtype}/{rid}", str(cid))
                if ref not in cited.setdefault(pid, []):
                    cited[pid].append(ref)
    members = []
    for pid, status, reasons in zip(
        candidates["patient_id"], candidates["status"], candidates["reasons"], strict=True
    ):
        ext: list[dict[str, Any]] = [{"url": SD + "screening-status", "valueCode": status}]
        if isinstance(reasons, str) and reasons:
            ext.append({"url": SD + "screening-reasons", "valueString": reasons})
        ext.extend(
            {"url": SD + "screening-evidence", "valueReference": {"reference": ref, "display": cid}}
            for ref, cid in cited.get(pid, [])
        )
        members.append({"entity": {"reference": f"Patient/{pid}"}, "extension": ext})
    group: dict[str, Any] = {
        "resourceType": "Group",
        "extension": [
            {"url": SD + "screening-as-of", "valueDate": as_of.isoformat()},
            {"url": SD + "criteria-version", "valueString": trial_version},
        ],
        "identifier": [{"system": GROUP_IDENTIFIER_SYSTEM, "value": trial_id}],
        "type": "person",
        "actual": True,
        "name": f"{trial_id} candidates (criteria {trial_version}, as of {as_of.isoformat()})",
        "quantity": len(members),
        "characteristic": [
            {
                "code": {"text": "screened for clinical trial"},
                "valueCodeableConcept": {"text": trial_id},
                "exclude": False,
            }
        ],
    }
    if members:
        group["member"] = members
    # Validation is the point: a Group the server would reject is a bug here, not there.
    Group.model_validate(group)
    return group


def unmapped_table(rows: Iterable[tuple[str, str, str, str, int]]) -> pd.DataFrame:
    """The unmapped.csv table: ``resource_type, system, code, display, count``."""
    frame = pd.DataFrame(list(rows), columns=list(UNMAPPED_COLUMNS))
    return frame.astype({"count": "int64"})


# The formula starts and the quote are ASCII: in UTF-8 a cell starts with one of them exactly
# when its first byte is that byte.
_START_BYTES = frozenset(ord(c) for c in (*FORMULA_STARTS, _QUOTE))


def _may_start_formula(cells: Any, starts: Any) -> bool:
    """Whether a cell of ``cells`` (Arrow text, no nulls) starts like a formula or a quote: from
    the first byte of each cell, read off the offsets (no copy of the text); other Arrow
    layouts take each cell's first character."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = cells.chunks if isinstance(cells, pa.ChunkedArray) else [cells]
    wanted = np.zeros(256, dtype=bool)
    wanted[list(_START_BYTES)] = True
    for chunk in chunks:
        if chunk.type not in (pa.string(), pa.large_string()) or chunk.null_count:
            return bool(pc.any(pc.is_in(pc.utf8_slice_codeunits(cells, 0, 1), starts)).as_py())
        if len(chunk) == 0:
            continue
        _, offsets_buf, data_buf = chunk.buffers()
        width = np.int64 if chunk.type == pa.large_string() else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        if data_buf is None:  # every cell empty
            continue
        data = np.frombuffer(data_buf, dtype=np.uint8)
        begins = offsets[:-1][offsets[1:] > offsets[:-1]]
        if wanted[data[begins]].any():
            return True
    return False


def _text_cells(frame: pd.DataFrame) -> list[Any] | None:
    """The columns of an all-text frame as the cells pandas' ``to_csv`` writes (a missing
    cell as "", formula-looking cells neutralised): an Arrow array per column; None when a
    column holds anything else (numbers, dates), which pandas formats. A column already in
    Arrow is not turned into Python strings unless a cell needs neutralising."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = frame.columns
    if columns.empty or not columns.is_unique or not all(isinstance(c, str) for c in columns):
        return None
    starts = pa.array(sorted({*FORMULA_STARTS, _QUOTE}))
    out: list[Any] = []
    for col in frame.columns:
        column = frame[col]
        cells: Any
        if isinstance(column.dtype, pd.StringDtype):
            arrow = _arrow_text(column)
            if arrow is not None:
                cells = pc.fill_null(arrow, "")
            else:
                cells = pa.array(column.fillna("").tolist(), pa.string())
            if _may_start_formula(cells, starts):
                cells = pa.array([neutralise_cell(v) for v in cells.to_pylist()], pa.string())
        elif column.dtype == object:
            texts = []
            for v in column.tolist():
                if isinstance(v, str):
                    texts.append(neutralise_cell(v))
                elif v is None or v is pd.NA or (isinstance(v, float) and v != v):
                    texts.append("")
                else:
                    return None
            cells = pa.array(texts, pa.string())
        else:
            return None
        out.append(cells)
    return out


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as one of our CSVs: 0600, atomically, formula-looking cells quoted."""
    # Every text cell in double quotes (as R's write.csv does): with "\n" line ends, the csv
    # module would leave a lone "\r" in a cell unquoted, and readers split the row there.
    cells = _text_cells(frame)
    if cells is None:  # numbers or dates: pandas formats them
        with private_writer(path) as fh:
            neutralise_frame(frame).to_csv(
                fh, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC
            )
        return path
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    # A text-only frame (evidence, patients: up to millions of cells) goes to Arrow's writer,
    # every cell quoted: the bytes of the csv module's QUOTE_NONNUMERIC for text (quotes
    # doubled, "\n" line ends; tests/report compare the two), about ten times faster than
    # turning Arrow strings into Python ones for the csv module.
    table = pa.Table.from_arrays(cells, names=list(frame.columns))
    with private_writer(path, "wb") as fh:
        pa_csv.write_csv(table, fh, pa_csv.WriteOptions(quoting_style="all_valid"))
    return path


def trials_table(patients_by_trial: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The cross-trial table: one row per (patient, trial) with the trial's status and reasons,
    sorted by patient id, then trials in the order given (``patients_by_trial``'s)."""
    parts = [
        patients[["patient_id", "status", "reasons"]].assign(trial_id=trial_id, _t=rank)
        for rank, (trial_id, patients) in enumerate(patients_by_trial.items())
    ]
    if not parts:
        return pd.DataFrame(columns=list(TRIALS_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    ids = _arrow_text(table["patient_id"])
    if ids is None:
        table = table.sort_values(["patient_id", "_t"], kind="stable")
    else:  # the same order from one Arrow sort (missing ids last, as sort_values puts them)
        ranks = table["_t"].to_numpy()
        table = table.take(_arrow_order({"patient_id": ids, "_t": ranks}, nulls_first=False))
    return table[list(TRIALS_COLUMNS)].reset_index(drop=True)


def write_trials(path: Path, table: pd.DataFrame) -> Path:
    """trials.csv, written like the other CSVs."""
    return write_csv(table, path)


def write_outputs(
    out_dir: Path,
    *,
    patients: pd.DataFrame,
    evidence: pd.DataFrame,
    attrition: pd.DataFrame,
    group: dict[str, Any],
    run: dict[str, Any],
    eras: pd.DataFrame | None = None,
    labs: pd.DataFrame | None = None,
    unmapped: pd.DataFrame | None = None,
    changes: pd.DataFrame | None = None,
    worklist: pd.DataFrame | None = None,
) -> OutputPaths:
    """Write every output file privately (0600; folders it creates 0700) and atomically.

    Text cells of the CSVs that a spreadsheet would run as a formula get a leading ``'``
    (:func:`neutralise_cell`); the Parquet files and :func:`~fhir_cohort.load_results` keep
    the true values.

    The tables also go to Parquet beside the CSVs (typed, fast to reopen in a notebook).
    ``unmapped.csv`` (codes no value set matched, with counts) is always written, with its
    header even when empty; ``changes.csv`` (what changed since the previous run in the
    screening history) and ``worklist.csv`` (candidates with their chart-review decisions)
    only when given (the run was recorded in a history).
    """
    paths = OutputPaths.in_dir(private_dir(Path(out_dir)))
    if unmapped is None:
        unmapped = unmapped_table([])
    for frame, path in (
        (patients, paths.patients),
        (evidence, paths.evidence),
        (attrition, paths.attrition),
        (unmapped, paths.unmapped),
    ):
        write_csv(frame, path)
    # a run without history in a folder that had one: no stale changes.csv / worklist.csv
    for table, path in ((changes, paths.changes), (worklist, paths.worklist)):
        if table is not None:
            write_csv(table, path)
        else:
            path.unlink(missing_ok=True)
    parquet = {
        "patients.parquet": patients,
        "evidence.parquet": evidence,
        "attrition.parquet": attrition,
    }
    if eras is not None:
        parquet[paths.eras.name] = eras
    if labs is not None:
        parquet[paths.labs.name] = labs
    for name, frame in parquet.items():
        with private_writer(paths.out_dir / name, "wb") as fh:
            frame.to_parquet(fh, index=False)
    with private_writer(paths.group) as fh:
        json.dump(group, fh, indent=2)
        fh.write("\n")
    with private_writer(paths.run) as fh:
        json.dump(run, fh, indent=2, default=str)
        fh.write("\n")
    return paths
