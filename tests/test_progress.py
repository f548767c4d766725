"""The one Progress type and StageProgress (running counts -> bar advances)."""

from __future__ import annotations

from fhir_cohort.progress import Progress, StageProgress


def test_stage_progress_turns_running_counts_into_advances() -> None:
    seen: list[Progress] = []
    report = StageProgress(seen.append, "export", "files")
    report("kickoff", 0, 0)
    report("downloading", 3, 5)  # 2 resumed files and the first download: one jump of 3
    report("downloading", 4, 5)
    report("waiting", 0, 0, "waiting (10% done)")  # a new step restarts its count: no negative
    report("complete", 5, 5)
    assert [(p.step, p.advance, p.done, p.total) for p in seen] == [
        ("kickoff", 0, 0, None),
        ("downloading", 3, 3, 5),
        ("downloading", 1, 4, 5),
        ("waiting", 0, 0, None),
        ("complete", 5, 5, 5),
    ]
    assert {(p.stage, p.unit) for p in seen} == {("export", "files")}
    StageProgress(None, "fetch", "queries")("entry", 1, 1)  # no callback: nothing to do
