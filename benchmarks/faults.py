"""Fault benchmark: every server strategy through the CLI behind the fault proxy, long.

    .venv/bin/python benchmarks/faults.py              # rates 0/5/20/50 %, 10 seeds, 10 kills
    .venv/bin/python benchmarks/faults.py --quick      # a few minutes: proves it runs

1. generates a small synthetic hospital and loads it into sekmet-fhir on 127.0.0.1 (bearer
   token enforced, so every request can be checked for where its credentials went);
2. puts tests/faults/proxy.py in front of it and screens with ``fhir-cohort screen`` (the
   console script, as a user runs it) for each strategy: fault-free first (the reference), then
   at each rate with each seed (every fault kind: 429 + Retry-After, 500/502/503, reset
   mid-body, truncation with and without a matching Content-Length, delay, malformed JSON in a
   200, a corrupted NDJSON line, a bulk file cut inside its last line), with small pages so next
   links are followed; a run that ends with a clear error is run again without faults (it must
   then end identical: the state left behind is resumable);
3. per strategy, runs whose next links / Bulk file URLs point at another origin (and
   ``requiresAccessToken: false``), counting credentials sent there;
4. the kill loop: SIGKILL after a seeded number of requests, then the same command again;
5. prints one table; exits 1 if any run ended exit 0 with other results, with an unclear error
   (traceback, exit 1, no message), did not resume, or sent credentials off-origin/in cleartext.

Not run by the test suite (tests/faults/ is its fast cut). docs/reliability.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.server / tests.faults, as the suite imports them

from tests.faults.harness import (  # noqa: E402
    STRATEGIES,
    TOKEN,
    Verdict,
    cli_env,
    judge,
    make_hospital,
    outputs,
    run_cli,
    run_killed,
    screen_args,
)
from tests.faults.proxy import FaultProxy  # noqa: E402
from tests.server.sekmet import SekmetServer  # noqa: E402

PAGE = 100  # the proxy lowers _count to this, so the small hospital pages
KINDS_SEEN: Counter[str] = Counter()


@dataclass
class Row:
    label: str
    runs: int = 0
    faults: int = 0
    identical: int = 0
    clear: int = 0
    resumed: int = 0  # clear errors after which the same command without faults was identical
    different: int = 0
    unclear: int = 0
    not_resumed: int = 0
    leaks: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, first: Verdict, then: Verdict | None, faults: int, leaks: int) -> None:
        self.runs += 1
        self.faults += faults
        self.leaks += leaks
        if first.kind == "identical":
            self.identical += 1
        elif first.kind == "clear_error":
            self.clear += 1
        elif first.kind == "different":
            self.different += 1
        else:
            self.unclear += 1
        if first.kind in ("different", "unclear_error") and len(self.examples) < 3:
            self.examples.append(f"{first.kind}: {first.message}")
        if then is not None:
            if then.kind == "identical":
                self.resumed += 1
            else:
                self.not_resumed += 1
                if len(self.examples) < 3:
                    self.examples.append(f"not resumed: {then.kind}: {then.message}")

    @property
    def bad(self) -> int:
        return self.different + self.unclear + self.not_resumed + self.leaks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="20%% only, one seed, one kill per strategy"
    )
    ap.add_argument("--rates", default="0,5,20,50", help="fault rates in percent")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per rate and strategy")
    ap.add_argument("--kills", type=int, default=10, help="kill-and-rerun pairs per strategy")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--background", type=int, default=10, help="background patients")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    seeds, kills = args.seeds, args.kills
    if args.quick:
        rates, seeds, kills = [20], 1, 1
    strategies = args.strategies.split(",")

    work = Path(tempfile.mkdtemp(prefix="fhir-cohort-faults-"))
    started = time.monotonic()
    rows: list[Row] = []
    try:
        hospital = make_hospital(work / "hospital", n_background=args.background)
        with SekmetServer(work / "server", auth_types=("bearer",), tokens=[TOKEN]) as server:
            server.load_ndjson_dir(hospital)
            with FaultProxy(server.base_url, max_count=PAGE) as proxy:
                rows = run_all(proxy, work, strategies, rates, seeds, kills)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, time.monotonic() - started)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 1 if any(r.bad for r in rows) else 0


def run_all(
    proxy: FaultProxy,
    work: Path,
    strategies: list[str],
    rates: list[int],
    seeds: int,
    kills: int,
) -> list[Row]:
    counter = iter(range(1_000_000))

    def fresh_out() -> Path:
        return work / f"run-{next(counter)}"

    def once(
        strategy: str, base: dict, **faults: object
    ) -> tuple[Verdict, Verdict | None, int, int]:
        """One run with ``faults``, and after a clear error the same command without them.
        Returns both verdicts, the faults injected and the requests that leaked credentials."""
        out = fresh_out()
        argv = screen_args(proxy.base_url, out, strategy)
        proxy.configure(**{"rate": 0.0, "links_to_other": False, **faults})
        proxy.clear()
        first = judge(run_cli(argv, env=cli_env(), in_process=False), out, base)
        injected = sum(proxy.faults.values())
        KINDS_SEEN.update(proxy.faults)
        leaks = len(proxy.credential_leaks())
        then = None
        if first.kind == "clear_error":
            proxy.configure(rate=0.0)
            proxy.clear()
            then = judge(run_cli(argv, env=cli_env(), in_process=False), out, base)
            leaks += len(proxy.credential_leaks())
        return first, then, injected, leaks

    baselines: dict[str, dict] = {}
    base_requests: dict[str, int] = {}
    for strategy in strategies:
        out = fresh_out()
        proxy.configure(rate=0.0)
        proxy.clear()
        res = run_cli(screen_args(proxy.base_url, out, strategy), env=cli_env(), in_process=False)
        if res.returncode != 0:
            raise SystemExit(f"the fault-free {strategy} run failed:\n{res.stderr[-2000:]}")
        baselines[strategy] = outputs(out)
        base_requests[strategy] = len(proxy.requests("main"))
        progress(f"reference {strategy}: {base_requests[strategy]} requests")

    rows: list[Row] = []
    for rate in rates:
        for strategy in strategies:
            row = Row(f"{rate:>2}% {strategy}")
            for seed in range(1, seeds + 1):
                first, then, n, leaks = once(
                    strategy, baselines[strategy], rate=rate / 100, seed=seed
                )
                row.add(first, then, n, leaks)
                progress(f"{row.label} seed {seed}: {first.kind}")
            rows.append(row)

    for strategy in strategies:
        row = Row(f"other-origin links {strategy}")
        first, then, _, leaks = once(
            strategy,
            baselines[strategy],
            links_to_other=True,
            other_token=TOKEN,
            requires_access_token=False,
        )
        # Links to another origin are the server's layout, not a fault that goes away: the
        # required outcome is identical (funnel/full never need them; bulk files without
        # requiresAccessToken are fetched without credentials) or a refusal naming the origin,
        # which the same command repeats until the user allows it (--allow-origin).
        refused = first.kind == "clear_error" and "--allow-origin" in first.message
        row.add(first, None if refused else then, 0, leaks)
        progress(f"{row.label}: {first.kind}")
        rows.append(row)

    for strategy in strategies:
        row = Row(f"SIGKILL + rerun {strategy}")
        for seed in range(1, kills + 1):
            point = random.Random(f"{strategy}-{seed}").randint(1, max(1, base_requests[strategy]))
            out = fresh_out()
            argv = screen_args(proxy.base_url, out, strategy)
            proxy.configure(rate=0.0, links_to_other=False)
            proxy.clear()
            killed = run_killed(argv, env=cli_env(), kill_when=_after(proxy, point))
            then = judge(run_cli(argv, env=cli_env(), in_process=False), out, baselines[strategy])
            leaks = len(proxy.credential_leaks())
            # A kill is not an error the tool reports: count it as a clear stop, then resume.
            stop = Verdict("clear_error", -9, "SIGKILL") if killed else then
            row.add(stop, then if killed else None, 0, leaks)
            progress(f"{row.label} seed {seed}: killed={killed} then {then.kind}")
        rows.append(row)
    return rows


def _after(proxy: FaultProxy, n: int) -> Callable[[], bool]:
    return lambda: len(proxy.requests("main")) >= n


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def print_table(rows: list[Row], seconds: float) -> None:
    head = (
        f"{'matrix':<28} {'runs':>5} {'faults':>7} {'identical':>9} {'clear err':>9} "
        f"{'resumed':>7} {'exit0-diff':>10} {'unclear':>7} {'no-resume':>9} {'cred-leak':>9}"
    )
    print(head)
    print("-" * len(head))
    total = Row("total")
    for r in [*rows, total]:
        if r is not total:
            for name in (
                "runs",
                "faults",
                "identical",
                "clear",
                "resumed",
                "different",
                "unclear",
                "not_resumed",
                "leaks",
            ):
                setattr(total, name, getattr(total, name) + getattr(r, name))
        else:
            print("-" * len(head))
        print(
            f"{r.label:<28} {r.runs:>5} {r.faults:>7} {r.identical:>9} {r.clear:>9} "
            f"{r.resumed:>7} {r.different:>10} {r.unclear:>7} {r.not_resumed:>9} {r.leaks:>9}"
        )
    for r in rows:
        for ex in r.examples:
            print(f"  {r.label}: {ex}")
    if KINDS_SEEN:
        print("faults by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(KINDS_SEEN.items())))
    print(f"wall time {seconds:.0f} s; exit0-diff, unclear, no-resume and cred-leak must be 0")


if __name__ == "__main__":
    sys.exit(main())
