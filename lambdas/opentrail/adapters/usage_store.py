"""Usage counters in the ledger table (DynamoDB; docs/usage.md).

One item per (delivery day, trail, batch): pk ``USAGE#<YYYY-MM-DD>``, sk
``<trail>#<batch ref>``; attributes ``trail``, ``day``, ``batchId``, the counts of
`opentrail.domain.usage.UsageCounts` and ``expiresAt`` (+`USAGE_TTL_DAYS`). The key depends only
on the batch id, and the counts only on the batch's log files, so a batch indexed again (a run
died between DONE and its marker) overwrites its own items: never lost, never counted twice.
Reading a day range is one Query per day.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.usage import CATEGORIES, USAGE_TTL_DAYS, UsageCounts

USAGE_PREFIX: Final = "USAGE#"
_BATCH_WRITE: Final = 25


class UsageStoreError(RuntimeError):
    """DynamoDB refused a request for usage counters."""


def usage_ref(batch_id: str) -> str:
    return hashlib.sha256(f"usage/{batch_id}".encode()).hexdigest()[:16]


def usage_items(
    batch_id: str, delivered_at: datetime, counts: Mapping[str, UsageCounts], *, ttl_days: int = USAGE_TTL_DAYS
) -> list[dict[str, Any]]:
    day = delivered_at.strftime("%Y-%m-%d")
    expires = int((delivered_at + timedelta(days=ttl_days)).timestamp())
    ref = usage_ref(batch_id)
    items = []
    for trail, value in sorted(counts.items()):
        item: dict[str, Any] = {
            "pk": {"S": f"{USAGE_PREFIX}{day}"},
            "sk": {"S": f"{trail}#{ref}"},
            "trail": {"S": trail},
            "day": {"S": day},
            "batchId": {"S": batch_id},
            "expiresAt": {"N": str(expires)},
        }
        for category, number in value.to_dict().items():
            item[category] = {"N": str(number)}
        items.append(item)
    return items


class UsageStore:
    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")

    def put(self, batch_id: str, delivered_at: datetime, counts: Mapping[str, UsageCounts]) -> int:
        """Write (overwrite) the batch's counter items; returns how many."""
        items = usage_items(batch_id, delivered_at, counts)
        for start in range(0, len(items), _BATCH_WRITE):
            pending: dict[str, Any] = {
                self.table: [{"PutRequest": {"Item": item}} for item in items[start : start + _BATCH_WRITE]]
            }
            for attempt in range(10):
                try:
                    response = self._ddb.batch_write_item(RequestItems=pending)
                except ClientError as error:
                    raise UsageStoreError(f"usage write: {error.response.get('Error', {}).get('Code')}") from error
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(0.05 * (attempt + 1))
            else:
                raise UsageStoreError("usage write: items left unprocessed")
        return len(items)

    def read(self, first: date, last: date) -> Iterator[tuple[str, str, UsageCounts]]:
        """(trail, day, counts) of every batch delivered from `first` to `last` (UTC days)."""
        day = first
        while day <= last:
            pk = f"{USAGE_PREFIX}{day.isoformat()}"
            request: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
            }
            while True:
                try:
                    page = self._ddb.query(**request)
                except ClientError as error:
                    raise UsageStoreError(f"usage read: {error.response.get('Error', {}).get('Code')}") from error
                for item in page.get("Items", []):
                    counts = UsageCounts.from_dict(
                        {c: int(item[c]["N"]) for c in CATEGORIES if c in item},
                    )
                    yield item["trail"]["S"], item["day"]["S"], counts
                if not page.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            day += timedelta(days=1)
