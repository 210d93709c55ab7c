"""BatcherFunction: drains the SQS buffer into CloudTrail log files (docs/batcher.md).

Invoked by an EventBridge schedule (every 1-5 minutes) or directly with
``{"action": "flush"}`` for an on-demand flush; both drain the buffer within the time
budget (remaining time minus ``TIME_BUDGET_MARGIN_SECONDS``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.buffer import Buffer
from opentrail.adapters.deliveries import Deliveries, PendingDeliveries
from opentrail.adapters.history import EventHistory
from opentrail.adapters.insights_store import InsightsStore
from opentrail.adapters.ledger import Ledger
from opentrail.adapters.log_store import LogStore
from opentrail.adapters.trail_state import TrailStateError, TrailStateStore, trail_state_store
from opentrail.adapters.usage_store import UsageStore
from opentrail.delivery import Batcher, BatcherConfig
from opentrail.domain.clock import Clock, system_clock
from opentrail.handlers._common import logger, metrics, tracer
from opentrail.settings import BatcherSettings

# "scheduled" comes from the EventBridge schedule (infra), "flush" from a direct invocation;
# both drain the buffer. A raw EventBridge scheduled event (no "action") does the same.
ACTIONS = frozenset({"scheduled", "flush"})


@lru_cache(maxsize=1)
def _settings() -> BatcherSettings:
    return BatcherSettings.from_env()


@lru_cache(maxsize=4)
def _adapters(settings: BatcherSettings) -> tuple[Buffer, LogStore, Ledger]:
    return (
        Buffer(settings.buffer_queue_url, dead_letter_queue_url=settings.dead_letter_queue_url),
        LogStore(settings.log_bucket, settings.log_kms_key_arn),
        Ledger(settings.ledger_table),
    )


def history_for(settings: BatcherSettings, *, client: Any = None) -> EventHistory:
    return EventHistory(
        settings.history_table,
        client=client,
        retention_days=settings.history_retention_days,
        data_events=settings.history_data_events,
    )


@lru_cache(maxsize=4)
def _history(settings: BatcherSettings) -> EventHistory:
    return history_for(settings)


@lru_cache(maxsize=4)
def _insights(settings: BatcherSettings) -> InsightsStore | None:
    return InsightsStore(settings.insights_table) if settings.insights_table else None


@lru_cache(maxsize=4)
def _trail_state(settings: BatcherSettings) -> TrailStateStore:
    return trail_state_store(settings)


@lru_cache(maxsize=4)
def _deliveries(settings: BatcherSettings, account: str) -> tuple[Deliveries, PendingDeliveries] | None:
    """The senders and the pending-deliveries store, when some trail has deliveries."""
    if not any(trail.deliveries.any for trail in settings.trail_list):
        return None
    region = os.environ.get("AWS_REGION", "")
    return (
        Deliveries.create(account=account, home_region=settings.home_region or region, region=region),
        PendingDeliveries(settings.ledger_table),
    )


def _usage_for(ledger: Any) -> UsageStore | None:
    """Usage counters live in the ledger table, written through the ledger adapter's client
    (None for a stand-in ledger, as the benchmark's fakes)."""
    if not isinstance(ledger, Ledger):
        return None
    return UsageStore(ledger.table, client=ledger._ddb)


def _account(settings: BatcherSettings, context: Any) -> str:
    if settings.account_id:
        return settings.account_id
    arn = str(getattr(context, "invoked_function_arn", "") or "")
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def record_status(state: TrailStateStore, summary: dict[str, Any], now: Any) -> None:
    """Trail status (GetTrailStatus, docs/trails.md): LatestDeliveryTime of each trail that got
    files, LatestDeliveryError of every trail when a batch failed. Best effort: never fails the run."""
    try:
        for trail in sorted({str(f["trail"]) for f in summary["files"] if f.get("trail")}):
            state.record(trail, "delivery", now)
        if summary["failedBatches"]:
            error = "; ".join(summary["errors"])[:1000] or "delivery failed"
            for trail in summary.get("activeTrails", []):
                state.record(trail, "delivery", now, error=error)
    except TrailStateError as error:
        logger.warning("trail status not recorded", extra={"error": str(error)})


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    buffer: Buffer | None = None,
    log_store: LogStore | None = None,
    ledger: Ledger | None = None,
    history: EventHistory | None = None,
    insights: InsightsStore | None = None,
    settings: BatcherSettings | None = None,
    clock: Clock | None = None,
    trail_state: TrailStateStore | None = None,
    deliveries: Deliveries | None = None,
    pending_deliveries: PendingDeliveries | None = None,
    usage: UsageStore | None = None,
) -> dict[str, Any]:
    action = (event or {}).get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action: must be one of {sorted(ACTIONS)}, got {action!r}")
    settings = settings or _settings()
    if buffer is None or log_store is None or ledger is None:
        default_buffer, default_store, default_ledger = _adapters(settings)
        buffer = buffer or default_buffer
        log_store = log_store or default_store
        ledger = ledger or default_ledger
    if deliveries is None or pending_deliveries is None:
        defaults = _deliveries(settings, _account(settings, context))
        if defaults is not None:
            deliveries = deliveries or defaults[0]
            pending_deliveries = pending_deliveries or defaults[1]
    batcher = Batcher(
        buffer=buffer,
        log_store=log_store,
        ledger=ledger,
        config=BatcherConfig.from_settings(settings),
        clock=clock or system_clock,
        history=history or _history(settings),
        insights=insights or _insights(settings),
        trail_state=trail_state or _trail_state(settings),
        deliveries=deliveries,
        pending=pending_deliveries,
        # Usage counters live in the ledger table, through the ledger adapter's client.
        usage=usage or _usage_for(ledger),
    )
    started = (clock or system_clock)()
    summary = batcher.drain(context.get_remaining_time_in_millis).to_dict()
    summary["activeTrails"] = [trail.name for trail in batcher.config.trails]
    record_status(batcher.trail_state or _trail_state(settings), summary, started)

    metrics.add_metric(name="BatchesDelivered", unit=MetricUnit.Count, value=summary["batches"])
    metrics.add_metric(name="MessagesDeleted", unit=MetricUnit.Count, value=summary["messages"])
    metrics.add_metric(name="RecordsDelivered", unit=MetricUnit.Count, value=summary["records"])
    metrics.add_metric(name="FilesWritten", unit=MetricUnit.Count, value=len(summary["files"]))
    metrics.add_metric(name="BytesWritten", unit=MetricUnit.Bytes, value=sum(f["bytes"] for f in summary["files"]))
    metrics.add_metric(name="DuplicatesDropped", unit=MetricUnit.Count, value=summary["duplicatesDropped"])
    metrics.add_metric(name="DeadLettered", unit=MetricUnit.Count, value=summary["deadLettered"])
    metrics.add_metric(
        name="CrashedBatchesResolved",
        unit=MetricUnit.Count,
        value=summary["resolvedFinalized"] + summary["resolvedAborted"],
    )
    metrics.add_metric(name="BatchesFailed", unit=MetricUnit.Count, value=summary["failedBatches"])
    metrics.add_metric(name="RecordsIndexed", unit=MetricUnit.Count, value=summary["indexed"])
    metrics.add_metric(name="AggregateItemsWritten", unit=MetricUnit.Count, value=summary["aggregateItems"])
    metrics.add_metric(name="UsageItemsWritten", unit=MetricUnit.Count, value=summary["usageItems"])
    metrics.add_metric(name="DeliveriesSent", unit=MetricUnit.Count, value=summary["deliveriesSent"])
    metrics.add_metric(name="DeliveriesFailed", unit=MetricUnit.Count, value=summary["deliveriesFailed"])
    log = {k: v for k, v in summary.items() if k != "files"}
    log["fileCount"] = len(summary["files"])
    logger.info("batcher run", extra={"summary": log, "action": action or "scheduled"})
    return summary
