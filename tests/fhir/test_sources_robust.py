"""Sources that cannot be listed or read, folders named like files, empty sources: a clear
SourceError naming the path, never a traceback or a silent "0 patients" (issue 9 item 15)."""

from __future__ import annotations

import builtins
import gzip
import json
import os
from datetime import date
from pathlib import Path

import pytest

from fhir_cohort.cli import main
from fhir_cohort.errors import SourceError
from fhir_cohort.fhir.resource_types import R4B_TYPES
from fhir_cohort.fhir.sources import iter_file, open_source
from fhir_cohort.pipeline import screen

PATIENT = b'{"resourceType":"Patient","id":"p","gender":"female","birthDate":"1990-01-01"}\n'


def test_resource_type_names_match_the_r4b_models() -> None:
    # Read from the models' source, not imported: importing ~150 pydantic models costs ~10 s.
    import ast
    import importlib.util

    spec = importlib.util.find_spec("fhir.resources.R4B")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    resources = {"Resource", "DomainResource"}
    for name in R4B_TYPES:
        tree = ast.parse((folder / f"{name.lower()}.py").read_text())
        classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
        assert name in classes, name
        bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in classes[name].bases}
        assert bases & resources, (name, bases)  # a resource, not a datatype


def test_an_unlistable_folder_is_a_source_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(PATIENT)

    def denied(self: Path):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    monkeypatch.setattr(os, "scandir", denied)  # how open_source lists a folder
    with pytest.raises(SourceError, match=rf"{tmp_path}: cannot list or read \(PermissionError\)"):
        open_source(tmp_path)


@pytest.mark.parametrize("name", ["Patient.ndjson", "Patient.ndjson.gz", "bundle.json"])
def test_an_unreadable_file_is_a_source_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(PATIENT) if name.endswith(".gz") else PATIENT)
    real_open = builtins.open

    def guarded(file, *a, **kw):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **kw)

    real_os_open = os.open

    def guarded_fd(file, *a, **kw):  # read_bytes opens a plain file without a file object
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_os_open(file, *a, **kw)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(os, "open", guarded_fd)
    monkeypatch.setattr(gzip, "open", lambda f, *a, **kw: guarded(f))
    with pytest.raises(SourceError, match=rf"{name}: cannot read \(PermissionError\)"):
        list(iter_file(path))


def test_a_folder_named_like_a_data_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(PATIENT)
    (tmp_path / "Condition.ndjson").mkdir()
    with pytest.raises(SourceError, match=r"Condition\.ndjson: a folder named like a data file"):
        open_source(tmp_path)
    # Pointing at such a folder itself reads it as a folder.
    (tmp_path / "Condition.ndjson" / "Patient.ndjson").write_bytes(PATIENT)
    assert len(open_source(tmp_path / "Condition.ndjson").files()) == 1


def _empty_sources(tmp_path: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    out["empty ndjson"] = tmp_path / "Patient.ndjson"
    out["empty ndjson"].write_bytes(b"")
    out["blank ndjson"] = tmp_path / "blank" / "Patient.000.ndjson"
    out["blank ndjson"].parent.mkdir()
    out["blank ndjson"].write_bytes(b"\n\r\n  \n")
    out["empty Bundle"] = tmp_path / "bundle.json"
    out["empty Bundle"].write_text('{"resourceType":"Bundle","type":"collection","entry":[]}')
    out["non-FHIR JSON"] = tmp_path / "other"
    out["non-FHIR JSON"].mkdir()
    for i in range(3):
        (out["non-FHIR JSON"] / f"settings{i}.json").write_text(json.dumps({"a": i}))
    out["conditions only"] = tmp_path / "cond"
    out["conditions only"].mkdir()
    (out["conditions only"] / "Condition.ndjson").write_text(
        '{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p"}}\n'
    )
    return out


def test_an_empty_source_is_an_error_unless_allowed(tmp_path: Path) -> None:
    for kind, path in _empty_sources(tmp_path).items():
        with pytest.raises(SourceError, match=r"no FHIR resources found in") as info:
            screen(path, as_of=date(2026, 11, 24))
        assert str(path) in str(info.value), kind
        result = screen(path, as_of=date(2026, 11, 24), allow_empty=True)
        assert len(result.patients) == 0, kind
    # The first malformed file is named, without its content.
    with pytest.raises(SourceError, match=r"settings0\.json: not a FHIR resource or Bundle"):
        screen(tmp_path / "other", as_of=date(2026, 11, 24))


def test_cli_empty_source_exits_4_and_allow_empty_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "Patient.ndjson"
    src.write_bytes(b"")
    args = ["screen", "--source", str(src), "--as-of", "2026-11-24", "--out", str(tmp_path / "o")]
    assert main(args) == 4
    assert "no FHIR resources found" in capsys.readouterr().err
    assert main([*args, "--allow-empty"]) == 0


def test_cli_summary_and_run_json_name_records_with_invalid_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Patient.ndjson").write_bytes(
        PATIENT.replace(b'"id":"p"', b'"id":"p","name":[{"text":"\xe9"}]')
    )
    out = tmp_path / "o"
    assert main(["screen", "--source", str(src), "--as-of", "2026-11-24", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"read 1 records with invalid UTF-8 replaced (U+FFFD): {src / 'Patient.ndjson'}:1" in (
        printed
    )
    run = json.loads((out / "run.json").read_text())
    assert run["invalid_utf8"] == {
        "records": 1,
        "locations": [f"{src / 'Patient.ndjson'}:1"],
        "truncated": False,
    }
