"""Progress reporting: library code calls a callback; only the CLI draws bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress update.

    ``stage`` names the bar (e.g. "read", "evaluate", "fetch"), ``advance`` is how many ``unit``
    were completed since the last update, ``total`` the expected total when known. ``unit``
    "note" marks a one-off message (e.g. which strategy was chosen and why), not a bar.
    """

    stage: str
    advance: int = 0
    total: int | None = None
    unit: str = "it"
    message: str | None = None


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: ignore every update."""
