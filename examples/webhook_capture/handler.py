"""A capture source for webhooks: sender → (API Gateway or a function URL) → this function → emit.

The sender signs the raw body with a shared secret (``X-Signature: sha256=<hex HMAC>``, the
GitHub/Stripe style); each delivery becomes one OpenTrail record::

    eventSource  webhooks.example.com        eventName   the event ("repository.push" → RepositoryPush)
    userIdentity {type: WebhookSender, principalId: the actor, userName: actor name}
    eventID      uuid5(delivery id): a redelivered webhook is stored once
    sourceIPAddress / userAgent from the request; requestParameters = the payload (≤ 64 KB)

Environment: WEBHOOK_SECRET (in production read it from Secrets Manager at cold start),
OPENTRAIL_BUFFER_QUEUE_URL and AWS_ACCOUNT_ID (set by ``trail.add_capture_source(fn)``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from opentrail.audited import audited
from opentrail.domain.record import RecordError
from opentrail.producer import emit

EVENT_SOURCE = "webhooks.example.com"
NAMESPACE = uuid.UUID("4c7b1a10-2f5e-4d0b-9a57-0e6f7d3b8c21")
MAX_PAYLOAD = 64 * 1024


def _headers(event: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def verify(body: bytes, signature: str, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(secret) and hmac.compare_digest(expected, signature)


def event_name(name: str) -> str:
    """``repository.push`` → ``RepositoryPush`` (CloudTrail's PascalCase action names)."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", ".").replace("_", ".").split(".") if part)


def to_record(event: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    headers = _headers(event)
    context = event.get("requestContext") or {}
    source_ip = (context.get("identity") or {}).get("sourceIp") or (context.get("http") or {}).get("sourceIp")
    actor = payload.get("actor") if isinstance(payload.get("actor"), Mapping) else {}
    delivery = headers.get("x-delivery-id") or str(payload.get("id") or "")
    if not delivery:
        raise ValueError("x-delivery-id: is required (or an id in the payload)")
    record: dict[str, Any] = {
        "eventSource": EVENT_SOURCE,
        "eventName": event_name(str(headers.get("x-event-name") or payload.get("event") or "")),
        "eventID": str(uuid.uuid5(NAMESPACE, delivery)),
        "userIdentity": {
            "type": "WebhookSender",
            "principalId": str(actor.get("id") or "unknown"),
            **({"userName": str(actor["name"])} if actor.get("name") else {}),
        },
        "requestParameters": dict(payload),
        "requestID": delivery,
        "additionalEventData": {"webhookDeliveryId": delivery},
    }
    if source_ip:
        record["sourceIPAddress"] = source_ip
    if headers.get("user-agent"):
        record["userAgent"] = headers["user-agent"]
    return record


def _reply(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def handle(
    event: Mapping[str, Any],
    *,
    secret: str,
    send: Callable[[list[dict[str, Any]]], list[str]] = emit,
) -> dict[str, Any]:
    body = _body(event)
    if not verify(body, _headers(event).get("x-signature", ""), secret):
        return _reply(401, {"message": "bad signature"})
    if len(body) > MAX_PAYLOAD:
        return _reply(413, {"message": f"payload over {MAX_PAYLOAD} bytes"})
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("the payload must be a JSON object")
        record = to_record(event, payload)
        event_ids = send([record])
    except (ValueError, RecordError) as error:  # json.JSONDecodeError is a ValueError
        return _reply(400, {"message": str(error)})
    return _reply(202, {"eventIDs": event_ids})


@audited
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (API Gateway proxy v1/v2 or function URL event)."""
    return handle(event, secret=os.environ.get("WEBHOOK_SECRET", ""))
