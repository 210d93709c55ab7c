"""The live Insights run: stored minute aggregates → engine → Insights records, exactly once.

One run (the InsightsFunction, every 5 minutes, or ``{"action": "analyse"}``):

1. ``until`` = the last minute that ended at least ``settle_minutes`` ago;
2. deliver what an earlier run committed but did not finish delivering (its lease ran out);
3. read the batcher's partial aggregates for the minutes after the oldest scope's last
   analysed minute (at most ``max_minutes_per_run``), merged per (scope, minute);
4. per scope (account, region) with state or new aggregates: load the engine state, advance
   it to ``until``, **commit** the new state together with the records it produced (one
   conditional head write: a concurrent run that read the same state cannot commit too),
   then **deliver** the records — S3 (CloudTrail-Insight layout), the event history, EventBridge —
   and mark them delivered.

Crash safety (docs/insights.md, "Live"): records exist only in a committed state; a crash
before the commit loses nothing (the next run recomputes the same records from the same
aggregates: ids are derived from the data); a crash after it leaves the records pending, and
the next run delivers them to the same S3 key and history keys (idempotent). EventBridge is
at-least-once across such a crash, and best effort: its failure is logged and counted, never
blocks S3 or the history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from aws_lambda_powertools import Logger

from opentrail.adapters.events import InsightEvents
from opentrail.adapters.history import EventHistory, HistoryStoreError
from opentrail.adapters.insights_store import Head, InsightsStore, InsightsStoreError, StaleHead, State
from opentrail.adapters.log_store import LogStore, LogStoreError
from opentrail.domain.clock import Clock
from opentrail.domain.insights import InsightsEngine, Scope, Sensitivity
from opentrail.domain.insights.aggregates import minute_of
from opentrail.domain.insights.records import minute_text
from opentrail.domain.log_file import LogFileWriter, log_file_key, unique_string
from opentrail.settings import InsightsSettings

logger = Logger(child=True)

INSIGHT_FOLDER: Final = "CloudTrail-Insight"
LEASE_SKEW_SECONDS: Final = 30
_StoreErrors = (InsightsStoreError, LogStoreError, HistoryStoreError)


@dataclass
class RunSummary:
    until: str = ""  # last minute analysed (UTC, YYYY-MM-DDTHH:MMZ)
    scopes: int = 0  # scopes whose state advanced
    minutes: int = 0  # minutes analysed (all scopes)
    starts: int = 0
    ends: int = 0
    redelivered: int = 0  # commits of earlier runs whose records this run delivered
    conflicts: int = 0  # scopes another run committed first (nothing emitted here)
    busy: int = 0  # scopes whose pending records another run is delivering
    retired: int = 0  # scopes forgotten (nothing seen for the baseline period)
    event_bridge_sent: int = 0
    event_bridge_failed: int = 0
    errors: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "done"

    def to_dict(self) -> dict[str, Any]:
        return {
            "until": self.until,
            "scopes": self.scopes,
            "minutes": self.minutes,
            "starts": self.starts,
            "ends": self.ends,
            "redelivered": self.redelivered,
            "conflicts": self.conflicts,
            "busy": self.busy,
            "retired": self.retired,
            "eventBridgeSent": self.event_bridge_sent,
            "eventBridgeFailed": self.event_bridge_failed,
            "errors": list(self.errors),
            "files": list(self.files),
            "stoppedBy": self.stopped_by,
        }


def _lines(records: list[dict[str, Any]]) -> list[bytes]:
    ordered = sorted(records, key=lambda r: (r["eventTime"], r["eventID"]))
    return [json.dumps(r, separators=(",", ":")).encode() for r in ordered]


class InsightsRunner:
    def __init__(
        self,
        *,
        store: InsightsStore,
        log_store: LogStore,
        history: EventHistory,
        events: InsightEvents | None,
        settings: InsightsSettings,
        clock: Clock,
        sensitivity: Sensitivity | None = None,
    ) -> None:
        self.store = store
        self.log_store = log_store
        self.history = history
        self.events = events
        self.settings = settings
        self.clock = clock
        self.sensitivity = sensitivity or settings.sensitivity_model()

    def run(self, remaining_ms: Callable[[], int] = lambda: 900_000) -> RunSummary:
        summary = RunSummary()
        now = self.clock()
        now_s = int(now.timestamp())
        until = minute_of(now.timestamp()) - self.settings.settle_minutes - 1
        lease = remaining_ms() // 1000 + LEASE_SKEW_SECONDS
        margin_ms = self.settings.time_budget_margin_seconds * 1000

        heads = self.store.heads()
        states: dict[Scope, State] = {}
        skip: set[Scope] = set()
        for scope, head in sorted(heads.items()):
            if not head.pending:
                continue
            if head.lease_until > now_s:
                summary.busy += 1
                skip.add(scope)
                continue
            try:
                claimed = self.store.claim_delivery(head, now=now, lease_seconds=lease)
                if claimed is None:
                    summary.busy += 1
                    skip.add(scope)
                    continue
                state = self.store.load(claimed)
                self._deliver(claimed, state.pending, summary)
                self.store.mark_delivered(claimed)
            except _StoreErrors as error:
                summary.errors.append(f"{scope}: {error}")
                logger.exception("redelivery failed", extra={"scope": list(scope)})
                skip.add(scope)
                continue
            heads[scope] = replace(claimed, pending=0, lease_until=0)
            states[scope] = State(engine=state.engine, pending=[])
            summary.redelivered += 1

        lasts = [h.last_minute for s, h in heads.items() if h.last_minute is not None and s not in skip]
        start = min(lasts) + 1 if lasts else until - self.settings.initial_lookback_minutes + 1
        end = min(until, start + self.settings.max_minutes_per_run - 1)
        summary.until = minute_text(end)
        if end < start:
            return summary
        try:
            aggregates = self.store.read_aggregates(start, end)
        except InsightsStoreError as error:
            summary.errors.append(str(error))
            summary.stopped_by = "error"
            return summary

        for scope in sorted((set(heads) | set(aggregates)) - skip):
            if remaining_ms() <= margin_ms:
                summary.stopped_by = "time"
                break
            current = heads.get(scope)
            minutes = aggregates.get(scope, {})
            if current is None and not minutes:
                continue
            if current is not None and current.last_minute is not None and current.last_minute >= end:
                continue
            try:
                self._advance(scope, current, states.get(scope), minutes, end, now, lease, summary)
            except StaleHead:
                summary.conflicts += 1  # another run committed this scope since we listed the heads
            except _StoreErrors as error:
                summary.errors.append(f"{scope}: {error}")
                summary.stopped_by = "error"
                logger.exception("insights scope failed", extra={"scope": list(scope)})
        return summary

    def _advance(
        self,
        scope: Scope,
        head: Head | None,
        state: State | None,
        minutes: dict[int, Any],
        end: int,
        now: Any,
        lease: int,
        summary: RunSummary,
    ) -> None:
        if head is not None and state is None:
            state = self.store.load(head)
        if head is not None and state is not None and state.engine is not None:
            engine = InsightsEngine.from_dict(state.engine, self.sensitivity)
        else:
            engine = InsightsEngine(scope, self.sensitivity)
        before = engine.last_minute
        records = engine.advance(end, minutes)
        if head is not None and not records and _empty(engine):
            if self.store.retire(head):
                summary.retired += 1
            return
        committed = self.store.commit(
            scope,
            previous=head,
            engine=engine.to_dict(),
            pending=records,
            now=now,
            ttl_days=self.settings.state_ttl_days,
            lease_seconds=lease,
        )
        if committed is None:
            summary.conflicts += 1
            logger.info("another run committed this scope first", extra={"scope": list(scope)})
            return
        summary.scopes += 1
        first = before + 1 if before is not None else min(minutes, default=end)
        summary.minutes += end - first + 1
        for record in records:
            if record["insightDetails"]["state"] == "Start":
                summary.starts += 1
            else:
                summary.ends += 1
        if records:
            self._deliver(committed, records, summary)
            self.store.mark_delivered(committed)

    def _deliver(self, head: Head, records: list[dict[str, Any]], summary: RunSummary) -> None:
        """S3 file, history index, EventBridge: the same keys on every retry of this commit."""
        if not records:
            return
        lines = _lines(records)
        writer = LogFileWriter()
        for line, record in zip(lines, sorted(records, key=lambda r: (r["eventTime"], r["eventID"])), strict=True):
            writer.add(line, record["eventTime"])
        log_file = writer.finish()
        account, region = head.scope
        key = log_file_key(
            account_id=account,
            region=region,
            delivered_at=head.committed_at,
            unique=unique_string(head.seed),
            prefix=self.settings.s3_key_prefix or None,
            folder=INSIGHT_FOLDER,
        )
        try:
            self.log_store.put_new(key, log_file.body, log_file.compressed_bytes)
        finally:
            log_file.body.close()
        summary.files.append(
            {"bucket": self.log_store.bucket, "key": key, "records": len(records), "bytes": log_file.compressed_bytes}
        )
        self.history.index_lines(head.seed, lines)
        if self.events is not None:
            result = self.events.put(records)
            summary.event_bridge_sent += result.sent
            summary.event_bridge_failed += result.failed
            if result.failed:
                logger.error(
                    "EventBridge refused Insights events (S3 and the history have them)",
                    extra={"failed": result.failed, "errors": result.errors[:3], "key": key},
                )


def _empty(engine: InsightsEngine) -> bool:
    return not (engine.apis or engine.cadences or engine.open_insights or engine.seen.last_seen)
