"""The environment contract of every Lambda function, one pydantic model per function.

Field ``buffer_queue_url`` is the environment variable ``BUFFER_QUEUE_URL``. The CDK code
builds each function's environment with `Settings.to_env()` from these models, and a test
checks that every synthesized function's environment has exactly its model's variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opentrail.domain.trail import DEFAULT_TRAIL_NAME, Trail, TrailError, trails_from_json, trails_to_json

DEFAULT_TRAILS_JSON = trails_to_json([Trail(name=DEFAULT_TRAIL_NAME)])


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


class BatcherSettings(Settings):
    """BatcherFunction: drains the buffer into CloudTrail log files."""

    buffer_queue_url: str
    dead_letter_queue_url: str
    log_bucket: str
    log_kms_key_arn: str
    ledger_table: str
    trails: str = DEFAULT_TRAILS_JSON
    max_batch_messages: int = Field(default=90, ge=1, le=99)  # DynamoDB transactions: 100 items
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    time_budget_margin_seconds: int = Field(default=20, ge=1, le=600)
    ledger_ttl_days: int = Field(default=400, ge=1)
    # Long-poll the first receive of a run (a moment's wait avoids an empty scheduled run
    # when messages are just arriving; tests and the demo set 0).
    receive_wait_seconds: int = Field(default=1, ge=0, le=20)

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
