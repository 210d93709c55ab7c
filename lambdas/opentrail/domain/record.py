"""The canonical record: CloudTrail's event record (spec §1, eventVersion 1.11).

A record is a plain ``dict`` so that fields this model does not know (newer CloudTrail
versions, service-specific extras) travel untouched from capture to every store.
`normalize` is the one gate every record passes at capture: it validates the fields
CloudTrail defines, fills in what CloudTrail always carries, and enforces CloudTrail's
size limits.

Size limits (documented in docs/record.md):
* string fields CloudTrail truncates (``userAgent``, ``errorCode``, ``errorMessage``,
  ``requestID``; 1 KB) are cut the same way, ending in "...", on a UTF-8 character boundary;
* object fields over their cap (``requestParameters``/``responseElements``/
  ``serviceEventDetails`` 100 KB, ``additionalEventData``/``edgeDeviceDetails`` 28 KB)
  and records over 256 KB are rejected with a `RecordError`, because cutting JSON
  would silently change what an auditor reads.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

EVENT_VERSION: Final = "1.11"
KB: Final = 1024
MAX_RECORD_BYTES: Final = 256 * KB
TRUNCATED_STRING_FIELDS: Final = {"userAgent": KB, "errorCode": KB, "errorMessage": KB, "requestID": KB}
OBJECT_FIELD_LIMITS: Final = {
    "requestParameters": 100 * KB,
    "responseElements": 100 * KB,
    "serviceEventDetails": 100 * KB,
    "additionalEventData": 28 * KB,
    "edgeDeviceDetails": 28 * KB,
}
EVENT_CATEGORIES: Final = frozenset({"Management", "Data", "Insight", "NetworkActivity"})
# eventTypes that carry `managementEvent` (spec §1.1).
API_EVENT_TYPES: Final = frozenset({"AwsApiCall", "AwsConsoleAction", "AwsConsoleSignIn", "AwsServiceEvent"})
INSIGHT_EVENT_TYPE: Final = "AwsCloudTrailInsight"
# Event names starting with one of these verbs (followed by an upper-case letter, a digit
# or nothing) are reads when the producer does not say; everything else is a write.
READ_ONLY_VERBS: Final = (
    "BatchGet", "Check", "Describe", "Estimate", "Get", "Head", "List", "Lookup",
    "Preview", "Query", "Scan", "Search", "Select", "Validate", "View",
)  # fmt: skip
FUTURE_TOLERANCE: Final = timedelta(minutes=15)
_SMALLEST_OBJECT_LIMIT: Final = min(OBJECT_FIELD_LIMITS.values())

_READ_ONLY_PATTERN = re.compile(rf"^(?:{'|'.join(READ_ONLY_VERBS)})(?:[A-Z0-9_]|$)")
_EVENT_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$")
_CANONICAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z0-9-]{2,32}$")
_EVENT_VERSION = re.compile(r"^\d+\.\d+$")
_EVENT_TYPE = re.compile(r"^[A-Za-z]{1,64}$")

Record = dict[str, Any]


class RecordError(ValueError):
    """A record broke a rule. `field` is the record's field (dotted path), `rule` the rule."""

    def __init__(self, field: str, rule: str, *, code: str = "InvalidData") -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.code = code  # PutAuditEvents errorCode: InvalidData, FieldTooLong, FieldNotFound


@dataclass(frozen=True)
class CaptureContext:
    """What capture knows that the producer may not say: where the event was received."""

    account_id: str
    region: str


def format_event_time(moment: datetime) -> str:
    """CloudTrail's eventTime: UTC, second precision, literal Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_event_time(value: object, field: str = "eventTime") -> datetime:
    """Parse an ISO 8601 timestamp (Z, offset or naive-as-UTC; fractions dropped)."""
    if not isinstance(value, str):
        raise RecordError(field, "must be a string timestamp like 2025-03-14T09:26:53Z")
    match = _EVENT_TIME.match(value)
    if match is None:
        raise RecordError(field, f"must be an ISO 8601 UTC timestamp like 2025-03-14T09:26:53Z, got {value[:40]!r}")
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError as error:
        raise RecordError(field, f"is not a valid date and time ({error})") from None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment


def infer_read_only(event_name: str) -> bool:
    """Reads are Get/List/Describe/Head/... calls; see READ_ONLY_VERBS."""
    return _READ_ONLY_PATTERN.match(event_name) is not None


def json_size(value: object) -> int:
    """Bytes of the compact UTF-8 JSON encoding, the measure CloudTrail's limits use."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


TRUNCATION_MARK: Final = "..."


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut to at most `max_bytes` UTF-8 bytes, ending in "...", without splitting a character.

    CloudTrail marks its cuts with "..." and its records carry up to `max_bytes` + 3 bytes
    (seen in real logs: 1,026-byte errorMessages); such already-cut values are kept as they are.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    if text.endswith(TRUNCATION_MARK) and len(encoded) <= max_bytes + len(TRUNCATION_MARK):
        return text
    kept = encoded[: max_bytes - len(TRUNCATION_MARK)].decode("utf-8", errors="ignore")
    return kept + TRUNCATION_MARK


def new_event_id() -> str:
    return str(uuid.uuid4())


