"""EventBridge envelopes → canonical records (spec §7.8). Pure: no boto3, no environment.

Two kinds of envelope are captured; everything else is refused with an `EnvelopeError`
(the async invocation retries, then lands in the function's dead-letter queue):

* AWS's ``... via CloudTrail`` detail-types (source ``aws.*``): ``detail`` is a full
  CloudTrail record and is kept field for field.
* S3 notifications (source ``aws.s3``, detail-types ``Object Created``, ``Object Deleted``, ...):
  mapped to CloudTrail S3 data event records by `opentrail.domain.s3_notifications`.
* ``OpenTrail Audit Event`` (any non-``aws.`` source): ``detail`` is a partial record that
  an application put on a bus; the envelope fills in time, account, region and a stable
  eventID. The format is documented in docs/capture.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from opentrail.domain.record import CaptureContext, Record, RecordError, normalize, parse_event_time
from opentrail.domain.s3_notifications import S3NotificationError, is_s3_notification, s3_data_event

CLOUDTRAIL_DETAIL_TYPES: Final = frozenset(
    {
        "AWS API Call via CloudTrail",
        "AWS Console Signin via CloudTrail",
        "AWS Console Action via CloudTrail",
        "AWS Service Event via CloudTrail",
        "AWS Insight via CloudTrail",
    }
)
APPLICATION_DETAIL_TYPE: Final = "OpenTrail Audit Event"
# eventID of an application event = uuid5(this namespace, envelope id): EventBridge keeps
# the envelope id across retries and redeliveries, so the record keeps its eventID.
OPENTRAIL_NAMESPACE: Final = uuid.UUID("9b1f3c52-4e0d-5a7b-8c21-6f4d2e8a0b17")
INGESTION_KEY: Final = "opentrailIngestion"
# Fields an application event may not set: the envelope decides them.
_APPLICATION_RESERVED: Final = frozenset({"eventID"})


class EnvelopeError(ValueError):
    """The envelope cannot become a record. `field` is a dotted path into the envelope."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def application_event_id(envelope_id: str) -> str:
    return str(uuid.uuid5(OPENTRAIL_NAMESPACE, envelope_id))


def record_from_envelope(
    envelope: Mapping[str, Any],
    *,
    now: datetime,
    make_id: Callable[[], str] | None = None,
) -> Record:
    """Normalise the record an envelope carries; raises EnvelopeError naming the field."""
    if not isinstance(envelope, Mapping):
        raise EnvelopeError("event", "must be an EventBridge envelope (a JSON object)")
    envelope_id = _text(envelope, "id")
    detail_type = _text(envelope, "detail-type")
    source = _text(envelope, "source")
    account = _text(envelope, "account")
    region = _text(envelope, "region")
    detail = envelope.get("detail")
    if not isinstance(detail, Mapping):
        raise EnvelopeError("detail", "is required and must be a JSON object")
    context = CaptureContext(account_id=account, region=region)
    stable_id = application_event_id(envelope_id)

    if detail_type in CLOUDTRAIL_DETAIL_TYPES:
        if not source.startswith("aws."):
            raise EnvelopeError("source", f"must be an aws.* source for detail-type {detail_type!r}, got {source!r}")
        try:
            return normalize(detail, context, now=now, make_id=make_id or (lambda: stable_id))
        except RecordError as error:
            raise EnvelopeError(f"detail.{error.field}", error.rule) from None

    if is_s3_notification(source, detail_type):  # S3 data events (opentrail.domain.s3_notifications)
        try:
            return normalize(s3_data_event(envelope, detail, event_id=stable_id), context, now=now)
        except (S3NotificationError, RecordError) as error:
            prefix = "" if isinstance(error, S3NotificationError) else "detail."
            raise EnvelopeError(f"{prefix}{error.field}", error.rule) from None

    if detail_type == APPLICATION_DETAIL_TYPE:
        return _application_record(envelope, detail, context, stable_id=stable_id, source=source, now=now)

    raise EnvelopeError(
        "detail-type",
        f"must be {APPLICATION_DETAIL_TYPE!r}, an S3 notification or one of AWS's '... via CloudTrail' types, "
        f"got {detail_type[:100]!r}",
    )


def _application_record(
    envelope: Mapping[str, Any],
    detail: Mapping[str, Any],
    context: CaptureContext,
    *,
    stable_id: str,
    source: str,
    now: datetime,
) -> Record:
    if source.startswith("aws."):
        raise EnvelopeError("source", f"must not be an aws.* source for {APPLICATION_DETAIL_TYPE!r}")
    for name in _APPLICATION_RESERVED:
        if name in detail:
            raise EnvelopeError(f"detail.{name}", "is assigned by OpenTrail from the envelope id; leave it out")
    event_source = detail.get("eventSource")
    if isinstance(event_source, str) and event_source.endswith("amazonaws.com"):
        raise EnvelopeError("detail.eventSource", "must not be an AWS service (*.amazonaws.com)")
    recipient = detail.get("recipientAccountId")
    if recipient is not None and recipient != context.account_id:
        raise EnvelopeError("detail.recipientAccountId", f"must be the envelope's account {context.account_id}")
    additional = detail.get("additionalEventData")
    if additional is not None and not isinstance(additional, Mapping):
        raise EnvelopeError("detail.additionalEventData", "must be a JSON object")
    if additional is not None and INGESTION_KEY in additional:
        raise EnvelopeError(f"detail.additionalEventData.{INGESTION_KEY}", "is reserved for OpenTrail")

    record: Record = dict(detail)
    record["eventID"] = stable_id
    if "eventTime" not in record:
        time = _text(envelope, "time")
        try:
            parse_event_time(time, "time")
        except RecordError as error:
            raise EnvelopeError(error.field, error.rule) from None
        record["eventTime"] = time
    ingestion = {"eventBridgeEventId": _text(envelope, "id"), "source": source}
    record["additionalEventData"] = {**(additional or {}), INGESTION_KEY: ingestion}
    try:
        return normalize(record, context, now=now)
    except RecordError as error:
        raise EnvelopeError(f"detail.{error.field}", error.rule) from None


def _text(envelope: Mapping[str, Any], name: str) -> str:
    value = envelope.get(name)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(name, "is required and must be a non-empty string")
    return value
