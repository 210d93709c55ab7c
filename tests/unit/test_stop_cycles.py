"""Stop cycles from a trail's StopLogging/StartLogging calls (opentrail.domain.stop_cycles)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from opentrail.adapters.trail_state import TrailStatus
from opentrail.domain.stop_cycles import StopCycle, stop_cycles

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(T + seconds, UTC)


def test_each_stop_pairs_with_the_start_that_ended_it_oldest_first() -> None:
    cycles = stop_cycles(stops=[T + 600, T + 1800], starts=[T + 1200, T + 2400])

    assert cycles == [StopCycle(moment(600), moment(1200)), StopCycle(moment(1800), moment(2400))]


def test_a_trail_still_stopped_ends_with_an_open_cycle() -> None:
    assert stop_cycles(stops=[T + 600, T + 1800], starts=[T + 1200]) == [
        StopCycle(moment(600), moment(1200)),
        StopCycle(moment(1800), None),
    ]


def test_repeated_calls_change_nothing_and_times_round_up_to_the_second() -> None:
    # StartLogging while logging, StopLogging while stopped: no new cycle, the first stop holds
    cycles = stop_cycles(stops=[T + 600.25, T + 700], starts=[T + 100, T + 1200.5, T + 1300])

    assert cycles == [StopCycle(moment(601), moment(1201))]


def test_a_stop_and_a_start_at_the_same_moment_stop_first() -> None:
    assert stop_cycles(stops=[T + 600], starts=[T + 600]) == [StopCycle(moment(600), moment(600))]
    assert stop_cycles(stops=[], starts=[T + 600]) == []


def test_trail_status_reads_the_call_lists_or_else_the_latest_stop_and_start() -> None:
    listed = TrailStatus(
        {
            "isLogging": True,
            "stopLoggingTime": Decimal(T + 1800),
            "startLoggingTime": Decimal(T + 2400),
            "stopLoggingTimes": [Decimal(T + 600), Decimal(T + 1800)],
            "startLoggingTimes": [Decimal(T + 1200), Decimal(T + 2400)],
        }
    )
    assert [cycle.stop for cycle in listed.stop_cycles()] == [moment(600), moment(1800)]
    # an item written before the lists existed: its latest stop (and the start after it)
    older = TrailStatus({"isLogging": False, "stopLoggingTime": Decimal(T + 1800), "startLoggingTime": Decimal(T)})
    assert older.stop_cycles() == [StopCycle(moment(1800), None)]
    assert TrailStatus({}).stop_cycles() == []
