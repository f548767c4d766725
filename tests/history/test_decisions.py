"""Chart-review decisions in the history: saving with version checks and an audit row per
change, validation, the worklist's queues and flags across runs."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cohort.errors import DecisionConflict, DecisionError, FhirCohortError
from fhir_cohort.history import (
    CONTACT_STATUSES,
    DECISIONS,
    SCHEMA_VERSION,
    WORKLIST_COLUMNS,
    Decision,
    History,
    open_history,
)
from tests.history.conftest import record
from tests.history.legacy import record_v3

DECIDED = "2026-11-12"


def _counts(history: History) -> tuple[int, int]:
    one = history.conn.execute
    return (
        one("SELECT count(*) FROM decisions").fetchone()[0],
        one("SELECT count(*) FROM decision_log").fetchone()[0],
    )


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with open_history(tmp_path / "h.sqlite") as h:
        record(h, "2026-11-10", patients={"p1": "eligible", "p2": "review", "p3": "ineligible"})
        yield h


def test_a_save_is_versioned_and_every_changed_field_is_logged(history: History) -> None:
    assert history.decision("T-1", "p1") is None and history.decisions("T-1") == []
    first = history.save_decision(
        "T-1", "p1", decision="eligible", who="ana", expected_version=0, when=DECIDED
    )
    assert first == Decision(
        "T-1", "p1", "eligible", None, "not_contacted", None, "ana",
        f"{DECIDED}T00:00:00+00:00", 1, 1,
    )  # fmt: skip
    # a field left out keeps its value; text is stripped, empty text is none
    second = history.save_decision(
        "T-1", "p1", contact_status="attempt_1", note="  left a message ", who="bo",
        expected_version=1,
    )  # fmt: skip
    assert (second.decision, second.contact_status, second.note) == (
        "eligible",
        "attempt_1",
        "left a message",
    )
    assert (second.version, second.decided_by) == (2, "bo")
    third = history.save_decision(
        "T-1", "p1", decision="ineligible", reason="nephritis class II", note="",
        who="ana", expected_version=2,
    )  # fmt: skip
    assert (third.version, third.note) == (3, None)
    same = history.save_decision("T-1", "p1", who="cy", expected_version=3)
    assert same.version == 4 and same.decision == "ineligible"
    log = [
        (e.field, e.previous_value, e.value, e.changed_by, e.version)
        for e in history.decision_log("T-1", "p1")
    ]
    assert log == [
        ("decision", None, "eligible", "ana", 1),
        ("contact_status", None, "not_contacted", "ana", 1),
        ("contact_status", "not_contacted", "attempt_1", "bo", 2),
        ("note", None, "left a message", "bo", 2),
        ("decision", "eligible", "ineligible", "ana", 3),
        ("reason", None, "nephritis class II", "ana", 3),
        ("note", "left a message", None, "ana", 3),
        ("confirmed", "1", "1", "cy", 4),
    ]
    assert all(e.changed_at and e.run_id == 1 for e in history.decision_log())
    assert history.decisions("T-1") == [same] and history.decision_log("T-9") == []


def test_every_decision_and_contact_status_is_accepted(history: History) -> None:
    version = 0
    for decision, contact in itertools.product((*DECISIONS, None), CONTACT_STATUSES):
        saved = history.save_decision(
            "T-1", "p2", decision=decision, reason="a reason", contact_status=contact,
            who="ana", expected_version=version,
        )  # fmt: skip
        assert (saved.decision, saved.contact_status) == (decision, contact)
        version = saved.version
    assert version == (len(DECISIONS) + 1) * len(CONTACT_STATUSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision": "maybe"}, "decision 'maybe': not one of eligible, ineligible"),
        ({"decision": "Eligible"}, "not one of"),
        ({"contact_status": "called"}, "contact status 'called': not one of not_contacted"),
        ({"contact_status": None, "decision": "ineligible"}, "needs a reason"),
        ({"decision": "ineligible", "reason": "   "}, "needs a reason"),
        ({"who": " "}, "who: the person saving"),
        ({"patient_id": "p-unknown"}, "not screened in any run of this trial"),
        ({"trial_id": "T-9"}, "trial 'T-9': no run of it"),
        ({"note": "x" * 5000}, "note: longer than 4000"),
        ({"note": 3}, "note: text expected"),
        ({"when": "last tuesday"}, "not an ISO 8601 date"),
    ],
)
def test_an_invalid_save_is_refused_and_writes_nothing(
    history: History, change: dict[str, object], message: str
) -> None:
    history.save_decision("T-1", "p1", decision="eligible", who="ana", expected_version=0)
    before = _counts(history)
    args: dict[str, object] = {"trial_id": "T-1", "patient_id": "p1", "who": "bo"} | change
    with pytest.raises(DecisionError, match=message) as caught:
        history.save_decision(expected_version=1, **args)  # type: ignore[arg-type]
    assert isinstance(caught.value, FhirCohortError) and isinstance(caught.value, ValueError)
    assert "p1" not in str(caught.value)  # no patient in the message
    assert _counts(history) == before


def test_a_stale_version_is_a_conflict_and_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with open_history(path) as setup:
        record(setup, "2026-11-10", patients={"p1": "review"})
    # two coordinators, two connections, both read the patient undecided
    with open_history(path) as ana, open_history(path) as bo:
        read_by_ana = ana.decision("T-1", "p1")
        read_by_bo = bo.decision("T-1", "p1")
        assert read_by_ana is read_by_bo is None
        ana.save_decision(
            "T-1", "p1", decision="ineligible", reason="class II", note="secret note",
            who="ana", expected_version=0,
        )  # fmt: skip
        with pytest.raises(DecisionConflict) as caught:
            bo.save_decision("T-1", "p1", decision="eligible", who="bo", expected_version=0)
        conflict = caught.value
        assert (conflict.expected, conflict.actual) == (0, 1)
        assert isinstance(conflict.current, Decision) and conflict.current.decided_by == "ana"
        assert not any(s in str(conflict) for s in ("p1", "secret", "class II", "ana"))
        # bo's save wrote nothing; reloaded, it goes through on top of ana's
        assert bo.decision("T-1", "p1") == conflict.current
        assert [e.changed_by for e in bo.decision_log()] == ["ana"] * 4
        bo.save_decision("T-1", "p1", decision="eligible", who="bo", expected_version=1)
        with pytest.raises(DecisionConflict):  # a version from the future is stale too
            ana.save_decision("T-1", "p1", who="ana", expected_version=5)
        final = ana.decision("T-1", "p1")
        assert final is not None and (final.decision, final.version) == ("eligible", 2)


def _weeks(history: History) -> int:
    """Two runs: decisions made on the first, the second brings new evidence for some."""
    old_c = [{"resource_type": "Condition", "resource_id": "c-old", "date": "2026-01-05"}]
    record(
        history,
        "2026-11-10",
        patients={
            "kept": "eligible",
            "decided-review": "review",
            "changed": "review",
            "backdated": "eligible",
            "removed": "eligible",
            "declined": "ineligible",
            "dnc": "eligible",
            "undecided-review": "review",
            "undecided-eligible": "eligible",
            "info": "eligible",
            "out": "ineligible",
        },
        evidence={("removed", "sle"): [*old_c, {**old_c[0], "resource_id": "c-2"}]},
    )
    saves = {
        "kept": {"decision": "eligible", "contact_status": "attempt_2"},
        "decided-review": {"decision": "ineligible", "reason": "nephritis class II"},
        "changed": {"decision": "eligible"},
        "backdated": {"decision": "eligible"},
        "removed": {"decision": "eligible"},
        "declined": {"contact_status": "declined"},
        "dnc": {"decision": "eligible", "contact_status": "do_not_contact"},
        "info": {"decision": "needs_information", "note": "ask for the biopsy"},
    }
    for pid, fields in saves.items():
        history.save_decision("T-1", pid, who="ana", expected_version=0, when=DECIDED, **fields)  # type: ignore[arg-type]
    return record(
        history,
        "2026-11-24",
        patients={
            "kept": "eligible",
            "decided-review": "review",
            "changed": "ineligible",  # sle not_met on a record dated after the decision
            "backdated": "review",  # sle unknown on a record the first run did not have
            "removed": "review",  # sle unknown: a record went away, nothing new
            "declined": "eligible",  # would be new, but declined
            "dnc": "ineligible",
            "undecided-review": "review",
            "undecided-eligible": "eligible",
            "info": "eligible",
            "out": "ineligible",
            "newcomer": "eligible",
        },
        evidence={
            ("changed", "sle"): [
                {"resource_type": "Condition", "resource_id": "c-new", "date": "2026-11-20"}
            ],
            ("backdated", "sle"): [
                {"resource_type": "Condition", "resource_id": "c-late", "date": "2026-10-01"}
            ],
            ("removed", "sle"): old_c,
        },
    )


def test_the_worklist_keeps_decisions_and_flags_new_evidence(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.sqlite") as history:
        _check_worklist(history)


def _check_worklist(history: History) -> None:
    second = _weeks(history)
    work = history.worklist("T-1")
    assert work.run.run_id == second and work.previous_run_id == 1
    table = {
        e.patient_id: (e.status, e.queue, e.flags, e.contact_status, e.re_review_criteria)
        for e in work.entries
    }
    rr, new = "re-review: new evidence", "new"
    assert table == {
        "changed": ("ineligible", "review", (rr,), "not_contacted", ("sle",)),
        "backdated": ("review", "review", (rr,), "not_contacted", ("sle",)),
        "info": ("eligible", "review", (), "not_contacted", ()),
        "undecided-review": ("review", "review", (), "not_contacted", ()),
        "newcomer": ("eligible", "candidate", (new,), "not_contacted", ()),
        "undecided-eligible": ("eligible", "candidate", (), "not_contacted", ()),
        "declined": ("eligible", "candidate", (), "declined", ()),
        "decided-review": ("review", "decided", (), "not_contacted", ()),
        "removed": ("review", "decided", (), "not_contacted", ()),
        "kept": ("eligible", "decided", (), "attempt_2", ()),
        "dnc": ("ineligible", "decided", (), "do_not_contact", ()),
    }
    # sorted: queue, re-reviews first, then review before eligible, then id
    assert [e.patient_id for e in work.entries][:4] == [
        "backdated", "changed", "undecided-review", "info",
    ]  # fmt: skip
    assert [e.patient_id for e in work.queue] == [e.patient_id for e in work.entries][:4]
    assert {e.patient_id for e in work.candidates} == {
        "newcomer",
        "undecided-eligible",
        "declined",
    }
    answers = history.patient_answers(second, "changed")
    assert [(a.criterion_id, a.answer) for a in answers] == [
        ("age", "met"),
        ("sle", "not_met"),
        ("pregnancy", "clear"),
    ]
    assert [e["resource_id"] for e in answers[1].evidence] == ["c-new"]
    assert answers[1].reason == "sle reason" and history.patient_answers(second, "nobody") == []
    changed = work.entry("changed")
    assert changed is not None and changed.decision is not None
    assert changed.decision.decision == "eligible" and changed.version == 1  # kept, flagged
    assert changed.reasons == "sle: not_met: sle reason"
    frame = work.frame()
    assert list(frame.columns) == list(WORKLIST_COLUMNS) and len(frame) == len(table)
    # the first run's worklist: nothing is new in a trial's first run
    first = history.worklist("T-1", second - 1)
    assert not any(e.new or e.re_review for e in first.entries)
    # a re-review saved (even unchanged) is made on the latest run: the flag clears
    history.save_decision("T-1", "changed", who="bo", expected_version=1)
    again = history.worklist("T-1").entry("changed")
    assert again is not None and (again.queue, again.flags) == ("decided", ())
    with pytest.raises(DecisionError, match="no run of it"):
        history.worklist("T-9")


def test_sigkill_mid_import_loses_nothing_committed_and_corrupts_nothing(tmp_path: Path) -> None:
    """A child process killed inside the import's transaction (after one save, mid-way
    through the next): the history holds what was committed before, nothing of the import,
    passes SQLite's integrity check, and the same import then goes through."""
    from tests import zygote
    from tests.cli_main import run_main

    path = tmp_path / "h.sqlite"
    with open_history(path) as history:
        record(history, "2026-11-10", patients={f"p{i}": "review" for i in range(1, 5)})
        history.save_decision("T-1", "p1", decision="eligible", who="ana", expected_version=0)
        before = (history.decisions("T-1"), history.decision_log())
    rows = [
        "patient_id,decision,reason,contact_status,note,version",
        "p1,eligible,,attempt_1,called once,1",
        "p2,ineligible,class II nephritis,,,",
        "p3,needs_information,,,biopsy?,",
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    argv = ["decisions", "import", "--history", str(path), "--trial", "T-1", "--who", "bo"]
    argv.append(str(tmp_path / "d.csv"))
    # p1's save logs 2 rows (contact status, note); die at p2's second row
    env = {**os.environ, "KILLABLE_LOG_ROW": "4"}
    killed = zygote.run(argv, env=env, hooks=["tests.history.killable:install"], timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with open_history(path, create=False) as history:
        assert history.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert (history.decisions("T-1"), history.decision_log()) == before
    done = run_main(argv)
    assert done.returncode == 0 and "saved 3, 0 unchanged" in done.stdout, done.stderr
    with open_history(path, create=False) as history:
        assert [d.version for d in history.decisions("T-1")] == [2, 1, 1]


def test_a_version_2_history_with_decisions_is_migrated_and_usable(tmp_path: Path) -> None:
    """Schema 2 had the decision tables (no API wrote them; a site's script might have): its
    rows read back, their audit rows without a version, and the next save continues."""
    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    old = History(path, conn)
    assert old.migrate(target=2) == 2
    record_v3(old, "2026-11-10", patients={"p1": "review"})
    conn.execute(
        "INSERT INTO decisions VALUES ('T-1', 1, 'eligible', NULL, 'attempt_1', 'n', 'ana', "
        "'2026-11-12T09:00:00+00:00', 1, 1)"
    )
    conn.execute(
        "INSERT INTO decision_log (trial_id, patient_key, field, previous_value, value, "
        "changed_by, changed_at, run_id) VALUES ('T-1', 1, 'decision', NULL, 'eligible', 'ana', "
        "'2026-11-12T09:00:00+00:00', 1)"
    )
    conn.close()
    with open_history(path) as history:
        assert history.schema_version() == SCHEMA_VERSION
        saved = history.decision("T-1", "p1")
        assert saved is not None and (saved.decision, saved.version) == ("eligible", 1)
        assert [e.version for e in history.decision_log()] == [None]
        history.save_decision("T-1", "p1", decision="ineligible", reason="r", who="bo",
                              expected_version=1)  # fmt: skip
        assert [e.version for e in history.decision_log()] == [None, 2, 2]


def test_concurrent_saves_from_two_connections_never_lose_an_update(tmp_path: Path) -> None:
    """Two threads, each with its own connection, read the version and save on it, over and
    over: every save either lands on the version it read or is a conflict; the log holds
    exactly the saves that landed, one version after the other."""
    import threading

    path = tmp_path / "h.sqlite"
    with open_history(path) as setup:
        record(setup, "2026-11-10", patients={"p1": "review"})
    landed: dict[str, list[int]] = {"ana": [], "bo": []}
    conflicts: dict[str, int] = {"ana": 0, "bo": 0}
    start = threading.Barrier(2)

    def coordinator(name: str) -> None:
        with open_history(path, create=False) as mine:
            start.wait()
            for i in range(25):
                seen = mine.decision("T-1", "p1")
                try:
                    saved = mine.save_decision(
                        "T-1", "p1", note=f"{name} {i}", who=name,
                        expected_version=seen.version if seen else 0,
                    )  # fmt: skip
                except DecisionConflict:
                    conflicts[name] += 1
                else:
                    landed[name].append(saved.version)

    threads = [threading.Thread(target=coordinator, args=(n,)) for n in landed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = sorted(landed["ana"] + landed["bo"])
    assert versions == list(range(1, len(versions) + 1))  # no version written twice
    assert len(versions) + sum(conflicts.values()) == 50
    with open_history(path, create=False) as history:
        final = history.decision("T-1", "p1")
        assert final is not None and final.version == len(versions)
        log = history.decision_log("T-1", "p1")
        notes = [e for e in log if e.field == "note"]
        assert [e.version for e in notes] == versions
        # each save's previous value is the note the save before it wrote: none lost
        assert [e.previous_value for e in notes[1:]] == [e.value for e in notes[:-1]]
