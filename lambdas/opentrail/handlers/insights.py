"""InsightsFunction: analyses the batcher's minute aggregates and delivers Insights events.

Invoked by an EventBridge schedule (every ``insightsScheduleMinutes``, default 5) with
``{"action": "scheduled"}`` or directly with ``{"action": "analyse"}``; both do one run
(`opentrail.insights_live`, docs/insights.md "Live").

Local mode and the demo call `analyse(settings, clock=...)` (boto3's default clients point at
moto there), e.g. ``analyse(resources.insights_settings(), clock=clock)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.deliveries import CloudWatchLogsSender
from opentrail.adapters.events import InsightEvents
from opentrail.adapters.history import EventHistory
from opentrail.adapters.insights_store import InsightsStore
from opentrail.adapters.log_store import LogStore
from opentrail.adapters.trail_state import TrailStateStore, trail_state_store
from opentrail.domain.clock import Clock, system_clock
from opentrail.handlers._common import logger, metrics, tracer
from opentrail.insights_live import InsightsRunner
from opentrail.settings import InsightsSettings

ACTIONS = frozenset({"scheduled", "analyse"})


@lru_cache(maxsize=1)
def _settings() -> InsightsSettings:
    return InsightsSettings.from_env()


def runner_for(
    settings: InsightsSettings,
    *,
    clock: Clock | None = None,
    store: InsightsStore | None = None,
    log_store: LogStore | None = None,
    history: EventHistory | None = None,
    events: InsightEvents | None = None,
    trail_state: TrailStateStore | None = None,
    logs: CloudWatchLogsSender | None = None,
    dynamodb_client: Any = None,
    s3_client: Any = None,
    events_client: Any = None,
    logs_client: Any = None,
) -> InsightsRunner:
    """The runner with the adapters `settings` name (each replaceable, e.g. by tests)."""
    trails = [trail for trail in settings.trail_list if trail.has_insight_selectors]
    if dynamodb_client is None and (store is None or history is None or trail_state is None):
        dynamodb_client = boto3.client("dynamodb")
    if events is None and settings.event_bus:
        events = InsightEvents(settings.event_bus, client=events_client or boto3.client("events"))
    if trail_state is None and settings.ledger_table:
        trail_state = trail_state_store(settings, client=dynamodb_client)
    if logs is None and any(trail.deliveries.cloud_watch_logs for trail in trails):
        logs = CloudWatchLogsSender(client=logs_client, region=settings.home_region or None)
    return InsightsRunner(
        store=store or InsightsStore(settings.insights_table, client=dynamodb_client),
        log_store=log_store or LogStore(settings.log_bucket, settings.log_kms_key_arn, client=s3_client),
        history=history
        or EventHistory(settings.history_table, client=dynamodb_client, retention_days=settings.history_retention_days),
        events=events,
        settings=settings,
        clock=clock or system_clock,
        trail_state=trail_state,
        logs=logs,
    )


@lru_cache(maxsize=4)
def _runner(settings: InsightsSettings) -> InsightsRunner:
    return runner_for(settings)


def analyse(
    settings: InsightsSettings,
    *,
    clock: Clock | None = None,
    remaining_ms: Callable[[], int] | None = None,
    **adapters: Any,
) -> dict[str, Any]:
    """One Insights run; returns its summary (see `RunSummary.to_dict`)."""
    runner = runner_for(settings, clock=clock, **adapters)
    return runner.run(remaining_ms or (lambda: 900_000)).to_dict()


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    settings: InsightsSettings | None = None,
    clock: Clock | None = None,
    **adapters: Any,
) -> dict[str, Any]:
    """`adapters`: store, log_store, history, events, trail_state, logs, dynamodb_client,
    s3_client, events_client, logs_client."""
    action = (event or {}).get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action: must be one of {sorted(ACTIONS)}, got {action!r}")
    settings = settings or _settings()
    runner = runner_for(settings, clock=clock, **adapters) if adapters or clock is not None else _runner(settings)
    summary = runner.run(context.get_remaining_time_in_millis).to_dict()

    metrics.add_metric(name="InsightsStarted", unit=MetricUnit.Count, value=summary["starts"])
    metrics.add_metric(name="InsightsEnded", unit=MetricUnit.Count, value=summary["ends"])
    metrics.add_metric(name="InsightsScopesAnalysed", unit=MetricUnit.Count, value=summary["scopes"])
    metrics.add_metric(name="InsightsMinutesAnalysed", unit=MetricUnit.Count, value=summary["minutes"])
    metrics.add_metric(name="InsightsFilesWritten", unit=MetricUnit.Count, value=len(summary["files"]))
    metrics.add_metric(name="InsightsEventBridgeFailed", unit=MetricUnit.Count, value=summary["eventBridgeFailed"])
    metrics.add_metric(
        name="InsightsCloudWatchLogsFailed", unit=MetricUnit.Count, value=summary["cloudWatchLogsFailed"]
    )
    metrics.add_metric(name="InsightsRunErrors", unit=MetricUnit.Count, value=len(summary["errors"]))
    logger.info("insights run", extra={"summary": summary, "action": action or "scheduled"})
    return summary
