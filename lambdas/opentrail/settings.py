"""The environment contract of every Lambda function, one pydantic model per function.

Field ``buffer_queue_url`` is the environment variable ``BUFFER_QUEUE_URL``. The CDK code
builds each function's environment with `Settings.to_env()` from these models, and a test
checks that every synthesized function's environment has exactly its model's variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opentrail.domain.insights import Sensitivity
from opentrail.domain.trail import (
    Trail,
    TrailError,
    default_trail_dict,
    trail_from_dict,
    trails_from_json,
    trails_to_json,
)

DEFAULT_TRAILS_JSON = trails_to_json([trail_from_dict(default_trail_dict())])


class SettingsError(RuntimeError):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    powertools_service_name: str = "opentrail"
    powertools_metrics_namespace: str = "OpenTrail"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        values = {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
            raise SettingsError(f"{cls.__name__}: {problems}") from None

    def to_env(self) -> dict[str, str]:
        return {name.upper(): _text(value) for name, value in self.model_dump().items()}

    @classmethod
    def env_names(cls) -> set[str]:
        return {name.upper() for name in cls.model_fields}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TrailsSettings(Settings):
    """Settings of the functions that need the trails: ``TRAILS``, CloudTrail's JSON shape."""

    trails: str = DEFAULT_TRAILS_JSON
    # Multi-region (docs/trails.md): the home region's ledger table, which holds the trails'
    # logging state (StartLogging/StopLogging are called in the home region and hold in every
    # region); empty: this region's own ledger (the home region, or a single-region deployment).
    home_ledger_table: str = ""

    @field_validator("trails")
    @classmethod
    def _valid_trails(cls, value: str) -> str:
        try:
            trails_from_json(value)
        except (TrailError, ValueError) as error:
            raise ValueError(str(error)) from None
        return value

    @property
    def trail_list(self) -> tuple[Trail, ...]:
        return trails_from_json(self.trails)


class IngestSettings(Settings):
    """IngestFunction: PutAuditEvents behind the API."""

    buffer_queue_url: str
    channel_arns: str = Field(description="comma-separated channel ARNs this deployment accepts")

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(arn.strip() for arn in self.channel_arns.split(",") if arn.strip())


class EventBridgeCaptureSettings(Settings):
    """EventBridgeCaptureFunction: events from EventBridge rules."""

    buffer_queue_url: str


class BatcherSettings(TrailsSettings):
    """BatcherFunction: drains the buffer into CloudTrail log files."""

    buffer_queue_url: str
    dead_letter_queue_url: str
    log_bucket: str
    log_kms_key_arn: str
    ledger_table: str
    max_batch_messages: int = Field(default=90, ge=1, le=99)  # DynamoDB transactions: 100 items
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    time_budget_margin_seconds: int = Field(default=20, ge=1, le=600)
    ledger_ttl_days: int = Field(default=400, ge=1)
    # Long-poll the first receive of a run (a moment's wait avoids an empty scheduled run
    # when messages are just arriving; tests and the demo set 0).
    receive_wait_seconds: int = Field(default=1, ge=0, le=20)
    # The event history index (docs/history.md): table, days before items expire (TTL after
    # eventTime), and whether data events are indexed too (management and Insights always are).
    history_table: str
    history_retention_days: int = Field(default=90, ge=1, le=3650)
    history_data_events: bool = False
    # Insights (docs/insights.md, "Live"): the table receiving one partial per-minute
    # aggregate item per (account, region, minute) and batch; empty: no aggregates.
    insights_table: str = ""
    # Deliveries (docs/trails.md, "Deliveries"): the trails' log groups and SNS topics live in
    # the home region (empty: this function's region) of this account (empty: the account of
    # the function's ARN); EventBridge events go to this region's default bus.
    home_region: str = ""
    account_id: str = ""


