"""The served process keeps the cyclic GC off what start-up built."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bandit_server.app import GC_THRESHOLDS, freeze_startup_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_freeze_startup_heap_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    survivor = [object()]  # a container alive at start-up
    freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    assert not any(obj is survivor for obj in gc.get_objects())  # frozen: no longer scanned
    assert gc.get_threshold() == GC_THRESHOLDS
