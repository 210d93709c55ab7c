"""A subscriber: OpenTrail's Insights events (EventBridge, source ``opentrail``) → a chat channel.

``trail.add_subscriber(fn)`` sends every delivered Insights event (detail-type
``AWS Insight via CloudTrail``) here; this posts one line per event to an incoming-webhook
URL (Slack, Chime, Teams and Mattermost accept ``{"text": ...}``). The HTTP call is a
parameter (`post`), so tests fake it. Environment: CHAT_WEBHOOK_URL.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

Post = Callable[[str, dict[str, Any]], int]


def http_post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def message(record: Mapping[str, Any]) -> str:
    """One line: state, kind, API, the numbers, the time (CloudTrail Insights record, spec §4)."""
    details = record.get("insightDetails") or {}
    state = details.get("state", "?")
    kind = details.get("insightType", "?")
    api = f"{details.get('eventSource', '?')} {details.get('eventName', '?')}"
    context = details.get("insightContext") or {}
    stats = context.get("statistics") or {}
    baseline = (stats.get("baseline") or {}).get("average")
    insight = (stats.get("insight") or {}).get("average")
    numbers = (
        f" (baseline {baseline:.2f}/min, now {insight:.2f}/min)"
        if isinstance(baseline, int | float) and isinstance(insight, int | float)
        else ""
    )
    icon = ":rotating_light:" if state == "Start" else ":white_check_mark:"
    region = record.get("awsRegion", "")
    line = f"{icon} Insight {state}: {kind} on {api}{numbers} in {region} at {record.get('eventTime', '?')}"
    explanation = context.get("explanation")
    return f"{line}\n{explanation}" if isinstance(explanation, str) and explanation else line


def handle(envelope: Mapping[str, Any], *, url: str, post: Post = http_post) -> dict[str, Any]:
    record = envelope.get("detail") or {}
    if record.get("eventType") != "AwsCloudTrailInsight":
        return {"posted": False, "reason": "not an Insights event"}
    status = post(url, {"text": message(record)})
    if status >= 300:
        raise RuntimeError(f"chat webhook answered HTTP {status}")  # async invoke: retried, then the DLQ
    return {"posted": True, "status": status}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, url=os.environ["CHAT_WEBHOOK_URL"])
