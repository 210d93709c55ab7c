"""LookupEvents (spec §5): the query model shared by the API, the index and the CLI.

`LookupQuery` is a validated request; the index answers it with a `LookupPage`. Request
parsing, CloudTrail's validation rules and error codes, NextToken sealing and the
response shape live here too (pure Python: no boto3, no environment, time and keys are
parameters).

Request rules (CloudTrail's, with OpenTrail's one deliberate difference):

* ``LookupAttributes``: at most one ``{AttributeKey, AttributeValue}``; the key is one of the
  eight `LOOKUP_ATTRIBUTE_KEYS`; the value is 1..2000 characters where ``_``, space, ``,``
  and newline count as two. CloudTrail silently ignores attributes after the first;
  OpenTrail never ignores one: more than one is `InvalidLookupAttributesException` unless
  the caller opts in to AND (`MATCH_ALL_FIELD` in the body or `MATCH_ALL_HEADER`), and then
  every attribute must match.
* ``StartTime``/``EndTime``: epoch seconds (JSON numbers, as botocore sends them), both
  inclusive; defaults: the last `DEFAULT_WINDOW` (90 days) up to now. Start after end is
  `InvalidTimeRangeException`.
* ``EventCategory``: only ``insight`` (then only Insights events, and only the keys
  EventId, EventName, EventSource); absent = never Insights events.
* ``MaxResults``: 1..50, default 50.
* ``NextToken``: opaque, sealed with HMAC-SHA256; bound to the query's parameters (region,
  attributes, category, the StartTime/EndTime as sent) and to the first page's time window.
  ``MaxResults`` may change between pages (it is a page size; the cursor is a position).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from opentrail.domain import history
from opentrail.domain.record import parse_event_time

# The index matches Username/ResourceName/ReadOnly with these; the response uses the same.
username_of = history.username
resource_name_of = history.short_resource_name
read_only_of = history.read_only_text
resources_of = history.response_resources

# The eight LookupEvents attribute keys, in CloudTrail's spelling.
LOOKUP_ATTRIBUTE_KEYS: Final = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
INSIGHT_ATTRIBUTE_KEYS: Final = history.INSIGHT_KEYS  # what CloudTrail indexes for Insights events
MAX_RESULTS: Final = 50
MAX_ATTRIBUTE_VALUE: Final = 2000
# Characters that count double towards MAX_ATTRIBUTE_VALUE (botocore model, LookupAttribute).
DOUBLE_COUNTED: Final = frozenset("_ ,\n")
DEFAULT_WINDOW: Final = timedelta(days=90)
INSIGHT_CATEGORY: Final = "insight"

# The AND opt-in: a request member (OpenTrail's own, not in CloudTrail's model) or a header.
MATCH_ALL_FIELD: Final = "OpenTrailMatchAllAttributes"
MATCH_ALL_HEADER: Final = "X-OpenTrail-Match-All"
# With the opt-in, at most this many attributes (one per key, or repeated ResourceType/Name).
MAX_MATCH_ALL_ATTRIBUTES: Final = 8

# Error codes: botocore's modelled exceptions for LookupEvents.
INVALID_LOOKUP_ATTRIBUTES: Final = "InvalidLookupAttributesException"
INVALID_TIME_RANGE: Final = "InvalidTimeRangeException"
INVALID_MAX_RESULTS: Final = "InvalidMaxResultsException"
INVALID_NEXT_TOKEN: Final = "InvalidNextTokenException"
INVALID_EVENT_CATEGORY: Final = "InvalidEventCategoryException"
INVALID_PARAMETER: Final = "InvalidParameterException"

# Where the NextToken key lives: one item of the history table (opentrail.adapters.history_config).
CONFIG_PK: Final = "CONFIG"
NEXT_TOKEN_KEY_SK: Final = "NEXT_TOKEN_KEY"
TOKEN_VERSION: Final = 1
MAX_TOKEN_CHARS: Final = 8192
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_SECONDS: Final = 253402300799  # 9999-12-31T23:59:59Z

AttributeKey = Literal[
    "EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource", "AccessKeyId"
]


@dataclass(frozen=True)
class LookupQuery:
    """A validated LookupEvents request (times are inclusive, UTC)."""

    region: str
    start: datetime
    end: datetime
    attributes: tuple[tuple[str, str], ...] = ()  # (AttributeKey, AttributeValue); >1 only when ANDed
    insight: bool = False  # EventCategory=insight: only Insights events; otherwise never Insights events
    max_results: int = MAX_RESULTS


@dataclass(frozen=True)
class LookupPage:
    """Up to `max_results` records, newest first, and where the next page starts (None = last page)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    cursor: dict[str, Any] | None = None  # opaque to callers; JSON-serialisable


