"""Insights records, exactly as CloudTrail writes them (spec §4), plus OpenTrail's extensions.

A record has the top-level fields ``eventVersion, eventTime, awsRegion, eventID, eventType
("AwsCloudTrailInsight"), recipientAccountId, sharedEventID, insightDetails, eventCategory
("Insight")`` and no userIdentity/eventSource/eventName/sourceIPAddress/userAgent.
``insightDetails`` holds ``state`` (Start/End), ``eventSource``, ``eventName``, ``insightType``,
``errorCode`` (error-rate insights only) and ``insightContext`` with ``statistics`` (baseline and
insight averages per minute, ``insightDuration`` and ``baselineDuration`` in minutes) and
``attributions`` (top 5 userIdentityArn, userAgent and errorCode values, in the insight and in
the baseline, with their averages per minute; ``"null"`` for calls without an error).

OpenTrail extensions (consumers ignore unknown fields, spec §1.1): ``insightContext.explanation``
(one sentence saying why) and, for unusual-writer and missing-activity insights,
``insightDetails.userIdentityArn`` (the principal concerned).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from opentrail.domain.insights.aggregates import OTHER, CountTable, Scope
from opentrail.domain.insights.baseline import ATTRIBUTES
from opentrail.domain.insights.state import ERROR_RATE, MISSING, UNUSUAL, OpenInsight
from opentrail.domain.record import INSIGHT_EVENT_TYPE, format_event_time

INSIGHT_EVENT_VERSION: Final = "1.11"
ATTRIBUTION_LIMIT: Final = 5

Record = dict[str, Any]
State = Literal["Start", "End"]


def minute_time(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def minute_text(minute: int) -> str:
    return format_event_time(minute_time(minute))


def _average(value: float) -> float:
    return round(value, 4)


def _attribution_values(table: CountTable | None, minutes: int) -> list[dict[str, Any]]:
    if table is None or minutes <= 0:
        return []
    return [
        {"value": value, "average": _average(count / minutes)}
        for value, count in table.top(ATTRIBUTION_LIMIT)
        if value != OTHER and count > 0
    ]


def _attributions(
    tables: Mapping[str, CountTable], minutes: int, baseline: Mapping[str, list[tuple[str, float]]]
) -> list[dict[str, Any]]:
    out = []
    for attribute in ATTRIBUTES:
        insight = _attribution_values(tables.get(attribute), minutes)
        base = [{"value": v, "average": _average(a)} for v, a in baseline.get(attribute, [])[:ATTRIBUTION_LIMIT]]
        if insight or base:
            out.append({"attribute": attribute, "insight": insight, "baseline": base})
    return out


def insight_record(scope: Scope, insight: OpenInsight, state: State) -> Record:
    """The Start or End record of `insight` (ids derived from sharedEventID: re-runs are identical)."""
    account, region = scope
    start = state == "Start"
    if start:
        event_minute = insight.start
        average = insight.start_average
        duration = 1 if insight.kind != MISSING else insight.duration
        tables, table_minutes = insight.start_tables, insight.start_minutes
    else:
        event_minute = insight.last_active + 1
        duration = insight.duration
        average = insight.total / duration if duration else 0.0
        tables, table_minutes = insight.tables, duration
    details: Record = {
        "state": state,
        "eventSource": insight.api[0],
        "eventName": insight.api[1],
        "insightType": insight.kind,
    }
    if insight.kind == ERROR_RATE:
        details["errorCode"] = insight.detail
    elif insight.kind in (UNUSUAL, MISSING) and insight.detail:
        details["userIdentityArn"] = insight.detail
    details["insightContext"] = {
        "statistics": {
            "baseline": {"average": _average(insight.baseline_average)},
            "insight": {"average": _average(average)},
            "insightDuration": duration,
            "baselineDuration": insight.baseline_duration,
        },
        "attributions": _attributions(tables, table_minutes, insight.baseline_attributions),
        "explanation": insight.explanation,
    }
    return {
        "eventVersion": INSIGHT_EVENT_VERSION,
        "eventTime": minute_text(event_minute),
        "awsRegion": region,
        "eventID": str(uuid.uuid5(uuid.UUID(insight.shared_event_id), state)),
        "eventType": INSIGHT_EVENT_TYPE,
        "recipientAccountId": account,
        "sharedEventID": insight.shared_event_id,
        "insightDetails": details,
        "eventCategory": "Insight",
    }


# -- explanations ----------------------------------------------------------------------------


def rate_text(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if value >= 0.1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def hour_text(minute: int) -> str:
    """``Tuesday 10:00 UTC``."""
    return minute_time(minute).strftime("%A %H:00 UTC")


def duration_text(minutes: int) -> str:
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 2 * 1440:
        return f"{minutes / 60:.0f} h"
    return f"{minutes / 1440:.0f} days"


def top_share(table: CountTable | None) -> str:
    """``; 95% from <value>`` for the largest value, or "" when the table is empty."""
    if table is None:
        return ""
    total = table.total()
    top = table.top(1)
    if not total or not top:
        return ""
    value, count = top[0]
    return f"; {100 * count / total:.0f}% from {value}"
