"""EventBridgeCaptureFunction: the target of EventBridge rules (one envelope per invocation).

CloudTrail-sourced envelopes (``... via CloudTrail``) and application events
(``OpenTrail Audit Event``) become canonical records (see opentrail.domain.eventbridge)
and go to the buffer as one bundle. Anything that cannot become a record raises: the
asynchronous invocation is retried and then sent to the function's dead-letter queue,
so nothing is silently dropped. A redelivered envelope keeps its eventID, so a retry
after a partial failure cannot duplicate a record.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.buffer import Buffer
from opentrail.domain.bundle import encode_record, pack
from opentrail.domain.clock import Clock, system_clock
from opentrail.domain.eventbridge import EnvelopeError, record_from_envelope
from opentrail.handlers._common import logger, metrics, tracer
from opentrail.settings import EventBridgeCaptureSettings


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    buffer: Any = None,
    settings: EventBridgeCaptureSettings | None = None,
    clock: Clock | None = None,
) -> dict[str, str]:
    """One EventBridge envelope in; ``{"eventID": ...}`` out once the record is in the buffer.

    Raises `EnvelopeError` (field and rule in the message) for envelopes that are not
    captured, and `BufferError` when the buffer refuses the record.
    """
    settings = settings or EventBridgeCaptureSettings.from_env()
    buffer = buffer or _default_buffer(settings.buffer_queue_url)
    now = (clock or system_clock)()
    try:
        record = record_from_envelope(event, now=now)
    except EnvelopeError as error:
        metrics.add_metric(name="EnvelopesRejected", unit=MetricUnit.Count, value=1)
        logger.error(
            "envelope refused",
            extra={"field": error.field, "rule": error.rule, "envelopeId": _get(event, "id")},
        )
        raise
    try:
        buffer.send(pack([encode_record(record)]))
    except Exception:
        metrics.add_metric(name="BufferSendFailed", unit=MetricUnit.Count, value=1)
        logger.exception("buffer send failed", extra={"eventID": record["eventID"]})
        raise
    metrics.add_metric(name="EventsCaptured", unit=MetricUnit.Count, value=1)
    logger.info(
        "captured",
        extra={"eventID": record["eventID"], "detailType": _get(event, "detail-type"), "envelopeId": _get(event, "id")},
    )
    return {"eventID": str(record["eventID"])}


def _get(event: Any, name: str) -> Any:
    return event.get(name) if isinstance(event, dict) else None


@lru_cache(maxsize=4)
def _default_buffer(queue_url: str) -> Buffer:
    return Buffer(queue_url)
