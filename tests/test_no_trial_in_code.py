"""Nothing in engine/ or terminology/ names a value set or drug of the shipped trial: a trial is
data (criteria file, value sets), so another trial needs no code change (issue 10).

Names are looked for in string literals and identifiers; docstrings and comments that explain
may name them (they do not drive behaviour).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_cohort.criteria import default_criteria_path

PACKAGE = Path(__file__).resolve().parents[1] / "fhir_cohort"
TRANSITIONAL: set[str] = set()
SOURCES = sorted(
    p
    for p in [*(PACKAGE / "engine").rglob("*.py"), *(PACKAGE / "terminology").rglob("*.py")]
    if p.relative_to(PACKAGE).as_posix() not in TRANSITIONAL
)


def _trial_names() -> set[str]:
    """Value set ids the shipped criteria file writes, and the drugs its coverage table names."""
    doc = yaml.safe_load(default_criteria_path().read_text(encoding="utf-8"))
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("value_sets") and isinstance(value, list):
                    names.update(str(v) for v in value)
                elif key == "coverage_per_dose_days" and isinstance(value, dict):
                    names.update(str(k) for k in value)
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(doc)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _code_words(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal (not a docstring) and identifier in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            out.append((node.lineno, node.name))
        elif isinstance(node, ast.alias):
            out.append((getattr(node, "lineno", 0), node.name))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_trial_names_value_sets_and_drugs() -> None:
    names = _trial_names()
    assert {"sle", "glucocorticoids", "immunosuppressants", "rituximab"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_trial_value_set_or_drug_in_code(path: Path) -> None:
    # A name matches as a whole word of a literal or identifier ("sle" in "sle_x", not "isle").
    patterns = {
        n: re.compile(rf"(?<![a-z0-9]){re.escape(n.lower())}(?![a-z0-9])") for n in _trial_names()
    }
    found = [
        (line, name, text)
        for line, text in _code_words(path)
        for name, pat in patterns.items()
        if pat.search(text.lower().replace("_", " ")) or pat.search(text.lower())
    ]
    assert not found, f"{path.name} names trial value sets / drugs: {found[:10]}"
