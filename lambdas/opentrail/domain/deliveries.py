"""Which records go where besides S3, and in what shape (docs/trails.md, "Deliveries"; spec §2.5,
§7.7, §7.8). Pure code: no I/O; `opentrail.adapters.deliveries` sends what this module builds.

* CloudWatch Logs: one log event per record, its JSON as captured, timestamp = ``eventTime``;
  stream ``<account>_CloudTrail_<region>`` of the record's recipient account and region;
  records over 256 KB are skipped as CloudTrail skips them; PutLogEvents batches hold at most
  10,000 events and 1,048,576 bytes (message bytes + 26 per event), sorted by timestamp and
  spanning at most 24 hours.
* EventBridge: one entry per record with CloudTrail's detail-type (§7.8), source
  ``opentrail`` (sources starting with ``aws.`` are reserved for AWS), the record as
  ``detail``; read-only calls are not sent except STS GetFederationToken/GetSessionToken;
  records whose entry exceeds 256 KB are skipped; PutEvents calls hold ≤ 10 entries and
  ≤ 256 KB.
* SNS: per trail and delivery, ``{"s3Bucket": ..., "s3ObjectKey": [keys]}`` (§2.5).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from opentrail.domain.chunks import bounded_chunks
from opentrail.domain.record import parse_event_time

MAX_RECORD_BYTES: Final = 256 * 1024  # CloudTrail: larger events are not sent to CWL / EventBridge
# CloudWatch Logs PutLogEvents quotas.
LOG_BATCH_EVENTS: Final = 10_000
LOG_BATCH_BYTES: Final = 1_048_576
LOG_EVENT_OVERHEAD: Final = 26
LOG_BATCH_SPAN_MS: Final = 24 * 3600 * 1000
# EventBridge PutEvents quotas.
EVENTS_PER_CALL: Final = 10
EVENTS_CALL_BYTES: Final = 256 * 1024

EVENT_SOURCE: Final = "opentrail"  # "aws.cloudtrail" in CloudTrail; aws.* is reserved for AWS
DEFAULT_BUS: Final = "default"
# eventType -> EventBridge detail-type (spec §7.8)
DETAIL_TYPES: Final = {
    "AwsApiCall": "AWS API Call via CloudTrail",
    "AwsConsoleSignIn": "AWS Console Signin via CloudTrail",
    "AwsConsoleAction": "AWS Console Action via CloudTrail",
    "AwsServiceEvent": "AWS Service Event via CloudTrail",
    "AwsCloudTrailInsight": "AWS Insight via CloudTrail",
}
# Read-only calls EventBridge still receives (spec §7.8).
READ_ONLY_SENT: Final = frozenset(
    {("sts.amazonaws.com", "GetFederationToken"), ("sts.amazonaws.com", "GetSessionToken")}
)
_READ_PREFIXES: Final = ("Get", "List", "Describe")


def log_stream_name(account: str, region: str) -> str:
    """CloudTrail's stream name in the trail's log group (spec §7.7)."""
    return f"{account}_CloudTrail_{region}"


def notification(bucket: str, keys: Sequence[str]) -> str:
    """The SNS message of a delivery: the trail's files of one batch (spec §2.5)."""
    return json.dumps({"s3Bucket": bucket, "s3ObjectKey": list(keys)}, separators=(",", ":"))


def _event_time_ms(record: Mapping[str, Any], fallback: datetime) -> int:
    try:
        moment = parse_event_time(record.get("eventTime"))
    except (TypeError, ValueError):
        moment = fallback
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """What one destination gets from a set of records, and what it skips."""

    items: tuple[Any, ...]
    too_large: int = 0  # records over 256 KB (not sent, as CloudTrail)
    filtered: int = 0  # records the destination does not take (EventBridge: read-only calls)


def log_events(lines: Iterable[bytes], *, fallback: datetime) -> Selection:
    """CloudWatch Logs events ``{"timestamp", "message"}`` of record lines (JSON bytes), sorted
    by timestamp; records over 256 KB skipped."""
    events: list[dict[str, Any]] = []
    too_large = 0
    for line in lines:
        if len(line) > MAX_RECORD_BYTES:
            too_large += 1
            continue
        record = json.loads(line)
        events.append({"timestamp": _event_time_ms(record, fallback), "message": line.decode()})
    events.sort(key=lambda event: event["timestamp"])
    return Selection(tuple(events), too_large=too_large)


