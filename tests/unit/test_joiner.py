"""Reward windows: every transition of on_reward, on_activate and on_close."""

from __future__ import annotations

import pytest

from bandit_server.core.experiment import Aggregation
from bandit_server.core.joiner import OpenEvent, on_activate, on_close, on_reward, snapshot
from bandit_server.errors import InvalidArgument

EARLIEST, SUM = Aggregation.EARLIEST, Aggregation.SUM
DEADLINE = 100.0
IN_TIME, AT_DEADLINE, LATE = 50.0, DEADLINE, DEADLINE + 1e-9
DEFAULT = 0.25


def _event(deferred: bool = False) -> OpenEvent:
    return OpenEvent("e1", deadline=DEADLINE, deferred=deferred)


@pytest.mark.parametrize(
    ("deferred", "activated", "active"),
    [(False, False, True), (False, True, True), (True, False, False), (True, True, True)],
)
def test_active_means_activated_or_not_deferred(
    deferred: bool, activated: bool, active: bool
) -> None:
    """An event counts as active unless it was deferred and not yet activated."""
    assert OpenEvent("e", 1.0, deferred, activated=activated).active is active


# -- EARLIEST, not deferred -----------------------------------------------------------------


def test_earliest_learns_the_first_reward_at_once_as_a_cost() -> None:
    """EARLIEST: the first in-time reward is learned immediately with cost = -reward."""
    event = _event()
    assert on_reward(event, 2.0, IN_TIME, EARLIEST) == (False, -2.0)
    assert event.learned and event.first_reward == 2.0


def test_earliest_after_a_switch_from_sum_learns_the_first_reward_not_the_latest() -> None:
    """Rewards received under SUM still came first: a switch to EARLIEST learns the first."""
    event = _event()
    assert on_reward(event, 1.0, IN_TIME, SUM) == (False, None)
    assert on_reward(event, 5.0, IN_TIME + 1, EARLIEST) == (False, -1.0)
    assert event.learned


def test_earliest_ignores_rewards_after_it_learned() -> None:
    """EARLIEST: a reward after the event was learned is neither late nor learned nor recorded."""
    event = _event()
    on_reward(event, 2.0, IN_TIME, EARLIEST)
    assert on_reward(event, 5.0, IN_TIME + 1, EARLIEST) == (False, None)
    assert (event.first_reward, event.reward_sum, event.reward_count) == (2.0, 2.0, 1)
    assert on_close(event, EARLIEST, DEFAULT) is None


def test_a_reward_at_the_deadline_is_in_time() -> None:
    """now == deadline is still inside the window."""
    event = _event()
    assert on_reward(event, 1.0, AT_DEADLINE, EARLIEST) == (False, -1.0)


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_a_late_reward_is_flagged_and_changes_nothing(aggregation: Aggregation) -> None:
    """A reward after the deadline is late: not learned, not counted, state untouched."""
    event = _event()
    assert on_reward(event, 1.0, LATE, aggregation) == (True, None)
    assert event == _event()


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_a_late_reward_after_learning_is_still_flagged_late(aggregation: Aggregation) -> None:
    """Lateness is reported even for an event that was already learned."""
    event = _event()
    on_reward(event, 1.0, IN_TIME, aggregation)
    on_close(event, aggregation, DEFAULT)
    assert event.learned
    assert on_reward(event, 1.0, LATE, aggregation) == (True, None)


def test_earliest_learns_a_zero_reward_as_zero_not_the_default() -> None:
    """EARLIEST: a reward of 0 is a real reward (cost -0.0), not a missing one."""
    event = _event()
    late, cost = on_reward(event, 0.0, IN_TIME, EARLIEST)
    assert (late, cost) == (False, 0.0)


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_no_reward_learns_the_default_at_close(aggregation: Aggregation) -> None:
    """An active event with no reward learns -default_reward when its window closes, once."""
    event = _event()
    assert on_close(event, aggregation, DEFAULT) == -DEFAULT
    assert event.learned
    assert on_close(event, aggregation, DEFAULT) is None


