"""Every criteria-language example in docs/criteria.md loads, round-trips and names only
value sets that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fhir_cohort.criteria import check_value_sets, dumps, loads
from fhir_cohort.terminology import Terminology

DOCS = Path(__file__).resolve().parents[2] / "docs" / "criteria.md"
_BLOCK = re.compile(r"```yaml\n(# example: [^\n]*\n.*?)```", re.S)


def _examples() -> list[tuple[str, str]]:
    out = []
    for m in _BLOCK.finditer(DOCS.read_text(encoding="utf-8")):
        text = m.group(1)
        out.append((text.splitlines()[0].removeprefix("# example: "), text))
    return out


def test_docs_have_examples():
    assert _examples()


@pytest.mark.parametrize(("name", "text"), _examples(), ids=[n for n, _ in _examples()])
def test_example_loads(name, text):
    trial = loads(text, origin=name)
    check_value_sets(trial, Terminology.load())
    assert loads(dumps(trial)) == trial
