"""Open-insight state: each insight is a Start record, then an End record (same sharedEventID).

An insight opens (Start) on the first minute a detector finds its API anomalous, stays open
while the anomaly holds (a lower "hold" threshold: hysteresis, so one burst is one insight), and
ends (End) once the anomaly has subsided for `quiet_minutes` minutes — or, for missing activity,
when the activity resumes. While open, the tracker accumulates what the End record reports: the
metric's total (for the whole-insight average) and the attributions (top principals, user agents
and error codes), bounded like the aggregates.

`OpenInsight.to_dict` is the item stored between runs of the live function (a few hundred bytes).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentrail.domain.insights.aggregates import ApiKey, CountTable

CALL_RATE: Final = "ApiCallRateInsight"
ERROR_RATE: Final = "ApiErrorRateInsight"
UNUSUAL: Final = "UnusualActivityInsight"
MISSING: Final = "MissingActivityInsight"
INSIGHT_TYPES: Final = (CALL_RATE, ERROR_RATE, UNUSUAL, MISSING)

# uuid5 namespace of OpenTrail's Insights: ids are derived, so a re-run writes identical records.
NAMESPACE: Final = uuid.UUID("5b0a3c9e-7f1d-4e2a-9c3b-0d4e5f6a7b8c")

BaselineAttributions = dict[str, list[tuple[str, float]]]


def insight_key(kind: str, api: ApiKey, detail: str = "") -> str:
    """One open insight per key: per API (and error code / principal); an unusual writer is
    one insight per principal, whatever write APIs it calls."""
    if kind == UNUSUAL and detail:
        return f"{kind}|writer|{detail}"
    return f"{kind}|{api[0]}|{api[1]}|{detail}"


@dataclass
class OpenInsight:
    kind: str
    api: ApiKey
    detail: str  # error code (error rate), principal (unusual writer / missing), or ""
    shared_event_id: str
    start: int  # first anomalous minute (epoch minutes)
    last_active: int  # last anomalous minute
    start_average: float  # metric per minute in the detection window
    baseline_average: float  # metric per minute in the baseline
    baseline_duration: int  # minutes
    explanation: str
    total: float = 0.0  # metric summed over start..last_active
    tables: dict[str, CountTable] = field(default_factory=dict)  # attributions over the insight
    start_tables: dict[str, CountTable] = field(default_factory=dict)  # attributions at Start
    start_minutes: int = 1  # minutes `start_tables` cover
    baseline_attributions: BaselineAttributions = field(default_factory=dict)

    @property
    def key(self) -> str:
        return insight_key(self.kind, self.api, self.detail)

    @property
    def duration(self) -> int:
        return self.last_active - self.start + 1

    def add(self, minute: int, metric: float, tables: Mapping[str, CountTable]) -> None:
        """Account one minute of the insight (anomalous or within the hold)."""
        self.total += metric
        for name, table in tables.items():
            mine = self.tables.get(name)
            if mine is None:
                self.tables[name] = table.copy()
            else:
                mine.merge(table)

    def mark_active(self, minute: int) -> None:
        self.last_active = max(self.last_active, minute)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "a": list(self.api),
            "d": self.detail,
            "id": self.shared_event_id,
            "s": self.start,
            "l": self.last_active,
            "sa": round(self.start_average, 4),
            "ba": round(self.baseline_average, 4),
            "bd": self.baseline_duration,
            "x": self.explanation,
            "t": round(self.total, 4),
            "tb": {k: v.to_dict() for k, v in self.tables.items()},
            "st": {k: v.to_dict() for k, v in self.start_tables.items()},
            "sm": self.start_minutes,
            "bat": {k: [[v, round(a, 4)] for v, a in values] for k, values in self.baseline_attributions.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenInsight:
        return cls(
            kind=str(data["k"]),
            api=(str(data["a"][0]), str(data["a"][1])),
            detail=str(data["d"]),
            shared_event_id=str(data["id"]),
            start=int(data["s"]),
            last_active=int(data["l"]),
            start_average=float(data["sa"]),
            baseline_average=float(data["ba"]),
            baseline_duration=int(data["bd"]),
            explanation=str(data["x"]),
            total=float(data["t"]),
            tables={k: CountTable(v) for k, v in data["tb"].items()},
            start_tables={k: CountTable(v) for k, v in data["st"].items()},
            start_minutes=int(data["sm"]),
            baseline_attributions={k: [(str(v), float(a)) for v, a in vals] for k, vals in data["bat"].items()},
        )


def shared_event_id(scope: tuple[str, str], key: str, start: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{scope[0]}|{scope[1]}|{key}|{start}"))


@dataclass
class InsightTracker:
    """The open insights of one scope, by key."""

    quiet_minutes: int = 5
    open: dict[str, OpenInsight] = field(default_factory=dict)

    def get(self, key: str) -> OpenInsight | None:
        return self.open.get(key)

    def begin(self, insight: OpenInsight) -> None:
        if insight.key in self.open:
            raise ValueError(f"insight {insight.key} is already open")
        self.open[insight.key] = insight

    def finish(self, key: str) -> OpenInsight:
        return self.open.pop(key)

    def subsided(self, minute: int, kinds: frozenset[str]) -> list[OpenInsight]:
        """Close and return insights of `kinds` quiet for `quiet_minutes` as of `minute`."""
        done = [
            key
            for key, insight in self.open.items()
            if insight.kind in kinds and minute - insight.last_active >= self.quiet_minutes
        ]
        return [self.open.pop(key) for key in sorted(done)]

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.quiet_minutes, "o": [insight.to_dict() for insight in self.open.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InsightTracker:
        tracker = cls(quiet_minutes=int(data["q"]))
        for item in data["o"]:
            insight = OpenInsight.from_dict(item)
            tracker.open[insight.key] = insight
        return tracker
