"""Bounded caches for Rank's hot path, where frontends send the same actions request after request.

Both are bounded by entries and by a caller-measured size (callers measure what an entry keeps
alive, not its wire form), and skip entries over a maximum size, so a client sending ever new,
large actions cannot make them hold much. When full they drop everything: cheaper per call than
keeping LRU order, and a working set of actions refills in one request each.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedDict(Generic[K, V]):
    def __init__(self, limit: int, max_size: int, max_entry_size: int) -> None:
        if min(limit, max_size, max_entry_size) < 1:
            raise ValueError(
                "limit, max_size and max_entry_size must be at least 1, "
                f"got {limit!r}, {max_size!r}, {max_entry_size!r}"
            )
        self._limit = limit
        self._max_size = max_size
        self._max_entry_size = max_entry_size
        self._size = 0
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V, size: int) -> None:
        """Keep `value` unless its `size` is over the entry maximum (then it is not kept)."""
        if size > self._max_entry_size:
            return
        if len(self._entries) >= self._limit or self._size + size > self._max_size:
            self._entries.clear()
            self._size = 0
        self._entries[key] = value
        self._size += size

    def __len__(self) -> int:
        return len(self._entries)


class IdentityMemo(Generic[V]):
    """Values derived from objects the caller reuses, keyed by the object's identity.

    Identity, not equality, on purpose: in Python True == 1.0 and False == 0.0, yet VW's JSON
    for them differs. Each entry holds its key, so the key's id cannot be reused while cached.
    """

    def __init__(self, limit: int, max_size: int, max_entry_size: int) -> None:
        self._entries: BoundedDict[int, tuple[object, V]] = BoundedDict(
            limit, max_size, max_entry_size
        )

    def get(self, key: object) -> V | None:
        entry = self._entries._entries.get(id(key))  # one call less: this runs per action
        if entry is not None and entry[0] is key:
            return entry[1]
        return None

    def put(self, key: object, value: V, size: int) -> None:
        self._entries.put(id(key), (key, value), size)

    def __len__(self) -> int:
        return len(self._entries)
