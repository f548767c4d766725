"""SIGKILL a server screen at random points, run the same command again: the outputs are
byte-identical to an uninterrupted run and the second run asks only for the remaining work.

The bound tested: requests of the second run <= requests of an uninterrupted run - pages the
killed run's journal holds (it is equal here: the test server keeps its next links valid and
nothing is retried). A funnel or full pull killed after its fetch completed makes 0 requests
on the re-run; once a run has finished, the same command fetches again unless --reuse-export.
Runs are tests/zygote.py children (real processes, SIGKILLed for real) with
tests/pipeline/killable.py's hooks (a request counter and a kill switch).
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from fhir_cohort.fhir.fetch import read_state
from fhir_cohort.synth import generate
from tests import zygote

pytestmark = pytest.mark.integration

AS_OF = "2026-11-24"
HOOKS = ["tests.pipeline.killable:install"]
PAGE_SIZE = "40"
# Odd seeds kill before a request, even ones between a page's staging append and its journal
# entry. By default each kill point once, on one strategy each (both strategies share the
# journal; each CLI run costs seconds); FHIR_COHORT_KILL_SEEDS=20 sweeps 20 seeds on both.
_N_SEEDS = int(os.environ.get("FHIR_COHORT_KILL_SEEDS", "0"))
KILLS = (
    [(s, seed) for s in ("full", "funnel") for seed in range(1, 1 + _N_SEEDS)]
    if _N_SEEDS
    else [("funnel", 1), ("full", 2)]
)
# Outputs that record when and how fast a run went; everything else must be byte-identical.
TIMED = {"run.json", "report.html"}


@pytest.fixture(scope="module")
def server(sekmet_factory: Callable, tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("kill-hospital")
    generate(data, n_background=5, seed=9, as_of=date.fromisoformat(AS_OF))
    for p in data.glob("Encounter*.ndjson"):
        p.unlink()
    server = sekmet_factory()
    server.load_ndjson_dir(data)
    return server


def run(server, out: Path, strategy: str, log: Path, kill: str = "", *extra: str) -> int:
    env = dict(os.environ, KILLABLE_LOG=str(log), KILLABLE_PAGE_SIZE=PAGE_SIZE, KILLABLE_KILL=kill)
    cmd = ["screen", "--source", server.base_url]
    cmd += ["--as-of", AS_OF, "--out", str(out), "-q", "--strategy", strategy, "--batch-size", "20"]
    res = zygote.run([*cmd, *extra], env=env, timeout=600, hooks=HOOKS)
    if not kill:
        assert res.returncode == 0, res.stderr
    return res.returncode


def events(log: Path, kind: str) -> int:
    return log.read_text().split().count(kind) if log.exists() else 0


def outputs(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name not in TIMED}
    files |= {f"snapshot/{p.name}": p.read_bytes() for p in (out / "snapshot").glob("*.ndjson")}
    return files


def journaled_pages(cache: Path) -> int:
    state = read_state(cache) if (cache / "fetch_state.json").exists() else None
    if state is None or state.get("status") != "in_progress":
        return 0
    entries = [*state["completed"].values(), *state["partial"].values()]
    return sum(int(e["pages"]) for e in entries)


@pytest.fixture(scope="module", params=["full", "funnel"])
def reference(request: pytest.FixtureRequest, server, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run: (strategy, outputs, requests, journal writes)."""
    out = tmp_path_factory.mktemp(f"reference-{request.param}")
    log = out.parent / f"{out.name}.log"
    run(server, out / "out", request.param, log)
    files = outputs(out / "out")
    assert "patients.csv" in files and any(k.startswith("snapshot/") for k in files)
    return request.param, files, events(log, "request"), events(log, "journal")


@pytest.mark.parametrize(("reference", "seed"), KILLS, indirect=["reference"])
def test_killed_screen_reruns_to_identical_outputs_asking_only_the_rest(
    server, reference, tmp_path: Path, seed: int
) -> None:
    strategy, want, total, writes = reference
    rng = random.Random(f"{strategy}-{seed}")
    kind = "request" if seed % 2 else "journal"
    at = rng.randint(2, (total if kind == "request" else writes) - 1)
    out, log1, log2 = tmp_path / "out", tmp_path / "1.log", tmp_path / "2.log"
    code = run(server, out, strategy, log1, f"{kind}:{at}")
    assert code == -signal.SIGKILL
    assert not (out / "patients.csv").exists()
    held = journaled_pages(out / "snapshot")

    run(server, out, strategy, log2)
    assert outputs(out) == want
    second = events(log2, "request")
    assert second <= total - held, (kind, at, held)
    fetch = json.loads((out / "run.json").read_text())["source"]["fetch"]
    assert fetch["requests"] == second


def test_killed_after_the_fetch_the_rerun_fetches_nothing(
    server, reference, tmp_path: Path
) -> None:
    strategy, want, total, _ = reference
    out = tmp_path / "out"
    assert run(server, out, strategy, tmp_path / "1.log", "read") == -signal.SIGKILL
    assert events(tmp_path / "1.log", "request") == total
    run(server, out, strategy, tmp_path / "2.log")
    assert events(tmp_path / "2.log", "request") == 0
    assert outputs(out) == want
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["source"]["fetch"]["reused"] is True
    # the data cut is when the reused snapshot was fetched, not now
    assert run_json["data_cut"] == run_json["source"]["fetch"]["started_at"]
    if strategy == "full":
        return  # the reuse policy is the same code for both (tests/fhir/test_fetch_resume.py)
    # that run finished: the same command fetches fresh data, unless told to reuse it
    run(server, out, strategy, tmp_path / "3.log")
    assert events(tmp_path / "3.log", "request") == total
    run(server, out, strategy, tmp_path / "4.log", "", "--reuse-export")
    assert events(tmp_path / "4.log", "request") == 0
    assert outputs(out) == want
