"""Deliveries besides S3 (docs/trails.md, "Deliveries"): CloudWatch Logs, SNS, EventBridge, and
the per-batch "pending deliveries" items in the ledger table that make them retryable.

The senders raise `DeliveryError` when a destination did not take everything; the batcher
records that in the trail status and retries the destination on a later run. What is sent is
built by `opentrail.domain.deliveries` (pure).

Pending deliveries: one item per DONE batch that owes deliveries, ``pk = DELIVERIES``,
``sk = <deliveredAt>#<batchId>``, attributes ``batchId, destinations`` (list of
``cloudWatchLogs:<trail>`` / ``notification:<trail>`` / ``eventBridge``), ``attempts``,
``notBefore`` (epoch seconds), ``lastError``, ``expiresAt`` (the intent's TTL: a retry reads the
batch's files from its intent).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from opentrail.domain.deliveries import event_batches, log_batches

PENDING_PK: Final = "DELIVERIES"
_EVENT_ATTEMPTS: Final = 3


class DeliveryError(RuntimeError):
    """A destination did not take (all of) a delivery."""


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return str(error) or type(error).__name__


class CloudWatchLogsSender:
    """PutLogEvents into a trail's log group; the stream is created on first use."""

    def __init__(self, *, client: Any = None, region: str | None = None) -> None:
        self._logs = client or boto3.client("logs", region_name=region or None)
        self._streams: set[tuple[str, str]] = set()

    def send(self, group: str, stream: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Send `events` (chronological); returns how many CloudWatch Logs rejected as too old
        or too new (not an error: CloudTrail's own delivery drops them likewise)."""
        rejected = 0
        try:
            for batch in log_batches(events):
                rejected += self._put(group, stream, batch)
        except (ClientError, BotoCoreError) as error:
            raise DeliveryError(f"CloudWatch Logs {group}/{stream}: {_describe(error)}") from error
        return rejected

    def _put(self, group: str, stream: str, batch: list[Mapping[str, Any]]) -> int:
        if (group, stream) not in self._streams:
            self._create_stream(group, stream)
        try:
            response = self._logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=batch)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            self._streams.discard((group, stream))  # the stream was deleted: create it again
            self._create_stream(group, stream)
            response = self._logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=batch)
        info = response.get("rejectedLogEventsInfo") or {}
        rejected = 0
        if "tooOldLogEventEndIndex" in info:
            rejected += int(info["tooOldLogEventEndIndex"])
        if "tooNewLogEventStartIndex" in info:
            rejected += len(batch) - int(info["tooNewLogEventStartIndex"])
        if "expiredLogEventEndIndex" in info:
            rejected = max(rejected, int(info["expiredLogEventEndIndex"]))
        return rejected

    def _create_stream(self, group: str, stream: str) -> None:
        try:
            self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                raise
        self._streams.add((group, stream))


class NotificationSender:
    """SNS Publish of CloudTrail's delivery notification."""

    def __init__(self, *, client: Any = None, region: str | None = None) -> None:
        self._sns = client or boto3.client("sns", region_name=region or None)

    def publish(self, topic_arn: str, message: str) -> None:
        try:
            self._sns.publish(TopicArn=topic_arn, Message=message)
        except (ClientError, BotoCoreError) as error:
            raise DeliveryError(f"SNS {topic_arn}: {_describe(error)}") from error


