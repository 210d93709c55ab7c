"""EventBridgeCaptureFunction called directly with envelopes; SQS in moto."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail.adapters.buffer import Buffer, BufferError
from opentrail.domain.bundle import unpack
from opentrail.domain.eventbridge import EnvelopeError
from opentrail.handlers import eventbridge_capture
from opentrail.local.context import LocalContext
from opentrail.settings import EventBridgeCaptureSettings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events" / "eventbridge"
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def envelope(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


@pytest.fixture
def queue_url(aws: None) -> str:
    """Only the buffer queue (the full `resources` fixture costs ~1 s per test)."""
    return str(boto3.client("sqs").create_queue(QueueName="opentrail-buffer")["QueueUrl"])


def drain(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [record for m in messages for record in unpack(m["Body"]).records()]


def capture(event: dict[str, Any], queue_url: str, context: LocalContext) -> dict[str, str]:
    return eventbridge_capture.handler(
        event,
        context,
        buffer=Buffer(queue_url, client=boto3.client("sqs")),
        settings=EventBridgeCaptureSettings(buffer_queue_url=queue_url),
        clock=clock,
    )


def test_eventbridge_capture_stores_a_cloudtrail_record_unchanged(queue_url: str, context: LocalContext) -> None:
    given = envelope("cloudtrail_api_call")
    result = capture(given, queue_url, context)
    assert result == {"eventID": given["detail"]["eventID"]}
    assert drain(queue_url) == [given["detail"]]


def test_eventbridge_capture_stores_an_application_event_with_envelope_defaults(
    queue_url: str, context: LocalContext
) -> None:
    given = envelope("application_event")
    result = capture(given, queue_url, context)
    [record] = drain(queue_url)
    assert record["eventID"] == result["eventID"]
    assert (record["eventTime"], record["awsRegion"], record["recipientAccountId"]) == (
        "2025-03-14T09:30:00Z",
        "eu-west-1",
        "123456789012",
    )
    assert record["eventName"] == "ApproveRefund"


def test_eventbridge_capture_redelivery_keeps_the_event_id(queue_url: str, context: LocalContext) -> None:
    first = capture(envelope("application_event"), queue_url, context)
    second = capture(envelope("application_event"), queue_url, LocalContext())
    assert first == second
    records = drain(queue_url)
    assert len(records) == 2
    assert records[0] == records[1]


def test_eventbridge_capture_refuses_unknown_detail_type(queue_url: str, context: LocalContext) -> None:
    given = envelope("application_event")
    given["detail-type"] = "Order Placed"
    with pytest.raises(EnvelopeError, match=r"^detail-type: must be 'OpenTrail Audit Event'"):
        capture(given, queue_url, context)
    assert drain(queue_url) == []


def test_eventbridge_capture_refuses_invalid_detail(queue_url: str, context: LocalContext) -> None:
    given = envelope("application_event")
    del given["detail"]["eventName"]
    with pytest.raises(EnvelopeError, match=r"^detail.eventName: is required"):
        capture(given, queue_url, context)


def test_eventbridge_capture_raises_when_the_buffer_refuses(queue_url: str, context: LocalContext) -> None:
    missing = Buffer(queue_url + "-missing", client=boto3.client("sqs"))
    with pytest.raises(BufferError):
        eventbridge_capture.handler(
            envelope("application_event"),
            context,
            buffer=missing,
            settings=EventBridgeCaptureSettings(buffer_queue_url=queue_url),
            clock=clock,
        )


def test_eventbridge_capture_reads_settings_from_the_environment(
    queue_url: str, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in EventBridgeCaptureSettings(buffer_queue_url=queue_url).to_env().items():
        monkeypatch.setenv(name, value)
    eventbridge_capture._default_buffer.cache_clear()
    try:
        result = eventbridge_capture.handler(envelope("console_signin"), context, clock=clock)
    finally:
        eventbridge_capture._default_buffer.cache_clear()
    assert result == {"eventID": "0d9e4c5b-3a2f-4e1d-8c7b-6a5f4e3d2c1b"}
    assert len(drain(queue_url)) == 1
