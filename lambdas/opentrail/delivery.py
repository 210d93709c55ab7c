"""The batcher's delivery protocol: SQS bundles → CloudTrail log files, exactly once.

The adapters (buffer, log store, ledger) are passed in; planning lives in
`opentrail.domain.batch`. docs/batcher.md explains the protocol and its crash matrix.

Per batch (up to ``max_batch_messages`` messages):

1. plan: unpack each bundle (poison → DLQ now), read its lines, dedupe by eventID, stream
   into per-(trail, account, region) log files; name them from the batch id;
2. claim: one DynamoDB transaction writes the PENDING intent (all files, keys and hashes)
   and one claim per bundle; if some bundle is already claimed, resolve the claiming
   intent (DONE → drop the bundle and delete its message; PENDING past its owner's lease →
   finalize it when all its files exist, otherwise abort it; ABORTED → finish its clean-up)
   and plan again;
3. write every file with If-None-Match: *;
4. finalize: ledger items, then intent PENDING → DONE;
5. index: the event history items of the batch's records and, with an Insights table, the
   batch's partial per-minute aggregates (docs/insights.md), the batch's usage counters per
   trail and day (docs/usage.md; keyed by the batch, so a re-index overwrites them), then the
   batch's "indexed" marker
   (docs/history.md); a DONE batch found without its marker (a run died between DONE and
   the marker) is indexed again from its log files in S3 before its messages are deleted;
6. delete the batch's messages;
7. deliveries (docs/trails.md, "Deliveries"): CloudWatch Logs, SNS and EventBridge for the trails
   that have them, best effort. What a batch owes is recorded (a "pending deliveries" item)
   before its marker, so a failed or interrupted delivery is retried by a later run from the
   log files in S3, at most ``max_delivery_attempts`` times; outcomes go to the trail status.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import Enum
from typing import IO, Any, Final

from aws_lambda_powertools import Logger

from opentrail.adapters.buffer import Buffer, Message
from opentrail.adapters.deliveries import (
    Deliveries,
    DeliveryError,
    PendingDeliveries,
    PendingDelivery,
    PendingDeliveryError,
)
from opentrail.adapters.history import EventHistory, HistoryStoreError
from opentrail.adapters.insights_store import InsightsStore, InsightsStoreError
from opentrail.adapters.ledger import Claim, Ledger, LedgerError
from opentrail.adapters.log_store import LogStore, LogStoreError, ObjectLockedError
from opentrail.adapters.trail_state import TrailStateError, TrailStateStore
from opentrail.adapters.usage_store import UsageStore, UsageStoreError
from opentrail.domain.batch import (
    MAX_FILES_PER_BATCH,
    BatchPlan,
    Intent,
    PlannedFile,
    PoisonRecord,
    batch_id,
    name_files,
    read_bundle,
)
from opentrail.domain.bundle import Bundle, BundleError, unpack
from opentrail.domain.clock import Clock
from opentrail.domain.deliveries import (
    CLOUD_WATCH_LOGS,
    EVENT_BRIDGE,
    NOTIFICATION,
    event_entries,
    log_events,
    log_stream_name,
    notification,
    parse_destination,
)
from opentrail.domain.deliveries import destinations as owed_destinations
from opentrail.domain.history import iter_log_records
from opentrail.domain.insights import Aggregator
from opentrail.domain.log_file import MAX_COMPRESSED_BYTES
from opentrail.domain.trail import Trail
from opentrail.domain.usage import UsageCounter, meters_of
from opentrail.settings import BatcherSettings

logger = Logger(child=True)

_RECEIVE_MAX: Final = 10
# Intents and claims outlive SQS's longest retention (14 days): any message that can still be
# received finds the claim of its bundle.
INTENT_TTL: Final = timedelta(days=15)
# A claim whose intent is gone (TTL deleted the intent first) is stale after this long:
# 2 × the longest visibility timeout the stack uses (6 × Lambda's 15-minute maximum).
STALE_CLAIM_AFTER: Final = timedelta(hours=3)
_HISTORY_WRITE: Final = 25  # index items per BatchWriteItem
# Planning keeps the parsed records of a batch for its index step while their lines stay under
# this many bytes (~4× that in memory as parsed records); a larger batch is read back from its
# files, as a rebuild from S3 is.
KEEP_RECORDS_BYTES: Final = 16 * 1024 * 1024
_READ_CHUNK: Final = 1024 * 1024


class Outcome(Enum):
    DELIVERED = "delivered"  # the bundle is in a DONE batch: delete its message
    RELEASED = "released"  # the claim is gone: the bundle can be claimed again now
    BUSY = "busy"  # its owner may still be running: leave the message for later


@dataclass(frozen=True)
class BatcherConfig:
    trails: tuple[Trail, ...]
    bucket: str
    max_batch_messages: int = 90
    max_file_bytes: int = MAX_COMPRESSED_BYTES
    time_budget_margin_seconds: int = 20
    ledger_ttl_days: int = 400
    max_files_per_batch: int = MAX_FILES_PER_BATCH
    receive_wait_seconds: int = 1
    intent_ttl: timedelta = INTENT_TTL
    stale_claim_after: timedelta = STALE_CLAIM_AFTER
    lease_skew: timedelta = timedelta(seconds=30)
    max_claim_rounds: int = 5
    keep_records_bytes: int = KEEP_RECORDS_BYTES  # 0: the index step always reads the files back
    # Deliveries (docs/trails.md, "Deliveries"): tries per destination and batch (the first
    # included), the wait before retry n (base × 2^(n-1), at most an hour), batches retried per run.
    max_delivery_attempts: int = 5
    delivery_retry_seconds: int = 60
    max_delivery_retries_per_run: int = 20

    @classmethod
    def from_settings(cls, settings: BatcherSettings, **overrides: Any) -> BatcherConfig:
        values: dict[str, Any] = {
            "trails": settings.trail_list,
            "bucket": settings.log_bucket,
            "max_batch_messages": settings.max_batch_messages,
            "max_file_bytes": settings.max_file_bytes,
            "time_budget_margin_seconds": settings.time_budget_margin_seconds,
            "ledger_ttl_days": settings.ledger_ttl_days,
            "receive_wait_seconds": settings.receive_wait_seconds,
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class DrainSummary:
    batches: int = 0  # batches this run delivered (intent DONE)
    messages: int = 0  # messages deleted as delivered (including duplicates and already-delivered ones)
    records: int = 0  # distinct records delivered
    duplicates_dropped: int = 0  # records dropped because their eventID was already in the batch
    duplicate_bundles: int = 0  # messages carrying a bundle already in the batch
    unselected: int = 0  # records no trail selects
    dead_lettered: int = 0
    already_delivered: int = 0  # bundles found in a batch delivered earlier
    deferred: int = 0  # bundles left for a later run (owner still running)
    resolved_finalized: int = 0  # crashed batches this run completed
    resolved_aborted: int = 0  # crashed batches this run aborted
    aborted_by_others: int = 0  # own batches another run aborted (messages left for later)
    failed_batches: int = 0
    indexed: int = 0  # records written to the event history index
    reindexed_batches: int = 0  # DONE batches whose index this run rebuilt from their log files
    aggregate_items: int = 0  # Insights minute-aggregate items written (docs/insights.md)
    usage_items: int = 0  # usage counter items written (docs/usage.md)
    errors: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "drained"
    stopped_trails: list[str] = field(default_factory=list)  # trails skipped: logging stopped (StopLogging)
    deliveries_sent: int = 0  # destinations (CloudWatch Logs / SNS per trail, EventBridge) served
    deliveries_failed: int = 0  # destination attempts that failed (retried later)
    deliveries_retried: int = 0  # pending batches this run retried
    deliveries_abandoned: int = 0  # destinations given up after max_delivery_attempts
    delivery_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "messages": self.messages,
            "records": self.records,
            "duplicatesDropped": self.duplicates_dropped,
            "duplicateBundles": self.duplicate_bundles,
            "unselected": self.unselected,
            "deadLettered": self.dead_lettered,
            "alreadyDelivered": self.already_delivered,
            "deferred": self.deferred,
            "resolvedFinalized": self.resolved_finalized,
            "resolvedAborted": self.resolved_aborted,
            "abortedByOthers": self.aborted_by_others,
            "failedBatches": self.failed_batches,
            "indexed": self.indexed,
            "reindexedBatches": self.reindexed_batches,
            "aggregateItems": self.aggregate_items,
            "usageItems": self.usage_items,
            "errors": list(self.errors),
            "files": list(self.files),
            "stoppedBy": self.stopped_by,
            "stoppedTrails": list(self.stopped_trails),
            "deliveriesSent": self.deliveries_sent,
            "deliveriesFailed": self.deliveries_failed,
            "deliveriesRetried": self.deliveries_retried,
            "deliveriesAbandoned": self.deliveries_abandoned,
            "deliveryErrors": list(self.delivery_errors),
        }


class _Stop(Exception):
    """The batch cannot go on this run (its messages come back after the visibility timeout)."""


@dataclass
class _Batch:
    bundles: dict[str, list[Message]]  # bundle id → its messages (duplicates share a bundle id)
    carry: list[Message] = field(default_factory=list)  # bundles left for the next batch of this run
    # Bundles read while grouping the messages, for the first plan (which would read them
    # again); only while their lines stay within `keep_records_bytes`.
    read: dict[str, Bundle] = field(default_factory=dict)
    line_bytes: int = 0  # of all the batch's bundles (planning keeps records only within the budget)


class Batcher:
    def __init__(
        self,
        *,
        buffer: Buffer,
        log_store: LogStore,
        ledger: Ledger,
        config: BatcherConfig,
        clock: Clock,
        history: EventHistory | None = None,
        insights: InsightsStore | None = None,
        trail_state: TrailStateStore | None = None,
        deliveries: Deliveries | None = None,
        pending: PendingDeliveries | None = None,
        usage: UsageStore | None = None,
    ):
        self.buffer = buffer
        self.log_store = log_store
        self.ledger = ledger
        self.history = history  # None: no event history index (tests of the log files alone)
        self.insights = insights  # None: no Insights aggregates
        self.usage = usage  # None: no usage counters (docs/usage.md)
        self.config = config
        self.clock = clock
        self.trail_state = trail_state  # None: every trail is logging (no StartLogging/StopLogging state)
        # Deliveries besides S3; both None (or any None): none sent (tests of the log files alone).
        self.deliveries = deliveries if pending is not None else None
        self.pending = pending if deliveries is not None else None
        # Every configured trail by name, stopped ones included: a stopped trail's earlier
        # batches still owe their deliveries.
        self._trails = {trail.name: trail for trail in config.trails}

    # -- the drain loop -------------------------------------------------------------------

    def drain(self, remaining_ms: Callable[[], int]) -> DrainSummary:
        """Deliver batches until the buffer looks empty or the time budget is spent."""
        summary = DrainSummary()
        if self.trail_state is not None:
            # Read once per run: trails stopped by StopLogging select nothing (docs/trails.md).
            try:
                stopped = self.trail_state.stopped()
            except TrailStateError as error:
                summary.stopped_by = "error"
                summary.errors.append(str(error))
                return summary
            if stopped:
                trails = tuple(trail for trail in self.config.trails if trail.name not in stopped)
                self.config = replace(self.config, trails=trails)
                summary.stopped_trails = sorted(stopped)
        self._retry_deliveries(summary, remaining_ms)
        carry: list[Message] = []
        first = True
        margin_ms = self.config.time_budget_margin_seconds * 1000
        while True:
            if remaining_ms() <= margin_ms:
                summary.stopped_by = "time"
                summary.deferred += len({m.message_id for m in carry})
                break
            wanted = self.config.max_batch_messages - len(carry)
            received = self._receive(wanted, first=first)
            first = False
            messages = carry + received
            if not messages:
                break
            try:
                with _collector_paused():
                    carry = self._batch(messages, summary, remaining_ms)
            except (
                LogStoreError,
                LedgerError,
                HistoryStoreError,
                InsightsStoreError,
                PendingDeliveryError,
                UsageStoreError,
                _Stop,
            ) as error:
                summary.failed_batches += 1
                summary.errors.append(str(error))
                summary.stopped_by = "error"
                logger.exception("batch failed; its messages return after the visibility timeout")
                break
            if len(received) < wanted and not carry:
                break  # the buffer is (about) empty
        return summary

    def _receive(self, wanted: int, *, first: bool) -> list[Message]:
        """Up to `wanted` messages in receives of 10. Only the run's first receive waits
        (long polling asks every SQS server, so a small queue does not look empty)."""
        messages: list[Message] = []
        while len(messages) < wanted:
            ask = min(_RECEIVE_MAX, wanted - len(messages))
            wait = self.config.receive_wait_seconds if first and not messages else 0
            got = self.buffer.receive(max_messages=ask, wait_seconds=wait)
            messages.extend(got)
            if len(got) < ask:
                break
        return messages

    # -- one batch ----------------------------------------------------------------------

    def _batch(self, messages: list[Message], summary: DrainSummary, remaining_ms: Callable[[], int]) -> list[Message]:
        """Deliver one batch; returns messages left for the next batch of this run."""
        batch = _Batch(bundles={})
        for message in messages:
            try:
                bundle = unpack(message.body)
            except BundleError as error:
                self._dead_letter([message], f"bundle: {error}", summary)
                continue
            bundle_id = bundle.bundle_id
            if bundle_id not in batch.bundles:
                batch.line_bytes += sum(map(len, bundle.lines))
                if batch.line_bytes <= self.config.keep_records_bytes:
                    batch.read[bundle_id] = bundle
            batch.bundles.setdefault(bundle_id, []).append(message)
        summary.duplicate_bundles += sum(len(m) - 1 for m in batch.bundles.values())

        attempts: dict[str, int] = {}
        for _ in range(self.config.max_claim_rounds):
            if not batch.bundles:
                return batch.carry
            plan, planned, included = self._plan(batch, summary)
            try:
                if not planned:  # nothing any trail selects: nothing to deliver
                    self._delete(batch, included, summary)
                    summary.unselected += plan.unselected
                    return batch.carry
                bid = batch_id(included)
                attempt = attempts.get(bid, 0)
                now = self.clock()
                intent = Intent(
                    batch_id=bid,
                    attempt=attempt,
                    state="PENDING",
                    files=tuple(
                        name_files(
                            planned,
                            batch=bid,
                            attempt=attempt,
                            delivered_at=now,
                            bucket=self.config.bucket,
                            trails=self.config.trails,
                        )
                    ),
                    bundle_ids=tuple(included),
                    delivered_at=now,
                    lease_until=now + timedelta(milliseconds=remaining_ms()) + self.config.lease_skew,
                    expires_at=int((now + self.config.intent_ttl).timestamp()),
                )
                if self.ledger.claim(intent):
                    self._deliver(intent, planned, batch, summary)
                    summary.records += plan.records
                    summary.duplicates_dropped += plan.duplicates
                    summary.unselected += plan.unselected
                    return batch.carry
            finally:
                for item in planned:
                    item.log_file.body.close()
            self._resolve_conflicts(intent, batch, attempts, summary)
        raise _Stop(f"batch not claimed after {self.config.max_claim_rounds} rounds")

    def _plan(self, batch: _Batch, summary: DrainSummary) -> tuple[BatchPlan, list[PlannedFile], list[str]]:
        # The index step (history, Insights, usage) gets the parsed records from here when it
        # runs and the batch is small enough (a larger one reads its files back).
        keep = (self.history is not None or self.insights is not None or self.usage is not None) and (
            batch.line_bytes <= self.config.keep_records_bytes
        )
        plan = BatchPlan(
            self.config.trails,
            max_file_bytes=self.config.max_file_bytes,
            max_files=self.config.max_files_per_batch,
            keep_records_bytes=self.config.keep_records_bytes if keep else 0,
        )
        included: list[str] = []
        for bundle_id in sorted(batch.bundles):
            messages = batch.bundles[bundle_id]
            try:
                bundle = batch.read.pop(bundle_id, None) or unpack(messages[0].body)
                lines = read_bundle(bundle.lines, self.config.trails, keep_records=keep)
            except (BundleError, PoisonRecord) as error:
                del batch.bundles[bundle_id]
                self._dead_letter(messages, f"record: {error}", summary)
                continue
            if not plan.fits(lines):
                batch.carry.extend(batch.bundles.pop(bundle_id))
                continue
            plan.add(lines)
            included.append(bundle_id)
        return plan, plan.finish(), included

    def _deliver(self, intent: Intent, planned: list[PlannedFile], batch: _Batch, summary: DrainSummary) -> None:
        for file, item in zip(intent.files, planned, strict=True):
            self.log_store.put_new(file.key, item.log_file.body, file.compressed_bytes)
        state = self.ledger.finalize(intent, ttl_days=self.config.ledger_ttl_days)
        if state != "DONE":
            # Another run aborted this batch (it judged this run dead): undo, keep the messages.
            self._remove_files(intent)
            summary.aborted_by_others += 1
            logger.warning("batch aborted by another run", extra={"batchId": intent.batch_id})
            batch.bundles.clear()
            return
        bodies = [item.log_file.body for item in planned]
        self._index(intent, bodies, summary, [item.records for item in planned])
        self._delete(batch, list(intent.bundle_ids), summary)
        summary.batches += 1
        summary.files.extend(
            {"bucket": f.bucket, "key": f.key, "records": f.record_count, "bytes": f.compressed_bytes, "trail": f.trail}
            for f in intent.files
        )
        logger.info(
            "batch delivered",
            extra={"batchId": intent.batch_id, "attempt": intent.attempt, "files": len(intent.files)},
        )
        owed = self._owed(intent)
        if owed and self.pending is not None:
            sort_key = PendingDeliveries.sort_key(intent.delivered_at, intent.batch_id)
            self._send_owed(intent, PendingDelivery(sort_key, intent.batch_id, tuple(owed), 0, 0.0), bodies, summary)

    def _index(
        self,
        intent: Intent,
        bodies: list[Any] | None,
        summary: DrainSummary,
        records: list[list[tuple[bytes, Any]] | None] | None = None,
    ) -> None:
        """Write the event history items and the Insights aggregates of a DONE batch, then
        its marker.

        `bodies` are the log files' gzip bodies in intent order; None reads them back from S3
        (a batch finalized or left unindexed by a run that died). Keys and values depend only
        on the batch id and the files' bytes, so a rerun overwrites a partial index exactly;
        the aggregates likewise (one item per (account, region, minute) and batch: a rebuild
        overwrites, never adds). Each record is parsed once for both.

        `records`: per file, its (line, parsed record) pairs from planning (None: not kept);
        the same lines the file holds, in the same order, so the items are the same as when
        the file is read back and parsed.
        """
        self._queue_deliveries(intent)
        if self.history is None and self.insights is None and self.usage is None:
            return
        if bodies is None:
            bodies = [self.log_store.get(file.key) for file in intent.files]
        builder = self.history.builder(intent.batch_id) if self.history is not None else None
        aggregators = self._aggregators() if self.insights is not None else {}
        counter = UsageCounter(meters_of(self._trails.values())) if self.usage is not None else None
        pending: list[dict[str, Any]] = []
        kept = records if records is not None else [None] * len(bodies)
        for file, body, file_records in zip(intent.files, bodies, kept, strict=True):
            aggregator = aggregators.get(file.trail)  # a trail's Insights analyse its own records
            for line, record in file_records if file_records is not None else _parsed(body):
                if counter is not None:
                    counter.add(file.trail, record)
                if aggregator is not None:
                    aggregator.add(record)
                if builder is not None and self.history is not None:
                    pending.extend(builder.add(line, record))
                    if len(pending) >= _HISTORY_WRITE:
                        self.history.write(pending)
                        pending = []
        if builder is not None and self.history is not None:
            pending.extend(builder.finish())
            self.history.write(pending)
            summary.indexed += builder.stats.records
        if aggregators and self.insights is not None:
            minutes = {
                (trail, *scope): aggregator.minutes(scope)
                for trail, aggregator in aggregators.items()
                for scope in aggregator.scopes()
            }
            summary.aggregate_items += self.insights.put_aggregates(intent.batch_id, minutes)
        if counter is not None and self.usage is not None:
            # Keyed by the batch: a re-index overwrites these items (never adds to them).
            summary.usage_items += self.usage.put(intent.batch_id, intent.delivered_at, counter.counts())
        if self.history is not None:
            self.history.mark_indexed(intent.batch_id, expires_at=intent.expires_at)

    def _aggregators(self) -> dict[str, Aggregator]:
        """One Insights aggregator per trail with InsightSelectors, over the categories they name."""
        return {
            trail.name: Aggregator(categories=trail.insight_categories)
            for trail in self._trails.values()
            if trail.has_insight_selectors
        }

    def _ensure_indexed(self, intent: Intent, summary: DrainSummary) -> None:
        if self.history is None and self.insights is None and self.usage is None:
            return
        if self.history is not None and self.history.is_indexed(intent.batch_id):
            return
        self._index(intent, None, summary)
        summary.reindexed_batches += 1
        logger.warning("rebuilt the event history of a delivered batch", extra={"batchId": intent.batch_id})

    def _delete(self, batch: _Batch, bundle_ids: list[str], summary: DrainSummary) -> None:
        messages = [m for b in bundle_ids for m in batch.bundles.pop(b, [])]
        self.buffer.delete(messages)
        summary.messages += len(messages)

    def _dead_letter(self, messages: list[Message], reason: str, summary: DrainSummary) -> None:
        for message in messages:
            logger.warning(
                "poison message to the dead-letter queue", extra={"messageId": message.message_id, "reason": reason}
            )
            self.buffer.dead_letter(message, reason)
            summary.dead_lettered += 1

    # -- deliveries (docs/trails.md, "Deliveries") --------------------------------------------

    def _owed(self, intent: Intent) -> list[str]:
        """The destinations a DONE batch owes, from the trails' current configuration."""
        if self.pending is None:
            return []
        return owed_destinations(self._trails.values(), (file.trail for file in intent.files))

    def _queue_deliveries(self, intent: Intent) -> None:
        """Record what a DONE batch owes before its marker: a run that dies before sending leaves
        the item, and a later run retries it (not before the owner's lease ends)."""
        owed = self._owed(intent)
        if owed and self.pending is not None:
            self.pending.queue(
                intent.batch_id,
                intent.delivered_at,
                owed,
                not_before=intent.lease_until,
                expires_at=intent.expires_at,
            )

    def _retry_deliveries(self, summary: DrainSummary, remaining_ms: Callable[[], int]) -> None:
        """Retry the pending deliveries of earlier runs (best effort: errors are logged)."""
        if self.pending is None or not any(trail.deliveries.any for trail in self._trails.values()):
            return
        margin_ms = self.config.time_budget_margin_seconds * 1000
        try:
            due = self.pending.due(self.clock(), limit=self.config.max_delivery_retries_per_run)
            for pending in due:
                if remaining_ms() <= margin_ms:
                    break
                intent = self.ledger.get_intent(pending.batch_id)
                if intent is None or intent.state != "DONE":
                    self.pending.remove(pending.sk)  # the intent expired (or never finished): nothing to send
                    continue
                summary.deliveries_retried += 1
                self._send_owed(intent, pending, None, summary)
        except (PendingDeliveryError, LedgerError) as error:
            summary.delivery_errors.append(str(error))
            logger.warning("pending deliveries not retried", extra={"error": str(error)})

    def _send_owed(
        self, intent: Intent, pending: PendingDelivery, bodies: list[Any] | None, summary: DrainSummary
    ) -> None:
        """Send each destination `pending` lists; keep the failed ones for a later run."""
        assert self.pending is not None
        failed: list[str] = []
        errors: list[str] = []
        attempt = pending.attempts + 1
        for destination in pending.destinations:
            try:
                self._send(destination, intent, bodies)
            except (DeliveryError, LogStoreError) as error:
                failed.append(destination)
                errors.append(str(error))
                summary.deliveries_failed += 1
                summary.delivery_errors.append(str(error))
                last = attempt >= self.config.max_delivery_attempts
                if last:
                    summary.deliveries_abandoned += 1
                message = f"{error} (gave up after {attempt} attempts)" if last else str(error)
                self._record(destination, message)
                logger.warning(
                    "delivery failed",
                    extra={
                        "batchId": intent.batch_id,
                        "destination": destination,
                        "attempt": attempt,
                        "error": str(error),
                    },
                )
            else:
                summary.deliveries_sent += 1
                self._record(destination, None)
        try:
            if not failed or attempt >= self.config.max_delivery_attempts:
                self.pending.remove(pending.sk)
            else:
                wait = min(self.config.delivery_retry_seconds * 2 ** (attempt - 1), 3600)
                self.pending.update(
                    pending,
                    failed,
                    attempts=attempt,
                    not_before=self.clock() + timedelta(seconds=wait),
                    error="; ".join(errors),
                )
        except PendingDeliveryError as error:
            # The item keeps its earlier state: a later run sends again (at least once).
            summary.delivery_errors.append(str(error))
            logger.warning("pending deliveries not updated", extra={"error": str(error)})

    def _send(self, destination: str, intent: Intent, bodies: list[Any] | None) -> None:
        assert self.deliveries is not None
        kind, trail_name = parse_destination(destination)
        trail = self._trails.get(trail_name or "")
        if kind == EVENT_BRIDGE:
            trails = {name for name, t in self._trails.items() if t.deliveries.event_bridge}
            indexes = [i for i, file in enumerate(intent.files) if file.trail in trails]
            selection = event_entries(self._lines(intent, bodies, indexes))
            if selection.items:
                self.deliveries.events.put(selection.items)
            return
        if trail is None:
            return  # the trail is no longer configured: nothing to send
        indexes = [i for i, file in enumerate(intent.files) if file.trail == trail.name]
        if kind == CLOUD_WATCH_LOGS and trail.deliveries.cloud_watch_logs is not None:
            streams: dict[str, list[int]] = {}
            for i in indexes:
                file = intent.files[i]
                streams.setdefault(log_stream_name(file.account, file.region), []).append(i)
            for stream, stream_indexes in sorted(streams.items()):
                selection = log_events(self._lines(intent, bodies, stream_indexes), fallback=intent.delivered_at)
                if selection.items:
                    self.deliveries.logs.send(trail.deliveries.cloud_watch_logs, stream, selection.items)
        elif kind == NOTIFICATION and trail.deliveries.sns_topic is not None and indexes:
            keys = [intent.files[i].key for i in indexes]
            message = notification(intent.files[indexes[0]].bucket, keys)
            self.deliveries.sns.publish(self.deliveries.topic_arn(trail.deliveries.sns_topic), message)

    def _lines(self, intent: Intent, bodies: list[Any] | None, indexes: list[int]) -> Iterator[bytes]:
        """The record lines of the batch's files at `indexes` (spooled bodies, or read from S3)."""
        for i in indexes:
            body = bodies[i] if bodies is not None else self.log_store.get(intent.files[i].key)
            yield from iter_log_records(_chunks(body))

    def _record(self, destination: str, error: str | None) -> None:
        """The outcome in the trail status (GetTrailStatus); best effort."""
        if self.trail_state is None:
            return
        kind, trail_name = parse_destination(destination)
        names = (
            [name for name, t in self._trails.items() if t.deliveries.event_bridge]
            if kind == EVENT_BRIDGE
            else [trail_name or ""]
        )
        try:
            for name in names:
                self.trail_state.record(name, kind, self.clock(), error=error)
        except TrailStateError as error_:
            logger.warning("delivery status not recorded", extra={"error": str(error_)})

    # -- conflicts --------------------------------------------------------------------------

    def _resolve_conflicts(
        self, intent: Intent, batch: _Batch, attempts: dict[str, int], summary: DrainSummary
    ) -> None:
        """The claim was refused: find out why and clear the way for the next round."""
        claims = self.ledger.get_claims(intent.bundle_ids)
        outcomes: dict[tuple[str, int], Outcome] = {}
        for bundle_id, claim in sorted(claims.items()):
            key = (claim.batch_id, claim.attempt)
            if key not in outcomes:
                outcomes[key] = self._resolve_claim(claim, summary)
                if outcomes[key] is Outcome.RELEASED and claim.batch_id == intent.batch_id:
                    attempts[intent.batch_id] = claim.attempt + 1
            outcome = outcomes[key]
            if outcome is Outcome.DELIVERED:
                summary.already_delivered += 1
                self._delete(batch, [bundle_id], summary)
            elif outcome is Outcome.BUSY:
                summary.deferred += 1
                batch.bundles.pop(bundle_id, None)  # not deleted: it comes back after the visibility timeout
        if claims:
            return
        # No bundle is claimed: our own intent (an earlier attempt of this very batch) is in the way.
        own = self.ledger.get_intent(intent.batch_id)
        if own is None:
            return  # a concurrent transaction; plan and try again
        outcome = self._resolve_intent(own, summary)
        if outcome is Outcome.DELIVERED:
            summary.already_delivered += len(intent.bundle_ids)
            self._delete(batch, list(intent.bundle_ids), summary)
        elif outcome is Outcome.BUSY:
            summary.deferred += len(intent.bundle_ids)
            for bundle_id in intent.bundle_ids:
                batch.bundles.pop(bundle_id, None)
        else:
            attempts[intent.batch_id] = own.attempt + 1

    def _resolve_claim(self, claim: Claim, summary: DrainSummary) -> Outcome:
        owner = self.ledger.get_intent(claim.batch_id)
        if owner is None:
            # The intent expired before its claim (TTL deletes in no set order).
            if self.clock() >= claim.created_at + self.config.stale_claim_after:
                self.ledger.release_claim(claim)
                return Outcome.RELEASED
            return Outcome.BUSY
        if owner.attempt != claim.attempt:
            # A claim of an aborted attempt whose clean-up stopped half-way.
            self.ledger.release_claim(claim)
            return Outcome.RELEASED
        return self._resolve_intent(owner, summary)

    def _resolve_intent(self, owner: Intent, summary: DrainSummary) -> Outcome:
        if owner.state == "DONE":
            self._ensure_indexed(owner, summary)
            return Outcome.DELIVERED
        if owner.state == "PENDING":
            if self.clock() < owner.lease_until:
                return Outcome.BUSY  # its run may still be writing
            if all(self.log_store.exists(f.key) for f in owner.files):
                state = self.ledger.finalize(owner, ttl_days=self.config.ledger_ttl_days)
                if state == "DONE":
                    summary.resolved_finalized += 1
                    logger.warning("finalized a crashed batch", extra={"batchId": owner.batch_id})
                    self._ensure_indexed(owner, summary)
                    return Outcome.DELIVERED
            elif self.ledger.abort(owner) == "DONE":
                self._ensure_indexed(owner, summary)
                return Outcome.DELIVERED
            summary.resolved_aborted += 1
            logger.warning("aborted a crashed batch", extra={"batchId": owner.batch_id, "attempt": owner.attempt})
        # ABORTED: remove its files, then its ledger items and claims (claims last, so a
        # crash here leaves a claim that leads the next run back to finish the clean-up).
        self._remove_files(owner)
        self.ledger.release(owner, ttl_days=self.config.ledger_ttl_days)
        return Outcome.RELEASED

    def _remove_files(self, intent: Intent) -> None:
        """Remove an aborted batch's files. Under S3 Object Lock they cannot be removed: they
        stay as files no ledger item or digest lists (validate-logs reports them as unlisted),
        and their records are delivered again by the next attempt (docs/integrity.md)."""
        for file in intent.files:
            try:
                self.log_store.remove(file.key)
            except ObjectLockedError:
                logger.warning("aborted batch file is locked", extra={"batchId": intent.batch_id, "key": file.key})


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one batch.

    A batch allocates a few containers per record (parsed JSON, planned lines, posting lists)
    and keeps many alive from planning until its index is written, so the collector would
    rescan them at every full collection (measured: 0.3-0.6 CPU-seconds per 50,000 events,
    10-17% of the handler, docs/benchmarks.md). Records are trees without reference cycles:
    reference counting frees them either way; cyclic garbage made meanwhile is collected once
    the collector runs again, after the batch.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parsed(body: IO[bytes] | bytes) -> Iterator[tuple[bytes, Any]]:
    """(line, parsed record) of each record of a log file body."""
    for line in iter_log_records(_chunks(body)):
        yield line, json.loads(line)


def _chunks(body: IO[bytes] | bytes) -> Iterator[bytes]:
    if isinstance(body, bytes):
        yield body
        return
    body.seek(0)
    yield from iter(lambda: body.read(_READ_CHUNK), b"")
