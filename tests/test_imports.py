"""Package imports are lazy (issue 9 item 19): one module does not drag in the whole tool.

Every CLI call and every ``import fhir_cohort.fhir.wire`` used to load pandas, pyarrow, the
engine and the report through ``fhir_cohort/__init__.py``. Checked in fresh interpreters.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

PACKAGES = [
    "fhir_cohort",
    "fhir_cohort.criteria",
    "fhir_cohort.history",
    "fhir_cohort.review",
    "fhir_cohort.spark",
    "fhir_cohort.synth",
    "fhir_cohort.terminology",
]
HEAVY = ["pandas", "numpy", "pyarrow", "fhir_cohort.pipeline", "fhir_cohort.engine.evaluate"]


def _loaded_after(statement: str, modules: list[str]) -> list[str]:
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "statement",
    [
        "import fhir_cohort",
        "import fhir_cohort.fhir.wire",
        "import fhir_cohort.cli",
        "import fhir_cohort.history.db",
        "import fhir_cohort.history.diff",
        "import fhir_cohort.review.server",  # the worklist server reads the history only
    ],
)
def test_light_imports_load_no_engine_and_no_pandas(statement: str) -> None:
    assert _loaded_after(statement, HEAVY) == []


def test_cli_help_loads_no_server_code() -> None:
    """``--help`` and an option argparse rejects answer before requests, pydantic or the JWT
    stack load (each took seconds of every CLI call: ServerOptions' defaults came from
    fhir_cohort.remote)."""
    statement = (
        "import contextlib, io\n"
        "from fhir_cohort.cli import main\n"
        "quiet = io.StringIO()\n"
        "for argv in (['screen', '-h'], ['export', '-h'], ['screen', '--batch-size', '0']):\n"
        "    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass"
    )
    server_code = ["requests", "pydantic", "jwt", "cryptography", "fhir_cohort.remote"]
    server_code += ["starlette", "uvicorn", "fhir_cohort.review.app"]  # only for `review`
    assert _loaded_after(statement, [*HEAVY, *server_code]) == []


def test_the_engines_load_no_spark() -> None:
    """PySpark (and its JVM gateway) loads only when the Spark engine runs: the pipeline,
    the CLI and the Spark engine's own module import none of it."""
    statement = "import fhir_cohort.pipeline, fhir_cohort.cli, fhir_cohort.spark.engine"
    assert _loaded_after(statement, ["pyspark", "py4j"]) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_imports_none_of_what_it_exports(package: str) -> None:
    exports = importlib.import_module(package)._EXPORTS
    eager = {"fhir_cohort.errors"}  # the exception tree has no imports
    modules = sorted(set(exports.values()) - eager - {package})
    assert _loaded_after(f"import {package}", modules) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_is_listed(package: str) -> None:
    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
        assert name in dir(mod), name
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        _ = mod.not_exported
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)  # star-import follows __all__
    assert set(mod.__all__) <= set(namespace)
