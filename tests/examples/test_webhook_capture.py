"""examples/webhook_capture: signed webhook deliveries → OpenTrail records."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from examples.webhook_capture.handler import event_name, handle
from opentrail.producer import emit

SECRET = "s3cr3t"


def delivery(payload: dict[str, Any], *, secret: str = SECRET, delivery_id: str = "d-1") -> dict[str, Any]:
    body = json.dumps(payload)
    signature = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return {
        "headers": {
            "X-Signature": signature,
            "X-Delivery-Id": delivery_id,
            "User-Agent": "Hookshot/1.0",
            "X-Event-Name": "repository.push",
        },
        "body": body,
        "requestContext": {"identity": {"sourceIp": "192.0.2.10"}},
    }


class Buffer:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, bodies: Any) -> None:
        self.bodies.extend(bodies)


def send_to(buffer: Buffer) -> Any:
    return lambda records: emit(records, buffer=buffer, account_id="111122223333", region="eu-west-1")


def test_signed_delivery_is_emitted_as_a_record() -> None:
    from opentrail.domain.bundle import unpack

    buffer = Buffer()
    reply = handle(
        delivery({"actor": {"id": "u-7", "name": "dana"}, "ref": "main"}), secret=SECRET, send=send_to(buffer)
    )
    assert reply["statusCode"] == 202
    (line,) = unpack(buffer.bodies[0]).lines
    record = json.loads(line)
    assert record["eventSource"] == "webhooks.example.com"
    assert record["eventName"] == "RepositoryPush"
    assert record["userIdentity"] == {"type": "WebhookSender", "principalId": "u-7", "userName": "dana"}
    assert record["sourceIPAddress"] == "192.0.2.10"
    assert record["requestParameters"]["ref"] == "main"
    assert json.loads(reply["body"])["eventIDs"] == [record["eventID"]]


def test_redelivery_keeps_the_event_id() -> None:
    first = json.loads(handle(delivery({"a": 1}), secret=SECRET, send=send_to(Buffer()))["body"])
    again = json.loads(handle(delivery({"a": 1}), secret=SECRET, send=send_to(Buffer()))["body"])
    assert first == again


def test_bad_signature_is_refused_and_nothing_sent() -> None:
    buffer = Buffer()
    assert handle(delivery({"a": 1}, secret="wrong"), secret=SECRET, send=send_to(buffer))["statusCode"] == 401
    assert buffer.bodies == []


def test_invalid_payload_is_a_400() -> None:
    event = delivery({"a": 1})
    event["body"] = "[1, 2]"
    event["headers"]["X-Signature"] = "sha256=" + hmac.new(SECRET.encode(), b"[1, 2]", hashlib.sha256).hexdigest()
    assert handle(event, secret=SECRET, send=send_to(Buffer()))["statusCode"] == 400


def test_event_names() -> None:
    assert event_name("repository.push") == "RepositoryPush"
    assert event_name("member_added") == "MemberAdded"
