"""``KeyTable``: per-key state, bounded in count and in idle time.

Why: the limiter's key states and the breakers were plain dicts that kept every (endpoint,
model, tenant) for ever. Model names and API keys can be user input (a service passing a
caller's ``model=`` through, names the server rejects): 3000 names cost 29 MB and a 5.4 MB
metrics page. Here an entry unused for ``idle_s`` is forgotten, and past ``max_keys`` the least
recently used idle entries are; an entry in use (``busy``) is never forgotten, so a call in
flight, a queue or an open breaker keeps its state. Not locked: its owner's lock guards it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from rat_langchain.guards.key import Key

__all__ = ["KeyTable"]

V = TypeVar("V")
_log = logging.getLogger("rat_langchain.guards")


class KeyTable(Generic[V]):
    """``obtain(key)`` finds or makes a key's entry and marks it used; ``peek`` only finds."""

    def __init__(
        self,
        make: Callable[[Key], V],
        *,
        busy: Callable[[V], bool],
        max_keys: int,
        idle_s: float,
        clock: Callable[[], float],
        what: str,
        last_used: Callable[[V], float] | None = None,
    ) -> None:
        """``last_used``: when an entry was last used, where the entry knows better than the
        table (a breaker is used through guards that hold it, without ``obtain``)."""
        if max_keys < 1 or idle_s <= 0:
            raise ValueError(f"max_keys must be >= 1 and idle_s > 0, got {max_keys}, {idle_s}")
        self._make = make
        self._busy = busy
        self.max_keys = max_keys
        self.idle_s = idle_s
        self._clock = clock
        self._what = what
        self._last_used = last_used
        self._entries: OrderedDict[Key, tuple[V, float]] = OrderedDict()  # oldest obtain first
        self._swept = clock()
        self._warned = False

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Key) -> V | None:
        found = self._entries.get(key)
        return None if found is None else found[0]

    def obtain(self, key: Key) -> V:
        now = self._clock()
        found = self._entries.get(key)
        if found is not None:
            self._entries[key] = (found[0], now)
            self._entries.move_to_end(key)
            return found[0]
        self._forget(now)
        value = self._make(key)
        self._entries[key] = (value, now)
        return value

    def items(self) -> Iterator[tuple[Key, V]]:
        return iter([(key, value) for key, (value, _) in self._entries.items()])

    def values(self) -> Iterator[V]:
        return iter([value for value, _ in self._entries.values()])

    def _last(self, entry: tuple[V, float]) -> float:
        return entry[1] if self._last_used is None else self._last_used(entry[0])

    def _forget(self, now: float) -> None:
        """Before a new entry: now and then, drop the idle entries unused for ``idle_s``; at the
        cap, the least recently used idle ones (down to 90 % of it, so that cost is paid once
        per tenth of the cap)."""
        if now - self._swept >= min(self.idle_s / 10, 60.0):
            self._swept = now
            stale = now - self.idle_s
            for key, entry in list(self._entries.items()):
                if self._last(entry) <= stale and not self._busy(entry[0]):
                    del self._entries[key]
        if len(self._entries) < self.max_keys:
            return
        target = max(0, int(self.max_keys * 0.9) - 1)
        oldest_first = sorted(self._entries.items(), key=lambda item: self._last(item[1]))
        for key, (value, _) in oldest_first:
            if len(self._entries) <= target:
                break
            if not self._busy(value):
                del self._entries[key]
        if not self._warned:
            self._warned = True
            _log.warning(
                "%s: %d keys (endpoint, model, tenant) reached performance.keys.max_keys; the "
                "least recently used idle ones are forgotten (%d kept)",
                self._what,
                self.max_keys,
                len(self._entries),
            )