# -- SUM, not deferred ----------------------------------------------------------------------


def test_sum_accumulates_in_time_rewards_and_learns_their_sum_at_close() -> None:
    """SUM: rewards are added up but nothing is learned until the close, which learns -sum."""
    event = _event()
    assert on_reward(event, 1.0, IN_TIME, SUM) == (False, None)
    assert on_reward(event, 2.5, AT_DEADLINE, SUM) == (False, None)
    assert on_reward(event, 100.0, LATE, SUM) == (True, None)
    assert not event.learned
    assert (event.first_reward, event.reward_sum, event.reward_count) == (1.0, 3.5, 2)
    assert on_close(event, SUM, DEFAULT) == -3.5
    assert event.learned


def test_sum_of_rewards_that_cancel_is_learned_as_zero_not_the_default() -> None:
    """SUM: rewards that sum to 0 are learned as 0; the default applies only with no rewards."""
    event = _event()
    on_reward(event, 1.0, IN_TIME, SUM)
    on_reward(event, -1.0, IN_TIME, SUM)
    assert on_close(event, SUM, DEFAULT) == 0.0


def test_sum_ignores_rewards_after_the_close_learned_it() -> None:
    """SUM: an in-time reward arriving after the close (the event is learned) is ignored."""
    event = _event()
    on_reward(event, 1.0, IN_TIME, SUM)
    on_close(event, SUM, DEFAULT)
    assert on_reward(event, 2.0, IN_TIME, SUM) == (False, None)
    assert event.reward_sum == 1.0


# -- deferred -------------------------------------------------------------------------------


def test_earliest_deferred_holds_a_reward_until_activation() -> None:
    """EARLIEST, deferred: a reward before activation is remembered; activation learns it."""
    event = _event(deferred=True)
    assert on_reward(event, 3.0, IN_TIME, EARLIEST) == (False, None)
    assert on_reward(event, 7.0, IN_TIME, EARLIEST) == (False, None)
    assert not event.learned
    assert on_activate(event, IN_TIME + 1, EARLIEST) == (False, -3.0)
    assert event.learned and event.activated
    assert on_close(event, EARLIEST, DEFAULT) is None


def test_earliest_deferred_activation_learns_a_held_zero_reward() -> None:
    """EARLIEST, deferred: a held reward of 0 is learned at activation (presence, not truth)."""
    event = _event(deferred=True)
    on_reward(event, 0.0, IN_TIME, EARLIEST)
    assert on_activate(event, IN_TIME, EARLIEST) == (False, 0.0)


def test_earliest_deferred_reward_after_activation_is_learned_at_once() -> None:
    """EARLIEST, deferred: once activated, the first reward is learned immediately."""
    event = _event(deferred=True)
    assert on_activate(event, IN_TIME, EARLIEST) == (False, None)
    assert not event.learned
    assert on_reward(event, 4.0, IN_TIME, EARLIEST) == (False, -4.0)
    assert event.learned


def test_sum_deferred_counts_rewards_before_and_after_activation() -> None:
    """SUM, deferred: activation learns nothing; the close learns every in-time reward."""
    event = _event(deferred=True)
    assert on_reward(event, 1.0, IN_TIME, SUM) == (False, None)
    assert on_activate(event, IN_TIME, SUM) == (False, None)
    assert on_reward(event, 2.0, IN_TIME, SUM) == (False, None)
    assert not event.learned
    assert on_close(event, SUM, DEFAULT) == -3.0


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_deferred_and_never_activated_is_never_learned(aggregation: Aggregation) -> None:
    """A deferred event that is not activated learns nothing, even with rewards, even at close."""
    event = _event(deferred=True)
    on_reward(event, 1.0, IN_TIME, aggregation)
    assert on_close(event, aggregation, DEFAULT) is None
    assert not event.learned


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_deferred_activated_without_reward_learns_the_default(aggregation: Aggregation) -> None:
    """An activated deferred event with no reward learns -default_reward at close."""
    event = _event(deferred=True)
    on_activate(event, AT_DEADLINE, aggregation)
    assert on_close(event, aggregation, DEFAULT) == -DEFAULT


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_a_late_activation_is_flagged_and_leaves_the_event_inactive(
    aggregation: Aggregation,
) -> None:
    """Activation after the deadline is late: the event stays inactive and is never learned."""
    event = _event(deferred=True)
    on_reward(event, 1.0, IN_TIME, aggregation)
    assert on_activate(event, LATE, aggregation) == (True, None)
    assert not event.activated and not event.active
    assert on_close(event, aggregation, DEFAULT) is None


