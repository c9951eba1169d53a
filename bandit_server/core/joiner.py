"""The reward window of one event: what is learned, when, and with which cost.

Pure state transitions; the caller persists what they return. The window starts at Rank and
lasts the experiment's reward_wait_seconds, as in Personalizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from bandit_server.core.experiment import Aggregation
from bandit_server.core.types import MAX_REWARD, within_reward_limit
from bandit_server.errors import InvalidArgument


@dataclass(slots=True)
class OpenEvent:
    """An event whose reward window is open (or whose close is not yet processed)."""

    event_id: str
    deadline: float
    deferred: bool
    activated: bool = False
    learned: bool = False
    first_reward: float | None = None
    reward_sum: float = 0.0
    reward_count: int = 0

    @property
    def active(self) -> bool:
        return self.activated or not self.deferred


def _cost(reward: float) -> float:
    """The cost VW learns for a reward, within ±MAX_REWARD whatever got logged before that
    limit existed (or summed under another aggregation)."""
    return -within_reward_limit(reward)


def on_reward(
    event: OpenEvent, value: float, now: float, aggregation: Aggregation
) -> tuple[bool, float | None]:
    """(late, cost to learn now or None)."""
    if now > event.deadline:
        return True, None
    if event.learned:
        return False, None
    if aggregation is Aggregation.SUM:
        total = event.reward_sum + value
        # Checked before any change: the call fails, nothing moves. Only a reward that takes
        # the total further out is refused (an aggregation changed from EARLIEST can leave a
        # total past the limit; _cost bounds what is learned from it).
        if abs(total) > MAX_REWARD and abs(total) > abs(event.reward_sum):
            raise InvalidArgument(
                "value",
                f"{value!r} would bring the event's summed reward to {total!r}, beyond "
                f"{MAX_REWARD:g} in magnitude, the most VW can learn from safely",
            )
    if event.first_reward is None:
        event.first_reward = value
    event.reward_sum += value
    event.reward_count += 1
    if aggregation is Aggregation.EARLIEST and event.active:
        event.learned = True
        # The first reward, not this one: rewards summed before a switch from SUM came first.
        return False, _cost(event.first_reward)
    return False, None


def on_activate(
    event: OpenEvent, now: float, aggregation: Aggregation
) -> tuple[bool, float | None]:
    """(late, cost to learn now or None). Activating twice is harmless."""
    if now > event.deadline:
        return True, None
    if event.activated:
        return False, None
    event.activated = True
    if aggregation is Aggregation.EARLIEST and event.first_reward is not None and not event.learned:
        event.learned = True
        return False, _cost(event.first_reward)
    return False, None


def on_close(event: OpenEvent, aggregation: Aggregation, default_reward: float) -> float | None:
    """The cost to learn when the window closes, or None (already learned, or never activated)."""
    if event.learned or not event.active:
        return None
    event.learned = True
    if aggregation is Aggregation.SUM and event.reward_count:
        return _cost(event.reward_sum)
    if aggregation is Aggregation.EARLIEST and event.first_reward is not None:
        return _cost(event.first_reward)
    return _cost(default_reward)


State = tuple[bool, bool, float | None, float, int]


def snapshot(event: OpenEvent) -> State:
    """The window's state, to put back with `restore` if what changed it cannot be logged."""
    return (
        event.activated,
        event.learned,
        event.first_reward,
        event.reward_sum,
        event.reward_count,
    )


def restore(event: OpenEvent, state: State) -> None:
    (
        event.activated,
        event.learned,
        event.first_reward,
        event.reward_sum,
        event.reward_count,
    ) = state
