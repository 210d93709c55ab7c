"""IngestFunction: CloudTrail Lake's PutAuditEvents behind API Gateway (REST proxy, IAM auth).

``POST /PutAuditEvents?channelArn=...[&externalId=...]`` with ``{"auditEvents": [...]}``.
The caller's account is API Gateway's ``requestContext.identity.accountId``; the region
recorded as ``awsRegion`` is this function's (from ``context.invoked_function_arn``).

Accepted events are packed into bundles and sent to the buffer *before* the reply, so an
event reported in ``successful`` is stored. Events whose bundle the buffer refused are
reported in ``failed`` with ``InternalFailure``; the client may resend them (eventIDs are
derived from the channel and the eventData, so a resend cannot duplicate a stored event).

Errors are rest-json errors: an HTTP 4xx/5xx status, the header ``x-amzn-ErrorType`` and
the body ``{"__type": code, "message": ...}``; botocore raises the matching modelled
exception (``client.exceptions.ChannelNotFound``, ...).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.buffer import Buffer, BufferError
from opentrail.domain.audit_events import (
    Accepted,
    Caller,
    Rejected,
    RequestError,
    parse_request,
    process,
    response_body,
)
from opentrail.domain.bundle import BundleError, encode_record, pack, unpack
from opentrail.domain.clock import Clock, system_clock
from opentrail.handlers._common import deployment_of, logger, metrics, tracer
from opentrail.proxy_events import rest_proxy_event
from opentrail.settings import IngestSettings

app = APIGatewayRestResolver()


@dataclass(frozen=True)
class _Call:
    buffer: Any
    settings: IngestSettings
    clock: Clock
    region: str
    request_id: str


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    buffer: Any = None,
    settings: IngestSettings | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """API Gateway REST proxy event in, proxy response out.

    `buffer` needs ``send(bodies)`` (raises `BufferError`); `settings` defaults to
    ``IngestSettings.from_env()``; `clock` to the system clock.
    """
    settings = settings or IngestSettings.from_env()
    _, region = deployment_of(context)
    call = _Call(
        buffer=buffer or _default_buffer(settings.buffer_queue_url),
        settings=settings,
        clock=clock or system_clock,
        region=region,
        request_id=str(getattr(context, "aws_request_id", "")),
    )
    app.context["call"] = call
    try:
        return app.resolve(event, context)
    finally:
        app.context.pop("call", None)


@lru_cache(maxsize=4)
def _default_buffer(queue_url: str) -> Buffer:
    return Buffer(queue_url)


@app.post("/PutAuditEvents")
def _put_audit_events() -> Response[str]:
    try:
        return _serve(app.context["call"])
    except RequestError as error:
        metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
        logger.info("request rejected", extra={"errorCode": error.code, "errorMessage": error.message})
        return _error(error.status, error.code, error.message)
    except Exception:
        logger.exception("PutAuditEvents failed")
        metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=1)
        return _error(500, "InternalFailure", "internal error; the request may be retried")


def _serve(call: _Call) -> Response[str]:
    event = app.current_event
    query = event.query_string_parameters or {}
    identity = event.request_context.identity
    caller = Caller(account_id=identity.account_id, arn=identity.user_arn) if identity.account_id else None
    request = parse_request(
        channel_arn=query.get("channelArn"),
        external_id=query.get("externalId"),
        body=_raw_body(event.body, event.is_base64_encoded),
        caller=caller,
        accepted_channels=call.settings.channels,
    )
    accepted, rejected = process(request, region=call.region, now=call.clock())
    stored, not_stored = _store(accepted, call.buffer)
    rejected = [*rejected, *not_stored]
    metrics.add_metric(name="AuditEventsAccepted", unit=MetricUnit.Count, value=len(stored))
    metrics.add_metric(name="AuditEventsRejected", unit=MetricUnit.Count, value=len(rejected))
    logger.info(
        "PutAuditEvents",
        extra={"channelArn": request.channel.arn, "accepted": len(stored), "rejected": len(rejected)},
    )
    return _json(200, response_body(stored, rejected), call.request_id)


def _raw_body(body: str | None, is_base64: bool | None) -> bytes | None:
    if body is None:
        return None
    return base64.b64decode(body) if is_base64 else body.encode("utf-8")


def _store(accepted: Sequence[Accepted], buffer: Any) -> tuple[list[Accepted], list[Rejected]]:
    """Send accepted records; return (stored, rejected-because-not-stored)."""
    if not accepted:
        return [], []
    lines = [encode_record(item.record) for item in accepted]
    too_big: set[str] = set()
    try:
        bodies = pack(lines)
    except BundleError:  # one record does not fit a message: pack one by one, refuse that one
        bodies = []
        for item, line in zip(accepted, lines, strict=True):
            try:
                bodies.extend(pack([line]))
            except BundleError:
                too_big.add(item.event_id)
    failed: set[str] = set()
    if bodies:
        try:
            buffer.send(bodies)
        except Exception as error:
            logger.exception("buffer send failed")
            failed_bodies = error.failed_bodies if isinstance(error, BufferError) else []
            if failed_bodies:
                failed = {str(record["eventID"]) for body in failed_bodies for record in unpack(body).records()}
            else:
                failed = {item.event_id for item in accepted}
    stored: list[Accepted] = []
    not_stored: list[Rejected] = []
    for item in accepted:
        if item.event_id in too_big:
            not_stored.append(
                Rejected(item.id, "FieldTooLong", "eventData: the record does not fit one buffer message (256 KB)")
            )
        elif item.event_id in failed:
            not_stored.append(Rejected(item.id, "InternalFailure", "buffer: the event was not stored; send it again"))
        else:
            stored.append(item)
    return stored, not_stored


def _json(status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None) -> Response[str]:
    all_headers = {"x-amzn-RequestId": request_id, **(headers or {})}
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=all_headers)


def _error(status: int, code: str, message: str) -> Response[str]:
    call: _Call | None = app.context.get("call")
    request_id = call.request_id if call else ""
    return _json(status, {"__type": code, "message": message}, request_id, {"x-amzn-ErrorType": code})


@app.not_found
def _not_found(_: NotFoundError) -> Response[str]:
    event = app.current_event
    metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
    return _error(
        404, "UnknownOperationException", f"{event.http_method} {event.path}: only POST /PutAuditEvents is served"
    )


def api_gateway_event(
    *,
    body: str | bytes | None,
    channel_arn: str | None,
    caller_account_id: str | None,
    external_id: str | None = None,
    caller_arn: str | None = None,
    method: str = "POST",
    path: str = "/PutAuditEvents",
    stage: str = "prod",
) -> dict[str, Any]:
    """An API Gateway REST proxy event as IAM auth delivers it (for the demo, local mode, tests)."""
    query = {
        name: value for name, value in (("channelArn", channel_arn), ("externalId", external_id)) if value is not None
    }
    return rest_proxy_event(
        method=method,
        path=path,
        resource="/{proxy+}",
        body=body,
        headers={"Content-Type": "application/json"},
        query=query,
        caller_account_id=caller_account_id,
        caller_arn=caller_arn,
        stage=stage,
    )
