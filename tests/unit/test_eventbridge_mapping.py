"""EventBridge envelopes → canonical records (spec §7.8)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opentrail.domain.eventbridge import (
    OPENTRAIL_NAMESPACE,
    EnvelopeError,
    application_event_id,
    record_from_envelope,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events" / "eventbridge"
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)


def envelope(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize("name", ["cloudtrail_api_call", "console_signin"])
def test_record_from_envelope_keeps_every_cloudtrail_field(name: str) -> None:
    given = envelope(name)
    record = record_from_envelope(given, now=NOW)
    assert record == given["detail"]


def test_record_from_envelope_does_not_mutate_the_envelope() -> None:
    given = envelope("application_event")
    before = copy.deepcopy(given)
    record_from_envelope(given, now=NOW)
    assert given == before


def test_record_from_envelope_fills_cloudtrail_gaps_from_the_envelope() -> None:
    given = envelope("cloudtrail_api_call")
    for name in ("eventID", "recipientAccountId", "awsRegion"):
        del given["detail"][name]
    record = record_from_envelope(given, now=NOW)
    assert record["eventID"] == application_event_id(given["id"])
    assert record["recipientAccountId"] == given["account"]
    assert record["awsRegion"] == given["region"]


def test_record_from_envelope_refuses_cloudtrail_detail_type_from_a_custom_source() -> None:
    forged = envelope("cloudtrail_api_call")
    forged["source"] = "com.example.forger"
    with pytest.raises(EnvelopeError, match=r"^source: must be an aws"):
        record_from_envelope(forged, now=NOW)


def test_record_from_envelope_maps_an_application_event_with_envelope_defaults() -> None:
    given = envelope("application_event")
    record = record_from_envelope(given, now=NOW)
    assert record["eventID"] == str(uuid.uuid5(OPENTRAIL_NAMESPACE, given["id"]))
    assert record["eventTime"] == "2025-03-14T09:30:00Z"
    assert record["recipientAccountId"] == "123456789012"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventVersion"] == "1.11"
    assert (record["eventType"], record["eventCategory"], record["managementEvent"]) == (
        "AwsApiCall",
        "Management",
        True,
    )
    assert record["readOnly"] is False
    assert record["additionalEventData"] == {
        "opentrailIngestion": {"eventBridgeEventId": given["id"], "source": "com.example.billing"}
    }
    for name, value in given["detail"].items():
        assert record[name] == value


def test_record_from_envelope_redelivery_keeps_the_event_id() -> None:
    first = record_from_envelope(envelope("application_event"), now=NOW)
    again = record_from_envelope(envelope("application_event"), now=datetime(2025, 3, 14, 11, 0, tzinfo=UTC))
    other = envelope("application_event")
    other["id"] = "00000000-0000-4000-8000-000000000000"
    assert first["eventID"] == again["eventID"]
    assert record_from_envelope(other, now=NOW)["eventID"] != first["eventID"]


def test_record_from_envelope_application_event_time_may_be_given() -> None:
    given = envelope("application_event")
    given["detail"]["eventTime"] = "2025-03-14T09:29:58.250Z"
    assert record_from_envelope(given, now=NOW)["eventTime"] == "2025-03-14T09:29:58Z"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"detail-type": "Order Placed"}, "detail-type"),
        ({"detail-type": None}, "detail-type"),
        ({"id": None}, "id"),
        ({"account": None}, "account"),
        ({"region": None}, "region"),
        ({"detail": "text"}, "detail"),
        ({"source": "aws.billing"}, "source"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_record_from_envelope_refuses_bad_envelopes(change: dict[str, Any], field: str) -> None:
    given = envelope("application_event")
    given.update(change)
    with pytest.raises(EnvelopeError) as raised:
        record_from_envelope(given, now=NOW)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("detail_change", "field"),
    [
        ({"eventName": None}, "detail.eventName"),
        ({"eventSource": None}, "detail.eventSource"),
        ({"userIdentity": None}, "detail.userIdentity"),
        ({"userIdentity": {"principalId": "x"}}, "detail.userIdentity.type"),
        ({"eventID": "c2f3a8d1-6b4e-4a8f-9d2c-7e5f1a0b3c44"}, "detail.eventID"),
        ({"recipientAccountId": "210987654321"}, "detail.recipientAccountId"),
        ({"eventSource": "iam.amazonaws.com"}, "detail.eventSource"),
        ({"additionalEventData": {"opentrailIngestion": 1}}, "detail.additionalEventData.opentrailIngestion"),
        ({"additionalEventData": [1]}, "detail.additionalEventData"),
        ({"requestParameters": "x"}, "detail.requestParameters"),
        ({"eventTime": "2030-01-01T00:00:00Z"}, "detail.eventTime"),
    ],
)
def test_record_from_envelope_refuses_bad_application_detail(detail_change: dict[str, Any], field: str) -> None:
    given = envelope("application_event")
    for name, value in detail_change.items():
        if value is None:
            given["detail"].pop(name)
        else:
            given["detail"][name] = value
    with pytest.raises(EnvelopeError) as raised:
        record_from_envelope(given, now=NOW)
    assert raised.value.field == field


def test_record_from_envelope_refuses_non_objects() -> None:
    with pytest.raises(EnvelopeError, match=r"^event: "):
        record_from_envelope([], now=NOW)  # type: ignore[arg-type]
