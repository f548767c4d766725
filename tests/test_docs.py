"""Examples in the README run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [code] = _blocks("python")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)  # our own README
    assert (tmp_path / "results" / "patients.csv").exists()
    assert len(namespace["again"].patients) == 496  # type: ignore[attr-defined]
    assert (tmp_path / "multi" / "NCT06038474-copy" / "patients.csv").exists()
    assert len(namespace["many"].trials) == 2 * 496  # type: ignore[attr-defined]


def test_readme_quick_start_is_exactly_two_make_targets() -> None:
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile


def test_readme_cli_options_exist() -> None:
    """Every `--option` the README names is an option of some command (screen, review, ...)."""
    import argparse

    from fhir_cohort.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = "".join(p.format_help() for p in commands.choices.values())
    for option in set(re.findall(r"`(--[a-z][a-z-]+)", README.read_text())):
        assert option in help_text, option
