"""Simulated time for the demo and local mode: a `Clock` that only moves when told to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SimulatedClock:
    """A `opentrail.domain.clock.Clock` (call it for "now") that the caller advances.

    Handlers take it as their ``clock`` keyword, so event times, delivery times and S3
    keys follow simulated time instead of the wall clock.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self._now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("simulated time never runs backwards")
        self._now += delta
        return self._now

    def advance_to(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if moment < self._now:
            raise ValueError(f"simulated time never runs backwards ({moment} < {self._now})")
        self._now = moment
        return self._now
