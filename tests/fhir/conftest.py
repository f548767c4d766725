"""Fixtures for the FHIR REST tests.

The real-server fixtures live in tests/conftest_server.py; they are imported here unless the
top-level tests/conftest.py already registered that module as a plugin (imported earlier).
"""

from __future__ import annotations

import sys

if "tests.conftest_server" not in sys.modules:
    from tests.conftest_server import (  # noqa: F401
        SmartSetup,
        sekmet_factory,
        sekmet_server,
        small_hospital_server,
        smart_server,
    )
