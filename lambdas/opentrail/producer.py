"""Emit records from your own code straight into OpenTrail's buffer.

    from opentrail.producer import emit

    event_ids = emit([
        {"eventSource": "billing.example.com", "eventName": "CreateInvoice",
         "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "userName": "alice"},
         "requestParameters": {"customer": "c-42"}},
    ])

Each record is normalised (opentrail.domain.record.normalize) before anything is sent:
if any record is invalid, `RecordError` names its index and field (``records[3].eventName``)
and nothing is sent. Records are packed many per SQS message. The caller needs
``sqs:SendMessage`` on the buffer queue (and ``kms:GenerateDataKey`` on its key).

Where values come from when a record does not carry them:
* ``recipientAccountId``: `account_id`, else the environment variable ``AWS_ACCOUNT_ID``;
* ``awsRegion``: `region`, else ``AWS_REGION`` (set by Lambda), else ``AWS_DEFAULT_REGION``;
* ``eventTime``: now (`clock`); ``eventID``: a new UUID, assigned here and returned;
* the queue: `queue_url`, else ``OPENTRAIL_BUFFER_QUEUE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from opentrail.domain.bundle import encode_record, pack
from opentrail.domain.clock import Clock, system_clock
from opentrail.domain.record import CaptureContext, RecordError, normalize

QUEUE_URL_ENV = "OPENTRAIL_BUFFER_QUEUE_URL"


def emit(
    records: Iterable[Mapping[str, Any]],
    *,
    queue_url: str | None = None,
    buffer: Any = None,
    clock: Clock | None = None,
    account_id: str | None = None,
    region: str | None = None,
) -> list[str]:
    """Normalise every record, send them all, return their eventIDs (in order).

    Raises `RecordError` before sending anything if a record is invalid, and
    `opentrail.adapters.buffer.BufferError` if the buffer refuses a message.
    """
    account = account_id or os.environ.get("AWS_ACCOUNT_ID") or ""
    where = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    context = CaptureContext(account_id=account, region=where)
    now = (clock or system_clock)()
    normalized = []
    for index, raw in enumerate(records):
        if not isinstance(raw, Mapping):
            raise RecordError(f"records[{index}]", "must be a JSON object (a dict)")
        if not account and "recipientAccountId" not in raw:
            raise RecordError(
                f"records[{index}].recipientAccountId",
                "is required: pass account_id=, set AWS_ACCOUNT_ID, or put it in the record",
                code="FieldNotFound",
            )
        if not where and "awsRegion" not in raw:
            raise RecordError(
                f"records[{index}].awsRegion", "is required: pass region= or set AWS_REGION", code="FieldNotFound"
            )
        try:
            normalized.append(normalize(raw, context, now=now))
        except RecordError as error:
            raise RecordError(f"records[{index}].{error.field}", error.rule, code=error.code) from None
    if not normalized:
        return []
    bodies = pack(encode_record(record) for record in normalized)
    if buffer is None:
        from opentrail.adapters.buffer import Buffer

        url = queue_url or os.environ.get(QUEUE_URL_ENV)
        if not url:
            raise ValueError(f"queue_url: pass queue_url= or set {QUEUE_URL_ENV}")
        buffer = Buffer(url)
    buffer.send(bodies)
    return [str(record["eventID"]) for record in normalized]