class QuerySettings(TrailsSettings):
    """LookupFunction: CloudTrail's query API (LookupEvents) over the history table."""

    history_table: str
    # LookupEvents' default StartTime is now minus this many days (CloudTrail: 90).
    history_retention_days: int = Field(default=90, ge=1, le=3650)
    # ListPublicKeys reads the digest signing keys' registry, kept in the ledger table
    # (docs/integrity.md); empty: ListPublicKeys answers with an empty list. The trails'
    # logging state and status items live there too (docs/trails.md).
    ledger_table: str = ""
    # The trail operations (DescribeTrails, GetTrail, GetTrailStatus, ...; docs/trails.md):
    # the trails recorded in this region, the log bucket, its KMS key, and the home region
    # (empty: this function's region).
    log_bucket: str = ""
    log_kms_key_arn: str = ""
    home_region: str = ""


class DigesterSettings(TrailsSettings):
    """DigesterFunction: hourly signed digest files (docs/integrity.md)."""

    log_bucket: str
    ledger_table: str
    signing_key_id: str = Field(description="the RSA_2048 SIGN_VERIFY KMS key (ARN, id or alias)")
    # The trails' home region (digest names, trail ARNs); empty: this function's region.
    home_region: str = ""
    # A window [H, H+1h) is digested at H+1h+delay: the delay covers the batcher's longest
    # run (deliveredAt is stamped when a batch starts, its ledger items land at its end) plus
    # clock skew. The schedule fires at minute ceil(delay/60) of each hour.
    digest_delay_seconds: int = Field(default=300, ge=60, le=3000)
    # Delivery hours re-read for late files (backfill digests).
    backfill_lookback_hours: int = Field(default=48, ge=1, le=24 * 14)
    # Catch-up bound per run (windows per trail); later runs continue, nothing is skipped.
    max_windows_per_run: int = Field(default=168, ge=1, le=24 * 31)
    time_budget_margin_seconds: int = Field(default=20, ge=1, le=600)


class InsightsSettings(TrailsSettings):
    """InsightsFunction: analyses the batcher's minute aggregates of each trail with
    InsightSelectors, delivers Insights events (docs/insights.md, "Live" and "Per trail")."""

    insights_table: str
    history_table: str
    history_retention_days: int = Field(default=90, ge=1, le=3650)
    log_bucket: str
    log_kms_key_arn: str
    # The trails' logging state and delivery status (empty: every trail logging, no status kept).
    ledger_table: str = ""
    # Where the trails' CloudWatch Logs groups are (empty: this function's region).
    home_region: str = ""
    # low | medium | high, then single knobs as a JSON object, e.g. {"rate_sigma": 5} (Sensitivity).
    sensitivity: str = "medium"
    sensitivity_overrides: str = "{}"
    # The EventBridge bus receiving "AWS Insight via CloudTrail" events; empty: none sent.
    event_bus: str = "default"
    # True: every trail's Insights events go to `event_bus`; false: only those of the trails with
    # Deliveries.EventBridge (the insightsEventBridge knob).
    event_bridge_all: bool = True
    # A minute is analysed once this many minutes have passed after its end: covers the time
    # from an API call to its batch being delivered (capture + buffer + batcher schedule).
    settle_minutes: int = Field(default=10, ge=1, le=120)
    # Catch-up bound per run (minutes); later runs continue, nothing is skipped.
    max_minutes_per_run: int = Field(default=720, ge=5, le=4320)
    # Minutes analysed by the very first run (no scope state yet).
    initial_lookback_minutes: int = Field(default=60, ge=1, le=4320)
    # Scope state (baselines, open insights) expires this long after its last update.
    state_ttl_days: int = Field(default=35, ge=1, le=400)
    time_budget_margin_seconds: int = Field(default=20, ge=1, le=600)

    @field_validator("sensitivity")
    @classmethod
    def _valid_sensitivity(cls, value: str) -> str:
        Sensitivity.preset(value)
        return value

    @field_validator("sensitivity_overrides")
    @classmethod
    def _valid_overrides(cls, value: str) -> str:
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        Sensitivity().with_overrides(data)
        return value

    def sensitivity_model(self) -> Sensitivity:
        """The `Sensitivity` these settings describe (preset + overrides)."""
        return Sensitivity.preset(self.sensitivity).with_overrides(json.loads(self.sensitivity_overrides))