def normalize(
    raw: Mapping[str, Any],
    context: CaptureContext,
    *,
    now: datetime,
    make_id: Callable[[], str] = new_event_id,
) -> Record:
    """Validate and complete one record; returns a new dict, never mutates `raw`.

    Idempotent: normalising an already-normalised record returns an equal record, so a
    record can pass capture twice (re-import, retries) without changing its eventID.
    """
    if not isinstance(raw, Mapping):
        raise RecordError("record", "must be a JSON object")
    record: Record = dict(raw)

    version = record.setdefault("eventVersion", EVENT_VERSION)
    if not isinstance(version, str) or not _EVENT_VERSION.match(version):
        raise RecordError("eventVersion", 'must be a "<major>.<minor>" string such as "1.11"')

    event_type = record.setdefault("eventType", "AwsApiCall")
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise RecordError("eventType", "must be a name such as AwsApiCall or AwsServiceEvent")
    is_insight = event_type == INSIGHT_EVENT_TYPE

    event_id = record.get("eventID")
    if event_id is None:
        record["eventID"] = make_id()
    elif not isinstance(event_id, str) or not _UUID.match(event_id):
        raise RecordError("eventID", "must be a UUID such as c2f3a8d1-6b4e-4a8f-9d2c-7e5f1a0b3c44")

    if "eventTime" not in record:
        record["eventTime"] = format_event_time(now)
    elif not (isinstance(record["eventTime"], str) and _CANONICAL_TIME.match(record["eventTime"])):
        record["eventTime"] = format_event_time(parse_event_time(record["eventTime"]))
    if parse_event_time(record["eventTime"]) > now + FUTURE_TOLERANCE:
        raise RecordError("eventTime", "must not be more than 15 minutes in the future")

    account = record.setdefault("recipientAccountId", context.account_id)
    if not isinstance(account, str) or not _ACCOUNT_ID.match(account):
        raise RecordError("recipientAccountId", "must be a 12-digit AWS account id")
    region = record.setdefault("awsRegion", context.region)
    if not isinstance(region, str) or not _REGION.match(region):
        raise RecordError("awsRegion", "must be a region name such as us-east-1")

    category = record.setdefault("eventCategory", "Insight" if is_insight else "Management")
    if not isinstance(category, str) or category not in EVENT_CATEGORIES:
        raise RecordError("eventCategory", f"must be one of {', '.join(sorted(EVENT_CATEGORIES))}")

    if is_insight:
        if not isinstance(record.get("insightDetails"), Mapping):
            raise RecordError("insightDetails", "is required for AwsCloudTrailInsight events and must be an object")
    else:
        _require_text(record, "eventSource")
        _require_text(record, "eventName")
        identity = record.get("userIdentity")
        if not isinstance(identity, Mapping):
            raise RecordError("userIdentity", "is required and must be an object", code="FieldNotFound")
        if not isinstance(identity.get("type"), str) or not identity["type"]:
            raise RecordError("userIdentity.type", "is required and must be a non-empty string", code="FieldNotFound")
        read_only = record.setdefault("readOnly", infer_read_only(record["eventName"]))
        if not isinstance(read_only, bool):
            raise RecordError("readOnly", "must be a boolean (true or false)")
        if event_type in API_EVENT_TYPES:
            managed = record.setdefault("managementEvent", category == "Management")
            if not isinstance(managed, bool):
                raise RecordError("managementEvent", "must be a boolean (true or false)")
        record.setdefault("requestParameters", None)
        record.setdefault("responseElements", None)

    for field, limit in TRUNCATED_STRING_FIELDS.items():
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(field, "must be a string")
        record[field] = truncate_utf8(value, limit)
    source_ip = record.get("sourceIPAddress")
    if source_ip is not None and not isinstance(source_ip, str):
        raise RecordError("sourceIPAddress", "must be a string")

    for field in OBJECT_FIELD_LIMITS:
        value = record.get(field)
        if value is not None and not isinstance(value, Mapping):
            raise RecordError(field, "must be a JSON object or null")

    resources = record.get("resources")
    if resources is not None and (
        not isinstance(resources, list) or not all(isinstance(item, Mapping) for item in resources)
    ):
        raise RecordError("resources", "must be a list of objects with ARN, accountId and type")

    size = json_size(record)
    if size > MAX_RECORD_BYTES:
        raise RecordError("record", "must be at most 256 KB of JSON", code="FieldTooLong")
    if size > _SMALLEST_OBJECT_LIMIT:  # below it no field can be over its cap: skip the encodings
        for field, limit in OBJECT_FIELD_LIMITS.items():
            value = record.get(field)
            if value is not None and json_size(value) > limit:
                raise RecordError(field, f"must be at most {limit // KB} KB of JSON", code="FieldTooLong")
    return record


def _require_text(record: Mapping[str, Any], field: str) -> None:
    value = record.get(field)
    if value is None:
        raise RecordError(field, "is required", code="FieldNotFound")
    if not isinstance(value, str) or not value:
        raise RecordError(field, "must be a non-empty string")
    if len(value.encode("utf-8")) > KB:
        raise RecordError(field, "must be at most 1 KB", code="FieldTooLong")
