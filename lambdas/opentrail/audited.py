"""``@audited``: a Lambda data event (``Invoke``) per invocation of the decorated handler.

    from aws_lambda_powertools import Logger, Tracer
    from opentrail.audited import audited

    logger, tracer = Logger(), Tracer()

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @audited                        # or @audited(flush="deferred", max_records=200, ...)
    def handler(event, context): ...

Each invocation becomes a CloudTrail Lambda data event record: ``eventSource``
``lambda.amazonaws.com``, ``eventName`` ``Invoke``, ``eventCategory`` ``Data``, the function as
``resources[0]`` (type ``AWS::Lambda::Function``), the caller's identity read from the event
(API Gateway / function URL identity or authorizer, EventBridge, SQS/SNS/S3/DynamoDB/Kinesis
record sources) or the context, ``errorCode``/``errorMessage`` when the handler raised (the
exception is re-raised unchanged) and ``additionalEventData {durationMs, coldStart,
functionVersion}``.

Failure isolation: building or sending a record never fails the handler. Any error there is
logged (logger ``opentrail.audited``) and swallowed; the handler's own result or exception
passes through untouched.

Flushing (docs/extending.md, "Lambda data events"): Lambda freezes the process as soon as
the handler returns, so there is no "send later in the background". Two modes:

* ``flush="invocation"`` (default, safe): records are sent at the end of every invocation,
  one bounded SQS call (`BufferSink`: 1 s timeouts, 2 attempts). Costs one SendMessageBatch
  round trip (a few ms in-region) per invocation; no record is lost when the environment dies.
* ``flush="deferred"``: records stay in memory across invocations and are sent when
  `max_records` are buffered or the oldest is `max_age_seconds` old (checked at the end of
  an invocation). Most invocations pay no SQS call; records buffered when the execution
  environment is shut down or crashes are lost. For high-rate functions that accept that.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, overload

from opentrail.sinks import BufferSink, Sink

_log = logging.getLogger("opentrail.audited")
F = TypeVar("F", bound=Callable[..., Any])
FlushMode = Literal["invocation", "deferred"]
MAX_ERROR_MESSAGE = 1000


class AuditBuffer:
    """Records waiting to be sent, and when to send them."""

    def __init__(
        self,
        sink: Sink | None = None,
        *,
        flush: FlushMode = "invocation",
        max_records: int = 100,
        max_age_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush not in ("invocation", "deferred"):
            raise ValueError(f"flush: must be 'invocation' or 'deferred', got {flush!r}")
        self._sink = sink
        self.flush_mode = flush
        self.max_records = max_records
        self.max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self.records: list[dict[str, Any]] = []
        self._oldest: float | None = None

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = BufferSink()
        return self._sink

    def add(self, record: dict[str, Any]) -> None:
        if not self.records:
            self._oldest = self._monotonic()
        self.records.append(record)

    def due(self) -> bool:
        if not self.records:
            return False
        if self.flush_mode == "invocation" or len(self.records) >= self.max_records:
            return True
        return self._oldest is not None and self._monotonic() - self._oldest >= self.max_age_seconds

    def flush(self) -> None:
        """Send everything buffered. On failure the records are dropped (logged), never retried
        forever: an audit backlog must not grow without bound in a function's memory."""
        records, self.records, self._oldest = self.records, [], None
        if records:
            self.sink(records)


@overload
def audited(handler: F) -> F: ...


@overload
def audited(
    handler: None = None,
    *,
    sink: Sink | None = None,
    flush: FlushMode = "invocation",
    max_records: int = 100,
    max_age_seconds: float = 10.0,
    buffer: AuditBuffer | None = None,
) -> Callable[[F], F]: ...


def audited(
    handler: F | None = None,
    *,
    sink: Sink | None = None,
    flush: FlushMode = "invocation",
    max_records: int = 100,
    max_age_seconds: float = 10.0,
    buffer: AuditBuffer | None = None,
) -> F | Callable[[F], F]:
    """Record an ``Invoke`` data event per invocation; usable as ``@audited`` or ``@audited(...)``."""

    def decorate(function: F) -> F:
        state = buffer or AuditBuffer(sink, flush=flush, max_records=max_records, max_age_seconds=max_age_seconds)
        cold = [True]

        @functools.wraps(function)
        def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            started = datetime.now(UTC)
            start = time.perf_counter()
            cold_start, cold[0] = cold[0], False
            error: BaseException | None = None
            try:
                return function(event, context, *args, **kwargs)
            except BaseException as raised:
                error = raised
                raise
            finally:
                duration_ms = (time.perf_counter() - start) * 1000.0
                _record_safely(state, event, context, started, duration_ms, cold_start, error)

        wrapper.audit_buffer = state  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if handler is not None:
        return decorate(handler)
    return decorate


