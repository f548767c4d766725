"""Load, validate and dump criteria files (YAML or JSON by extension)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ValidationError

from fhir_cohort.criteria.language import EXPR_TYPES
from fhir_cohort.criteria.models import CRITERION_TYPES, Trial
from fhir_cohort.errors import CriteriaError

# Discriminator tags pydantic inserts in error locations (after a list index or a field
# holding one tagged expression): not keys a user wrote.
_TAGS = frozenset(CRITERION_TYPES) | frozenset(EXPR_TYPES)
_TAGGED_FIELDS = frozenset({"rule", "of", "criterion"})
_JSON_SUFFIXES = {".json"}
_YAML_SUFFIXES = {".yaml", ".yml"}
# libyaml's parser when PyYAML has it (the same safe constructor, so the same data): the
# pure-Python one took ~40 ms per load of the shipped trial, a tenth of a small screen.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _HasIds(Protocol):
    def ids(self) -> list[str]: ...


def default_criteria_path() -> Path:
    """The shipped NCT06038474 criteria file."""
    return Path(__file__).with_name("NCT06038474.yaml")


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('criteria', 2, 'medication_history', 'window_months') -> 'criteria[2].window_months'.

    The discriminator tag pydantic inserts after a list index is dropped.

    >>> format_loc(("criteria", 2, "medication_history", "window_months"))
    'criteria[2].window_months'
    >>> format_loc(("criteria", 0, "rules", 1, "answer"))
    'criteria[0].rules[1].answer'
    """
    out = ""
    prev: int | str | None = None
    prev2: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS and (
            isinstance(prev, int) or prev in _TAGGED_FIELDS or prev2 == "define"
        ):
            pass
        else:
            out += f".{part}" if out else str(part)
        prev2, prev = prev, part
    return out or "<root>"


def _errors_text(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        lines.append(f"{format_loc(tuple(e['loc']))}: {e['msg']}")
    return "; ".join(lines)


def parse_criteria(data: Any, *, origin: str = "<data>") -> Trial:
    """Validate a parsed document into a Trial; CriteriaError names the offending keys."""
    try:
        return Trial.model_validate(data)
    except ValidationError as err:
        raise CriteriaError(f"{origin}: {_errors_text(err)}") from None


def loads(text: str, *, fmt: str = "yaml", origin: str = "<string>") -> Trial:
    try:
        data = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_YAML_LOADER)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise CriteriaError(f"{origin}: not valid {fmt}: {err}") from None
    return parse_criteria(data, origin=origin)


def load_criteria(path: str | Path) -> Trial:
    """Load a criteria file; the format follows the extension (.yaml/.yml or .json)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _JSON_SUFFIXES | _YAML_SUFFIXES:
        raise CriteriaError(f"{p}: unknown criteria file extension {suffix!r} (use .yaml or .json)")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise CriteriaError(f"{p}: cannot read: {err.strerror}") from None
    return loads(text, fmt="json" if suffix in _JSON_SUFFIXES else "yaml", origin=str(p))


def dumps(trial: Trial, fmt: str = "yaml") -> str:
    data = trial.model_dump(mode="json", exclude={"criteria"})
    # A criterion written as a shorthand is written back as that shorthand.
    data["criteria"] = [
        (c.written_as or c).model_dump(mode="json", exclude={"written_as"})
        if c.written_as is not None
        else c.model_dump(mode="json", exclude={"written_as"})
        for c in trial.criteria
    ]
    if not data.get("define"):
        data.pop("define", None)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    # allow_unicode=False: PyYAML writes some code points (NEL, U+0085) unquoted and reads
    # them back as line breaks; escaped output always round-trips.
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)


def dump_criteria(trial: Trial, path: str | Path) -> None:
    p = Path(path)
    fmt = "json" if p.suffix.lower() in _JSON_SUFFIXES else "yaml"
    p.write_text(dumps(trial, fmt), encoding="utf-8")


def _value_set_refs(model: BaseModel, path: str) -> Iterator[tuple[str, str]]:
    """(key path, value set id) for every field marked value_set_ref, recursively. A
    criterion written as a shorthand is read as written (key paths as in the file)."""
    written = getattr(model, "written_as", None)
    if isinstance(written, BaseModel):
        yield from _value_set_refs(written, path)
        return
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{path}.{name}" if path else name
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("value_set_ref"):
            for i, vs in enumerate(value or []):
                yield f"{key}[{i}]", vs
        elif isinstance(value, BaseModel):
            yield from _value_set_refs(value, key)
        elif isinstance(value, dict):
            for k, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _value_set_refs(item, f"{key}.{k}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _value_set_refs(item, f"{key}[{i}]")


def value_set_ids(trial: Trial) -> set[str]:
    """Every value set id the trial references."""
    return {vs for _, vs in _value_set_refs(trial, "")}


def check_value_sets(trial: Trial, terminology: _HasIds) -> None:
    """Raise CriteriaError naming each key that references a value set the terminology lacks."""
    known = set(terminology.ids())
    missing = [
        f"{key}: unknown value set {vs!r}"
        for key, vs in _value_set_refs(trial, "")
        if vs not in known
    ]
    if missing:
        raise CriteriaError(f"criteria {trial.id}: " + "; ".join(missing))