class LookupRequestError(ValueError):
    """The request breaks a rule. `code` is CloudTrail's error code (botocore's exception name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LookupRequest:
    """A parsed LookupEvents request: the query, the NextToken as sent, and the fingerprint
    of the parameters a NextToken is bound to (everything but MaxResults and NextToken)."""

    query: LookupQuery
    next_token: str | None
    fingerprint: str


# --- request parsing ----------------------------------------------------------------------------


def parse_lookup_request(body: Mapping[str, Any], *, region: str, now: datetime, allow_and: bool) -> LookupQuery:
    """Validate a LookupEvents request body; raise `LookupRequestError` with CloudTrail's code.

    `allow_and` is the header opt-in (`MATCH_ALL_HEADER`); the body member `MATCH_ALL_FIELD`
    opts in as well. NextToken is checked for its type only; see `parse_lookup_events`.
    """
    return parse_lookup_events(body, region=region, now=now, allow_and=allow_and).query


def parse_lookup_events(
    body: Mapping[str, Any],
    *,
    region: str,
    now: datetime,
    allow_and: bool,
    default_window: timedelta = DEFAULT_WINDOW,
) -> LookupRequest:
    """`parse_lookup_request` plus the NextToken and the parameters' fingerprint."""
    if not isinstance(body, Mapping):
        raise LookupRequestError("SerializationException", "the request body must be a JSON object")
    for name in body:
        if name.startswith("OpenTrail") and name != MATCH_ALL_FIELD:
            raise LookupRequestError(INVALID_PARAMETER, f"{name}: unknown OpenTrail request member")
    match_all = _match_all(body.get(MATCH_ALL_FIELD)) or allow_and

    category = body.get("EventCategory")
    if category is not None and category != INSIGHT_CATEGORY:
        raise LookupRequestError(
            INVALID_EVENT_CATEGORY, f"EventCategory: must be {INSIGHT_CATEGORY!r}, got {category!r}"
        )
    insight = category == INSIGHT_CATEGORY

    attributes = _attributes(body.get("LookupAttributes"), match_all=match_all, insight=insight)
    max_results = _max_results(body.get("MaxResults"))

    start_given = _timestamp(body.get("StartTime"), "StartTime")
    end_given = _timestamp(body.get("EndTime"), "EndTime")
    now = now.astimezone(UTC)
    end = end_given if end_given is not None else now
    start = start_given if start_given is not None else min(now - default_window, end)
    if start > end:
        default = "" if end_given is not None else " (default: now)"
        raise LookupRequestError(
            INVALID_TIME_RANGE, f"StartTime: must not be after EndTime{default}: {_iso(start)} > {_iso(end)}"
        )

    next_token = body.get("NextToken")
    if next_token is not None and (not isinstance(next_token, str) or not next_token):
        raise LookupRequestError(INVALID_NEXT_TOKEN, "NextToken: must be a token returned by LookupEvents")

    query = LookupQuery(
        region=region, start=start, end=end, attributes=attributes, insight=insight, max_results=max_results
    )
    fingerprint = _fingerprint(
        {
            "r": region,
            "a": sorted([key, value] for key, value in attributes),
            "i": insight,
            "s": None if start_given is None else _micros(start_given),
            "e": None if end_given is None else _micros(end_given),
        }
    )
    return LookupRequest(query=query, next_token=next_token, fingerprint=fingerprint)


