"""LookupFunction: CloudTrail's query API (JSON 1.1 wire protocol) behind API Gateway.

``POST /`` with ``X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Operation>``
and ``Content-Type: application/x-amz-json-1.1`` (what the boto3 ``cloudtrail`` client and the
AWS CLI send), dispatched through `OPERATIONS`; adding an operation is one line::

    OPERATIONS["ListPublicKeys"] = list_public_keys  # (OperationCall) -> response dict

Errors are JSON 1.1 errors: HTTP 400 (500 for our own failures) with the body
``{"__type": code, "message": ...}``; botocore raises the modelled exception
(``client.exceptions.InvalidLookupAttributesException``, ...). An unknown or missing target
is ``UnknownOperationException``.

The region looked up is the region of the request's SigV4 credential scope
(``Authorization: AWS4-HMAC-SHA256 Credential=AK/date/<region>/<service>/aws4_request``), so
``--region eu-west-1`` looks up eu-west-1's events; without a signature, this function's region.
Behind API Gateway's IAM auth the scope must name the API's region, so a deployed API answers
for its own region; ``opentrail local`` answers for any region.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.history_config import NextTokenKeyStore
from opentrail.domain.clock import Clock, system_clock
from opentrail.domain.lookup import (
    INVALID_PARAMETER,
    MATCH_ALL_HEADER,
    LookupRequestError,
    lookup_response,
    open_next_token,
    parse_lookup_events,
    seal_next_token,
)
from opentrail.handlers._common import deployment_of, logger, metrics, tracer
from opentrail.proxy_events import rest_proxy_event
from opentrail.public_keys import list_public_keys_operation
from opentrail.settings import QuerySettings
from opentrail.trail_api import OPERATIONS as TRAIL_OPERATIONS

TARGET_PREFIX: Final = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
CONTENT_TYPE: Final = "application/x-amz-json-1.1"
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]{2,32})/[a-z0-9-]+/aws4_request")


class ServiceError(Exception):
    """An operation's error reply: `code` becomes ``__type`` (botocore's exception name)."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class OperationCall:
    """What an operation gets: the request and the function's dependencies."""

    body: dict[str, Any]
    headers: Mapping[str, str]  # case-insensitive
    region: str  # from the SigV4 credential scope, else this function's region
    now: datetime
    settings: QuerySettings
    history: Any  # opentrail.adapters.history.EventHistory or a fake with .lookup(query, cursor)
    token_key: Callable[[], bytes]  # the NextToken key, loaded on first need
    account: str = ""  # this function's account (trail ARNs)
    function_region: str = ""  # this function's region (the home region unless HOME_REGION says otherwise)
    dynamodb: Any = None  # a DynamoDB client for the trail state (None: a default client)


Operation = Callable[[OperationCall], dict[str, Any]]


def lookup_events(call: OperationCall) -> dict[str, Any]:
    """LookupEvents (spec §5); see opentrail.domain.lookup for the rules."""
    request = parse_lookup_events(
        call.body,
        region=call.region,
        now=call.now,
        allow_and=_match_all_header(call.headers),
        default_window=timedelta(days=call.settings.history_retention_days),
    )
    key = call.token_key() if request.next_token is not None else None
    query, cursor = open_next_token(request, key) if key is not None else (request.query, None)
    page = call.history.lookup(query, cursor)
    records = page.records[: query.max_results]
    next_token = None
    if page.cursor is not None:
        next_token = seal_next_token(request, query, page.cursor, key if key is not None else call.token_key())
    metrics.add_metric(name="LookupEventsReturned", unit=MetricUnit.Count, value=len(records))
    logger.info(
        "LookupEvents",
        extra={
            "region": query.region,
            "attributes": [key for key, _ in query.attributes],
            "insight": query.insight,
            "returned": len(records),
            "more": next_token is not None,
        },
    )
    return lookup_response(records, next_token)


# Operation name (the X-Amz-Target suffix) -> implementation.
OPERATIONS: dict[str, Operation] = {
    "LookupEvents": lookup_events,
    "ListPublicKeys": list_public_keys_operation,  # opentrail.public_keys (docs/integrity.md)
    **TRAIL_OPERATIONS,  # DescribeTrails, GetTrail, GetTrailStatus, ... (opentrail.trail_api, docs/trails.md)
}


