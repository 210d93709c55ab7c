"""PutAuditEvents (CloudTrail Lake's ``cloudtrail-data`` API, spec §6): parse, validate, map.

Pure: no boto3, no environment. The ingest handler gives this module the query string,
the body, who called and what the deployment accepts; it gets back either a
`RequestError` (the whole request fails with a CloudTrail error code) or, per audit
event, an `Accepted` (a canonical record, ready for the buffer) or a `Rejected`
(a per-event errorCode and a message naming the field and the rule).

The mapping from the external ``eventData`` schema to the canonical CloudTrail record is
documented in docs/capture.md ("PutAuditEvents mapping"); keep the two in step.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from opentrail.domain.record import (
    KB,
    CaptureContext,
    Record,
    RecordError,
    format_event_time,
    json_size,
    normalize,
    parse_event_time,
)

MAX_EVENTS: Final = 100
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_ERROR_MESSAGE: Final = 1024
INGESTION_KEY: Final = "opentrailIngestion"
# eventID = uuid5(this namespace, channel ARN + canonical eventData): a client that retries
# a request whose response it never saw gets the same eventIDs, so the batcher's
# dedupe-by-eventID stores each event once.
EVENT_ID_NAMESPACE: Final = uuid.UUID("0305e1f3-c53c-45ac-8fff-cfc9f652c060")

_CHANNEL_ARN = re.compile(r"^arn:(aws[a-z-]*):cloudtrail:([a-z0-9-]+):(\d{12}):channel/([A-Za-z0-9._/-]{1,256})$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]*$")
_AUDIT_EVENT_ID = re.compile(r"^[-_A-Za-z0-9]+$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
# yyyy-MM-ddTHH:mm:ss, UTC; a trailing Z and a fraction of a second are tolerated.
_EXTERNAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z?$")

# External eventData schema (spec §6): field -> (required, max length in characters).
_TEXT_FIELDS: Final[dict[str, tuple[bool, int]]] = {
    "version": (True, 256),
    "eventSource": (True, 1024),
    "eventName": (True, 1024),
    "UID": (True, 1024),
    "userAgent": (False, 1024),
    "errorCode": (False, 256),
    "errorMessage": (False, 256),
}
_OBJECT_FIELDS: Final[dict[str, int]] = {
    "requestParameters": 100 * KB,
    "responseElements": 100 * KB,
    "additionalEventData": 28 * KB,
}
_KNOWN_FIELDS: Final = frozenset(
    {*_TEXT_FIELDS, *_OBJECT_FIELDS, "userIdentity", "eventTime", "sourceIPAddress", "recipientAccountId"}
)
_IDENTITY_FIELDS: Final = frozenset({"type", "principalId", "details"})
# String members of userIdentity.details copied up to the CloudTrail userIdentity.
LIFTED_IDENTITY_FIELDS: Final = ("arn", "accountId", "userName", "accessKeyId", "invokedBy")


class RequestError(Exception):
    """The whole request fails. `code` is the CloudTrail error code (botocore's exception name)."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class EventError(Exception):
    """One audit event fails; `code` is a PutAuditEvents per-event errorCode."""

    def __init__(self, code: str, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.code = code
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class Channel:
    arn: str
    partition: str
    region: str
    account_id: str  # the channel owner
    name: str


@dataclass(frozen=True)
class AuditEvent:
    id: str
    event_data: str
    checksum: str | None


@dataclass(frozen=True)
class Caller:
    """The authenticated caller (API Gateway IAM auth)."""

    account_id: str
    arn: str | None = None


@dataclass(frozen=True)
class AuditEventsRequest:
    channel: Channel
    external_id: str | None
    events: tuple[AuditEvent, ...]
    caller: Caller


@dataclass(frozen=True)
class Accepted:
    id: str
    record: Record

    @property
    def event_id(self) -> str:
        return str(self.record["eventID"])


@dataclass(frozen=True)
class Rejected:
    id: str
    error_code: str
    error_message: str


def parse_channel_arn(value: str) -> Channel:
    match = _CHANNEL_ARN.match(value)
    if match is None:
        raise RequestError(
            "InvalidChannelARN",
            f"channelArn: {value[:200]!r} is not a channel ARN"
            " like arn:aws:cloudtrail:us-east-1:111122223333:channel/<id>",
        )
    partition, region, account, name = match.groups()
    return Channel(arn=value, partition=partition, region=region, account_id=account, name=name)


def parse_request(
    *,
    channel_arn: str | None,
    external_id: str | None,
    body: bytes | None,
    caller: Caller | None,
    accepted_channels: Collection[str],
) -> AuditEventsRequest:
    """Validate everything that fails the request as a whole (spec §6), in this order:
    channel ARN, caller, externalId, body size, body shape, event ids (unique)."""
    if not channel_arn:
        raise RequestError("ValidationException", "channelArn: is required (query parameter)")
    if not channel_arn.startswith("arn:"):
        raise RequestError("InvalidChannelARN", "channelArn: must match the pattern ^arn:.*$")
    channel = parse_channel_arn(channel_arn)
    if channel.arn not in accepted_channels:
        raise RequestError("ChannelNotFound", f"channelArn: channel {channel.arn} does not exist", status=404)
    if caller is None or not _ACCOUNT_ID.match(caller.account_id):
        raise RequestError(
            "ChannelInsufficientPermission", "caller: the request carries no authenticated AWS account", status=403
        )
    if caller.account_id != channel.account_id:
        raise RequestError(
            "ChannelInsufficientPermission",
            f"caller: account {caller.account_id} is not the owner of channel {channel.arn}",
            status=403,
        )
    if external_id is not None and not (2 <= len(external_id) <= 1224 and _EXTERNAL_ID.match(external_id)):
        raise RequestError("ValidationException", r"externalId: must be 2-1224 characters matching ^[\w+=,.@:\/-]*$")
    if body is None or not body:
        raise RequestError("ValidationException", "body: is required")
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(
            "ValidationException", f"body: must be at most 1 MB ({MAX_BODY_BYTES} bytes), got {len(body)}"
        )
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("SerializationException", "body: is not valid JSON") from None
    if not isinstance(document, dict):
        raise RequestError("ValidationException", "body: must be a JSON object with auditEvents")
    items = document.get("auditEvents")
    if items is None:
        raise RequestError("ValidationException", "auditEvents: is required")
    if not isinstance(items, list):
        raise RequestError("ValidationException", "auditEvents: must be a list")
    if not 1 <= len(items) <= MAX_EVENTS:
        raise RequestError("ValidationException", f"auditEvents: must hold 1 to {MAX_EVENTS} items, got {len(items)}")
    events = tuple(_parse_item(index, item) for index, item in enumerate(items))
    seen: set[str] = set()
    for event in events:
        if event.id in seen:
            raise RequestError("DuplicatedAuditEventId", f"auditEvents: id {event.id!r} appears more than once")
        seen.add(event.id)
    return AuditEventsRequest(channel=channel, external_id=external_id, events=events, caller=caller)


def _parse_item(index: int, item: object) -> AuditEvent:
    where = f"auditEvents[{index}]"
    if not isinstance(item, dict):
        raise RequestError("ValidationException", f"{where}: must be an object with id and eventData")
    event_id = item.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128 or not _AUDIT_EVENT_ID.match(event_id):
        raise RequestError(
            "ValidationException", f"{where}.id: is required, 1-128 characters matching ^[-_A-Za-z0-9]+$"
        )
    data = item.get("eventData")
    if not isinstance(data, str):
        raise RequestError("ValidationException", f"{where}.eventData: is required and must be a string")
    checksum = item.get("eventDataChecksum")
    if checksum is not None and not isinstance(checksum, str):
        raise RequestError("ValidationException", f"{where}.eventDataChecksum: must be a string")
    return AuditEvent(id=event_id, event_data=data, checksum=checksum)


def checksum_of(event_data: str) -> str:
    """base64(sha256(eventData as UTF-8)), as `printf %s "$data" | openssl dgst -binary -sha256 | base64`."""
    return base64.b64encode(hashlib.sha256(event_data.encode("utf-8")).digest()).decode("ascii")


def process(
    request: AuditEventsRequest,
    *,
    region: str,
    now: datetime,
    make_id: Callable[[str, str], str] | None = None,
) -> tuple[list[Accepted], list[Rejected]]:
    """Validate and map every event; a bad event never fails its neighbours."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    for event in request.events:
        try:
            record = to_record(event, request, region=region, now=now, make_id=make_id)
        except EventError as error:
            rejected.append(Rejected(event.id, error.code, _message(f"{error.field}: {error.rule}")))
        else:
            accepted.append(Accepted(event.id, record))
    return accepted, rejected


def to_record(
    event: AuditEvent,
    request: AuditEventsRequest,
    *,
    region: str,
    now: datetime,
    make_id: Callable[[str, str], str] | None = None,
) -> Record:
    """Check one event's checksum and eventData, then build the canonical record."""
    if event.checksum is not None and not _checksum_matches(event.event_data, event.checksum):
        raise EventError("InvalidChecksum", "eventDataChecksum", "must be base64(SHA-256(eventData))")
    try:
        data = json.loads(event.event_data)
    except ValueError:
        raise EventError("InvalidData", "eventData", "must be a JSON object encoded as a string") from None
    if not isinstance(data, dict):
        raise EventError("InvalidData", "eventData", "must be a JSON object")
    _validate_event_data(data, owner=request.channel.account_id)

    identity = data["userIdentity"]
    user_identity: dict[str, Any] = {"type": identity["type"], "principalId": identity["principalId"]}
    details = identity.get("details")
    if details is not None:
        for name in LIFTED_IDENTITY_FIELDS:
            if isinstance(details.get(name), str):
                user_identity[name] = details[name]
        user_identity["details"] = details

    ingestion: dict[str, Any] = {
        "channelArn": request.channel.arn,
        "auditEventId": event.id,
        "eventDataVersion": data["version"],
        "ingestionTime": format_event_time(now),
    }
    if request.external_id is not None:
        ingestion["externalId"] = request.external_id
    if request.caller.arn:
        ingestion["callerArn"] = request.caller.arn
    additional = dict(data.get("additionalEventData") or {})
    additional[INGESTION_KEY] = ingestion

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    event_id = (make_id or _derived_event_id)(request.channel.arn, canonical)
    raw: Record = {
        "eventVersion": "1.11",
        "userIdentity": user_identity,
        "eventTime": data["eventTime"],
        "eventSource": data["eventSource"],
        "eventName": data["eventName"],
        "awsRegion": region,
        "sourceIPAddress": data.get("sourceIPAddress"),
        "userAgent": data.get("userAgent"),
        "requestParameters": data.get("requestParameters"),
        "responseElements": data.get("responseElements"),
        "errorCode": data.get("errorCode"),
        "errorMessage": data.get("errorMessage"),
        "additionalEventData": additional,
        "requestID": data["UID"],
        "eventID": event_id,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": data["recipientAccountId"],
        "eventCategory": "Management",
    }
    raw = {key: value for key, value in raw.items() if value is not None or key in _NULLABLE_RECORD_FIELDS}
    try:
        return normalize(raw, CaptureContext(account_id=request.channel.account_id, region=region), now=now)
    except RecordError as error:
        raise EventError(error.code, _external_field(error.field), error.rule) from None


_NULLABLE_RECORD_FIELDS: Final = frozenset({"requestParameters", "responseElements"})
# canonical field -> the eventData field it came from (for error messages).
_FIELD_ORIGIN: Final = {"requestID": "UID", "userIdentity.type": "userIdentity.type"}


def _external_field(field: str) -> str:
    return f"eventData.{_FIELD_ORIGIN.get(field, field)}"


def _derived_event_id(channel_arn: str, canonical_event_data: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{channel_arn}\n{canonical_event_data}"))


def _checksum_matches(event_data: str, checksum: str) -> bool:
    try:
        claimed = base64.b64decode(checksum, validate=True)
    except (binascii.Error, ValueError):
        return False
    return claimed == hashlib.sha256(event_data.encode("utf-8")).digest()


def _validate_event_data(data: Mapping[str, Any], *, owner: str) -> None:
    """The external eventData schema (spec §6). Raises EventError naming eventData.<field>."""
    for name in data:
        if name not in _KNOWN_FIELDS:
            raise EventError("InvalidData", f"eventData.{name}", "is not a field of the audit event schema")

    identity = data.get("userIdentity")
    if identity is None:
        raise EventError("FieldNotFound", "eventData.userIdentity", "is required")
    if not isinstance(identity, dict):
        raise EventError("InvalidData", "eventData.userIdentity", "must be an object")
    for name in identity:
        if name not in _IDENTITY_FIELDS:
            raise EventError("InvalidData", f"eventData.userIdentity.{name}", "is not a field (use details)")
    _text(identity, "type", 128, required=True, prefix="eventData.userIdentity.")
    _text(identity, "principalId", 1024, required=True, prefix="eventData.userIdentity.")
    details = identity.get("details")
    if details is not None and not isinstance(details, dict):
        raise EventError("InvalidData", "eventData.userIdentity.details", "must be a JSON object")

    for name, (required, limit) in _TEXT_FIELDS.items():
        _text(data, name, limit, required=required, prefix="eventData.")

    event_time = data.get("eventTime")
    if event_time is None:
        raise EventError("FieldNotFound", "eventData.eventTime", "is required")
    if not isinstance(event_time, str) or not _EXTERNAL_TIME.match(event_time):
        raise EventError("InvalidData", "eventData.eventTime", "must be a UTC time like 2025-03-14T09:26:53Z")
    try:
        parse_event_time(event_time)
    except RecordError as error:
        raise EventError("InvalidData", "eventData.eventTime", error.rule) from None

    source_ip = data.get("sourceIPAddress")
    if source_ip is not None:
        if not isinstance(source_ip, str):
            raise EventError("InvalidData", "eventData.sourceIPAddress", "must be an IPv4 or IPv6 address")
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise EventError("InvalidData", "eventData.sourceIPAddress", "must be an IPv4 or IPv6 address") from None

    for name, limit in _OBJECT_FIELDS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise EventError("InvalidData", f"eventData.{name}", "must be a JSON object")
        if json_size(value) > limit:
            raise EventError("FieldTooLong", f"eventData.{name}", f"must be at most {limit // KB} KB of JSON")
    additional = data.get("additionalEventData")
    if isinstance(additional, dict) and INGESTION_KEY in additional:
        raise EventError("InvalidData", f"eventData.additionalEventData.{INGESTION_KEY}", "is reserved for OpenTrail")

    if data["eventSource"].endswith("amazonaws.com"):
        raise EventError("InvalidEventSource", "eventData.eventSource", "must not be an AWS service (*.amazonaws.com)")

    recipient = data.get("recipientAccountId")
    if recipient is None:
        raise EventError("FieldNotFound", "eventData.recipientAccountId", "is required")
    if not isinstance(recipient, str) or not _ACCOUNT_ID.match(recipient):
        raise EventError("InvalidData", "eventData.recipientAccountId", "must be a 12-digit AWS account id")
    if recipient != owner:
        raise EventError(
            "InvalidRecipient", "eventData.recipientAccountId", f"must be the channel owner's account {owner}"
        )


def _text(data: Mapping[str, Any], name: str, limit: int, *, required: bool, prefix: str) -> None:
    value = data.get(name)
    field = f"{prefix}{name}"
    if value is None:
        if required:
            raise EventError("FieldNotFound", field, "is required")
        return
    if not isinstance(value, str):
        raise EventError("InvalidData", field, "must be a string")
    if required and not value:
        raise EventError("InvalidData", field, "must not be empty")
    if len(value) > limit:
        raise EventError("FieldTooLong", field, f"must be at most {limit} characters")


def _message(text: str) -> str:
    return text[:MAX_ERROR_MESSAGE] or "invalid"


def response_body(accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> dict[str, list[dict[str, str]]]:
    """The PutAuditEvents response: ``{"successful": [{id, eventID}], "failed": [{id, errorCode, errorMessage}]}``."""
    return {
        "successful": [{"id": item.id, "eventID": item.event_id} for item in accepted],
        "failed": [
            {"id": item.id, "errorCode": item.error_code, "errorMessage": item.error_message} for item in rejected
        ],
    }