@pytest.mark.parametrize("aggregation", [EARLIEST, SUM])
def test_activating_twice_is_harmless(aggregation: Aggregation) -> None:
    """A second activation returns nothing and never learns the event a second time."""
    event = _event(deferred=True)
    on_reward(event, 2.0, IN_TIME, aggregation)
    first = on_activate(event, IN_TIME, aggregation)
    assert first == ((False, -2.0) if aggregation is EARLIEST else (False, None))
    assert on_activate(event, IN_TIME, aggregation) == (False, None)
    expected_close = None if aggregation is EARLIEST else -2.0
    assert on_close(event, aggregation, DEFAULT) == expected_close
    assert on_activate(event, IN_TIME, aggregation) == (False, None)


def test_activating_an_event_that_was_not_deferred_learns_nothing_new() -> None:
    """Activate on a non-deferred, already learned event is accepted and learns nothing."""
    event = _event()
    on_reward(event, 1.0, IN_TIME, EARLIEST)
    assert on_activate(event, IN_TIME, EARLIEST) == (False, None)


def test_sum_refuses_a_reward_that_would_take_the_sum_past_what_vw_learns_safely() -> None:
    """Each reward is within 1e15, but their sum must be too: the one that would pass it is
    INVALID_ARGUMENT naming `value`, and the window is left exactly as it was."""
    event = _event()
    assert on_reward(event, 6e14, IN_TIME, SUM) == (False, None)
    before = snapshot(event)
    with pytest.raises(InvalidArgument) as info:
        on_reward(event, 6e14, IN_TIME, SUM)
    assert info.value.field == "value" and "1200000000000000.0" in str(info.value)
    assert snapshot(event) == before
    assert on_reward(event, -6e14, IN_TIME, SUM) == (False, None)  # back within bounds: fine
    assert on_close(event, SUM, DEFAULT) == -0.0


def test_what_is_learned_stays_within_the_limit_whatever_was_summed_before() -> None:
    """An event summed under EARLIEST (deferred, not yet active) and closed after the experiment
    switched to SUM learns at most 1e15; a SUM reward that does not take the total further out
    is still taken, one that does is refused."""
    event = _event(deferred=True)
    for _ in range(3):
        assert on_reward(event, 1e15, IN_TIME, EARLIEST) == (False, None)
    assert event.reward_sum > 1e15
    assert on_reward(event, 0.0, IN_TIME, SUM) == (False, None)
    assert on_reward(event, -1e14, IN_TIME, SUM) == (False, None)
    with pytest.raises(InvalidArgument):
        on_reward(event, 1e14, IN_TIME, SUM)
    assert on_activate(event, IN_TIME, SUM) == (False, None)
    assert on_close(event, SUM, DEFAULT) == -1e15


def test_a_first_reward_logged_before_the_limit_is_learned_within_it() -> None:
    """Replayed from an older log, an EARLIEST reward past 1e15 is learned as 1e15."""
    event = _event(deferred=True)
    event.first_reward, event.reward_sum, event.reward_count = -1e35, -1e35, 1
    assert on_activate(event, IN_TIME, EARLIEST) == (False, 1e15)
