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
from typing import Literal

Step = tuple[Literal["advance", "pause"], int]


@dataclass(frozen=True)
class LoggingState:
    """A trail's logging state as minutes (epoch minutes of the latest stop and start)."""

    is_logging: bool = True
    stop_minute: int | None = None
    start_minute: int | None = None

    def pending_pause(self, last_minute: int | None) -> tuple[int, int] | None:
        """(stop, start) minutes when logging resumed after a stop the engine has not passed."""
        stop, start = self.stop_minute, self.start_minute
        if not self.is_logging or last_minute is None or stop is None or start is None:
            return None
        return (stop, start) if last_minute < stop <= start else None


def steps(state: LoggingState, last_minute: int | None, end: int) -> list[Step]:
    """The engine calls of one run that analyses up to `end`: ``("advance", m)`` processes the
    minutes up to m, ``("pause", m)`` skips to m. Empty: nothing to do."""
    out: list[Step] = []
    if not state.is_logging:
        if state.stop_minute is None:
            return out
        until = min(end, state.stop_minute - 1)
        if last_minute is None or last_minute < until:
            out.append(("advance", until))
        return out
    pause = state.pending_pause(last_minute)
    if pause is not None and last_minute is not None:
        stop, start = pause
        if last_minute < stop - 1:
            out.append(("advance", min(end, stop - 1)))
        if end >= start:
            out += [("pause", start), ("advance", end)]
        return out
    if last_minute is None or last_minute < end:
        out.append(("advance", end))
    return out


def next_minute(state: LoggingState, last_minute: int | None) -> int | None:
    """The first minute whose aggregates this scope needs (None: none, or a new scope)."""
    if last_minute is None:
        return None
    if not state.is_logging:
        if state.stop_minute is None or last_minute >= state.stop_minute - 1:
            return None
        return last_minute + 1
    pause = state.pending_pause(last_minute)
    if pause is not None:
        stop, start = pause
        return last_minute + 1 if last_minute < stop - 1 else start
    return last_minute + 1
