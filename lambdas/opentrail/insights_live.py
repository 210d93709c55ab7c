"""The live Insights run: stored minute aggregates → engine → Insights records, exactly once.

Insights are per trail (docs/insights.md, "Per trail"): each trail with InsightSelectors has its
own aggregates (of the records it logs, written by the batcher) and its own engine per account
and region — a *trail scope* (trail, account, region) — reporting the types it selects.

One run (the InsightsFunction, every 5 minutes, or ``{"action": "analyse"}``):

1. ``until`` = the last minute that ended at least ``settle_minutes`` ago;
2. deliver what an earlier run committed but did not finish delivering (its lease ran out);
3. read the batcher's partial aggregates for the minutes after the oldest scope's last
   analysed minute (at most ``max_minutes_per_run``), merged per (trail scope, minute);
4. per trail scope with state or new aggregates: load the engine state, advance it to
   ``until`` (around StopLogging/StartLogging: `domain.insights.pauses`), **commit** the new
   state together with the records it produced (one conditional head write: a concurrent run
   that read the same state cannot commit too), then **deliver** the records and mark them
   delivered: S3 under the trail's prefix (CloudTrail-Insight layout); the event history;
   EventBridge (every trail when ``event_bridge_all``, else the trails with
   ``Deliveries.EventBridge``); the trail's CloudWatch Logs group, if it has one.

Record ids derive from (account, region, insight, start minute), not from the trail: an insight
several trails report is one event. The history indexes each record under its eventID (one
copy, whichever trail wrote it last); EventBridge gets it once per run.

Crash safety (docs/insights.md, "Live"): records exist only in a committed state; a crash
before the commit loses nothing (the next run recomputes the same records from the same
aggregates: ids are derived from the data); a crash after it leaves the records pending, and
the next run delivers them to the same S3 key and history keys (idempotent). EventBridge and
CloudWatch Logs are at-least-once across such a crash, and best effort: their failures are
logged, counted and recorded in the trail's status, never block S3 or the history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from aws_lambda_powertools import Logger

from opentrail.adapters.deliveries import CloudWatchLogsSender, DeliveryError
from opentrail.adapters.events import InsightEvents
from opentrail.adapters.history import EventHistory, HistoryStoreError
from opentrail.adapters.insights_store import Head, InsightsStore, InsightsStoreError, StaleHead, State, TrailScope
from opentrail.adapters.log_store import LogStore, LogStoreError
from opentrail.adapters.trail_state import TrailStateError, TrailStateStore, TrailStatus
from opentrail.domain.clock import Clock
from opentrail.domain.deliveries import log_events, log_stream_name
from opentrail.domain.insights import InsightsEngine, Sensitivity
from opentrail.domain.insights.aggregates import minute_of
from opentrail.domain.insights.pauses import LoggingState, Step, next_minute, steps
from opentrail.domain.insights.records import minute_text
from opentrail.domain.log_file import LogFileWriter, log_file_key, unique_string
from opentrail.domain.trail import Trail
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
    cloud_watch_logs_sent: int = 0
    cloud_watch_logs_failed: int = 0
    paused: int = 0  # scopes whose trail was not logging (StopLogging): held, or resumed past a gap
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
            "cloudWatchLogsSent": self.cloud_watch_logs_sent,
            "cloudWatchLogsFailed": self.cloud_watch_logs_failed,
            "paused": self.paused,
            "errors": list(self.errors),
            "files": list(self.files),
            "stoppedBy": self.stopped_by,
        }


def logging_state(status: TrailStatus | None) -> LoggingState:
    """A trail's logging state in minutes, from its status item (no item: logging)."""
    if status is None:
        return LoggingState()
    return LoggingState(
        tuple(
            (minute_of(cycle.stop.timestamp()), None if cycle.start is None else minute_of(cycle.start.timestamp()))
            for cycle in status.stop_cycles()
        )
    )


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
        trail_state: TrailStateStore | None = None,
        logs: CloudWatchLogsSender | None = None,
        sensitivity: Sensitivity | None = None,
    ) -> None:
        self.store = store
        self.log_store = log_store
        self.history = history
        self.events = events
        self.settings = settings
        self.clock = clock
        self.trail_state = trail_state  # None: every trail is logging
        self.logs = logs  # None: no CloudWatch Logs delivery
        self.sensitivity = sensitivity or settings.sensitivity_model()
        self.trails = {trail.name: trail for trail in settings.trail_list if trail.has_insight_selectors}
        self._sent_to_event_bridge: set[str] = set()

    def run(self, remaining_ms: Callable[[], int] = lambda: 900_000) -> RunSummary:
        summary = RunSummary()
        if not self.trails:
            return summary  # no trail has InsightSelectors
        self._sent_to_event_bridge = set()
        now = self.clock()
        now_s = int(now.timestamp())
        until = minute_of(now.timestamp()) - self.settings.settle_minutes - 1
        lease = remaining_ms() // 1000 + LEASE_SKEW_SECONDS
        margin_ms = self.settings.time_budget_margin_seconds * 1000
        try:
            states = self._logging_states()
        except TrailStateError as error:
            summary.errors.append(str(error))
            summary.stopped_by = "error"
            return summary

        heads = {scope: head for scope, head in self.store.heads().items() if scope[0] in self.trails}
        loaded: dict[TrailScope, State] = {}
        skip: set[TrailScope] = set()
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
            loaded[scope] = State(engine=state.engine, pending=[])
            summary.redelivered += 1

        # From the first minute a scope still needs (a stopped trail's caught-up scope needs none).
        needed = [
            minute
            for scope, head in heads.items()
            if scope not in skip and (minute := next_minute(states[scope[0]], head.last_minute)) is not None
        ]
        if not needed and not any(state.is_logging for state in states.values()):
            return summary  # every Insights trail is stopped and analysed up to its stop
        start = min(needed) if needed else until - self.settings.initial_lookback_minutes + 1
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

        scopes = (set(heads) | {s for s in aggregates if s[0] in self.trails}) - skip
        for scope in sorted(scopes):
            if remaining_ms() <= margin_ms:
                summary.stopped_by = "time"
                break
            current = heads.get(scope)
            minutes = aggregates.get(scope, {})
            if current is None and not minutes:
                continue
            plan = steps(states[scope[0]], current.last_minute if current else None, end)
            if not states[scope[0]].is_logging or any(kind == "pause" for kind, _ in plan):
                summary.paused += 1
            if not plan:
                continue
            try:
                self._advance(scope, current, loaded.get(scope), minutes, plan, now, lease, summary)
            except StaleHead:
                summary.conflicts += 1  # another run committed this scope since we listed the heads
            except _StoreErrors as error:
                summary.errors.append(f"{scope}: {error}")
                summary.stopped_by = "error"
                logger.exception("insights scope failed", extra={"scope": list(scope)})
        return summary

    def _logging_states(self) -> dict[str, LoggingState]:
        statuses = self.trail_state.all() if self.trail_state is not None else {}
        return {name: logging_state(statuses.get(name)) for name in self.trails}

    def _advance(
        self,
        scope: TrailScope,
        head: Head | None,
        state: State | None,
        minutes: dict[int, Any],
        plan: list[Step],
        now: Any,
        lease: int,
        summary: RunSummary,
    ) -> None:
        trail = self.trails[scope[0]]
        if head is not None and state is None:
            state = self.store.load(head)
        if head is not None and state is not None and state.engine is not None:
            engine = InsightsEngine.from_dict(state.engine, self.sensitivity, trail.insight_types)
        else:
            engine = InsightsEngine(scope[1:], self.sensitivity, trail.insight_types)
        before = engine.last_minute
        records = []
        analysed = 0
        for kind, minute in plan:
            if kind == "pause":
                records += engine.pause(minute)
                continue
            first = engine.last_minute + 1 if engine.last_minute is not None else min(minutes, default=minute)
            records += engine.advance(minute, minutes)
            analysed += max(0, minute - first + 1)
        if engine.last_minute == before and not records:
            return
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
        summary.minutes += analysed
        for record in records:
            if record["insightDetails"]["state"] == "Start":
                summary.starts += 1
            else:
                summary.ends += 1
        if records:
            self._deliver(committed, records, summary)
            self.store.mark_delivered(committed)

    def _deliver(self, head: Head, records: list[dict[str, Any]], summary: RunSummary) -> None:
        """S3, history, EventBridge, CloudWatch Logs: the same keys on every retry of this commit."""
        trail = self.trails.get(head.scope[0])
        if not records or trail is None:  # a trail no longer configured: its records are dropped
            return
        ordered = sorted(records, key=lambda r: (r["eventTime"], r["eventID"]))
        lines = [json.dumps(r, separators=(",", ":")).encode() for r in ordered]
        writer = LogFileWriter()
        for line, record in zip(lines, ordered, strict=True):
            writer.add(line, record["eventTime"])
        log_file = writer.finish()
        _, account, region = head.scope
        key = log_file_key(
            account_id=account,
            region=region,
            delivered_at=head.committed_at,
            unique=unique_string(head.seed),
            prefix=trail.s3_key_prefix,
            folder=INSIGHT_FOLDER,
        )
        try:
            self.log_store.put_new(key, log_file.body, log_file.compressed_bytes)
        finally:
            log_file.body.close()
        summary.files.append(
            {
                "bucket": self.log_store.bucket,
                "key": key,
                "records": len(records),
                "bytes": log_file.compressed_bytes,
                "trail": trail.name,
            }
        )
        for line, record in zip(lines, ordered, strict=True):
            self.history.index_lines(f"insight/{record['eventID']}", [line])  # same insight, same keys
        self._send_events(trail, ordered, key, summary)
        self._send_logs(trail, account, region, lines, summary)

    def _send_events(self, trail: Trail, records: list[dict[str, Any]], key: str, summary: RunSummary) -> None:
        if self.events is None or not (self.settings.event_bridge_all or trail.deliveries.event_bridge):
            return
        fresh = [r for r in records if r["eventID"] not in self._sent_to_event_bridge]
        if not fresh:
            return
        result = self.events.put(fresh)
        self._sent_to_event_bridge.update(r["eventID"] for r in fresh)
        summary.event_bridge_sent += result.sent
        summary.event_bridge_failed += result.failed
        if result.failed:
            logger.error(
                "EventBridge refused Insights events (S3 and the history have them)",
                extra={"failed": result.failed, "errors": result.errors[:3], "key": key},
            )
        self._record(trail, "eventBridge", result.errors[0] if result.failed else None)

    def _send_logs(self, trail: Trail, account: str, region: str, lines: list[bytes], summary: RunSummary) -> None:
        group = trail.deliveries.cloud_watch_logs
        if self.logs is None or group is None:
            return
        selection = log_events(lines, fallback=self.clock())
        try:
            self.logs.send(group, log_stream_name(account, region), selection.items)
        except DeliveryError as error:
            summary.cloud_watch_logs_failed += len(selection.items)
            logger.error("CloudWatch Logs refused Insights events (S3 has them)", extra={"error": str(error)})
            self._record(trail, "cloudWatchLogs", str(error))
            return
        summary.cloud_watch_logs_sent += len(selection.items)
        self._record(trail, "cloudWatchLogs", None)

    def _record(self, trail: Trail, kind: str, error: str | None) -> None:
        """The outcome in the trail's status (best effort: a status write never fails a run)."""
        if self.trail_state is None:
            return
        try:
            self.trail_state.record(trail.name, kind, self.clock(), error)
        except TrailStateError:
            logger.exception("trail status not recorded", extra={"trail": trail.name, "kind": kind})


def _empty(engine: InsightsEngine) -> bool:
    return not (engine.apis or engine.cadences or engine.open_insights or engine.seen.last_seen)
