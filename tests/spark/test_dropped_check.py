"""The dropped-line check's membership test (pure numpy, no Spark session)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.spark.engine import _any_in

hashes = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=60)


@given(kept=hashes, values=hashes)
def test_any_in_is_membership_of_any_value(kept: list[int], values: list[int]) -> None:
    """A binary search in the sorted kept hashes answers as np.isin, at either end of the
    range included (a value past the last kept hash is not found at index 0 by mistake)."""
    sorted_kept = np.unique(np.array(kept, dtype=np.int64))
    got = _any_in(sorted_kept, np.array(values, dtype=np.int64))
    assert got == bool(np.isin(values, kept).any())


def test_any_in_finds_the_first_and_last_kept_hash() -> None:
    kept = np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64)
    for v in kept:
        assert _any_in(kept, np.array([5, v], dtype=np.int64))
    assert not _any_in(kept, np.array([1, -1, 2**62], dtype=np.int64))
