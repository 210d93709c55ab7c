"""The ``opentrail`` context from cdk.json, typed and validated at synth.

Every rule failure names the key and the rule, e.g.
``opentrail.batchScheduleMinutes: must be between 1 and 5 (got 7)``.
docs/configuration.md describes every key; keep the two in step.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from opentrail.domain.trail import TrailError, trail_from_dict

CONTEXT_KEY: Final = "opentrail"

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS: Final = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
STORAGE_CLASSES: Final = ("GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "STANDARD_IA", "INTELLIGENT_TIERING")
StorageClassName = Literal["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "STANDARD_IA", "INTELLIGENT_TIERING"]
EVENT_PATTERN_FIELDS: Final = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9._-]{3,128}$")

# Powertools for AWS Lambda (Python) v3, public layer for python3.12/x86_64. Version 27 is the
# newest number found in the Powertools docs history available offline; check the layer that
# matches the pinned aws-lambda-powertools before a deploy (docs/configuration.md).
POWERTOOLS_LAYER_ACCOUNT: Final = "017000801446"
POWERTOOLS_LAYER_NAME: Final = "AWSLambdaPowertoolsPythonV3-python312-x86_64"
DEFAULT_POWERTOOLS_LAYER_VERSION: Final = 27

# The rule text for each key, used in error messages (and mirrored in docs/configuration.md).
RULES: Final[dict[str, str]] = {
    "trailName": "3-128 characters [A-Za-z0-9._-], starting and ending with a letter or digit",
    "s3KeyPrefix": "null, or 1-200 characters with no trailing slash",
    "batchScheduleMinutes": "must be an integer between 1 and 5",
    "batcherTimeoutSeconds": "must be an integer between 30 and 900",
    "logTransitionDays": "must be an integer of at least 1",
    "logTransitionStorageClass": f"must be one of {', '.join(STORAGE_CLASSES)}",
    "logExpirationDays": "must be null or an integer greater than logTransitionDays",
    "noncurrentVersionExpirationDays": "must be an integer of at least 1",
    "accessLogging": "must be true or false",
    "accessLoggingDisabledReason": "must be a non-empty string when accessLogging is false",
    "accessLogExpirationDays": "must be an integer of at least 1",
    "logRetentionDays": f"must be a CloudWatch Logs retention period: {', '.join(map(str, LOG_RETENTION_DAYS))}",
    "powertoolsLayerVersion": "must be a positive integer (a version of the public Powertools v3 layer)",
    "channelName": "3-128 characters [A-Za-z0-9._-]",
    "historyRetentionDays": "must be an integer between 1 and 3650",
    "historyDataEvents": "must be true or false",
    "logFileValidation": "must be true or false",
    "objectLockMode": "must be null (off), GOVERNANCE or COMPLIANCE",
    "objectLockRetentionDays": "must be an integer of at least 1, and at most logExpirationDays when that is set",
    "tracing": "must be true or false",
    "eventBridgeCapturePattern": (
        f"must be a non-empty EventBridge event pattern object using only {', '.join(EVENT_PATTERN_FIELDS)}"
    ),
}


class ConfigError(ValueError):
    """A context value breaks a rule; the message names the key (``opentrail.<key>``)."""

    def __init__(self, key: str, rule: str, value: object = None, *, show_value: bool = True) -> None:
        suffix = f" (got {json.dumps(value, default=str)})" if show_value else ""
        super().__init__(f"{CONTEXT_KEY}.{key}: {rule}{suffix}")
        self.key = key
        self.rule = rule


def _default_pattern() -> dict[str, Any]:
    return {"detail-type": ["OpenTrail Audit Event"]}


class OpenTrailConfig(BaseModel):
    """Deployment knobs. Field names are snake_case here and camelCase in cdk.json."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True)

    trail_name: str = "opentrail"
    s3_key_prefix: str | None = None
    batch_schedule_minutes: int = Field(default=1, ge=1, le=5)
    batcher_timeout_seconds: int = Field(default=120, ge=30, le=900)
    log_transition_days: int = Field(default=90, ge=1)
    log_transition_storage_class: StorageClassName = "GLACIER_IR"
    log_expiration_days: int | None = Field(default=None, ge=1)
    noncurrent_version_expiration_days: int = Field(default=30, ge=1)
    access_logging: bool = True
    access_logging_disabled_reason: str | None = None
    access_log_expiration_days: int = Field(default=365, ge=1)
    log_retention_days: int = 30
    powertools_layer_version: int = Field(default=DEFAULT_POWERTOOLS_LAYER_VERSION, ge=1)
    channel_name: str = "opentrail"
    event_bridge_capture_pattern: dict[str, Any] = Field(default_factory=_default_pattern)
    # Event history (docs/history.md): days before index items expire after their eventTime,
    # and whether data events are indexed too (CloudTrail's event history has none).
    history_retention_days: int = Field(default=90, ge=1, le=3650)
    history_data_events: bool = False
    # Log file integrity validation (docs/integrity.md): hourly signed digests + signing key.
    log_file_validation: bool = True
    # Optional WORM (docs/integrity.md, "Object Lock"): S3 Object Lock default retention on the
    # log bucket for log files and digests. Off by default; it can only be set at bucket creation.
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_retention_days: int = Field(default=365, ge=1)
    # Active X-Ray tracing on every function (docs/benchmarks.md: its cost per 100k events).
    tracing: bool = True

    @property
    def visibility_timeout_seconds(self) -> int:
        """The buffer queue's visibility timeout: six times the batcher timeout (AWS guidance)."""
        return 6 * self.batcher_timeout_seconds

    @property
    def powertools_layer_arn_suffix(self) -> str:
        """``<account>:layer:<name>:<version>``; the stack prepends partition and region."""
        return f"{POWERTOOLS_LAYER_ACCOUNT}:layer:{POWERTOOLS_LAYER_NAME}:{self.powertools_layer_version}"


