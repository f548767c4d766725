"""What a test needs from outside the repository: skipped visibly locally, failed under CI=true.

CI (``CI=true``, see .ci/run) installs everything, so a missing prerequisite there is a broken
set-up, not a reason to skip. Locally the skip reason shows in pytest's -ra summary.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip with ``reason``; under CI=true fail with it instead."""
    if in_ci():
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)