def _match_all_header(headers: Mapping[str, str]) -> bool:
    value = headers.get(MATCH_ALL_HEADER)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise LookupRequestError(INVALID_PARAMETER, f"{MATCH_ALL_HEADER}: must be true or false, got {value[:20]!r}")
    return lowered == "true"


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    history: Any = None,
    settings: QuerySettings | None = None,
    clock: Clock | None = None,
    token_key: bytes | Callable[[], bytes] | None = None,
    dynamodb: Any = None,
) -> dict[str, Any]:
    """API Gateway REST proxy event in, proxy response out.

    `history` needs ``lookup(query, cursor) -> LookupPage`` (default: the history table's
    EventHistory); `settings` defaults to ``QuerySettings.from_env()``; `clock` to the system
    clock; `token_key` (the NextToken HMAC key, or a function returning it) to the key kept in
    the history table, read with the history's DynamoDB client (``history.client``) if it has
    one, else a default client; it is read only when a request needs it and then cached.
    """
    request_id = str(getattr(context, "aws_request_id", ""))
    try:
        settings = settings or QuerySettings.from_env()
        headers = _headers(event)
        if str(event.get("httpMethod", "POST")).upper() != "POST":
            raise ServiceError("UnknownOperationException", "only POST / with an X-Amz-Target header is served")
        target = headers.get("X-Amz-Target") or ""
        operation_name = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        operation = OPERATIONS.get(operation_name)
        if operation is None:
            raise ServiceError(
                "UnknownOperationException",
                f"X-Amz-Target: unknown operation {target[:200]!r}; served: "
                + ", ".join(TARGET_PREFIX + name for name in sorted(OPERATIONS)),
            )
        tracer.put_annotation(key="operation", value=operation_name)
        if history is None:
            history = _default_history(settings.history_table)
        account, function_region = deployment_of(context)
        call = OperationCall(
            account=account,
            function_region=function_region,
            dynamodb=dynamodb if dynamodb is not None else getattr(history, "client", None),
            body=_body(event),
            headers=headers,
            region=_region(headers, context),
            now=(clock or system_clock)(),
            settings=settings,
            history=history,
            token_key=_key_loader(token_key, settings.history_table, history),
        )
        reply = operation(call)
    except LookupRequestError as error:
        return _rejected(error.code, error.message, 400, request_id)
    except ServiceError as error:
        return _rejected(error.code, error.message, error.status, request_id)
    except Exception:
        logger.exception("query failed")
        metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=1)
        return _reply(500, {"__type": "InternalFailure", "message": "internal error; retry the request"}, request_id)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return _reply(200, reply, request_id)


def _headers(event: Mapping[str, Any]) -> dict[str, str]:
    """Request headers with lower-cased names, looked up case-insensitively."""
    headers = _LowerDict()
    for name, values in (event.get("multiValueHeaders") or {}).items():
        if values:
            headers[name] = values[-1]
    for name, value in (event.get("headers") or {}).items():
        if value is not None:
            headers[name] = value
    return headers


class _LowerDict(dict[str, str]):
    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


def _body(event: Mapping[str, Any]) -> dict[str, Any]:
    raw = event.get("body")
    if raw is None or raw == "":
        return {}
    try:
        text = base64.b64decode(raw).decode("utf-8") if event.get("isBase64Encoded") else str(raw)
        body = json.loads(text) if text.strip() else {}
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ServiceError("SerializationException", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ServiceError("SerializationException", "the request body must be a JSON object")
    return body


def credential_region(authorization: str | None) -> str | None:
    """The region of a SigV4 ``Authorization`` header's credential scope, if any."""
    match = _CREDENTIAL_SCOPE.search(authorization or "")
    return match.group(1) if match else None


def _region(headers: Mapping[str, str], context: Any) -> str:
    region = credential_region(headers.get("Authorization"))
    if region is not None:
        return region
    _, function_region = deployment_of(context)
    return function_region


@lru_cache(maxsize=4)
def _default_history(table: str) -> Any:
    from opentrail.adapters.history import EventHistory

    return EventHistory(table)


_KEYS: dict[str, bytes] = {}  # table -> NextToken key, cached for the container's life


def _key_loader(token_key: bytes | Callable[[], bytes] | None, table: str, history: Any) -> Callable[[], bytes]:
    if isinstance(token_key, bytes):
        key = token_key
        return lambda: key
    if token_key is not None:
        return token_key

    def load() -> bytes:
        if table not in _KEYS:
            _KEYS[table] = NextTokenKeyStore(table, client=getattr(history, "client", None)).key()
        return _KEYS[table]

    return load


def _rejected(code: str, message: str, status: int, request_id: str) -> dict[str, Any]:
    metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
    logger.info("request rejected", extra={"errorCode": code, "errorMessage": message})
    return _reply(status, {"__type": code, "message": message}, request_id, error_type=code)


def _reply(status: int, body: Mapping[str, Any], request_id: str, *, error_type: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id}
    if error_type is not None:
        headers["x-amzn-ErrorType"] = error_type
    return {
        "statusCode": status,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        "isBase64Encoded": False,
    }


def api_gateway_event(
    *,
    body: str | bytes | None,
    headers: Mapping[str, str],
    caller_account_id: str | None = None,
    caller_arn: str | None = None,
    method: str = "POST",
    path: str = "/",
    stage: str = "v1",
) -> dict[str, Any]:
    """An API Gateway REST proxy event for ``POST /`` as IAM auth delivers it (local mode, tests)."""
    return rest_proxy_event(
        method=method,
        path=path,
        resource="/",
        body=body,
        headers=headers,
        query=None,
        caller_account_id=caller_account_id,
        caller_arn=caller_arn,
        stage=stage,
    )
