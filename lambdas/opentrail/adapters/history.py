"""The event history index in DynamoDB: the batcher writes it, LookupEvents reads it.

Schema and arithmetic: docs/history.md and `opentrail.domain.history`. Writes are
BatchWriteItem of deterministic items (a retried or rebuilt batch overwrites the same keys
with the same values). A lookup is: Query the posting partition of the (most selective)
attribute newest first, then BatchGetItem the record pages its refs point to; `requests`
counts every DynamoDB call by operation so tests and the benchmark can check the cost.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain import history as h
from opentrail.domain.lookup import LookupPage, LookupQuery

_BATCH_WRITE: Final = 25
_BATCH_GET: Final = 100
_QUERY_LIMIT: Final = 100
_RETRIES: Final = 10
# Most selective first: a lookup with several attributes drives from the first of these
# it has and intersects the others' posting lists (then checks every record).
SELECTIVITY: Final = (
    "EventId",
    "AccessKeyId",
    "ResourceName",
    "Username",
    "EventName",
    "ResourceType",
    "EventSource",
    "ReadOnly",
)
_READ_CHUNK: Final = 1024 * 1024


class HistoryStoreError(RuntimeError):
    """DynamoDB refused a request to the history table."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _dump(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in item.items():
        kind = type(value)  # exact types first (the index's items): same results as the checks below
        if kind is str:
            out[name] = {"S": value}
        elif kind is bytes:
            out[name] = {"B": value}
        elif kind is int:
            out[name] = {"N": str(value)}
        elif isinstance(value, bytes):
            out[name] = {"B": value}
        elif isinstance(value, int):
            out[name] = {"N": str(value)}
        else:
            out[name] = {"S": value}
    return out


@dataclass
class _Stream:
    """One posting partition read newest first, in minute groups."""

    pk: str
    low: str
    high: str
    buffered: list[tuple[str, bytes]] = field(default_factory=list)
    next_key: dict[str, Any] | None = None
    started: bool = False

    @property
    def exhausted(self) -> bool:
        return self.started and self.next_key is None and not self.buffered