class EventBridgeSender:
    """PutEvents of CloudTrail envelopes; failed entries are retried, then reported."""

    def __init__(self, *, client: Any = None, backoff_seconds: float = 0.2) -> None:
        self._events = client or boto3.client("events")
        self.backoff_seconds = backoff_seconds

    def put(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Send every entry; returns how many were sent, raises DeliveryError if some were not."""
        sent = failed = 0
        reason = ""
        for batch in event_batches(entries):
            todo = list(batch)
            for attempt in range(_EVENT_ATTEMPTS):
                try:
                    response = self._events.put_events(Entries=todo)
                except (ClientError, BotoCoreError) as error:
                    still, reason = todo, _describe(error)
                else:
                    answers = response.get("Entries", [])
                    still = [e for e, a in zip(todo, answers, strict=False) if a.get("ErrorCode")]
                    still += todo[len(answers) :]
                    reason = next(
                        (f"{a['ErrorCode']}: {a.get('ErrorMessage', '')}" for a in answers if a.get("ErrorCode")),
                        reason,
                    )
                sent += len(todo) - len(still)
                todo = still
                if not todo:
                    break
                if attempt + 1 < _EVENT_ATTEMPTS:
                    time.sleep(self.backoff_seconds * 2**attempt)
            failed += len(todo)
        if failed:
            raise DeliveryError(f"EventBridge: {failed} of {sent + failed} events not sent: {reason}")
        return sent


@dataclass
class Deliveries:
    """The senders and what names their targets: topics and log groups live in the home region
    of the deployment account; EventBridge events go to this region's default bus."""

    logs: CloudWatchLogsSender
    sns: NotificationSender
    events: EventBridgeSender
    account: str
    home_region: str

    def topic_arn(self, topic: str) -> str:
        return f"arn:aws:sns:{self.home_region}:{self.account}:{topic}"

    @classmethod
    def create(cls, *, account: str, home_region: str, region: str) -> Deliveries:
        return cls(
            logs=CloudWatchLogsSender(region=home_region),
            sns=NotificationSender(region=home_region),
            events=EventBridgeSender(client=boto3.client("events", region_name=region or None)),
            account=account,
            home_region=home_region,
        )


# -- pending deliveries (retry) -------------------------------------------------------------------


@dataclass(frozen=True)
class PendingDelivery:
    sk: str
    batch_id: str
    destinations: tuple[str, ...]
    attempts: int
    not_before: float
    last_error: str = ""


class PendingDeliveryError(RuntimeError):
    pass


def _epoch(moment: datetime) -> str:
    return f"{moment.astimezone(UTC).timestamp():.3f}"


class PendingDeliveries:
    """The DONE batches whose deliveries are not all sent yet (ledger table)."""

    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")

    @staticmethod
    def sort_key(delivered_at: datetime, batch_id: str) -> str:
        return f"{delivered_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}#{batch_id}"

    def queue(
        self,
        batch_id: str,
        delivered_at: datetime,
        destinations: Sequence[str],
        *,
        not_before: datetime,
        expires_at: int,
    ) -> bool:
        """Record what the batch owes, unless already recorded (a re-index after a crash must not
        reset a retry's progress). Returns whether the item was written."""
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": PENDING_PK},
                    "sk": {"S": self.sort_key(delivered_at, batch_id)},
                    "batchId": {"S": batch_id},
                    "destinations": {"L": [{"S": d} for d in destinations]},
                    "attempts": {"N": "0"},
                    "notBefore": {"N": _epoch(not_before)},
                    "expiresAt": {"N": str(expires_at)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise PendingDeliveryError(f"pending deliveries write {batch_id}: {_describe(error)}") from error
        return True

    def due(self, now: datetime, *, limit: int = 25) -> list[PendingDelivery]:
        """Up to `limit` pending batches whose retry time has come, oldest first."""
        found: list[PendingDelivery] = []
        start: dict[str, Any] | None = None
        moment = now.astimezone(UTC).timestamp()
        try:
            while len(found) < limit:
                request: dict[str, Any] = {
                    "TableName": self.table,
                    "KeyConditionExpression": "pk = :pk",
                    "ExpressionAttributeValues": {":pk": {"S": PENDING_PK}},
                    "ConsistentRead": True,
                    "Limit": 100,
                }
                if start:
                    request["ExclusiveStartKey"] = start
                response = self._ddb.query(**request)
                for item in response.get("Items", []):
                    pending = PendingDelivery(
                        sk=item["sk"]["S"],
                        batch_id=item["batchId"]["S"],
                        destinations=tuple(d["S"] for d in item.get("destinations", {}).get("L", [])),
                        attempts=int(item.get("attempts", {}).get("N", "0")),
                        not_before=float(item.get("notBefore", {}).get("N", "0")),
                        last_error=item.get("lastError", {}).get("S", ""),
                    )
                    if pending.not_before <= moment and len(found) < limit:
                        found.append(pending)
                start = response.get("LastEvaluatedKey")
                if not start:
                    break
        except ClientError as error:
            raise PendingDeliveryError(f"pending deliveries read: {_describe(error)}") from error
        return found

    def update(
        self, pending: PendingDelivery, remaining: Sequence[str], *, attempts: int, not_before: datetime, error: str
    ) -> None:
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"pk": {"S": PENDING_PK}, "sk": {"S": pending.sk}},
                UpdateExpression="SET destinations = :d, attempts = :a, notBefore = :n, lastError = :e",
                ExpressionAttributeValues={
                    ":d": {"L": [{"S": d} for d in remaining]},
                    ":a": {"N": str(attempts)},
                    ":n": {"N": _epoch(not_before)},
                    ":e": {"S": error[:1000] or "-"},
                },
            )
        except ClientError as error_:
            raise PendingDeliveryError(f"pending deliveries update {pending.batch_id}: {_describe(error_)}") from error_

    def remove(self, pending_sk: str) -> None:
        try:
            self._ddb.delete_item(TableName=self.table, Key={"pk": {"S": PENDING_PK}, "sk": {"S": pending_sk}})
        except ClientError as error:
            raise PendingDeliveryError(f"pending deliveries delete {pending_sk}: {_describe(error)}") from error