def load_config(raw: object) -> OpenTrailConfig:
    """Validate the ``opentrail`` context value (a dict, a JSON string from ``-c``, or None)."""
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{CONTEXT_KEY}: must be a JSON object ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{CONTEXT_KEY}: must be an object (got {type(raw).__name__})")
    unknown = sorted(set(raw) - set(RULES))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; known keys: {', '.join(RULES)}", show_value=False)
    try:
        config = OpenTrailConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(key, RULES.get(key, first["msg"]), raw.get(key)) from None
    _check_rules(config)
    return config


def _check_rules(config: OpenTrailConfig) -> None:
    try:
        trail_from_dict({"Name": config.trail_name, "S3KeyPrefix": config.s3_key_prefix})
    except TrailError as error:
        key = "trailName" if error.field == "Name" else "s3KeyPrefix"
        value = config.trail_name if key == "trailName" else config.s3_key_prefix
        raise ConfigError(key, RULES[key], value) from None
    if config.log_expiration_days is not None and config.log_expiration_days <= config.log_transition_days:
        raise ConfigError(
            "logExpirationDays",
            f"must be greater than logTransitionDays ({config.log_transition_days})",
            config.log_expiration_days,
        )
    if (
        config.object_lock_mode
        and config.log_expiration_days is not None
        and config.object_lock_retention_days > config.log_expiration_days
    ):
        raise ConfigError(
            "objectLockRetentionDays",
            f"must be at most logExpirationDays ({config.log_expiration_days}): locked versions cannot expire",
            config.object_lock_retention_days,
        )
    if not config.access_logging and not (config.access_logging_disabled_reason or "").strip():
        raise ConfigError("accessLoggingDisabledReason", RULES["accessLoggingDisabledReason"], show_value=False)
    if config.log_retention_days not in LOG_RETENTION_DAYS:
        raise ConfigError("logRetentionDays", RULES["logRetentionDays"], config.log_retention_days)
    if not _CHANNEL_NAME.match(config.channel_name):
        raise ConfigError("channelName", RULES["channelName"], config.channel_name)
    pattern = config.event_bridge_capture_pattern
    if not pattern or not set(pattern) <= set(EVENT_PATTERN_FIELDS):
        raise ConfigError("eventBridgeCapturePattern", RULES["eventBridgeCapturePattern"], pattern)
    for field, value in pattern.items():
        expected = dict if field == "detail" else list
        if not isinstance(value, expected) or not value:
            kind = "an object" if expected is dict else "a non-empty list"
            raise ConfigError(f"eventBridgeCapturePattern.{field}", f"must be {kind}", value)
