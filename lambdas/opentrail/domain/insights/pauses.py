"""What a trail's Insights analyse around StopLogging/StartLogging (docs/insights.md, "Per trail").

A stopped trail logs nothing, so its aggregates are empty: not a quiet period, unknown. Its
engine therefore analyses up to the minute before the stop and then waits; once logging starts
again the engine *pauses* over the gap (`InsightsEngine.pause`: open insights end, no baseline
learns the gap as silence) and goes on from the minute logging resumed.

`steps(state, last_minute, end)` says what one run does to one trail scope; `next_minute` which
minute's aggregates it needs first (the run reads aggregates from the smallest). Pure code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Step = tuple[Literal["advance", "pause"], int]


@dataclass(frozen=True)
class LoggingState:
    """A trail's stop cycles as epoch minutes: (stop, start that ended it, None while stopped),
    oldest first (`opentrail.domain.stop_cycles`); none: logging all along."""

    cycles: tuple[tuple[int, int | None], ...] = ()

    @property
    def is_logging(self) -> bool:
        return not self.cycles or self.cycles[-1][1] is not None


def steps(state: LoggingState, last_minute: int | None, end: int) -> list[Step]:
    """The engine calls of one run that analyses up to `end`: ``("advance", m)`` processes the
    minutes up to m, ``("pause", m)`` skips to m. Empty: nothing to do.

    Each stop still ahead of the engine: advance to the minute before it, then (once logging
    resumed and the run reaches the start) pause to the start; a stop the engine already passed
    is no pause (a StartLogging on a logging trail, or an old cycle)."""
    if last_minute is None:  # a new scope: from the run's start, up to the end or the stop
        return [("advance", end if state.is_logging else min(end, state.cycles[-1][0] - 1))]
    out: list[Step] = []
    last = last_minute
    for stop, start in state.cycles:
        if stop <= last:
            if start is None:
                return out
            continue
        if last < stop - 1:
            last = min(end, stop - 1)
            out.append(("advance", last))
            if last < stop - 1:
                return out
        if start is None or end < start:
            return out  # stopped, or not yet past the resumption
        out.append(("pause", start))
        last = start - 1
    if last < end:
        out.append(("advance", end))
    return out


def next_minute(state: LoggingState, last_minute: int | None) -> int | None:
    """The first minute whose aggregates this scope needs (None: none, or a new scope): the one
    after `last_minute`, or where the first step of an unbounded run pauses to."""
    if last_minute is None:
        return None
    plan = steps(state, last_minute, _UNBOUNDED)
    if not plan:
        return None  # stopped and caught up: needs nothing, holds nobody back
    kind, minute = plan[0]
    return minute if kind == "pause" else last_minute + 1


_UNBOUNDED: Final = 2**62  # an `end` past any minute
