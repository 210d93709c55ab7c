"""The Insights table (DynamoDB): minute aggregates in, engine state and pending records kept.

docs/insights.md ("Live") describes the items and the crash-safety argument. In short:

Every item belongs to a *trail scope* (trail, account, region): each trail with InsightSelectors
has its own aggregates (of the records it logs) and its own engine state (docs/trails.md).

* aggregate (written by the batcher): pk ``M#<YYYYMMDDHHmm>`` (the event minute), sk
  ``<trail>#<account>#<region>#<batch ref>#<part>``; ``d`` = zlib JSON of ``apis_to_dict``,
  ``expiresAt`` = the minute + 3 days;
* scope head: pk ``SCOPE``, sk ``<trail>#<account>#<region>``; ``version``, ``nonce``,
  ``chunks``, ``lastMinute``, ``pending``, ``committedAt``, ``leaseUntil``, ``expiresAt``;
* state chunk: pk ``STATE#<trail>#<account>#<region>``, sk ``<version, 10 digits>#<nonce>#<n, 3
  digits>``; ``d`` = a slice of zlib JSON ``{"engine": ..., "pending": [records]}``, ``expiresAt``.

Trail names never contain ``#`` (``[A-Za-z0-9._-]``), so the keys split unambiguously.

* Aggregate keys depend only on the batch id and the batch's records: a rebuilt or retried batch
  overwrites its own items, it never adds to them.
* A commit writes the new state's chunks under fresh keys (version + random nonce), then puts the
  head with a condition on the version it read (and no undelivered records): the head switches
  atomically, two runs cannot both commit the same step, and a crash before the head leaves the
  previous state intact (the orphan chunks expire by TTL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.insights.aggregates import MinuteApis, apis_from_dict, apis_to_dict, merge_minutes

TrailScope = tuple[str, str, str]  # (trail, account, region): what one engine analyses

AGGREGATE_TTL_DAYS: Final = 3
AGGREGATE_PREFIX: Final = "M#"
HEAD_PK: Final = "SCOPE"
STATE_PREFIX: Final = "STATE#"
CHUNK_BYTES: Final = 350 * 1024  # DynamoDB items are at most 400 KB
_BATCH_WRITE: Final = 25
_BATCH_GET: Final = 100
_RETRIES: Final = 10
KB: Final = 1024


class InsightsStoreError(RuntimeError):
    """DynamoDB refused a request to the Insights table."""


class StaleHead(InsightsStoreError):
    """The head's chunks are gone: another run committed a newer state meanwhile."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def minute_text(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y%m%d%H%M")


def batch_ref(batch_id: str) -> str:
    return hashlib.sha256(f"insights/{batch_id}".encode()).hexdigest()[:16]


def _pack(apis: MinuteApis) -> list[bytes]:
    """zlib JSON parts, each under CHUNK_BYTES, each a self-contained set of APIs."""

    def pack(items: list[tuple[str, Any]]) -> list[bytes]:
        data = zlib.compress(json.dumps(dict(items), separators=(",", ":"), sort_keys=True).encode(), 6)
        if len(data) <= CHUNK_BYTES or len(items) == 1:
            return [data]
        middle = len(items) // 2
        return pack(items[:middle]) + pack(items[middle:])

    return pack(sorted(apis_to_dict(apis).items()))


def _scope_key(scope: TrailScope) -> str:
    return "#".join(scope)


def _split_scope(text: str) -> tuple[TrailScope, str]:
    """``<trail>#<account>#<region>[#rest]`` -> ((trail, account, region), rest)."""
    trail, account, region, *rest = text.split("#", 3)
    return (trail, account, region), (rest[0] if rest else "")


def aggregate_items(batch_id: str, minutes: Mapping[TrailScope, Mapping[int, MinuteApis]]) -> list[dict[str, Any]]:
    """The aggregate items of one batch (deterministic: same batch, same items)."""
    ref = batch_ref(batch_id)
    items: list[dict[str, Any]] = []
    for scope, by_minute in sorted(minutes.items()):
        for minute, apis in sorted(by_minute.items()):
            if not apis:
                continue
            expires = (minute + 1) * 60 + AGGREGATE_TTL_DAYS * 86400
            for part, data in enumerate(_pack(apis)):
                items.append(
                    {
                        "pk": AGGREGATE_PREFIX + minute_text(minute),
                        "sk": f"{_scope_key(scope)}#{ref}#{part:02d}",
                        "d": data,
                        "expiresAt": expires,
                    }
                )
    return items


def item_size(item: Mapping[str, Any]) -> int:
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        size += len(value) if isinstance(value, bytes) else len(str(value).encode())
    return size


