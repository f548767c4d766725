"""Fixtures of the EHR emulation tests: one sekmet-fhir for the package, loaded with the small
hospital and a Group of three of its patients, and one emulator per profile in front of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.conftest_server import SMALL_HOSPITAL
from tests.ehr.emulator import EhrEmulator
from tests.ehr.profiles import PROFILES
from tests.server.sekmet import SekmetServer

GROUP_ID = "ehr-group"
GROUP_MEMBERS = ("srv-p1", "srv-p2", "srv-p3")
# Filled into the profiles' example requests.
IDS = {
    "patient": "srv-p3",  # two conditions: a post-filter and a second page have work
    "patient2": "srv-p1",  # two observations, one medication request
    "group": GROUP_ID,
    "condition": "srv-c1",
    "observation": "srv-o1",
}
# Exports stay "in progress" until a test calls finish_exports (the test server is done at
# once). Small limits so the small hospital reaches them (the profiles keep the vendors' numbers).
# (3: the Group's Patients are read in one _id search, as on Epic up to its cap of 100).
LIMITS = {"patient_search_cap": 3}


@pytest.fixture(scope="package")
def upstream(sekmet_factory: Callable[..., SekmetServer]) -> SekmetServer:
    server = sekmet_factory()
    bundle = json.loads(SMALL_HOSPITAL.read_text())
    server.load_bundle(bundle)
    group = {
        "resourceType": "Group",
        "id": GROUP_ID,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in GROUP_MEMBERS],
    }
    server.load_resources([group])
    return server


@pytest.fixture(scope="package")
def emulators(upstream: SekmetServer) -> Iterator[dict[str, EhrEmulator]]:
    started = {
        name: EhrEmulator(upstream.base_url, profile, limits=LIMITS, export_seconds=3600).start()
        for name, profile in PROFILES.items()
    }
    yield started
    for emulator in started.values():
        emulator.stop()


@pytest.fixture
def ehr(emulators: dict[str, EhrEmulator]) -> Callable[[str], EhrEmulator]:
    """``ehr(profile_name)``: that profile's emulator, reset (counts, sessions, exports)."""

    def get(name: str) -> EhrEmulator:
        emulator = emulators[name]
        emulator.reset()
        return emulator

    return get
