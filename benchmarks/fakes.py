"""In-memory stand-ins for the adapters, so handler CPU work can be measured without moto.

They satisfy the same interfaces the handlers use (duck typing): `FakeBuffer` is
`opentrail.adapters.buffer.Buffer`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from opentrail.adapters.buffer import Message


class FakeBuffer:
    """A FIFO queue in memory. `source` (optional) makes bodies on demand, so a 100,000-event
    drain does not hold every body at once (what SQS does for the real batcher)."""

    def __init__(self, source: Iterator[str] | None = None) -> None:
        self._queue: deque[Message] = deque()
        self._in_flight: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self._source = source
        self.sent = 0
        self.received = 0
        self.deleted = 0
        self.dead_lettered: list[tuple[Message, str]] = []

    def _message(self, body: str) -> Message:
        number = next(self._ids)
        return Message(message_id=f"m-{number}", receipt_handle=f"r-{number}", body=body, receive_count=1)

    def send(self, bodies: Iterable[str]) -> None:
        for body in bodies:
            self._queue.append(self._message(body))
            self.sent += 1

    def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[Message]:
        out: list[Message] = []
        while len(out) < max_messages:
            if self._queue:
                message = self._queue.popleft()
            elif self._source is not None:
                body = next(self._source, None)
                if body is None:
                    self._source = None
                    break
                message = self._message(body)
            else:
                break
            self._in_flight[message.receipt_handle] = message
            out.append(message)
        self.received += len(out)
        return out

    def delete(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if self._in_flight.pop(message.receipt_handle, None) is not None:
                self.deleted += 1

    def dead_letter(self, message: Message, reason: str) -> None:
        self.dead_lettered.append((message, reason))
        self.delete([message])

    def depth(self) -> int:
        return len(self._queue) + len(self._in_flight)


def drain_bytes(body: Any, keep: bool) -> tuple[int, str, bytes | None]:
    """Read a body (bytes or file object) in chunks: (size, sha256, the bytes if `keep`)."""
    if isinstance(body, bytes | bytearray):
        data = bytes(body)
        return len(data), hashlib.sha256(data).hexdigest(), data if keep else None
    sha = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    read: Callable[[int], bytes] = body.read
    while chunk := read(1024 * 1024):
        sha.update(chunk)
        size += len(chunk)
        if keep:
            chunks.append(chunk)
    return size, sha.hexdigest(), b"".join(chunks) if keep else None


class FakeLogStore:
    """`opentrail.adapters.log_store.LogStore` in memory. With `keep=False` bodies are read
    (as boto3 would read them to send) and counted but not kept, so memory stays flat."""

    def __init__(
        self,
        bucket: str = "bench-logs",
        kms_key_arn: str = "arn:aws:kms:us-east-1:123456789012:key/bench",
        *,
        keep: bool = True,
    ) -> None:
        self.bucket = bucket
        self.kms_key_arn = kms_key_arn
        self.keep = keep
        self.objects: dict[str, bytes | None] = {}
        self.sizes: dict[str, int] = {}
        self.puts = 0

    def put_new(self, key: str, body: Any, length: int) -> bool:
        if key in self.sizes:
            if self.sizes[key] != length:
                raise RuntimeError(f"{key}: another object is already there")
            return False
        body.seek(0)
        size, _, data = drain_bytes(body, self.keep)
        if size != length:
            raise RuntimeError(f"{key}: body is {size} bytes, ContentLength says {length}")
        self.puts += 1
        self.sizes[key] = size
        self.objects[key] = data
        return True

    def size(self, key: str) -> int | None:
        return self.sizes.get(key)

    def exists(self, key: str) -> bool:
        return key in self.sizes

    def remove(self, key: str) -> None:
        self.sizes.pop(key, None)
        self.objects.pop(key, None)


class FakeLedger:
    """`opentrail.adapters.ledger.Ledger` in memory, with the same conditions."""

    def __init__(self, table: str = "bench-ledger") -> None:
        from opentrail.adapters.ledger import Claim

        self._claim_type = Claim
        self.table = table
        self.intents: dict[str, Any] = {}
        self.claims: dict[str, Any] = {}
        self.entries: dict[tuple[str, str], Any] = {}
        self.transactions = 0

    def claim(self, intent: Any) -> bool:
        self.transactions += 1
        current = self.intents.get(intent.batch_id)
        if intent.attempt == 0:
            if current is not None:
                return False
        elif current is None or current.state != "ABORTED" or current.attempt != intent.attempt - 1:
            return False
        if any(bundle_id in self.claims for bundle_id in intent.bundle_ids):
            return False
        self.intents[intent.batch_id] = intent
        for bundle_id in intent.bundle_ids:
            self.claims[bundle_id] = self._claim_type(bundle_id, intent.batch_id, intent.attempt, intent.delivered_at)
        return True

    def get_intent(self, batch_id: str) -> Any:
        return self.intents.get(batch_id)

    def get_claims(self, bundle_ids: Sequence[str]) -> dict[str, Any]:
        return {b: self.claims[b] for b in bundle_ids if b in self.claims}

    def finalize(self, intent: Any, *, ttl_days: int) -> str:
        for entry in intent.ledger_entries(ttl_days=ttl_days):
            self.entries[(entry.pk, entry.sk)] = entry
        return self._transition(intent, "DONE")

    def abort(self, intent: Any) -> str:
        return self._transition(intent, "ABORTED")

    def _transition(self, intent: Any, target: str) -> str:
        import dataclasses

        current = self.intents.get(intent.batch_id)
        if current is None or current.attempt != intent.attempt:
            return "ABORTED"
        if current.state != "PENDING":
            return str(current.state)
        self.intents[intent.batch_id] = dataclasses.replace(current, state=target)
        return target

    def release(self, intent: Any, *, ttl_days: int) -> None:
        self.delete_entries(intent.ledger_entries(ttl_days=ttl_days))
        for bundle_id in intent.bundle_ids:
            claim = self.claims.get(bundle_id)
            if claim is not None and claim.batch_id == intent.batch_id and claim.attempt == intent.attempt:
                del self.claims[bundle_id]

    def release_claim(self, claim: Any) -> None:
        current = self.claims.get(claim.bundle_id)
        if current is not None and current.batch_id == claim.batch_id and current.attempt == claim.attempt:
            del self.claims[claim.bundle_id]

    def delete_entries(self, entries: Iterable[Any]) -> None:
        for entry in entries:
            self.entries.pop((entry.pk, entry.sk), None)


class FakeDynamoDB:
    """A DynamoDB client that accepts every write and finds nothing: the real history and
    trail-state adapters (and the domain work behind them) run, the network does not."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items_written = 0

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        self.items_written += 1
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        return {}

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["GetItem"] += 1
        return {}

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["Query"] += 1
        return {"Items": []}

    def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["BatchGetItem"] += 1
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["BatchWriteItem"] += 1
        self.items_written += sum(len(requests) for requests in kwargs.get("RequestItems", {}).values())
        return {"UnprocessedItems": {}}
