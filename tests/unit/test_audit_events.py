"""PutAuditEvents request validation and the eventData → CloudTrail record mapping (spec §6)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain.audit_events import (
    AuditEventsRequest,
    Caller,
    RequestError,
    checksum_of,
    parse_request,
    process,
    response_body,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events" / "ingest"
CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/opentrail"
OWNER = "123456789012"
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)


def event_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "event_data.json").read_text())
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def body(*items: dict[str, Any]) -> bytes:
    return json.dumps({"auditEvents": list(items)}).encode()


def item(id_: str = "1", data: Any = None, checksum: str | None = None) -> dict[str, Any]:
    text = data if isinstance(data, str) else json.dumps(event_data() if data is None else data)
    entry: dict[str, Any] = {"id": id_, "eventData": text}
    if checksum is not None:
        entry["eventDataChecksum"] = checksum
    return entry


def parse(
    raw: bytes | None,
    *,
    channel: str | None = CHANNEL,
    caller: str | None = OWNER,
    external_id: str | None = None,
) -> AuditEventsRequest:
    return parse_request(
        channel_arn=channel,
        external_id=external_id,
        body=raw,
        caller=Caller(caller, "arn:aws:iam::123456789012:role/writer") if caller else None,
        accepted_channels={CHANNEL},
    )


def run(*items: dict[str, Any], external_id: str | None = None) -> dict[str, Any]:
    accepted, rejected = process(parse(body(*items), external_id=external_id), region="us-east-1", now=NOW)
    result = response_body(accepted, rejected)
    result["records"] = [a.record for a in accepted]
    return result


# --- request-level errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        (None, "ValidationException"),
        ("channel/opentrail", "InvalidChannelARN"),
        ("arn:aws:s3:::bucket", "InvalidChannelARN"),
        ("arn:aws:cloudtrail:us-east-1:12345:channel/x", "InvalidChannelARN"),
        ("arn:aws:cloudtrail:us-east-1:123456789012:channel/other", "ChannelNotFound"),
    ],
)
def test_parse_request_rejects_bad_channel(channel: str | None, code: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse(body(item()), channel=channel)
    assert raised.value.code == code
    assert "channelArn" in raised.value.message


def test_parse_request_channel_not_found_is_404() -> None:
    with pytest.raises(RequestError) as raised:
        parse(body(item()), channel="arn:aws:cloudtrail:us-east-1:123456789012:channel/other")
    assert raised.value.status == 404


@pytest.mark.parametrize("caller", ["210987654321", None])
def test_parse_request_rejects_caller_not_owning_the_channel(caller: str | None) -> None:
    with pytest.raises(RequestError) as raised:
        parse(body(item()), caller=caller)
    assert raised.value.code == "ChannelInsufficientPermission"
    assert raised.value.status == 403


@pytest.mark.parametrize("external_id", ["x", "a" * 1225, "has space", "semi;colon"])
def test_parse_request_rejects_bad_external_id(external_id: str) -> None:
    with pytest.raises(RequestError, match="externalId") as raised:
        parse(body(item()), external_id=external_id)
    assert raised.value.code == "ValidationException"


@pytest.mark.parametrize("external_id", ["ab", "a" * 1224, "tenant-42@example.com:/x=y,z+1"])
def test_parse_request_accepts_valid_external_id(external_id: str) -> None:
    assert parse(body(item()), external_id=external_id).external_id == external_id


@pytest.mark.parametrize("count", [0, 101])
def test_parse_request_rejects_event_count_outside_1_to_100(count: int) -> None:
    with pytest.raises(RequestError, match="1 to 100") as raised:
        parse(body(*[item(str(i)) for i in range(count)]))
    assert raised.value.code == "ValidationException"


def test_parse_request_accepts_100_events() -> None:
    assert len(parse(body(*[item(str(i)) for i in range(100)])).events) == 100


def test_parse_request_rejects_body_over_1_mb() -> None:
    big = {"id": "1", "eventData": "x" * (1024 * 1024)}
    with pytest.raises(RequestError, match="1 MB") as raised:
        parse(body(big))
    assert raised.value.code == "ValidationException"


def test_parse_request_rejects_duplicated_ids() -> None:
    with pytest.raises(RequestError, match="'a'") as raised:
        parse(body(item("a"), item("b"), item("a")))
    assert raised.value.code == "DuplicatedAuditEventId"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "body"),
        (b"not json", "body"),
        (b"[]", "body"),
        (b"{}", "auditEvents"),
        (b'{"auditEvents": {}}', "auditEvents"),
        (body({"id": "bad id", "eventData": "{}"}), "auditEvents[0].id"),
        (body({"id": "x" * 129, "eventData": "{}"}), "auditEvents[0].id"),
        (body({"id": "", "eventData": "{}"}), "auditEvents[0].id"),
        (body({"id": "1"}), "auditEvents[0].eventData"),
        (body({"id": "1", "eventData": {}}), "auditEvents[0].eventData"),
        (body({"id": "1", "eventData": "{}", "eventDataChecksum": 5}), "eventDataChecksum"),
        (body("not an object"), "auditEvents[0]"),  # type: ignore[arg-type]
    ],
)
def test_parse_request_rejects_malformed_body(raw: bytes | None, fragment: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse(raw)
    assert raised.value.code in {"ValidationException", "SerializationException"}
    assert fragment in raised.value.message


# --- per-event validation ---------------------------------------------------------------


def test_process_maps_event_data_to_a_canonical_record() -> None:
    result = run(item("evt-1"), external_id="tenant-42")
    assert result["failed"] == []
    [record] = result["records"]
    assert result["successful"] == [{"id": "evt-1", "eventID": record["eventID"]}]
    assert record["eventVersion"] == "1.11"
    assert record["userIdentity"] == {
        "type": "CustomUserIdentity",
        "principalId": "alice@example.com",
        "arn": "arn:aws:iam::123456789012:user/alice",
        "accountId": "123456789012",
        "userName": "alice",
        "details": event_data()["userIdentity"]["details"],
    }
    assert record["eventSource"] == "billing.example.com"
    assert record["eventName"] == "UpdateInvoice"
    assert record["eventTime"] == "2025-03-14T09:26:53Z"
    assert record["awsRegion"] == "us-east-1"
    assert record["requestID"] == "req-7f3a9c21"
    assert record["recipientAccountId"] == OWNER
    assert record["sourceIPAddress"] == "203.0.113.40"
    assert record["userAgent"] == "billing-web/4.2"
    assert record["requestParameters"] == {"invoiceId": "inv-1001", "amount": 125.5}
    assert record["responseElements"] == {"status": "UPDATED"}
    assert (record["eventType"], record["eventCategory"], record["managementEvent"]) == (
        "AwsApiCall",
        "Management",
        True,
    )
    assert record["readOnly"] is False
    assert record["additionalEventData"] == {
        "tenant": "acme",
        "opentrailIngestion": {
            "channelArn": CHANNEL,
            "auditEventId": "evt-1",
            "eventDataVersion": "1.0",
            "ingestionTime": "2025-03-14T10:00:00Z",
            "externalId": "tenant-42",
            "callerArn": "arn:aws:iam::123456789012:role/writer",
        },
    }
    assert "errorCode" not in record


def test_process_infers_read_only_from_event_name() -> None:
    [record] = run(item(data=event_data(eventName="GetInvoice")))["records"]
    assert record["readOnly"] is True


def test_process_minimal_event_gets_null_request_and_response() -> None:
    minimal = {
        "version": "1.0",
        "userIdentity": {"type": "Service", "principalId": "svc"},
        "eventSource": "app",
        "eventName": "Ping",
        "eventTime": "2025-03-14T09:00:00",
        "UID": "u",
        "recipientAccountId": OWNER,
    }
    [record] = run(item(data=minimal))["records"]
    assert record["requestParameters"] is None
    assert record["responseElements"] is None
    assert record["userIdentity"] == {"type": "Service", "principalId": "svc"}
    assert record["eventTime"] == "2025-03-14T09:00:00Z"


def test_process_event_id_is_stable_for_the_same_channel_and_event_data() -> None:
    first = run(item("a"))["successful"][0]["eventID"]
    again = run(item("b", data=json.dumps(event_data(), indent=2)))["successful"][0]["eventID"]
    other = run(item("a", data=event_data(UID="req-other")))["successful"][0]["eventID"]
    assert first == again
    assert first != other


def test_process_accepts_good_checksum() -> None:
    text = json.dumps(event_data())
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    assert checksum_of(text) == digest
    assert run(item(data=text, checksum=digest))["failed"] == []


@pytest.mark.parametrize("checksum", ["not base64!", base64.b64encode(b"x" * 32).decode(), ""])
def test_process_rejects_bad_checksum(checksum: str) -> None:
    result = run(item(checksum=checksum))
    assert result["successful"] == []
    assert result["failed"][0]["errorCode"] == "InvalidChecksum"
    assert "eventDataChecksum" in result["failed"][0]["errorMessage"]


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ("not json", "InvalidData", "eventData"),
        ("[1, 2]", "InvalidData", "eventData"),
        (event_data(version=None), "FieldNotFound", "eventData.version"),
        (event_data(userIdentity=None), "FieldNotFound", "eventData.userIdentity"),
        (event_data(userIdentity={"principalId": "p"}), "FieldNotFound", "eventData.userIdentity.type"),
        (event_data(userIdentity={"type": "t"}), "FieldNotFound", "eventData.userIdentity.principalId"),
        (event_data(eventSource=None), "FieldNotFound", "eventData.eventSource"),
        (event_data(eventName=None), "FieldNotFound", "eventData.eventName"),
        (event_data(eventTime=None), "FieldNotFound", "eventData.eventTime"),
        (event_data(UID=None), "FieldNotFound", "eventData.UID"),
        (event_data(recipientAccountId=None), "FieldNotFound", "eventData.recipientAccountId"),
        (event_data(version="v" * 257), "FieldTooLong", "eventData.version"),
        (
            event_data(userIdentity={"type": "t" * 129, "principalId": "p"}),
            "FieldTooLong",
            "eventData.userIdentity.type",
        ),
        (
            event_data(userIdentity={"type": "t", "principalId": "p" * 1025}),
            "FieldTooLong",
            "eventData.userIdentity.principalId",
        ),
        (event_data(eventSource="s" * 1025), "FieldTooLong", "eventData.eventSource"),
        (event_data(eventName="n" * 1025), "FieldTooLong", "eventData.eventName"),
        (event_data(UID="u" * 1025), "FieldTooLong", "eventData.UID"),
        (event_data(userAgent="a" * 1025), "FieldTooLong", "eventData.userAgent"),
        (event_data(errorCode="e" * 257), "FieldTooLong", "eventData.errorCode"),
        (event_data(errorMessage="m" * 257), "FieldTooLong", "eventData.errorMessage"),
        (event_data(requestParameters={"x": "y" * 102_400}), "FieldTooLong", "eventData.requestParameters"),
        (event_data(responseElements={"x": "y" * 102_400}), "FieldTooLong", "eventData.responseElements"),
        (event_data(additionalEventData={"x": "y" * 28_672}), "FieldTooLong", "eventData.additionalEventData"),
        (event_data(eventName=7), "InvalidData", "eventData.eventName"),
        (event_data(eventName=""), "InvalidData", "eventData.eventName"),
        (event_data(eventTime="14/03/2025 09:26"), "InvalidData", "eventData.eventTime"),
        (event_data(eventTime="2025-03-14T09:26:53+02:00"), "InvalidData", "eventData.eventTime"),
        (event_data(eventTime="2025-02-30T09:26:53Z"), "InvalidData", "eventData.eventTime"),
        (event_data(eventTime="2025-03-15T09:26:53Z"), "InvalidData", "eventData.eventTime"),  # future
        (event_data(sourceIPAddress="example.com"), "InvalidData", "eventData.sourceIPAddress"),
        (event_data(requestParameters=[1]), "InvalidData", "eventData.requestParameters"),
        (event_data(userIdentity={"type": "t", "principalId": "p", "details": "x"}), "InvalidData", "details"),
        (event_data(userIdentity={"type": "t", "principalId": "p", "arn": "x"}), "InvalidData", "userIdentity.arn"),
        (event_data(eventID="c2f3a8d1-6b4e-4a8f-9d2c-7e5f1a0b3c44"), "InvalidData", "eventData.eventID"),
        (event_data(additionalEventData={"opentrailIngestion": {}}), "InvalidData", "opentrailIngestion"),
        (event_data(recipientAccountId="1234"), "InvalidData", "eventData.recipientAccountId"),
        (event_data(recipientAccountId="210987654321"), "InvalidRecipient", "eventData.recipientAccountId"),
        (event_data(eventSource="iam.amazonaws.com"), "InvalidEventSource", "eventData.eventSource"),
    ],
)
def test_process_rejects_invalid_event_data(data: Any, code: str, field: str) -> None:
    result = run(item("bad", data=data))
    assert result["successful"] == []
    [failure] = result["failed"]
    assert failure["id"] == "bad"
    assert failure["errorCode"] == code
    assert field in failure["errorMessage"]
    assert 1 <= len(failure["errorMessage"]) <= 1024


def test_process_accepts_good_events_next_to_bad_ones() -> None:
    result = run(item("good-1"), item("bad", data="{}"), item("good-2", data=event_data(UID="other")))
    assert [s["id"] for s in result["successful"]] == ["good-1", "good-2"]
    assert [(f["id"], f["errorCode"]) for f in result["failed"]] == [("bad", "FieldNotFound")]


def test_process_accepts_ipv6_source_address() -> None:
    assert run(item(data=event_data(sourceIPAddress="2001:db8::1")))["failed"] == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["version", "userIdentity", "eventSource", "eventName", "eventTime", "UID", "recipientAccountId", "userAgent",
     "sourceIPAddress", "requestParameters", "responseElements", "errorCode", "additionalEventData", "other"]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(field_names, json_values, max_size=10)
    | st.builds(lambda base, extra: {**base, **extra}, st.just(event_data()), st.dictionaries(field_names, json_values))
    | st.text(max_size=50)
)
def test_process_never_raises_on_arbitrary_event_data(data: Any) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    result = run(item("x", data=text))
    assert len(result["successful"]) + len(result["failed"]) == 1
    for failure in result["failed"]:
        assert failure["errorCode"] in {
            "InvalidData",
            "FieldTooLong",
            "FieldNotFound",
            "InvalidRecipient",
            "InvalidEventSource",
        }
        assert 1 <= len(failure["errorMessage"]) <= 1024