def write_units(item: Mapping[str, Any]) -> int:
    return max(1, -(-item_size(item) // KB))


def _dump(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in item.items():
        if isinstance(value, bytes):
            out[name] = {"B": value}
        elif isinstance(value, bool):
            out[name] = {"BOOL": value}
        elif isinstance(value, int):
            out[name] = {"N": str(value)}
        else:
            out[name] = {"S": str(value)}
    return out


@dataclass(frozen=True)
class Head:
    """A scope's committed state: where its chunks are and what is still to deliver."""

    scope: TrailScope
    version: int
    nonce: str
    chunks: int
    last_minute: int | None
    pending: int  # records committed but not yet delivered
    committed_at: datetime
    lease_until: int = 0  # epoch seconds: a run is delivering the pending records until then

    @property
    def seed(self) -> str:
        """Names this commit's deliveries (S3 file, history batch): the same on every retry."""
        trail, account, region = self.scope
        return f"insights/{trail}/{account}/{region}/{self.version}/{self.nonce}"

    def chunk_keys(self) -> list[dict[str, Any]]:
        pk = _state_pk(self.scope)
        return [{"pk": {"S": pk}, "sk": {"S": _chunk_sk(self.version, self.nonce, n)}} for n in range(self.chunks)]


def _state_pk(scope: TrailScope) -> str:
    return STATE_PREFIX + _scope_key(scope)


def _chunk_sk(version: int, nonce: str, n: int) -> str:
    return f"{version:010d}#{nonce}#{n:03d}"


def _head_from_item(item: Mapping[str, Any]) -> Head:
    scope, _ = _split_scope(item["sk"]["S"])
    last = item.get("lastMinute", {}).get("N")
    return Head(
        scope=scope,
        version=int(item["version"]["N"]),
        nonce=item["nonce"]["S"],
        chunks=int(item["chunks"]["N"]),
        last_minute=int(last) if last is not None else None,
        pending=int(item.get("pending", {}).get("N", "0")),
        committed_at=datetime.fromisoformat(item["committedAt"]["S"]),
        lease_until=int(item.get("leaseUntil", {}).get("N", "0")),
    )


@dataclass
class State:
    engine: dict[str, Any] | None
    pending: list[dict[str, Any]]


class InsightsStore:
    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")
        self.requests: Counter[str] = Counter()
        self.write_units = 0  # from item sizes (DynamoDB's rule), over all puts
        self.items_written = 0

    # -- the batcher's side -------------------------------------------------------------

    def put_aggregates(self, batch_id: str, minutes: Mapping[TrailScope, Mapping[int, MinuteApis]]) -> int:
        """Write one batch's partial aggregates (idempotent); returns the number of items."""
        items = aggregate_items(batch_id, minutes)
        self._write([{"PutRequest": {"Item": _dump(item)}} for item in items])
        self.write_units += sum(write_units(item) for item in items)
        self.items_written += len(items)
        return len(items)

    # -- the Insights function's side -----------------------------------------------------

    def read_aggregates(self, first_minute: int, last_minute: int) -> dict[TrailScope, dict[int, MinuteApis]]:
        """Merged aggregates per trail scope and minute for minutes first..last (inclusive)."""
        out: dict[TrailScope, dict[int, MinuteApis]] = {}
        for minute in range(first_minute, last_minute + 1):
            parts: dict[TrailScope, list[MinuteApis]] = {}
            for item in self._query(AGGREGATE_PREFIX + minute_text(minute)):
                scope, _ = _split_scope(item["sk"]["S"])
                data = json.loads(zlib.decompress(bytes(item["d"]["B"])))
                parts.setdefault(scope, []).append(apis_from_dict(data))
            for scope, found in parts.items():
                out.setdefault(scope, {})[minute] = merge_minutes(found)
        return out

    def heads(self) -> dict[TrailScope, Head]:
        heads: dict[TrailScope, Head] = {}
        for item in self._query(HEAD_PK, consistent=True):
            head = _head_from_item(item)
            heads[head.scope] = head
        return heads

    def load(self, head: Head) -> State:
        """The engine state and pending records of a committed head."""
        keys = head.chunk_keys()
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _BATCH_GET):
            request: dict[str, Any] = {self.table: {"Keys": keys[start : start + _BATCH_GET], "ConsistentRead": True}}
            for attempt in range(_RETRIES):
                try:
                    self.requests["BatchGetItem"] += 1
                    response = self._ddb.batch_get_item(RequestItems=request)
                except ClientError as error:
                    raise InsightsStoreError(f"insights state read: {_code(error) or error}") from error
                for item in response.get("Responses", {}).get(self.table, []):
                    found[item["sk"]["S"]] = bytes(item["d"]["B"])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise InsightsStoreError("insights state read: keys left unprocessed")
        try:
            blob = b"".join(found[key["sk"]["S"]] for key in keys)
        except KeyError as error:
            raise StaleHead(f"insights state of {head.scope}: chunk {error} gone (a newer commit)") from None
        data = json.loads(zlib.decompress(blob))
        return State(engine=data["engine"], pending=list(data["pending"]))

    def commit(
        self,
        scope: TrailScope,
        *,
        previous: Head | None,
        engine: Mapping[str, Any],
        pending: list[dict[str, Any]],
        now: datetime,
        ttl_days: int,
        lease_seconds: int,
    ) -> Head | None:
        """Store a new state; None when another run committed first (nothing is kept then)."""
        version = previous.version + 1 if previous else 1
        nonce = uuid.uuid4().hex[:12]
        blob = zlib.compress(json.dumps({"engine": engine, "pending": pending}, separators=(",", ":")).encode(), 6)
        parts = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
        expires = int((now + timedelta(days=ttl_days)).timestamp())
        pk = _state_pk(scope)
        chunks = [
            {"pk": pk, "sk": _chunk_sk(version, nonce, n), "d": d, "expiresAt": expires} for n, d in enumerate(parts)
        ]
        self._write([{"PutRequest": {"Item": _dump(item)}} for item in chunks])
        self.write_units += sum(write_units(item) for item in chunks)
        head = Head(
            scope=scope,
            version=version,
            nonce=nonce,
            chunks=len(parts),
            last_minute=engine.get("l"),
            pending=len(pending),
            committed_at=now,
            lease_until=int(now.timestamp()) + lease_seconds if pending else 0,
        )
        item: dict[str, Any] = {
            "pk": HEAD_PK,
            "sk": _scope_key(scope),
            "version": version,
            "nonce": nonce,
            "chunks": len(parts),
            "pending": len(pending),
            "committedAt": now.isoformat(),
            "leaseUntil": head.lease_until,
            "expiresAt": expires,
        }
        if head.last_minute is not None:
            item["lastMinute"] = head.last_minute
        request: dict[str, Any] = {"TableName": self.table, "Item": _dump(item)}
        if previous is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "version = :v AND nonce = :n AND pending = :zero"
            request["ExpressionAttributeValues"] = {
                ":v": {"N": str(previous.version)},
                ":n": {"S": previous.nonce},
                ":zero": {"N": "0"},
            }
        try:
            self.requests["PutItem"] += 1
            self._ddb.put_item(**request)
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise InsightsStoreError(f"insights commit: {_code(error) or error}") from error
            self._delete(head.chunk_keys())
            return None
        self.write_units += write_units(item)
        if previous is not None:
            self._delete(previous.chunk_keys())  # best effort: they also expire
        return head

    def claim_delivery(self, head: Head, *, now: datetime, lease_seconds: int) -> Head | None:
        """Take over the delivery of a head's pending records whose lease ran out."""
        until = int(now.timestamp()) + lease_seconds
        ok = self._update(
            head,
            "SET leaseUntil = :until",
            "version = :v AND nonce = :n AND pending > :zero AND leaseUntil < :now",
            {":until": {"N": str(until)}, ":now": {"N": str(int(now.timestamp()))}, ":zero": {"N": "0"}},
        )
        if not ok:
            return None
        return Head(**{**head.__dict__, "lease_until": until})

    def mark_delivered(self, head: Head) -> bool:
        """The head's pending records are delivered: the next commit may proceed."""
        return self._update(
            head, "SET pending = :zero, leaseUntil = :zero", "version = :v AND nonce = :n", {":zero": {"N": "0"}}
        )

    def retire(self, head: Head) -> bool:
        """Forget a scope whose state is empty (no API seen for the baseline period)."""
        try:
            self.requests["DeleteItem"] += 1
            self._ddb.delete_item(
                TableName=self.table,
                Key={"pk": {"S": HEAD_PK}, "sk": {"S": _scope_key(head.scope)}},
                ConditionExpression="version = :v AND nonce = :n AND pending = :zero",
                ExpressionAttributeValues={
                    ":v": {"N": str(head.version)},
                    ":n": {"S": head.nonce},
                    ":zero": {"N": "0"},
                },
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise InsightsStoreError(f"insights retire: {_code(error) or error}") from error
        self._delete(head.chunk_keys())
        return True

    # -- DynamoDB calls --------------------------------------------------------------------

    def _update(self, head: Head, update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self.requests["UpdateItem"] += 1
            self._ddb.update_item(
                TableName=self.table,
                Key={"pk": {"S": HEAD_PK}, "sk": {"S": _scope_key(head.scope)}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={**values, ":v": {"N": str(head.version)}, ":n": {"S": head.nonce}},
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise InsightsStoreError(f"insights head update: {_code(error) or error}") from error
        return True

    def _query(self, pk: str, *, consistent: bool = False) -> Iterable[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": consistent,
        }
        while True:
            try:
                self.requests["Query"] += 1
                response = self._ddb.query(**request)
            except ClientError as error:
                raise InsightsStoreError(f"insights query: {_code(error) or error}") from error
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), _BATCH_WRITE):
            pending: dict[str, Any] = {self.table: requests[start : start + _BATCH_WRITE]}
            for attempt in range(_RETRIES):
                try:
                    self.requests["BatchWriteItem"] += 1
                    response = self._ddb.batch_write_item(RequestItems=pending)
                except ClientError as error:
                    raise InsightsStoreError(f"insights write: {_code(error) or error}") from error
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise InsightsStoreError("insights write: items left unprocessed")

    def _delete(self, keys: list[dict[str, Any]]) -> None:
        with contextlib.suppress(InsightsStoreError):  # best effort: every state chunk has a TTL
            self._write([{"DeleteRequest": {"Key": key}} for key in keys])
