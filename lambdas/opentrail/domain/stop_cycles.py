"""A trail's StopLogging/StartLogging history as stop cycles (docs/trails.md, "Logging state").

The digester closes the digest chains at every stop and starts new ones at the StartLogging
that ended it, so it needs each cycle, not only the latest stop and start: a stop, a start and
another stop between two digester runs must leave the files delivered in between digested.
Pure code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class StopCycle:
    stop: datetime  # StopLogging, rounded up to the second (a final digest includes its moment)
    start: datetime | None  # the StartLogging that ended it (rounded up too); None: still stopped


def stop_cycles(stops: Iterable[float], starts: Iterable[float]) -> list[StopCycle]:
    """Each stop (StopLogging while logging) with the StartLogging that ended it, oldest first,
    from the calls' epoch seconds. A StopLogging while stopped, or a StartLogging while logging,
    changes nothing (as CloudTrail's state); a stop and a start at the same moment: stop first."""
    stop, start = 0, 1  # at the same moment a stop sorts first
    calls = sorted([(float(at), stop) for at in stops] + [(float(at), start) for at in starts])
    cycles: list[StopCycle] = []
    logging = True
    for at, kind in calls:
        moment = datetime.fromtimestamp(math.ceil(at), UTC)
        if kind == stop and logging:
            cycles.append(StopCycle(moment, None))
            logging = False
        elif kind == start and not logging:
            cycles[-1] = StopCycle(cycles[-1].stop, moment)
            logging = True
    return cycles
