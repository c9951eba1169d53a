"""The bounded caches behind Rank's action reuse: bounds, and identity rather than equality."""

from __future__ import annotations

import pytest

from bandit_server.core.memo import BoundedDict, IdentityMemo


def test_bounded_dict_keeps_what_fits() -> None:
    cache: BoundedDict[str, int] = BoundedDict(limit=3, max_size=100, max_entry_size=100)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, 2, None)
    assert len(cache) == 2


def test_bounded_dict_starts_over_when_the_entry_limit_is_reached() -> None:
    cache: BoundedDict[str, int] = BoundedDict(limit=2, max_size=100, max_entry_size=100)
    cache.put("a", 1, 1)
    cache.put("b", 2, 1)
    cache.put("c", 3, 1)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, 3)
    assert len(cache) == 1


def test_bounded_dict_starts_over_when_the_size_would_pass_the_maximum() -> None:
    cache: BoundedDict[str, int] = BoundedDict(limit=100, max_size=10, max_entry_size=10)
    cache.put("a", 1, 6)
    cache.put("b", 2, 4)
    assert len(cache) == 2  # exactly at the maximum is allowed
    cache.put("c", 3, 1)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, 3)


def test_an_entry_larger_than_the_entry_maximum_is_not_kept_and_drops_nothing() -> None:
    cache: BoundedDict[str, int] = BoundedDict(limit=100, max_size=100, max_entry_size=10)
    cache.put("a", 1, 5)
    cache.put("big", 2, 11)
    assert (cache.get("a"), cache.get("big")) == (1, None)


@pytest.mark.parametrize("bounds", [(0, 10, 10), (10, 0, 10), (10, 10, 0), (-1, -1, -1)])
def test_bounds_below_one_are_refused_naming_all(bounds: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="got {}, {}, {}".format(*bounds)):
        BoundedDict(*bounds)


def test_identity_memo_does_not_merge_equal_objects() -> None:
    """True == 1.0 in Python, so equal-comparing keys must not share what was derived from one."""
    first, second = ("x", True), ("x", 1.0)
    assert first == second and hash(first) == hash(second)
    memo: IdentityMemo[str] = IdentityMemo(limit=10, max_size=100, max_entry_size=100)
    memo.put(first, "true", 4)
    assert memo.get(first) == "true"
    assert memo.get(second) is None


class _Key:
    pass


def test_identity_memo_keeps_its_keys_alive_so_their_ids_are_not_reused() -> None:
    """Once the caller drops a key, a new object at the same address must not hit its entry."""
    memo: IdentityMemo[str] = IdentityMemo(limit=10, max_size=100, max_entry_size=100)
    memo.put(_Key(), "old", 1)
    # CPython reuses freed addresses for new objects of the same size; were the key not held,
    # one of these would have the dropped key's id and get "old".
    assert all(memo.get(_Key()) is None for _ in range(1000))
