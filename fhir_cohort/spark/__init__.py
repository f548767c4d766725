"""The Spark engine: the screen on a cluster (docs/spark.md).

The same line filter, parser, flattener, duplicate rule, evaluators and output writers as the
local engine, run on a ``pyspark.sql.SparkSession``'s executors: lines are read by Spark (local
paths or any Hadoop URI, NDJSON, NDJSON.gz and Bundle folders), flattened in each partition,
repartitioned by patient id and evaluated a partition of patients at a time. Needs the extra
``spark`` (``pip install "fhir-cohort[spark]"``) and a Java 17 runtime; importing
``fhir_cohort`` never imports pyspark.
"""

from __future__ import annotations

from fhir_cohort._lazy import lazy_exports

__all__ = ["local_session", "screen_spark"]

_EXPORTS = {
    "local_session": "fhir_cohort.spark.engine",
    "screen_spark": "fhir_cohort.spark.engine",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
