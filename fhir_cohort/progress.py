"""Progress reporting: library code calls a callback; only the CLI draws bars.

One type for the whole package, ``fhir/`` included (it imports this module, as it imports
``files``): the reader, the evaluation, the REST fetch and the Bulk export all report
:class:`Progress`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress update.

    ``stage`` names the bar (e.g. "read", "evaluate", "fetch", "export"), ``advance`` is how
    many ``unit`` were completed since the last update, ``total`` the expected total when
    known. ``unit`` "note" marks a one-off message (e.g. which strategy was chosen and why),
    not a bar. ``step`` is where a stage is (fetch: "entry", "follow-up", "medications",
    "full", "write"; export: "kickoff", "waiting", "downloading", "complete") and ``done`` the
    units completed so far in that step, for callers that want counts rather than a bar.
    """

    stage: str
    advance: int = 0
    total: int | None = None
    unit: str = "it"
    message: str | None = None
    step: str | None = None
    done: int | None = None


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: ignore every update."""


class StageProgress:
    """Reports a stage's running count as :class:`Progress`: ``advance`` is the increase since
    the previous report (never negative: a new step may start its count again). Thread-safe:
    download and fetch workers report from their own threads."""

    def __init__(self, callback: ProgressCallback | None, stage: str, unit: str) -> None:
        self.callback = callback
        self.stage = stage
        self.unit = unit
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self, step: str, done: int, total: int | None, message: str | None = None) -> None:
        if self.callback is None:
            return
        with self._lock:
            advance = max(0, done - self._last)
            self._last = done
            self.callback(
                Progress(
                    self.stage,
                    advance,
                    total=total or None,
                    unit=self.unit,
                    message=message,
                    step=step,
                    done=done,
                )
            )
