"""What goes to CloudWatch Logs, EventBridge and SNS, in which shape (domain/deliveries.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from opentrail.domain.deliveries import (
    EVENTS_CALL_BYTES,
    LOG_BATCH_BYTES,
    MAX_RECORD_BYTES,
    destinations,
    detail_type,
    entry_size,
    event_batches,
    event_entries,
    log_batches,
    log_events,
    log_stream_name,
    notification,
    sent_to_event_bridge,
)

NOW = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)


def rec(**extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventID": extra.pop("eventID", "e1"),
        "eventTime": "2026-11-23T10:01:02Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "eventType": "AwsApiCall",
        "readOnly": False,
    }
    item.update(extra)
    return item


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def test_stream_and_notification_shapes() -> None:
    assert log_stream_name("123456789012", "eu-west-1") == "123456789012_CloudTrail_eu-west-1"
    assert json.loads(notification("b", ["k1", "k2"])) == {"s3Bucket": "b", "s3ObjectKey": ["k1", "k2"]}


def test_log_events_one_per_record_sorted_and_large_records_skipped() -> None:
    late, early = rec(eventID="a", eventTime="2026-11-23T10:05:00Z"), rec(eventID="b")
    huge = rec(eventID="c", requestParameters={"blob": "x" * MAX_RECORD_BYTES})
    selection = log_events([line(late), line(huge), line(early)], fallback=NOW)
    assert selection.too_large == 1
    assert [json.loads(e["message"])["eventID"] for e in selection.items] == ["b", "a"]
    assert selection.items[0]["message"] == line(early).decode()  # the record as captured
    assert selection.items[0]["timestamp"] == int(datetime(2026, 11, 23, 10, 1, 2, tzinfo=UTC).timestamp() * 1000)


def test_log_batches_respect_count_bytes_and_span() -> None:
    small = [{"timestamp": i, "message": "x"} for i in range(25_000)]
    assert [len(b) for b in log_batches(small)] == [10_000, 10_000, 5_000]
    big = [{"timestamp": i, "message": "y" * 200_000} for i in range(12)]
    batches = log_batches(big)
    assert all(sum(len(e["message"]) + 26 for e in b) <= LOG_BATCH_BYTES for b in batches)
    assert sum(len(b) for b in batches) == 12
    day = 24 * 3600 * 1000
    assert len(log_batches([{"timestamp": 0, "message": "a"}, {"timestamp": day, "message": "b"}])) == 2


def test_detail_types() -> None:
    assert detail_type(rec()) == "AWS API Call via CloudTrail"
    assert detail_type(rec(eventType="AwsConsoleSignIn")) == "AWS Console Signin via CloudTrail"
    assert detail_type(rec(eventType="AwsConsoleAction")) == "AWS Console Action via CloudTrail"
    assert detail_type(rec(eventType="AwsServiceEvent")) == "AWS Service Event via CloudTrail"
    assert detail_type(rec(eventType="AwsCloudTrailInsight", eventCategory="Insight")) == "AWS Insight via CloudTrail"
    assert detail_type(rec(eventType="AwsVpceEvent")) is None


def test_read_only_calls_not_sent_except_sts_tokens() -> None:
    assert sent_to_event_bridge(rec())
    assert not sent_to_event_bridge(rec(eventName="GetUser", readOnly=True))
    assert not sent_to_event_bridge(rec(eventName="ListUsers", readOnly=None))  # no readOnly: by name
    for name in ("GetSessionToken", "GetFederationToken"):
        assert sent_to_event_bridge(rec(eventSource="sts.amazonaws.com", eventName=name, readOnly=True))
    assert not sent_to_event_bridge(rec(eventSource="sts.amazonaws.com", eventName="GetCallerIdentity", readOnly=True))


def test_event_entries_envelope_dedupe_and_limits() -> None:
    write, read = rec(eventID="w"), rec(eventID="r", eventName="GetUser", readOnly=True)
    huge = rec(eventID="h", requestParameters={"blob": "x" * MAX_RECORD_BYTES})
    selection = event_entries([line(write), line(read), line(write), line(huge)])
    assert selection.filtered == 1
    assert selection.too_large == 1
    (entry,) = selection.items
    assert entry["Source"] == "opentrail"
    assert entry["DetailType"] == "AWS API Call via CloudTrail"
    assert entry["EventBusName"] == "default"
    assert json.loads(entry["Detail"]) == write
    assert entry["Time"] == datetime(2026, 11, 23, 10, 1, 2, tzinfo=UTC)
    entries = [dict(entry, Detail="z" * 60_000) for _ in range(25)]
    batches = event_batches(entries)
    assert all(len(b) <= 10 and sum(entry_size(e) for e in b) <= EVENTS_CALL_BYTES for b in batches)
    assert sum(len(b) for b in batches) == 25


def test_destinations_per_trail_and_one_event_bridge() -> None:
    def trail(name: str, cwl: str | None = None, bridge: bool = False, topic: str | None = None) -> Any:
        return SimpleNamespace(
            name=name, deliveries=SimpleNamespace(cloud_watch_logs=cwl, event_bridge=bridge, sns_topic=topic)
        )

    trails = [trail("a", cwl="g", bridge=True), trail("b", topic="t", bridge=True), trail("c", cwl="x"), trail("d")]
    assert destinations(trails, ["a", "b", "d"]) == ["cloudWatchLogs:a", "notification:b", "eventBridge"]
    assert destinations(trails, ["c"]) == ["cloudWatchLogs:c"]
    assert destinations(trails, ["d"]) == []


def test_bounded_chunks_close_a_run_at_the_count_the_bytes_or_the_join_rule() -> None:
    from opentrail.domain.chunks import bounded_chunks

    sizes = [3, 3, 3, 5, 1, 1, 1, 9, 1]
    assert bounded_chunks(sizes, lambda n: n, max_items=3, max_bytes=8) == [[3, 3], [3, 5], [1, 1, 1], [9], [1]]
    # joins: a run holds items within 2 of its first
    assert bounded_chunks([1, 2, 3, 4, 9], lambda n: 0, max_items=10, max_bytes=1, joins=lambda a, b: b - a <= 2) == [
        [1, 2, 3],
        [4],
        [9],
    ]
    assert bounded_chunks([], lambda n: n, max_items=1, max_bytes=1) == []
