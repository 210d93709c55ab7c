"""IngestFunction (PutAuditEvents) called directly with API Gateway proxy events; SQS in moto."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentrail.adapters.buffer import Buffer, BufferError
from opentrail.domain.bundle import encode_record, pack, unpack
from opentrail.handlers import ingest
from opentrail.local.context import LocalContext
from opentrail.settings import IngestSettings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events" / "ingest"
CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/opentrail"
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)
SETTINGS = IngestSettings(
    buffer_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/unused", channel_arns=CHANNEL
)


def clock() -> datetime:
    return NOW


def event_data(**changes: Any) -> str:
    data = json.loads((FIXTURES / "event_data.json").read_text())
    data.update(changes)
    return json.dumps(data)


def proxy_event(items: list[dict[str, Any]] | None = None, **query: str | None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / "put_audit_events.json").read_text())
    if items is not None:
        event["body"] = json.dumps({"auditEvents": items})
    for name, value in query.items():
        if value is None:
            event["queryStringParameters"].pop(name, None)
            event["multiValueQueryStringParameters"].pop(name, None)
        else:
            event["queryStringParameters"][name] = value
            event["multiValueQueryStringParameters"][name] = [value]
    return event


class FakeBuffer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.bodies: list[str] = []
        self.fail = fail

    def send(self, bodies: list[str]) -> None:
        if self.fail:
            raise self.fail
        self.bodies.extend(bodies)

    def records(self) -> list[dict[str, Any]]:
        return [record for body in self.bodies for record in unpack(body).records()]


def call(
    event: dict[str, Any], buffer: Any = None, settings: IngestSettings = SETTINGS
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = ingest.handler(event, LocalContext(), buffer=buffer or FakeBuffer(), settings=settings, clock=clock)
    headers = {name.lower(): values[-1] for name, values in response["multiValueHeaders"].items()}
    return response["statusCode"], headers, json.loads(response["body"])


def test_ingest_stores_events_in_the_buffer_as_bundles(resources: Any, context: LocalContext) -> None:
    items = [{"id": f"evt-{i}", "eventData": event_data(UID=f"req-{i}")} for i in range(25)]
    response = ingest.handler(
        proxy_event(items), context, settings=resources.ingest_settings(), clock=clock,
        buffer=Buffer(resources.buffer_queue_url, client=boto3.client("sqs")),
    )  # fmt: skip
    assert response["statusCode"] == 200
    reply = json.loads(response["body"])
    assert reply["failed"] == []
    assert [s["id"] for s in reply["successful"]] == [f"evt-{i}" for i in range(25)]

    messages = boto3.client("sqs").receive_message(QueueUrl=resources.buffer_queue_url, MaxNumberOfMessages=10)
    [message] = messages["Messages"]  # 25 records, one bundle
    records = list(unpack(message["Body"]).records())
    assert [r["eventID"] for r in records] == [s["eventID"] for s in reply["successful"]]
    assert [r["requestID"] for r in records] == [f"req-{i}" for i in range(25)]
    first = records[0]
    assert first["eventSource"] == "billing.example.com"
    assert first["awsRegion"] == "us-east-1"
    assert first["recipientAccountId"] == "123456789012"
    assert first["userIdentity"]["userName"] == "alice"
    ingestion = first["additionalEventData"]["opentrailIngestion"]
    assert ingestion["channelArn"] == CHANNEL
    assert ingestion["callerArn"] == "arn:aws:sts::123456789012:assumed-role/AppWriter/deploy-session"


def test_ingest_partial_failure_stores_good_events_and_reports_bad_ones() -> None:
    buffer = FakeBuffer()
    status, _, reply = call(
        proxy_event(
            [
                {"id": "good", "eventData": event_data()},
                {"id": "other-account", "eventData": event_data(recipientAccountId="210987654321")},
                {"id": "not-json", "eventData": "{"},
            ]
        ),
        buffer,
    )
    assert status == 200
    assert [s["id"] for s in reply["successful"]] == ["good"]
    assert {f["id"]: f["errorCode"] for f in reply["failed"]} == {
        "other-account": "InvalidRecipient",
        "not-json": "InvalidData",
    }
    assert [r["eventID"] for r in buffer.records()] == [reply["successful"][0]["eventID"]]


def test_ingest_all_events_bad_sends_nothing() -> None:
    buffer = FakeBuffer()
    _, _, reply = call(proxy_event([{"id": "1", "eventData": "{}"}]), buffer)
    assert reply["successful"] == []
    assert buffer.bodies == []


@pytest.mark.parametrize(
    "failure",
    [BufferError("throttled"), EndpointConnectionError(endpoint_url="https://sqs"), RuntimeError("boom")],
)
def test_ingest_buffer_failure_reports_internal_failure(failure: Exception) -> None:
    _, _, reply = call(
        proxy_event([{"id": "a", "eventData": event_data()}, {"id": "b", "eventData": "{}"}]), FakeBuffer(failure)
    )
    assert reply["successful"] == []
    assert {f["id"]: f["errorCode"] for f in reply["failed"]} == {"a": "InternalFailure", "b": "FieldNotFound"}


def test_ingest_missing_queue_reports_internal_failure(resources: Any) -> None:
    missing = Buffer(resources.buffer_queue_url + "-missing", client=boto3.client("sqs"))
    _, _, reply = call(proxy_event([{"id": "a", "eventData": event_data()}]), missing)
    assert reply["successful"] == []
    assert reply["failed"][0]["errorCode"] == "InternalFailure"


def test_ingest_reports_only_the_events_of_refused_bundles() -> None:
    class HalfRefused(FakeBuffer):
        def send(self, bodies: list[str]) -> None:
            records = [r for body in bodies for r in unpack(body).records()]
            kept, refused = records[::2], records[1::2]
            self.bodies.extend(pack(encode_record(r) for r in kept))
            raise BufferError("1 message(s) not stored", pack(encode_record(r) for r in refused))

    buffer = HalfRefused()
    items = [{"id": str(i), "eventData": event_data(UID=str(i))} for i in range(6)]
    _, _, reply = call(proxy_event(items), buffer)
    assert [s["id"] for s in reply["successful"]] == ["0", "2", "4"]
    assert [(f["id"], f["errorCode"]) for f in reply["failed"]] == [
        ("1", "InternalFailure"),
        ("3", "InternalFailure"),
        ("5", "InternalFailure"),
    ]
    stored = {s["eventID"] for s in reply["successful"]}
    assert {r["eventID"] for r in buffer.records()} == stored


def _error(event: dict[str, Any], settings: IngestSettings = SETTINGS) -> tuple[int, str, str]:
    status, headers, reply = call(event, settings=settings)
    assert headers["x-amzn-errortype"] == reply["__type"]
    assert headers["content-type"] == "application/json"
    assert reply["message"]
    return status, reply["__type"], reply["message"]


def _with_caller(event: dict[str, Any], account: str | None) -> dict[str, Any]:
    event["requestContext"]["identity"]["accountId"] = account
    return event


GOOD = [{"id": "1", "eventData": event_data()}]


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (
            proxy_event(GOOD, channelArn="arn:aws:cloudtrail:us-east-1:123456789012:channel/nope"),
            404,
            "ChannelNotFound",
        ),
        (proxy_event(GOOD, channelArn="arn:aws:sqs:us-east-1:123456789012:q"), 400, "InvalidChannelARN"),
        (proxy_event(GOOD, channelArn="opentrail"), 400, "InvalidChannelARN"),
        (proxy_event(GOOD, channelArn=None), 400, "ValidationException"),
        (_with_caller(proxy_event(GOOD), "210987654321"), 403, "ChannelInsufficientPermission"),
        (_with_caller(proxy_event(GOOD), None), 403, "ChannelInsufficientPermission"),
        (proxy_event(GOOD, externalId="x"), 400, "ValidationException"),
        (proxy_event([]), 400, "ValidationException"),
        (proxy_event([{"id": str(i), "eventData": "{}"} for i in range(101)]), 400, "ValidationException"),
        (proxy_event([{"id": "1", "eventData": "x" * 1_100_000}]), 400, "ValidationException"),
        (proxy_event([*GOOD, *GOOD]), 400, "DuplicatedAuditEventId"),
        (proxy_event([{"id": "no spaces", "eventData": "{}"}]), 400, "ValidationException"),
        ({**proxy_event(), "body": "{"}, 400, "SerializationException"),
        ({**proxy_event(), "body": None}, 400, "ValidationException"),
        ({**proxy_event(), "httpMethod": "GET"}, 404, "UnknownOperationException"),
        ({**proxy_event(), "path": "/LookupEvents"}, 404, "UnknownOperationException"),
    ],
)
def test_ingest_request_errors_are_rest_json_errors(event: dict[str, Any], status: int, code: str) -> None:
    assert _error(event)[:2] == (status, code)


def test_ingest_accepts_base64_body_and_external_id() -> None:
    event = proxy_event(GOOD, externalId="tenant-42")
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    buffer = FakeBuffer()
    status, _, reply = call(event, buffer)
    assert status == 200
    assert reply["failed"] == []
    assert buffer.records()[0]["additionalEventData"]["opentrailIngestion"]["externalId"] == "tenant-42"


def test_ingest_unexpected_error_is_a_500_internal_failure() -> None:
    class Broken(IngestSettings):
        @property
        def channels(self) -> frozenset[str]:
            raise RuntimeError("boom")

    broken = Broken(buffer_queue_url="q", channel_arns=CHANNEL)
    assert _error(proxy_event(GOOD), broken)[:2] == (500, "InternalFailure")


def test_ingest_checksums_good_bad_absent() -> None:
    data = event_data()
    good = base64.b64encode(__import__("hashlib").sha256(data.encode()).digest()).decode()
    items = [
        {"id": "good", "eventData": data, "eventDataChecksum": good},
        {"id": "bad", "eventData": event_data(UID="x"), "eventDataChecksum": good},
        {"id": "absent", "eventData": event_data(UID="y")},
    ]
    _, _, reply = call(proxy_event(items))
    assert sorted(s["id"] for s in reply["successful"]) == ["absent", "good"]
    assert reply["failed"] == [
        {
            "id": "bad",
            "errorCode": "InvalidChecksum",
            "errorMessage": "eventDataChecksum: must be base64(SHA-256(eventData))",
        }
    ]


def test_ingest_api_gateway_event_builder_matches_the_fixture_shape() -> None:
    event = ingest.api_gateway_event(
        body=json.dumps({"auditEvents": GOOD}), channel_arn=CHANNEL, caller_account_id="123456789012"
    )
    status, _, reply = call(event)
    assert status == 200
    assert len(reply["successful"]) == 1


_VALID_CODES = {
    "InvalidData",
    "FieldTooLong",
    "FieldNotFound",
    "InvalidRecipient",
    "InvalidEventSource",
    "InvalidChecksum",
}
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=16),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_event_data = st.one_of(
    st.text(max_size=40),
    _json_values.map(json.dumps),
    st.dictionaries(
        st.sampled_from(
            ["version", "userIdentity", "eventSource", "eventName", "eventTime", "UID", "recipientAccountId", "x"]
        ),
        _json_values,
    ).map(lambda extra: event_data(**extra)),
)
_items = st.lists(
    st.fixed_dictionaries(
        {"id": st.from_regex(r"\A[-_A-Za-z0-9]{1,8}\Z"), "eventData": _event_data},
        optional={"eventDataChecksum": st.text(max_size=44)},
    ),
    min_size=0,
    max_size=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=_items)
def test_ingest_never_crashes_on_arbitrary_event_data(items: list[dict[str, Any]]) -> None:
    buffer = FakeBuffer()
    status, headers, reply = call(proxy_event(items), buffer)
    if status != 200:
        assert status == 400
        assert reply["__type"] in {"ValidationException", "DuplicatedAuditEventId"}
        assert headers["x-amzn-errortype"] == reply["__type"]
        return
    assert len(reply["successful"]) + len(reply["failed"]) == len(items)
    assert {f["errorCode"] for f in reply["failed"]} <= _VALID_CODES
    assert all(1 <= len(f["errorMessage"]) <= 1024 for f in reply["failed"])
    assert {r["eventID"] for r in buffer.records()} == {s["eventID"] for s in reply["successful"]}
