"""Fixtures of the fault suite: one bearer-protected sekmet-fhir loaded with a small synthetic
hospital, one fault proxy in front of it (reset to fault-free before every test), and the
fault-free results of each strategy to compare against."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import (
    TOKEN,
    cli_env,
    make_hospital,
    outputs,
    run_cli,
    screen_args,
)
from tests.faults.proxy import FaultProxy
from tests.server.sekmet import SekmetServer


@pytest.fixture(scope="session")
def fault_hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hospital(tmp_path_factory.mktemp("fault-hospital"))


@pytest.fixture(scope="session")
def fault_server(sekmet_factory: Callable[..., SekmetServer], fault_hospital: Path) -> SekmetServer:
    # Bearer enforced, so every run can be checked for where its credentials went.
    server = sekmet_factory(auth_types=("bearer",), tokens=[TOKEN])
    server.load_ndjson_dir(fault_hospital)
    return server


@pytest.fixture(scope="session")
def _session_proxy(fault_server: SekmetServer) -> Iterator[FaultProxy]:
    with FaultProxy(fault_server.base_url) as proxy:
        yield proxy


@pytest.fixture
def proxy(_session_proxy: FaultProxy) -> Iterator[FaultProxy]:
    _session_proxy.configure(
        rate=0.0, seed=0, links_to_other=False, requires_access_token=None, retry_after="0"
    )
    _session_proxy.clear()
    yield _session_proxy
    # Whatever a test did, no credentials may have left the configured origin.
    leaks = len(_session_proxy.credential_leaks())
    assert leaks == 0, f"{leaks} requests sent credentials off-origin or in cleartext"
    _session_proxy.configure(rate=0.0, links_to_other=False)


@dataclass(frozen=True)
class Baseline:
    outputs: dict[str, list[str]]
    requests: int  # requests the fault-free run sent through the proxy


@pytest.fixture(scope="session")
def baselines(
    _session_proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Baseline]:
    """``baselines(strategy)``: the fault-free run through the proxy, computed once."""
    cache: dict[str, Baseline] = {}

    def get(strategy: str) -> Baseline:
        if strategy not in cache:
            _session_proxy.configure(rate=0.0, links_to_other=False)
            _session_proxy.clear()
            out = tmp_path_factory.mktemp(f"baseline-{strategy}")
            res = run_cli(screen_args(_session_proxy.base_url, out, strategy), env=cli_env())
            assert res.returncode == 0, res.stderr
            cache[strategy] = Baseline(outputs(out), len(_session_proxy.requests("main")))
            _session_proxy.clear()
            assert cache[strategy].outputs["patients.csv"], "the fault-free run screened no one"
        return cache[strategy]

    return get
