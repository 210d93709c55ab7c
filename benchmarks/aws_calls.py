"""Count real boto3 calls (per service and operation) with botocore event hooks.

`CallCounter.install()` registers on boto3's default session (moto's `mock_aws` swaps in
a fresh one, so install inside the mock): every client created afterwards, the adapters'
own clients included, reports its calls. Besides API calls it
keeps what the bills are made of: SQS billed requests (each 64 KiB chunk of payload is one
request), DynamoDB write/read request units, S3 PUT bytes, and the time spent inside each
call (botocore + moto), which gives moto's share of an in-process run.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import boto3

SQS_CHUNK = 64 * 1024


@dataclass
class OperationStats:
    calls: int = 0
    billed: int = 0  # SQS: 64 KiB chunks; DynamoDB: request units; others: calls
    payload_bytes: int = 0
    seconds: float = 0.0


@dataclass
class CallCounter:
    stats: dict[tuple[str, str], OperationStats] = field(default_factory=lambda: defaultdict(OperationStats))
    _session: Any = None

    def install(self) -> CallCounter:
        """Hook boto3's default session; call inside `mock_aws()` (moto swaps that session)."""
        session = boto3._get_default_session()._session
        if session is not self._session:
            session.register("before-parameter-build", self._before)
            session.register("after-call", self._after)
            self._session = session
        return self

    def reset(self) -> None:
        self.stats = defaultdict(OperationStats)

    # botocore hooks -------------------------------------------------------------------
    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["_bench_started"] = time.perf_counter()
        context["_bench_params"] = params

    def _after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        started = context.pop("_bench_started", None)
        params = context.pop("_bench_params", {}) or {}
        service = model.service_model.service_name
        operation = model.name
        entry = self.stats[(service, operation)]
        entry.calls += 1
        if started is not None:
            entry.seconds += time.perf_counter() - started
        payload, billed = _billing(service, operation, params, parsed or {})
        entry.payload_bytes += payload
        entry.billed += billed

    # views ----------------------------------------------------------------------------
    def by_service(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for (service, _), entry in self.stats.items():
            totals[service] += entry.calls
        return dict(totals)

    def calls(self, service: str, operation: str | None = None) -> int:
        return sum(e.calls for (s, o), e in self.stats.items() if s == service and operation in (None, o))

    def billed(self, service: str, operation: str | None = None) -> int:
        return sum(e.billed for (s, o), e in self.stats.items() if s == service and operation in (None, o))

    def payload(self, service: str, operation: str | None = None) -> int:
        return sum(e.payload_bytes for (s, o), e in self.stats.items() if s == service and operation in (None, o))

    def seconds(self) -> float:
        return sum(e.seconds for e in self.stats.values())


def _billing(service: str, operation: str, params: Any, parsed: dict[str, Any]) -> tuple[int, int]:
    """(payload bytes, billed units) of one call; params are the API-level parameters."""
    if not isinstance(params, dict):
        params = {}
    if service == "sqs":
        if operation == "SendMessageBatch":
            size = sum(_sqs_message_bytes(e) for e in params.get("Entries", []))
        elif operation == "SendMessage":
            size = _sqs_message_bytes(params)
        elif operation == "ReceiveMessage":
            size = sum(_sqs_message_bytes(m) for m in parsed.get("Messages", []))
        else:
            size = 0
        return size, max(1, math.ceil(size / SQS_CHUNK))
    if service == "dynamodb":
        return _dynamodb_units(operation, params, parsed)
    if service == "s3" and operation in ("PutObject", "UploadPart"):
        body = params.get("Body")
        if "ContentLength" in params:
            size = int(params["ContentLength"])
        elif isinstance(body, bytes | bytearray | str):
            size = len(body)
        else:
            size = _stream_size(body)  # after the call the stream may be consumed: pass ContentLength
        return size, 1
    return 0, 1


def _sqs_message_bytes(message: dict[str, Any]) -> int:
    size = len(str(message.get("MessageBody", message.get("Body", ""))).encode("utf-8"))
    for name, value in (message.get("MessageAttributes") or {}).items():
        size += len(name) + len(str(value.get("DataType", ""))) + len(str(value.get("StringValue", "")))
    return size


def _stream_size(body: Any) -> int:
    try:
        position = body.tell()
        body.seek(0, 2)
        end = body.tell()
        body.seek(position)
        return int(end - position)
    except (AttributeError, OSError, ValueError):
        return 0


def _item_kb(item: Any) -> int:
    # Attribute names + values; the JSON form slightly overestimates DynamoDB's item size.
    return max(1, math.ceil(len(json.dumps(item, default=str)) / 1024))


def _dynamodb_units(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> tuple[int, int]:
    """Write request units (WRU) for writes, read request units (RRU) for reads."""
    if operation == "TransactWriteItems":
        units = 0
        for entry in params.get("TransactItems", []):
            for kind, body in entry.items():
                units += 2 * _item_kb(body.get("Item") or body.get("Key") if kind != "Update" else body)
        return 0, units
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return 0, _item_kb(params.get("Item") or params.get("Key"))
    if operation == "BatchWriteItem":
        units = 0
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                body = request.get("PutRequest", {}).get("Item") or request.get("DeleteRequest", {}).get("Key")
                units += _item_kb(body)
        return 0, units
    if operation == "TransactGetItems":
        return 0, 2 * max(1, len(params.get("TransactItems", [])))
    if operation == "BatchGetItem":
        returned = sum(len(items) for items in parsed.get("Responses", {}).values())
        return 0, max(1, returned)
    if operation in ("GetItem", "Query", "Scan"):
        size = len(json.dumps(parsed.get("Item") or parsed.get("Items") or {}, default=str))
        units = max(1, math.ceil(size / 4096))
        consistent = params.get("ConsistentRead", False)
        return 0, units if consistent else max(1, math.ceil(units / 2))
    return 0, 1
