"""SIGKILL at chosen points of a server screen, then the same command again: identical results.

The kill point is a number of requests the proxy has seen (drawn from a seed), or a state file
saying the fetch is complete; never a wall-clock delay. ``KILL_SEEDS`` (comma-separated)
widens the loop; benchmarks/faults.py runs it long.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_cohort.remote import FULL_TYPES
from tests.faults.conftest import Baseline
from tests.faults.harness import STRATEGIES, cli_env, judge, run_cli, run_killed, screen_args
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.integration

KILL_SEEDS = [int(s) for s in os.environ.get("KILL_SEEDS", "1").split(",")]


def fetch_complete(out: Path) -> Callable[[], bool]:
    """True once the snapshot's state file says the fetch (or the export) is complete, or (a
    full pull, which keeps no state file before issue 9) every type's file is written."""

    def check() -> bool:
        if all((out / "snapshot" / f"{t}.ndjson").exists() for t in FULL_TYPES):
            return True
        for name, key, done in (
            ("fetch_state.json", "status", "complete"),
            ("export_state.json", "completed", True),
        ):
            try:
                state = json.loads((out / "snapshot" / name).read_text())
            except (OSError, ValueError):
                continue
            if state.get(key) == done:
                return True
        return False

    return check


@pytest.mark.parametrize("seed", KILL_SEEDS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sigkill_at_a_random_request_then_rerun_is_identical(
    proxy: FaultProxy,
    baselines: Callable[[str], Baseline],
    tmp_path: Path,
    strategy: str,
    seed: int,
) -> None:
    base = baselines(strategy)
    point = random.Random(f"{strategy}-{seed}").randint(1, max(1, base.requests - 1))
    out = tmp_path / "out"
    args = screen_args(proxy.base_url, out, strategy)
    killed = run_killed(args, env=cli_env(), kill_when=lambda: len(proxy.requests("main")) >= point)
    assert killed, "the run ended before the kill point"
    res = run_cli(args, env=cli_env())
    verdict = judge(res, out, base.outputs)
    assert verdict.kind == "identical", verdict


@pytest.mark.parametrize("strategy", ["funnel", "full"])
def test_a_run_killed_after_its_fetch_does_not_fetch_everything_again(
    proxy: FaultProxy, baselines: Callable[[str], Baseline], tmp_path: Path, strategy: str
) -> None:
    """Item 14: a funnel (or full pull) killed once its snapshot is complete resumes from it."""
    base = baselines(strategy)
    out = tmp_path / "out"
    args = screen_args(proxy.base_url, out, strategy)
    assert run_killed(args, env=cli_env(), kill_when=fetch_complete(out))
    proxy.clear()
    res = run_cli(args, env=cli_env())
    assert judge(res, out, base.outputs).kind == "identical"
    again = len(proxy.requests("main"))
    assert again < base.requests, f"{again} requests again, as many as a fresh run"


def test_full_pull_killed_midway_resumes_instead_of_starting_over(
    proxy: FaultProxy, baselines: Callable[[str], Baseline], tmp_path: Path
) -> None:
    """Item 14: ``--strategy full`` interrupted after some of its queries sends fewer requests
    on the re-run than a fresh run."""
    # Small pages: enough requests on this small hospital for "midway" to mean something.
    proxy.configure(max_count=50)
    proxy.clear()
    out_fresh = tmp_path / "fresh"
    assert run_cli(screen_args(proxy.base_url, out_fresh, "full"), env=cli_env()).returncode == 0
    fresh = len(proxy.requests("main"))
    proxy.clear()
    out = tmp_path / "out"
    args = screen_args(proxy.base_url, out, "full")
    assert run_killed(
        args, env=cli_env(), kill_when=lambda: len(proxy.requests("main")) > fresh // 2
    )
    proxy.clear()
    res = run_cli(args, env=cli_env())
    assert judge(res, out, baselines("full").outputs).kind == "identical"
    again = len(proxy.requests("main"))
    assert again < fresh, f"{again} requests after the kill, {fresh} for a fresh run"