def _match_all(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise LookupRequestError(INVALID_PARAMETER, f"{MATCH_ALL_FIELD}: must be true or false")
    return value


def attribute_value_length(value: str) -> int:
    """CloudTrail's length of an AttributeValue: ``_``, space, ``,`` and newline count as two."""
    return len(value) + sum(1 for char in value if char in DOUBLE_COUNTED)


def _attributes(raw: object, *, match_all: bool, insight: bool) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise LookupRequestError(INVALID_LOOKUP_ATTRIBUTES, "LookupAttributes: must be a list")
    if len(raw) > 1 and not match_all:
        raise LookupRequestError(
            INVALID_LOOKUP_ATTRIBUTES,
            f"LookupAttributes: at most one lookup attribute is allowed, got {len(raw)}; to match all of "
            f"several attributes set {MATCH_ALL_FIELD!r}: true or the header {MATCH_ALL_HEADER}: true",
        )
    if len(raw) > MAX_MATCH_ALL_ATTRIBUTES:
        raise LookupRequestError(
            INVALID_LOOKUP_ATTRIBUTES,
            f"LookupAttributes: at most {MAX_MATCH_ALL_ATTRIBUTES} attributes, got {len(raw)}",
        )
    allowed = INSIGHT_ATTRIBUTE_KEYS if insight else LOOKUP_ATTRIBUTE_KEYS
    parsed: list[tuple[str, str]] = []
    for index, item in enumerate(raw):
        where = f"LookupAttributes[{index}]"
        if not isinstance(item, Mapping):
            raise LookupRequestError(
                INVALID_LOOKUP_ATTRIBUTES, f"{where}: must be an object with AttributeKey and AttributeValue"
            )
        key = item.get("AttributeKey")
        value = item.get("AttributeValue")
        if key is None:
            raise LookupRequestError(INVALID_LOOKUP_ATTRIBUTES, f"{where}.AttributeKey: is required")
        if key not in LOOKUP_ATTRIBUTE_KEYS:
            raise LookupRequestError(
                INVALID_LOOKUP_ATTRIBUTES,
                f"{where}.AttributeKey: must be one of {', '.join(LOOKUP_ATTRIBUTE_KEYS)}, got {str(key)[:100]!r}",
            )
        if key not in allowed:
            raise LookupRequestError(
                INVALID_LOOKUP_ATTRIBUTES,
                f"{where}.AttributeKey: with EventCategory insight only {', '.join(INSIGHT_ATTRIBUTE_KEYS)} "
                f"apply, got {key!r}",
            )
        if value is None:
            raise LookupRequestError(INVALID_LOOKUP_ATTRIBUTES, f"{where}.AttributeValue: is required")
        if not isinstance(value, str):
            raise LookupRequestError(INVALID_LOOKUP_ATTRIBUTES, f"{where}.AttributeValue: must be a string")
        if not value:
            raise LookupRequestError(INVALID_LOOKUP_ATTRIBUTES, f"{where}.AttributeValue: must not be empty")
        length = attribute_value_length(value)
        if length > MAX_ATTRIBUTE_VALUE:
            raise LookupRequestError(
                INVALID_LOOKUP_ATTRIBUTES,
                f"{where}.AttributeValue: at most {MAX_ATTRIBUTE_VALUE} characters, where '_', ' ', ',' and "
                f"newline count as two; got {length}",
            )
        if key == "ReadOnly":
            value = _read_only_value(value, where)
        parsed.append((key, value))
    return tuple(parsed)


def _read_only_value(value: str, where: str) -> str:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise LookupRequestError(
            INVALID_LOOKUP_ATTRIBUTES,
            f"{where}.AttributeValue: ReadOnly must be 'true' or 'false', got {value[:100]!r}",
        )
    return lowered


def _max_results(raw: object) -> int:
    if raw is None:
        return MAX_RESULTS
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_RESULTS:
        raise LookupRequestError(
            INVALID_MAX_RESULTS, f"MaxResults: must be an integer from 1 to {MAX_RESULTS}, got {raw!r}"
        )
    return raw


def _timestamp(raw: object, name: str) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise LookupRequestError(INVALID_TIME_RANGE, f"{name}: must be a timestamp in epoch seconds (a number)")
    if not math.isfinite(raw) or not 0 <= raw <= _MAX_EPOCH_SECONDS:
        raise LookupRequestError(INVALID_TIME_RANGE, f"{name}: {raw!r} is outside the range of possible times")
    if isinstance(raw, int):
        return _EPOCH + timedelta(seconds=raw)
    return _EPOCH + timedelta(microseconds=round(raw * 1_000_000))


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _fingerprint(parameters: Mapping[str, Any]) -> str:
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest()[:18])


# --- NextToken ----------------------------------------------------------------------------------


