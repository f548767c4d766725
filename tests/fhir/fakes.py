"""Test doubles shared by the client and bulk tests."""

from __future__ import annotations


class FakeTime:
    """A clock that only moves when the code under test sleeps: no real waiting, and every
    requested sleep is recorded for the assertions."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
