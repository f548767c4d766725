"""The malformed-file corpus for on-disk sources, made at test time in tmp (nothing committed).

Each damaged source, screened through the CLI's ``main`` (in-process: the ~2 s import is paid
once; an exception escaping ``main`` is what would print a traceback), must end one of three
ways:

- the same answers as the clean source (patients.csv; evidence.csv too where the damage leaves
  the data unchanged), ignoring only the extra patient a case adds;
- exit 0 with the damage counted in run.json (``skipped``) with a ``file:line`` location;
- a clear error: an exit code naming the failure, a ``fhir-cohort: error:`` line, no traceback.

Never exit 0 with other answers and nothing counted, never a traceback. Cases where the issue
asks for more (a BOM, a ``\\u``-escaped key or invalid UTF-8 read as the clean file; an empty
source refused) say so with ``expect``.

The damaged line is one that matters: the only Condition behind the ``sle`` answer of an
eligible patient, so losing it silently turns that patient ineligible.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import AS_OF, Verdict, error_line, judge, make_hospital, outputs

COHORT = 30  # patients kept from the hospital: the screen's fixed cost dominates anyway
EXTRA = "corpus-extra-patient"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@dataclass(frozen=True)
class Clean:
    folder: Path  # NDJSON folder
    bundle: Path  # the same resources as one collection Bundle
    outputs: dict[str, list[str]]
    bundle_outputs: dict[str, list[str]]  # the Bundle's own answers (cases that damage it)
    target_id: str  # the Condition that alone makes its patient's sle answer
    target_line: int  # its 0-based line in Condition.000.ndjson
    irrelevant_line: int  # the line of a Condition no criterion reads


def in_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    from fhir_cohort.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # what a user would see as a traceback
            rc = 1
            err.write(f"Traceback (escaped main): {type(exc).__name__}\n")
    return subprocess.CompletedProcess(args, rc, "", err.getvalue())


def screen(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return in_process(["screen", "--source", str(source), "--as-of", AS_OF, "--out", str(out)])


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    tmp = tmp_path_factory.mktemp("corpus")
    hospital = make_hospital(tmp / "hospital")
    patients = [json.loads(line) for line in (hospital / "Patient.000.ndjson").open()]
    keep = {p["id"] for p in patients if p["id"].startswith("s-")}
    keep = set(sorted(keep)[:COHORT])
    folder = tmp / "clean"
    folder.mkdir()
    resources = []
    for path in sorted(hospital.glob("*.ndjson")):
        lines = []
        for line in path.open():
            res = json.loads(line)
            ref = (res.get("subject") or res.get("patient") or {}).get("reference", "")
            if res["resourceType"] == "Medication" or res["id"] in keep or ref[8:] in keep:
                lines.append(line)
                resources.append(res)
        (folder / path.name).write_text("".join(lines))
    # A Condition no criterion reads (local code, no patient): the line filter may pass over
    # it unread, so damage to it shows only under --strict.
    unused = {
        "resourceType": "Condition",
        "id": "corpus-unused",
        "subject": {"reference": "Patient/corpus-nobody"},
        "code": {"coding": [{"system": "http://example.org/local", "code": "x1"}]},
    }
    with (folder / "Condition.000.ndjson").open("a") as fh:
        fh.write(json.dumps(unused) + "\n")
    resources.append(unused)
    bundle = tmp / "clean-bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources
                ],
            }
        )
    )
    out = tmp / "clean-out"
    res = screen(folder, out)
    assert res.returncode == 0, res.stderr
    base = outputs(out)
    res = screen(bundle, tmp / "clean-bundle-out")
    assert res.returncode == 0, res.stderr
    bundle_base = outputs(tmp / "clean-bundle-out")
    # The target: an eligible patient's only sle Condition.
    # text cells are quoted (CSV formula-injection guard): read them as CSV, not by commas
    status = {r[0]: r[1] for r in csv.reader(base["patients.csv"]) if len(r) > 1}
    sle: dict[str, list[str]] = {}
    for cells in csv.reader(base["evidence.csv"]):
        if len(cells) > 3 and cells[1] == "sle" and cells[2] == "Condition":
            sle.setdefault(cells[0], []).append(cells[3])
    target = next(
        ids[0] for pid, ids in sorted(sle.items()) if len(ids) == 1 and status[pid] == "eligible"
    )
    lines = (folder / "Condition.000.ndjson").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["id"] == target)
    return Clean(folder, bundle, base, bundle_base, target, index, len(lines) - 1)


# -- the damage ---------------------------------------------------------------------------------


def _lines(src: Path) -> list[str]:
    return (src / "Condition.000.ndjson").read_text().splitlines()


def _write(src: Path, lines: list[str], newline: str = "\n") -> None:
    (src / "Condition.000.ndjson").write_text(newline.join(lines) + newline)


def _edit_target(
    edit: Callable[[str], str], *, irrelevant: bool = False
) -> Callable[[Path, Clean], Path]:
    """Edit the target line, or (``irrelevant``) a Condition no answer cites: the line filter
    may skip such a line unread, which is why only --strict can show it was not accounted for."""

    def mutate(src: Path, clean: Clean) -> Path:
        lines = _lines(src)
        index = clean.irrelevant_line if irrelevant else clean.target_line
        lines[index] = edit(lines[index])
        _write(src, lines)
        return src

    return mutate


def truncated_gzip(src: Path, clean: Clean) -> Path:
    plain = src / "Condition.000.ndjson"
    data = gzip.compress(plain.read_bytes())
    (src / "Condition.000.ndjson.gz").write_bytes(data[: len(data) * 6 // 10])
    plain.unlink()
    return src


def gzip_trailing_garbage(src: Path, clean: Clean) -> Path:
    plain = src / "Condition.000.ndjson"
    (src / "Condition.000.ndjson.gz").write_bytes(
        gzip.compress(plain.read_bytes()) + b"garbage after the gzip stream"
    )
    plain.unlink()
    return src


def ndjson_trailing_garbage(src: Path, clean: Clean) -> Path:
    with (src / "Condition.000.ndjson").open("a") as fh:
        fh.write('{"resourceType": "Condition", "id": "cut-he')
    return src


def crlf(src: Path, clean: Clean) -> Path:
    _write(src, _lines(src), "\r\n")
    return src


def line_50mb(src: Path, clean: Clean) -> Path:
    big = {
        "resourceType": "Observation",
        "id": "corpus-big",
        "status": "final",
        "code": {"text": "note"},
        "subject": {"reference": f"Patient/{EXTRA}"},
        "valueString": "x" * (50 * 1024 * 1024),
    }
    with (src / "Observation.000.ndjson").open("a") as fh:
        fh.write(json.dumps(big) + "\n")
    return src


DEPTH = 1000


def _deep_condition() -> str:
    """An extra Condition whose extension nests DEPTH levels (built as text: json.dumps itself
    would hit the recursion limit)."""
    head = json.dumps(_extra_condition())[:-1]
    nest = '{"url": "http://example.org/nest", "extension": ['
    leaf = '{"url": "http://example.org/leaf", "valueString": "leaf"}'
    return f'{head}, "extension": [{nest * DEPTH}{leaf}{"]}" * DEPTH}]}}'


def _extra_condition(**more: object) -> dict:
    return {
        "resourceType": "Condition",
        "id": "corpus-extra-condition",
        "subject": {"reference": f"Patient/{EXTRA}"},
        "code": {"text": "nothing the criteria read"},
        **more,
    }


def deep_nesting_ndjson(src: Path, clean: Clean) -> Path:
    with (src / "Condition.000.ndjson").open("a") as fh:
        fh.write(_deep_condition() + "\n")
    return src


def deep_nesting_bundle(src: Path, clean: Clean) -> Path:
    text = clean.bundle.read_text()
    assert text.endswith("]}")
    path = src / "bundle.json"
    path.write_text(f'{text[:-2]}, {{"resource": {_deep_condition()}}}]}}')
    return path


def array_line(src: Path, clean: Clean) -> Path:
    return _edit_target(lambda line: f"[{line}]")(src, clean)


def array_instead_of_bundle(src: Path, clean: Clean) -> Path:
    bundle = json.loads(clean.bundle.read_text())
    path = src / "bundle.json"
    path.write_text(json.dumps([e["resource"] for e in bundle["entry"]]))
    return path


def empty_extra_file(src: Path, clean: Clean) -> Path:
    (src / "Condition.001.ndjson").write_text("")
    return src


def empty_source(src: Path, clean: Clean) -> Path:
    empty = src.parent / "empty"
    empty.mkdir()
    (empty / "Condition.000.ndjson").write_text("")
    return empty


def empty_bundle(src: Path, clean: Clean) -> Path:
    path = src.parent / "empty-bundle.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}))
    return path


def non_fhir_json(src: Path, clean: Clean) -> Path:
    folder = src.parent / "not-fhir"
    folder.mkdir()
    for i in range(3):
        (folder / f"export-{i}.json").write_text(json.dumps({"rows": [1, 2, 3], "page": i}))
    return folder


def dir_named_like_file(src: Path, clean: Clean) -> Path:
    (src / "Condition.001.ndjson").mkdir()
    (src / "Observation.001.ndjson.gz").mkdir()
    return src


def unreadable_file(src: Path, clean: Clean) -> Path:
    (src / "Condition.000.ndjson").chmod(0)
    return src


def unlistable_folder(src: Path, clean: Clean) -> Path:
    src.chmod(0)
    return src


def odd_dates(src: Path, clean: Clean) -> Path:
    odd = ["2026-02-30", "0000-00-00", "2026-13-45T99:99:00Z", "yesterday", "99999-01-01", ""]
    with (src / "Patient.000.ndjson").open("a") as fh:
        fh.write(json.dumps({"resourceType": "Patient", "id": EXTRA, "birthDate": "1980-02-30"}))
        fh.write("\n")
    with (src / "Condition.000.ndjson").open("a") as fh:
        for i, when in enumerate(odd):
            cond = _extra_condition(
                id=f"corpus-odd-{i}",
                onsetDateTime=when,
                recordedDate=when,
                code={"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
            )
            fh.write(json.dumps(cond) + "\n")
    return src


def bom(src: Path, clean: Clean) -> Path:
    lines = _lines(src)
    lines.insert(0, lines.pop(clean.target_line))  # the line a BOM would cost
    path = src / "Condition.000.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    return src


def bom_bundle(src: Path, clean: Clean) -> Path:
    path = src / "bundle.json"
    path.write_bytes(b"\xef\xbb\xbf" + clean.bundle.read_bytes())
    return path


def invalid_utf8_display(src: Path, clean: Clean) -> Path:
    path = src / "Condition.000.ndjson"
    lines = path.read_bytes().split(b"\n")
    line = lines[clean.target_line]
    # the first display string of the line gets two bytes that are not UTF-8
    lines[clean.target_line] = re.sub(
        rb'"display": ?"', lambda m: m.group(0) + b"\xff\xfe", line, count=1
    )
    assert lines[clean.target_line] != line, "the target has no display to damage"
    path.write_bytes(b"\n".join(lines))
    return src


def _retype(value: object | None) -> Callable[[str], str]:
    def edit(line: str) -> str:
        res = json.loads(line)
        if value is None:
            del res["resourceType"]
        else:
            res["resourceType"] = value
        return json.dumps(res)

    return edit


def bundle_on_one_line(line: str) -> str:
    res = json.loads(line)
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": res}]}
    )


def escaped_key(line: str) -> str:
    return line.replace('"code":', '"\\u0063ode":')


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[Path, Clean], Path]
    expect: str = "safe"  # safe | same (only the clean answers) | error (only a clear error)
    evidence: bool = False  # compare evidence.csv too (the damage leaves the data unchanged)
    strict: bool = False
    items: str = ""  # issue 9 items the case checks
    needs_permissions: bool = False


CASES = [
    Case("truncated_gzip", truncated_gzip, items="15"),
    Case("gzip_trailing_garbage", gzip_trailing_garbage, items="15"),
    Case("ndjson_trailing_garbage", ndjson_trailing_garbage),
    Case("crlf", crlf, expect="same", evidence=True),
    Case("line_50mb", line_50mb),
    Case("deep_nesting_ndjson", deep_nesting_ndjson, items="15"),
    Case("deep_nesting_bundle", deep_nesting_bundle, items="15"),
    Case("array_line", array_line, items="3"),
    Case("array_instead_of_bundle", array_instead_of_bundle, items="15"),
    Case("empty_extra_file", empty_extra_file, expect="same", evidence=True),
    Case("empty_source", empty_source, expect="error", items="15"),
    Case("empty_bundle", empty_bundle, expect="error", items="15"),
    Case("non_fhir_json", non_fhir_json, expect="error", items="15"),
    Case("dir_named_like_file", dir_named_like_file),
    Case("unreadable_file", unreadable_file, items="15", needs_permissions=True),
    Case("unlistable_folder", unlistable_folder, items="15", needs_permissions=True),
    Case("odd_dates", odd_dates),
    Case("bom", bom, expect="same", evidence=True, items="6"),
    Case("bom_bundle", bom_bundle, expect="same", evidence=True, items="6"),
    Case("invalid_utf8_display", invalid_utf8_display, expect="same", items="6"),
    Case("missing_resource_type", _edit_target(_retype(None)), items="3"),
    Case("misspelt_resource_type", _edit_target(_retype("Conditon")), items="3"),
    Case("non_string_resource_type", _edit_target(_retype(7)), items="3"),
    Case(
        "misspelt_resource_type_strict",
        _edit_target(_retype("Conditon")),
        strict=True,
        items="3",
    ),
    Case(
        "missing_resource_type_unused_strict",
        _edit_target(_retype(None), irrelevant=True),
        strict=True,
        items="3",
    ),
    Case(
        "misspelt_resource_type_unused_strict",
        _edit_target(_retype("Conditon"), irrelevant=True),
        expect="error",
        strict=True,
        items="3",
    ),
    Case(
        "non_string_resource_type_unused_strict",
        _edit_target(_retype(7), irrelevant=True),
        expect="error",
        strict=True,
        items="3",
    ),
    Case("bundle_on_one_line", _edit_target(bundle_on_one_line), items="3"),
    Case("escaped_key", _edit_target(escaped_key), expect="same", evidence=True, items="3"),
]


def corpus_verdict(
    res: subprocess.CompletedProcess[str], out: Path, clean: Clean, case: Case, source: Path
) -> Verdict:
    base = clean.bundle_outputs if source.name.endswith(".json") else clean.outputs
    if res.returncode != 0:
        return judge(res, out, base)
    got = outputs(out)
    drop = re.compile(rf"^\"?{EXTRA}\"?,")  # text cells are quoted
    patients = [r for r in got["patients.csv"] if not drop.match(r)]
    same = patients == base["patients.csv"]
    if case.evidence:
        same = same and got["evidence.csv"] == base["evidence.csv"]
    if same:
        return Verdict("identical", 0, "")
    run = json.loads((out / "run.json").read_text())
    located = [
        e.get("location", "")
        for e in run.get("errors") or []
        if re.search(r":\d+$|#entry", str(e.get("location", "")))
    ]
    if run.get("skipped") and located:
        where = [Path(loc).name for loc in located[:2]]
        return Verdict("skipped_reported", 0, f"skipped {run['skipped']} at {where}")
    return Verdict("different", 0, "exit 0 with other answers and nothing counted")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_source_reads_the_same_or_counts_or_stops_clearly(
    clean: Clean, tmp_path: Path, case: Case
) -> None:
    if case.needs_permissions and ROOT:
        pytest.skip("running as root: file permissions are not enforced, chmod 000 reads fine")
    src = tmp_path / "src"
    shutil.copytree(clean.folder, src)
    source = case.mutate(src, clean)
    out = tmp_path / "out"
    try:
        args = ["screen", "--source", str(source), "--as-of", AS_OF, "--out", str(out)]
        res = in_process([*args, *(["--strict"] if case.strict else [])])
    finally:
        for p in (src, src / "Condition.000.ndjson"):
            if p.exists():
                p.chmod(0o700)  # so tmp_path can be cleaned
    verdict = corpus_verdict(res, out, clean, case, source)
    print(f"{case.name}: {verdict.kind} {verdict.message}")  # shown with pytest -rP
    assert "Traceback" not in res.stderr, f"{case.name}: {res.stderr.strip()[-300:]}"
    assert verdict.kind != "unclear_error", f"{case.name}: not a clear error: {verdict}"
    assert verdict.kind != "different", f"{case.name}: silent wrong result: {verdict.message}"
    if case.expect == "same":
        assert verdict.kind == "identical", f"{case.name}: {verdict}"
    elif case.expect == "error":
        assert verdict.kind == "clear_error", f"{case.name}: expected a clear error: {verdict}"
    if case.strict:
        assert verdict.kind != "skipped_reported", f"{case.name}: --strict went on: {verdict}"
    if verdict.kind == "clear_error":
        assert error_line(res.stderr), res.stderr
