"""What the trials of one pass share: keys (criteria, detail tables) more than one trial asks,
counted down as each trial is done, so whatever holds a key's data frees it after its last
use. One count serves the engine's shared outcomes and the history's shared digests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class KeyUses:
    """Per key asked by more than one trial, how many trials are still to ask it."""

    def __init__(self, keys_per_trial: Iterable[Iterable[str]] = ()) -> None:
        counts: Counter[str] = Counter()
        for keys in keys_per_trial:
            counts.update(set(keys))
        self._left = {k: n for k, n in counts.items() if n > 1}

    def __contains__(self, key: object) -> bool:
        return key in self._left

    def __bool__(self) -> bool:
        return bool(self._left)

    def done_with(self, keys: Iterable[str]) -> list[str]:
        """A trial has used ``keys``: the shared keys no later trial asks (free their data)."""
        last = []
        for key in set(keys):
            left = self._left.get(key)
            if left is None:
                continue
            if left > 1:
                self._left[key] = left - 1
            else:
                del self._left[key]
                last.append(key)
        return last