def _record_safely(
    state: AuditBuffer,
    event: Any,
    context: Any,
    started: datetime,
    duration_ms: float,
    cold_start: bool,
    error: BaseException | None,
) -> None:
    try:
        state.add(invoke_record(event, context, started=started, duration_ms=duration_ms, cold_start=cold_start,
                                error=error))  # fmt: skip
    except Exception:
        _log.warning("opentrail.audited: could not build the Invoke record", exc_info=True)
        return
    try:
        if state.due():
            state.flush()
    except Exception:
        _log.warning("opentrail.audited: could not send Invoke records; they are dropped", exc_info=True)


# -- the record ---------------------------------------------------------------------------------


def invoke_record(
    event: Any,
    context: Any,
    *,
    started: datetime,
    duration_ms: float,
    cold_start: bool,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The CloudTrail Lambda data event for one invocation (partial: `producer.emit` completes it)."""
    invoked_arn = str(getattr(context, "invoked_function_arn", "") or "")
    parts = invoked_arn.split(":")
    function_arn = ":".join(parts[:7]) if len(parts) >= 7 else invoked_arn
    account = parts[4] if len(parts) >= 7 else ""
    region = parts[3] if len(parts) >= 7 else ""
    identity, source_ip, user_agent, trigger = caller_of(event, context)
    request_parameters: dict[str, Any] = {"functionName": function_arn}
    if len(parts) >= 8:
        request_parameters["qualifier"] = parts[7]
    additional: dict[str, Any] = {
        "durationMs": round(duration_ms, 3),
        "coldStart": cold_start,
        "functionVersion": str(getattr(context, "function_version", "") or "$LATEST"),
    }
    if trigger:
        additional["trigger"] = trigger
    record: dict[str, Any] = {
        "eventTime": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "lambda.amazonaws.com",
        "eventName": "Invoke",
        "eventType": "AwsApiCall",
        "eventCategory": "Data",
        "managementEvent": False,
        "readOnly": False,
        "eventID": str(uuid.uuid4()),
        "userIdentity": identity,
        "sourceIPAddress": source_ip,
        "requestParameters": request_parameters,
        "responseElements": None,
        "additionalEventData": additional,
        "resources": [{"accountId": account, "type": "AWS::Lambda::Function", "ARN": function_arn}],
    }
    request_id = getattr(context, "aws_request_id", None)
    if isinstance(request_id, str) and request_id:
        record["requestID"] = request_id
    if user_agent:
        record["userAgent"] = user_agent
    if account:
        record["recipientAccountId"] = account
    if region:
        record["awsRegion"] = region
    if error is not None:
        record["errorCode"] = type(error).__name__
        record["errorMessage"] = str(error)[:MAX_ERROR_MESSAGE] or type(error).__name__
    return record


_EVENT_SOURCE_SERVICES = {
    "aws:sqs": "sqs.amazonaws.com",
    "aws:sns": "sns.amazonaws.com",
    "aws:s3": "s3.amazonaws.com",
    "aws:dynamodb": "dynamodb.amazonaws.com",
    "aws:kinesis": "kinesis.amazonaws.com",
    "aws:kafka": "kafka.amazonaws.com",
    "aws:ses": "ses.amazonaws.com",
}


def caller_of(event: Any, context: Any) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """(userIdentity, sourceIPAddress, userAgent, trigger) as far as the event and context tell.

    A direct ``Invoke`` API call carries no caller in the event: the identity is then
    ``Unknown`` (CloudTrail's own Lambda data events record that caller).
    """
    if isinstance(event, Mapping):
        request_context = event.get("requestContext")
        if isinstance(request_context, Mapping):
            return _http_caller(request_context)
        records = event.get("Records")
        if isinstance(records, Sequence) and records and isinstance(records[0], Mapping):
            first = records[0]
            source = str(first.get("eventSource") or first.get("EventSource") or "")
            service = _EVENT_SOURCE_SERVICES.get(source, source.replace("aws:", "") + ".amazonaws.com")
            arn = first.get("eventSourceARN") or first.get("EventSubscriptionArn") or ""
            trigger = {"eventSource": source, "records": len(records)}
            if arn:
                trigger["eventSourceARN"] = arn
            return {"type": "AWSService", "invokedBy": service}, service, "", trigger
        if isinstance(event.get("detail-type"), str) and isinstance(event.get("source"), str):
            trigger = {k: event[k] for k in ("source", "detail-type", "account", "id") if isinstance(event.get(k), str)}
            return {"type": "AWSService", "invokedBy": "events.amazonaws.com"}, "events.amazonaws.com", "", trigger
    cognito = getattr(getattr(context, "identity", None), "cognito_identity_id", None)
    if isinstance(cognito, str) and cognito:
        return {"type": "WebIdentityUser", "principalId": cognito}, "AWS Internal", "", {}
    return {"type": "Unknown", "principalId": "unknown"}, "AWS Internal", "", {}


def _http_caller(request_context: Mapping[str, Any]) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """API Gateway REST (v1), HTTP API / function URL (v2) request contexts."""
    identity = request_context.get("identity")
    identity = identity if isinstance(identity, Mapping) else {}
    http = request_context.get("http")
    http = http if isinstance(http, Mapping) else {}
    source_ip = str(identity.get("sourceIp") or http.get("sourceIp") or "AWS Internal")
    user_agent = str(identity.get("userAgent") or http.get("userAgent") or "")
    trigger: dict[str, Any] = {
        k: request_context[k] for k in ("apiId", "stage", "requestId") if isinstance(request_context.get(k), str)
    }
    authorizer = request_context.get("authorizer")
    authorizer = authorizer if isinstance(authorizer, Mapping) else {}
    iam_auth = authorizer.get("iam")
    iam: Mapping[str, Any] = iam_auth if isinstance(iam_auth, Mapping) else identity
    user_arn = iam.get("userArn")
    if isinstance(user_arn, str) and user_arn:
        return _iam_identity(iam, user_arn), source_ip, user_agent, trigger
    claims = authorizer.get("claims")
    jwt = authorizer.get("jwt")
    if not isinstance(claims, Mapping) and isinstance(jwt, Mapping):
        claims = jwt.get("claims")
    if isinstance(claims, Mapping) and claims.get("sub"):
        found: dict[str, Any] = {"type": "WebIdentityUser", "principalId": str(claims["sub"])}
        name = claims.get("cognito:username") or claims.get("username") or claims.get("email")
        if name:
            found["userName"] = str(name)
        if claims.get("iss"):
            found["identityProvider"] = str(claims["iss"])
        return found, source_ip, user_agent, trigger
    lambda_auth = authorizer.get("lambda") if isinstance(authorizer.get("lambda"), Mapping) else authorizer
    principal = lambda_auth.get("principalId") if isinstance(lambda_auth, Mapping) else None
    if isinstance(principal, str) and principal:
        return {"type": "Unknown", "principalId": principal}, source_ip, user_agent, trigger
    return {"type": "Unknown", "principalId": "anonymous"}, source_ip, user_agent, trigger


def _iam_identity(iam: Mapping[str, Any], user_arn: str) -> dict[str, Any]:
    kind = "Unknown"
    resource = user_arn.split(":", 5)[-1]
    if resource == "root":
        kind = "Root"
    elif resource.startswith("user/"):
        kind = "IAMUser"
    elif resource.startswith("assumed-role/"):
        kind = "AssumedRole"
    elif resource.startswith("federated-user/"):
        kind = "FederatedUser"
    found: dict[str, Any] = {"type": kind, "arn": user_arn}
    principal = iam.get("caller") or iam.get("callerId") or iam.get("user") or iam.get("userId")
    if principal:
        found["principalId"] = str(principal)
    if iam.get("accountId"):
        found["accountId"] = str(iam["accountId"])
    key = iam.get("accessKey")
    if key:
        found["accessKeyId"] = str(key)
    if kind == "IAMUser":
        found["userName"] = resource.split("/")[-1]
    return found