class EventHistory:
    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        retention_days: int = h.DEFAULT_RETENTION_DAYS,
        data_events: bool = False,
    ) -> None:
        self.table = table
        self.retention_days = retention_days
        self.data_events = data_events
        self._ddb = client or boto3.client("dynamodb")
        self.requests: Counter[str] = Counter()
        self.items_written = 0  # (their write units: the builder's `BuildStats.write_units`)

    # -- writes ------------------------------------------------------------------------

    def builder(self, batch_id: str) -> h.IndexBuilder:
        return h.IndexBuilder(batch_id, retention_days=self.retention_days, data_events=self.data_events)

    def index_lines(self, batch_id: str, lines: Iterable[bytes]) -> h.BuildStats:
        """Index one batch's record lines (in the batch's fixed order)."""
        builder = self.builder(batch_id)
        pending: list[dict[str, Any]] = []
        for line in lines:
            pending.extend(builder.add(line))
            if len(pending) >= _BATCH_WRITE:
                self.write(pending)
                pending = []
        pending.extend(builder.finish())
        self.write(pending)
        return builder.stats

    def index_log_files(self, batch_id: str, bodies: Iterable[IO[bytes] | bytes]) -> h.BuildStats:
        """Index the records of a batch's log files (gzip bodies, in the intent's file order;
        a record in several files — several trails — is indexed once)."""
        return self.index_lines(batch_id, (line for body in bodies for line in h.iter_log_records(_chunks(body))))

    def mark_indexed(self, batch_id: str, *, expires_at: int) -> None:
        """Record that every index item of the batch is written (after them, never before)."""
        try:
            self.requests["PutItem"] += 1
            self._ddb.put_item(TableName=self.table, Item=_dump(h.marker_item(batch_id, expires_at=expires_at)))
        except ClientError as error:
            raise HistoryStoreError(f"history marker: {_code(error) or error}") from error

    def is_indexed(self, batch_id: str) -> bool:
        key = h.marker_item(batch_id, expires_at=0)
        try:
            self.requests["GetItem"] += 1
            response = self._ddb.get_item(
                TableName=self.table,
                Key={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}},
                ConsistentRead=True,
                ProjectionExpression="pk",
            )
        except ClientError as error:
            raise HistoryStoreError(f"history marker: {_code(error) or error}") from error
        return "Item" in response

    def write(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem in requests of 25, retrying unprocessed items with backoff."""
        for start in range(0, len(items), _BATCH_WRITE):
            chunk = items[start : start + _BATCH_WRITE]
            pending: dict[str, Any] = {self.table: [{"PutRequest": {"Item": _dump(item)}} for item in chunk]}
            for attempt in range(_RETRIES):
                try:
                    self.requests["BatchWriteItem"] += 1
                    response = self._ddb.batch_write_item(RequestItems=pending)
                except ClientError as error:
                    raise HistoryStoreError(f"history write: {_code(error) or error}") from error
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise HistoryStoreError("history write: items left unprocessed")
            self.items_written += len(chunk)

    # -- lookups -----------------------------------------------------------------------

    def lookup(self, query: LookupQuery, cursor: dict[str, Any] | None) -> LookupPage:
        """Up to `query.max_results` records newest first; `cursor` continues a lookup."""
        start = h.epoch(query.start) + (1 if query.start.microsecond else 0)
        end = h.end_of_second(query.end)
        after = h.Position.from_cursor(cursor) if cursor else None
        if after is not None:
            end = min(end, after.epoch)
        if start > end or query.max_results < 1:
            return LookupPage([], None)
        low, high = h.sort_key_range(_utc(start), _utc(end))
        streams = [_Stream(pk, low, high) for pk in self._partitions(query)]
        pending: list[h.Candidate] = []
        out: list[dict[str, Any]] = []
        emitted: set[str] = set()
        pages: dict[str, list[bytes]] = {}
        last: h.Position | None = None
        more = False
        while len(out) < query.max_results:
            need = query.max_results - len(out)
            while len(pending) < need:
                group = self._next_group(streams, start, end)
                if group is None:
                    break
                pending.extend(c for c in group if after is None or c.rank <= (after.epoch, after.hash16))
            if not pending:
                break
            take = pending[:need]
            while len(take) < len(pending) and pending[len(take)].rank == take[-1].rank:
                take.append(pending[len(take)])
            pending = pending[len(take) :]
            self._fetch_pages({c.page_pk for c in take} - pages.keys(), pages)
            resolved = sorted(
                (item for item in (self._resolve(c, pages) for c in take) if item is not None),
                key=lambda item: item[0],
                reverse=True,
            )
            for index, (position, record) in enumerate(resolved):
                if not self._wanted(position, record, query, after, emitted):
                    continue
                if len(out) == query.max_results:
                    more = True  # a further record is already known
                    break
                out.append(record)
                emitted.add(position.event_id)
                last = position
                if len(out) == query.max_results:
                    more = any(self._wanted(p, r, query, after, emitted) for p, r in resolved[index + 1 :])
                    break
        if len(out) == query.max_results and not more:
            more = bool(pending) or any(not s.exhausted for s in streams)
        return LookupPage(out, last.to_cursor() if more and last is not None else None)

    def _partitions(self, query: LookupQuery) -> list[str]:
        """The posting partitions to read: every attribute that is indexed for the event
        category, most selective first; none indexed → the time-only list."""
        keys = h.INSIGHT_KEYS if query.insight else tuple(h.KEY_CODES)
        attributes = sorted(((k, v) for k, v in query.attributes if k in keys), key=lambda kv: SELECTIVITY.index(kv[0]))
        pks = list(dict.fromkeys(h.partition_key(query.region, k, v, insight=query.insight) for k, v in attributes))
        return pks or [h.partition_key(query.region, None, insight=query.insight)]

    @staticmethod
    def _wanted(
        position: h.Position,
        record: dict[str, Any],
        query: LookupQuery,
        after: h.Position | None,
        emitted: set[str],
    ) -> bool:
        if after is not None and position >= after:
            return False
        if position.event_id in emitted:
            return False
        if h.is_insight(record) != query.insight:
            return False
        return all(h.matches(record, k, v) for k, v in query.attributes)

    def _resolve(
        self, candidate: h.Candidate, pages: dict[str, list[bytes]]
    ) -> tuple[h.Position, dict[str, Any]] | None:
        lines = pages.get(candidate.page_pk)
        if lines is None or candidate.index >= len(lines):
            return None  # page expired (TTL) or not written yet
        record = json.loads(lines[candidate.index])
        event_id = record.get("eventID")
        if not isinstance(event_id, str) or h.order_hash(event_id) != candidate.hash16:
            return None  # not the record the ref was written for
        return h.Position(candidate.epoch, candidate.hash16, event_id), record

    # -- DynamoDB reads ------------------------------------------------------------------

    def _query(self, stream: _Stream) -> None:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": {
                ":pk": {"S": stream.pk},
                ":low": {"S": stream.low},
                ":high": {"S": stream.high},
            },
            "ProjectionExpression": "sk, #r",
            "ExpressionAttributeNames": {"#r": h.REFS_ATTRIBUTE},
            "ScanIndexForward": False,
            "Limit": _QUERY_LIMIT,
        }
        if stream.next_key is not None:
            request["ExclusiveStartKey"] = stream.next_key
        try:
            self.requests["Query"] += 1
            response = self._ddb.query(**request)
        except ClientError as error:
            raise HistoryStoreError(f"history query: {_code(error) or error}") from error
        stream.started = True
        stream.next_key = response.get("LastEvaluatedKey")
        stream.buffered.extend((i["sk"]["S"], bytes(i[h.REFS_ATTRIBUTE]["B"])) for i in response.get("Items", []))

    def _group(self, stream: _Stream) -> tuple[str, list[tuple[str, bytes]]] | None:
        """The newest unread minute's posting items of a partition (all of them)."""
        if not stream.buffered and (not stream.started or stream.next_key is not None):
            self._query(stream)
        if not stream.buffered:
            return None
        minute = stream.buffered[0][0][:12]
        while all(sk[:12] == minute for sk, _ in stream.buffered) and stream.next_key is not None:
            self._query(stream)
        count = next((i for i, (sk, _) in enumerate(stream.buffered) if sk[:12] != minute), len(stream.buffered))
        items, stream.buffered = stream.buffered[:count], stream.buffered[count:]
        return minute, items

    def _peek_minute(self, stream: _Stream) -> str | None:
        if not stream.buffered and (not stream.started or stream.next_key is not None):
            self._query(stream)
        return stream.buffered[0][0][:12] if stream.buffered else None

    def _next_group(self, streams: list[_Stream], start: int, end: int) -> list[h.Candidate] | None:
        """Candidates of the next minute (newest first) present in every stream (AND)."""
        while True:
            heads = [self._peek_minute(s) for s in streams]
            if any(m is None for m in heads):
                return None
            target = min(m for m in heads if m is not None)  # no stream has anything newer in common
            for stream, minute in zip(streams, heads, strict=True):
                while minute is not None and minute > target:
                    self._group(stream)
                    minute = self._peek_minute(stream)
                if minute is None:
                    return None
            if any(self._peek_minute(s) != target for s in streams):
                continue  # some stream has nothing at `target`: try the next older minute
            groups = [group[1] for group in (self._group(s) for s in streams) if group is not None]
            found = h.candidates(groups[0], start=start, end=end)
            for other in groups[1:]:
                keys = set(h.candidates(other, start=start, end=end))
                found = [c for c in found if c in keys]
            if found:
                return found

    def _fetch_pages(self, pks: set[str], pages: dict[str, list[bytes]]) -> None:
        keys = sorted(pks)
        for start in range(0, len(keys), _BATCH_GET):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [{"pk": {"S": pk}, "sk": {"S": h.PAGE_CODE}} for pk in keys[start : start + _BATCH_GET]],
                    "ProjectionExpression": "pk, #d",
                    "ExpressionAttributeNames": {"#d": h.DATA_ATTRIBUTE},
                }
            }
            for attempt in range(_RETRIES):
                try:
                    self.requests["BatchGetItem"] += 1
                    response = self._ddb.batch_get_item(RequestItems=request)
                except ClientError as error:
                    raise HistoryStoreError(f"history read: {_code(error) or error}") from error
                for item in response.get("Responses", {}).get(self.table, []):
                    pages[item["pk"]["S"]] = h.page_lines(bytes(item[h.DATA_ATTRIBUTE]["B"]))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise HistoryStoreError("history read: keys left unprocessed")


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _chunks(body: IO[bytes] | bytes) -> Iterator[bytes]:
    if isinstance(body, bytes):
        yield body
        return
    body.seek(0)
    yield from iter(lambda: body.read(_READ_CHUNK), b"")
