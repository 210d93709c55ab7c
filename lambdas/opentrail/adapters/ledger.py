"""The delivery ledger (DynamoDB): batch intents, bundle claims and delivered log files.

Items (table keys ``pk``/``sk``, TTL attribute ``expiresAt``):

* intent ``BATCH#<batchId>`` / ``BATCH``: state PENDING|DONE|ABORTED, attempt, files,
  bundleIds, createdAt, deliveredAt, leaseUntil, expiresAt;
* claim ``BUNDLE#<bundleId>`` / ``BUNDLE``: batchId, attempt, createdAt, expiresAt;
* ledger ``LEDGER#<trail>#<YYYYMMDDHH>`` / ``<account>#<region>#<deliveredAt>#<key>``
  (see `opentrail.domain.batch.LedgerEntry`), plus ``recordedAt`` (first write, kept on
  re-puts) and, once a digest lists the file, ``digestKey`` (written by the digester).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from opentrail.domain.batch import DeliveredFile, Intent, IntentState, LedgerEntry, iso_time, parse_iso_time
from opentrail.domain.clock import Clock, system_clock

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
_BATCH_GET = 100
_BATCH_WRITE = 25


class LedgerError(RuntimeError):
    """DynamoDB refused a request; the batch stops and its messages come back later."""


@dataclass(frozen=True)
class Claim:
    bundle_id: str
    batch_id: str
    attempt: int
    created_at: datetime


def intent_key(batch_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"BATCH#{batch_id}"}, "sk": {"S": "BATCH"}}


def claim_key(bundle_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"BUNDLE#{bundle_id}"}, "sk": {"S": "BUNDLE"}}


def _dump(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _SERIALIZER.serialize(value) for name, value in item.items()}


def _load(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(_DESERIALIZER.deserialize(value)) for name, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Ledger:
    def __init__(self, table: str, *, client: Any = None, clock: Clock = system_clock) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")
        self.clock = clock  # stamps recordedAt on ledger items

    # -- claim -------------------------------------------------------------------------

    def claim(self, intent: Intent) -> bool:
        """Write the intent and one claim per bundle in one transaction.

        Attempt 0 needs a new intent; attempt n > 0 replaces intent attempt n-1 only if that
        one is ABORTED. Returns False when the transaction was cancelled (some bundle is
        claimed, the intent exists, or a concurrent transaction): the caller reads and resolves.
        """
        if intent.attempt == 0:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "#state = :aborted AND attempt = :previous",
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": {
                    ":aborted": {"S": "ABORTED"},
                    ":previous": {"N": str(intent.attempt - 1)},
                },
            }
        created = iso_time(intent.delivered_at)
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "Item": self._intent_item(intent), **condition}}
        ]
        for bundle_id in intent.bundle_ids:
            claim = {
                **claim_key(bundle_id),
                **_dump(
                    {
                        "batchId": intent.batch_id,
                        "attempt": intent.attempt,
                        "createdAt": created,
                        "expiresAt": intent.expires_at,
                    }
                ),
            }
            items.append(
                {"Put": {"TableName": self.table, "Item": claim, "ConditionExpression": "attribute_not_exists(pk)"}}
            )
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except ClientError as error:
            if _code(error) in ("TransactionCanceledException", "TransactionConflictException"):
                return False
            raise LedgerError(f"claim of batch {intent.batch_id}: {_code(error) or error}") from error
        return True

    def _intent_item(self, intent: Intent) -> dict[str, Any]:
        return {
            **intent_key(intent.batch_id),
            **_dump(
                {
                    "state": intent.state,
                    "attempt": intent.attempt,
                    "files": [file.to_dict() for file in intent.files],
                    "bundleIds": list(intent.bundle_ids),
                    "createdAt": iso_time(intent.delivered_at),
                    "deliveredAt": iso_time(intent.delivered_at),
                    "leaseUntil": iso_time(intent.lease_until),
                    "expiresAt": intent.expires_at,
                }
            ),
        }

    # -- reads -------------------------------------------------------------------------

    def get_intent(self, batch_id: str) -> Intent | None:
        try:
            response = self._ddb.get_item(TableName=self.table, Key=intent_key(batch_id), ConsistentRead=True)
        except ClientError as error:
            raise LedgerError(f"read of batch {batch_id}: {_code(error) or error}") from error
        if "Item" not in response:
            return None
        data = _load(response["Item"])
        return Intent(
            batch_id=batch_id,
            attempt=int(data.get("attempt", 0)),
            state=cast(IntentState, data["state"]),
            files=tuple(DeliveredFile.from_dict(f) for f in data.get("files", [])),
            bundle_ids=tuple(data.get("bundleIds", [])),
            delivered_at=parse_iso_time(data["deliveredAt"]),
            lease_until=parse_iso_time(data["leaseUntil"]),
            expires_at=int(data["expiresAt"]),
        )

    def get_claims(self, bundle_ids: Sequence[str]) -> dict[str, Claim]:
        """The claims that exist among `bundle_ids` (strongly consistent)."""
        claims: dict[str, Claim] = {}
        ids = list(dict.fromkeys(bundle_ids))
        for start in range(0, len(ids), _BATCH_GET):
            keys = [claim_key(b) for b in ids[start : start + _BATCH_GET]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for _ in range(10):
                try:
                    response = self._ddb.batch_get_item(RequestItems=request)
                except ClientError as error:
                    raise LedgerError(f"read of bundle claims: {_code(error) or error}") from error
                for raw in response.get("Responses", {}).get(self.table, []):
                    data = _load(raw)
                    bundle_id = str(data["pk"]).removeprefix("BUNDLE#")
                    claims[bundle_id] = Claim(
                        bundle_id=bundle_id,
                        batch_id=str(data["batchId"]),
                        attempt=int(data.get("attempt", 0)),
                        created_at=parse_iso_time(data["createdAt"]),
                    )
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05)
            else:
                raise LedgerError("read of bundle claims: keys left unprocessed")
        return claims

    # -- state transitions ---------------------------------------------------------------

    def finalize(self, intent: Intent, *, ttl_days: int) -> IntentState:
        """Write the intent's ledger items (idempotent), then move it PENDING → DONE.

        Returns DONE (now or already) or ABORTED (someone aborted this attempt first; the
        ledger items just written are removed again).
        """
        entries = intent.ledger_entries(ttl_days=ttl_days)
        self.put_entries(entries)
        state = self._transition(intent, "DONE")
        if state == "ABORTED":
            self.delete_entries(entries)
        return state

    def put_entries(self, entries: Iterable[LedgerEntry]) -> None:
        """Write ledger items (idempotent). ``recordedAt`` is set on the first write only and a
        digester's ``digestKey`` survives a re-put (UpdateItem, not PutItem), so a batch
        finalized late by a resolver keeps the time its files really entered the ledger."""
        recorded_at = iso_time(self.clock())
        for entry in entries:
            item = entry.to_item()
            key = {"pk": item.pop("pk"), "sk": item.pop("sk")}
            names = {f"#a{i}": name for i, name in enumerate(item)}
            values = {f":a{i}": value for i, value in enumerate(item.values())}
            assignments = [f"#a{i} = :a{i}" for i in range(len(item))]
            assignments.append("recordedAt = if_not_exists(recordedAt, :recordedAt)")
            values[":recordedAt"] = recorded_at
            try:
                self._ddb.update_item(
                    TableName=self.table,
                    Key=_dump(key),
                    UpdateExpression="SET " + ", ".join(assignments),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=_dump(values),
                )
            except ClientError as error:
                raise LedgerError(f"ledger write {entry.file.key}: {_code(error) or error}") from error

    def abort(self, intent: Intent) -> IntentState:
        """Move the intent PENDING → ABORTED; returns ABORTED (now or already) or DONE."""
        return self._transition(intent, "ABORTED")

    def _transition(self, intent: Intent, target: IntentState) -> IntentState:
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=intent_key(intent.batch_id),
                UpdateExpression="SET #state = :target",
                ConditionExpression="#state = :pending AND attempt = :attempt",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":target": {"S": target},
                    ":pending": {"S": "PENDING"},
                    ":attempt": {"N": str(intent.attempt)},
                },
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise LedgerError(f"{target} of batch {intent.batch_id}: {_code(error) or error}") from error
            current = self.get_intent(intent.batch_id)
            if current is None or current.attempt != intent.attempt:
                return "ABORTED"  # a later attempt exists only after this one was aborted
            return current.state
        return target

    def release(self, intent: Intent, *, ttl_days: int) -> None:
        """After an abort: remove the intent's ledger items and its bundles' claims."""
        self.delete_entries(intent.ledger_entries(ttl_days=ttl_days))
        for bundle_id in intent.bundle_ids:
            self.release_claim(Claim(bundle_id, intent.batch_id, intent.attempt, intent.delivered_at))

    def release_claim(self, claim: Claim) -> None:
        """Delete a claim if it still belongs to the same batch attempt."""
        try:
            self._ddb.delete_item(
                TableName=self.table,
                Key=claim_key(claim.bundle_id),
                ConditionExpression="batchId = :batch AND attempt = :attempt",
                ExpressionAttributeValues={":batch": {"S": claim.batch_id}, ":attempt": {"N": str(claim.attempt)}},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise LedgerError(f"release of bundle {claim.bundle_id}: {_code(error) or error}") from error

    def delete_entries(self, entries: Iterable[LedgerEntry]) -> None:
        self._write([{"DeleteRequest": {"Key": {"pk": {"S": e.pk}, "sk": {"S": e.sk}}}} for e in entries])

    def _write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), _BATCH_WRITE):
            pending: dict[str, Any] = {self.table: requests[start : start + _BATCH_WRITE]}
            for attempt in range(10):
                try:
                    response = self._ddb.batch_write_item(RequestItems=pending)
                except ClientError as error:
                    raise LedgerError(f"ledger write: {_code(error) or error}") from error
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(0.05 * (attempt + 1))
            else:
                raise LedgerError("ledger write: items left unprocessed")