def seal_next_token(request: LookupRequest, query: LookupQuery, cursor: Mapping[str, Any], key: bytes) -> str:
    """The NextToken for the page after `cursor`, bound to `request`'s fingerprint and to the
    time window of `query` (the first page's, so defaults do not move between pages).

    ``urlsafe-b64(JSON {v, c: cursor, f: fingerprint, w: [start, end] µs}) + "." + urlsafe-b64(MAC)``
    with MAC = HMAC-SHA256(key, payload part).
    """
    payload = {
        "v": TOKEN_VERSION,
        "c": dict(cursor),
        "f": request.fingerprint,
        "w": [_micros(query.start), _micros(query.end)],
    }
    body = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return f"{body}.{_b64(_mac(key, body))}"


def open_next_token(request: LookupRequest, key: bytes) -> tuple[LookupQuery, dict[str, Any] | None]:
    """The query to run and the cursor to start from.

    Without a NextToken: (request.query, None). With one: the query with the first page's time
    window and the token's cursor; `InvalidNextTokenException` when the token is malformed,
    altered, sealed with another key, or was issued for other parameters.
    """
    token = request.next_token
    if token is None:
        return request.query, None
    invalid = LookupRequestError(
        INVALID_NEXT_TOKEN, "NextToken: invalid token; use a NextToken returned by LookupEvents"
    )
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise invalid
    body, _, mac = token.partition(".")
    try:
        given_mac = _unb64(mac)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not hmac.compare_digest(given_mac, _mac(key, body)):
        raise invalid
    try:
        payload = json.loads(_unb64(body))
        version, cursor, fingerprint, window = payload["v"], payload["c"], payload["f"], payload["w"]
        start, end = (_from_micros(int(window[0])), _from_micros(int(window[1])))
    except (binascii.Error, ValueError, KeyError, TypeError, IndexError, OverflowError):
        raise invalid from None
    if version != TOKEN_VERSION or not isinstance(cursor, dict):
        raise invalid
    if not hmac.compare_digest(str(fingerprint), request.fingerprint):
        raise LookupRequestError(
            INVALID_NEXT_TOKEN,
            "NextToken: the token must be passed with the same parameters as the request that returned it "
            "(LookupAttributes, StartTime, EndTime, EventCategory and the region)",
        )
    return replace(request.query, start=start, end=end), cursor


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- response -----------------------------------------------------------------------------------


def is_insight(record: Mapping[str, Any]) -> bool:
    return (
        history.is_insight(record)
        or record.get("eventType") == "AwsCloudTrailInsight"
        or isinstance(record.get("insightDetails"), Mapping)
    )


def event_time_seconds(record: Mapping[str, Any]) -> float:
    """The record's eventTime as epoch seconds (a float, as CloudTrail's responses carry it)."""
    return float((parse_event_time(record.get("eventTime")) - _EPOCH) // timedelta(seconds=1))


def event_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ``Events`` item of the LookupEvents response, as CloudTrail shapes it.

    Insights events take EventName/EventSource from ``insightDetails`` and have no ReadOnly,
    AccessKeyId or Username. Members CloudTrail would leave empty are omitted, except
    ``Resources`` (always a list).
    """
    summary: dict[str, Any] = {"EventId": record.get("eventID")}
    if is_insight(record):
        details = record.get("insightDetails")
        details = details if isinstance(details, Mapping) else {}
        summary["EventName"] = details.get("eventName")
        summary["EventTime"] = event_time_seconds(record)
        summary["EventSource"] = details.get("eventSource")
    else:
        summary["EventName"] = record.get("eventName")
        summary["ReadOnly"] = read_only_of(record)
        identity = record.get("userIdentity")
        access_key = identity.get("accessKeyId") if isinstance(identity, Mapping) else None
        summary["AccessKeyId"] = access_key or None
        summary["EventTime"] = event_time_seconds(record)
        summary["EventSource"] = record.get("eventSource")
        summary["Username"] = username_of(record)
    summary = {name: value for name, value in summary.items() if value is not None}
    summary["Resources"] = resources_of(record)
    summary["CloudTrailEvent"] = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return summary


def lookup_response(records: Sequence[Mapping[str, Any]], next_token: str | None) -> dict[str, Any]:
    """The LookupEvents response body: ``{"Events": [...], "NextToken"?}``."""
    response: dict[str, Any] = {"Events": [event_summary(record) for record in records]}
    if next_token is not None:
        response["NextToken"] = next_token
    return response