def log_batches(events: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """PutLogEvents requests: ≤ 10,000 events, ≤ 1 MB (message bytes + 26 each), ≤ 24 h span,
    in the (chronological) order given."""
    return bounded_chunks(
        events,
        lambda event: len(str(event["message"]).encode()) + LOG_EVENT_OVERHEAD,
        max_items=LOG_BATCH_EVENTS,
        max_bytes=LOG_BATCH_BYTES,
        joins=lambda first, event: int(event["timestamp"]) - int(first["timestamp"]) < LOG_BATCH_SPAN_MS,
    )


def detail_type(record: Mapping[str, Any]) -> str | None:
    """CloudTrail's EventBridge detail-type of a record (None: an eventType EventBridge does
    not receive from CloudTrail, e.g. network activity ``AwsVpceEvent``)."""
    if record.get("eventCategory") == "Insight":
        return DETAIL_TYPES["AwsCloudTrailInsight"]
    return DETAIL_TYPES.get(str(record.get("eventType", "")))


def is_read_only(record: Mapping[str, Any]) -> bool:
    """``readOnly`` of the record; without it, a ``Get``/``List``/``Describe`` call name."""
    value = record.get("readOnly")
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    return str(record.get("eventName", "")).startswith(_READ_PREFIXES)


def sent_to_event_bridge(record: Mapping[str, Any]) -> bool:
    """CloudTrail's rule (spec §7.8): read-only calls are not sent, except STS
    GetFederationToken and GetSessionToken; Insights events are."""
    if detail_type(record) is None:
        return False
    if record.get("eventCategory") == "Insight":
        return True
    if not is_read_only(record):
        return True
    return (record.get("eventSource"), record.get("eventName")) in READ_ONLY_SENT


def entry_size(entry: Mapping[str, Any]) -> int:
    """PutEvents entry size as EventBridge computes it: Time (14 bytes), Source, DetailType,
    Detail, Resources."""
    size = 14 + len(str(entry["Source"]).encode()) + len(str(entry["DetailType"]).encode())
    size += len(str(entry["Detail"]).encode())
    size += sum(len(str(resource).encode()) for resource in entry.get("Resources", []))
    return size


def event_entries(lines: Iterable[bytes], *, bus: str = DEFAULT_BUS) -> Selection:
    """PutEvents entries of record lines, deduplicated by eventID: read-only calls and
    unknown eventTypes filtered, entries over 256 KB skipped."""
    entries: list[dict[str, Any]] = []
    too_large = filtered = 0
    seen: set[str] = set()
    for line in lines:
        record = json.loads(line)
        event_id = str(record.get("eventID"))
        if event_id in seen:
            continue
        seen.add(event_id)
        if not sent_to_event_bridge(record):
            filtered += 1
            continue
        entry: dict[str, Any] = {
            "Source": EVENT_SOURCE,
            "DetailType": detail_type(record),
            "Detail": line.decode(),
            "Resources": [],
            "EventBusName": bus,
        }
        with contextlib.suppress(TypeError, ValueError):
            entry["Time"] = parse_event_time(record.get("eventTime"))
        if len(line) > MAX_RECORD_BYTES or entry_size(entry) > EVENTS_CALL_BYTES:
            too_large += 1
            continue
        entries.append(entry)
    return Selection(tuple(entries), too_large=too_large, filtered=filtered)


def event_batches(entries: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """PutEvents requests: ≤ 10 entries and ≤ 256 KB of entries each."""
    return bounded_chunks(entries, entry_size, max_items=EVENTS_PER_CALL, max_bytes=EVENTS_CALL_BYTES)


# -- what a delivered batch owes to which destination ------------------------------------------

CLOUD_WATCH_LOGS: Final = "cloudWatchLogs"
NOTIFICATION: Final = "notification"
EVENT_BRIDGE: Final = "eventBridge"


def destination(kind: str, trail: str | None = None) -> str:
    """A pending destination of a batch: ``cloudWatchLogs:<trail>``, ``notification:<trail>``,
    or ``eventBridge`` (one per batch: every trail with EventBridge shares the default bus, so a
    record selected by several such trails is sent once)."""
    return kind if trail is None else f"{kind}:{trail}"


def parse_destination(value: str) -> tuple[str, str | None]:
    kind, _, trail = value.partition(":")
    return kind, trail or None


def destinations(trails: Iterable[Any], file_trails: Iterable[str]) -> list[str]:
    """The destinations a batch owes: per trail with files in the batch and deliveries on."""
    with_files = set(file_trails)
    owed: list[str] = []
    bridge = False
    for trail in trails:
        if trail.name not in with_files:
            continue
        if trail.deliveries.cloud_watch_logs is not None:
            owed.append(destination(CLOUD_WATCH_LOGS, trail.name))
        if trail.deliveries.sns_topic is not None:
            owed.append(destination(NOTIFICATION, trail.name))
        bridge = bridge or trail.deliveries.event_bridge
    if bridge:
        owed.append(destination(EVENT_BRIDGE))
    return owed
