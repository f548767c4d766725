"""One local Spark session (local[2]) for every Spark test of a pytest worker: the JVM starts
once; each test runs a few small jobs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.prerequisites import skip_unless_ci


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        skip_unless_ci("pyspark is not installed (pip install -e '.[test,spark]')")
    if shutil.which("java") is None:
        skip_unless_ci("no java on PATH: scripts/install_java.sh installs Debian's OpenJDK 17")
    from fhir_cohort.spark import local_session

    session = local_session(
        "local[2]",
        **{
            # Small data: few shuffle partitions, no broadcast-join planning surprises.
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            # A JVM that lives a few minutes on small jobs: C1 only (no C2 compiler threads)
            # and the serial collector (no concurrent GC threads) leave the cores to the work.
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        },
    )
    yield session
    session.stop()
