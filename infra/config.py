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

from opentrail.domain.trail import (
    Trail,
    TrailError,
    default_trail_dict,
    trail_from_dict,
    trails_from_list,
    trails_to_json,
)

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

# Powertools for AWS Lambda (Python) v3, public layer for python3.12/x86_64. By default the
# layer is the one Powertools publishes for the pinned version (POWERTOOLS_VERSION, the pin in
# requirements.txt), read at deploy time from its public SSM parameter in the stack's region;
# `powertoolsLayerVersion` picks a layer number instead (docs/configuration.md).
POWERTOOLS_VERSION: Final = "3.37.0"
POWERTOOLS_LAYER_PARAMETER: Final = f"/aws/service/powertools/python/x86_64/python3.12/{POWERTOOLS_VERSION}"
POWERTOOLS_LAYER_ACCOUNT: Final = "017000801446"
POWERTOOLS_LAYER_NAME: Final = "AWSLambdaPowertoolsPythonV3-python312-x86_64"

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
    "powertoolsLayerVersion": "must be null or a positive integer (a version of the public Powertools v3 layer)",
    "channelName": "3-128 characters [A-Za-z0-9._-]",
    "historyRetentionDays": "must be an integer between 1 and 3650",
    "historyDataEvents": "must be true or false",
    "logFileValidation": "must be true or false",
    "insightsScheduleMinutes": "must be an integer between 1 and 60",
    "insightsSensitivity": "must be one of low, medium, high",
    "insightsEventBridge": "must be true or false",
    "objectLockMode": "must be null (off), GOVERNANCE or COMPLIANCE",
    "objectLockRetentionDays": "must be an integer of at least 1, and at most logExpirationDays when that is set",
    "tracing": "must be true or false",
    "trails": "null (one trail from trailName/s3KeyPrefix), or a list of 1-5 trails in CloudTrail's shape",
    "regions": "null (the deployment region only), or a non-empty list of unique region names",
    "homeRegion": "null (the first of regions), or one of regions: the region owning the log bucket",
    "homeLogBucket": "the home region's LogBucketName output; required when regions lists more than one region",
    "homeKmsKeyArn": "the home region's LogKmsKeyArn output (a KMS key ARN in homeRegion); required with homeLogBucket",
    "homeLedgerTable": "the home region's LedgerTableName output (a DynamoDB table name); required with homeLogBucket",
    "s3DataEventBuckets": (
        "null (off), or a non-empty list of up to 100 unique S3 bucket names whose EventBridge notifications "
        "become S3 data events"
    ),
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
    powertools_layer_version: int | None = Field(default=None, ge=1)  # None: POWERTOOLS_LAYER_PARAMETER
    channel_name: str = "opentrail"
    event_bridge_capture_pattern: dict[str, Any] = Field(default_factory=_default_pattern)
    # Event history (docs/history.md): days before index items expire after their eventTime,
    # and whether data events are indexed too (CloudTrail's event history has none).
    history_retention_days: int = Field(default=90, ge=1, le=3650)
    history_data_events: bool = False
    # Log file integrity validation (docs/integrity.md): hourly signed digests + signing key.
    log_file_validation: bool = True
    # Insights (docs/insights.md, "Live"): how often the InsightsFunction runs, the detectors'
    # sensitivity preset, and whether Insights events go to the default EventBridge bus.
    insights_schedule_minutes: int = Field(default=5, ge=1, le=60)
    insights_sensitivity: Literal["low", "medium", "high"] = "medium"
    insights_event_bridge: bool = True
    # Optional WORM (docs/integrity.md, "Object Lock"): S3 Object Lock default retention on the
    # log bucket for log files and digests. Off by default; it can only be set at bucket creation.
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_retention_days: int = Field(default=365, ge=1)
    # Active X-Ray tracing on every function (docs/benchmarks.md: its cost per 100k events).
    tracing: bool = True
    # Trails (docs/trails.md): null = one trail named trailName under s3KeyPrefix; else 1-5 trails.
    trails: list[dict[str, Any]] | None = None
    # Multi-region (docs/trails.md): one stack per region; the home region owns the log bucket,
    # the others write into it (its name and KMS key ARN come from the home stack's outputs).
    regions: list[str] | None = None
    home_region: str | None = None
    home_log_bucket: str | None = None
    home_kms_key_arn: str | None = None
    home_ledger_table: str | None = None  # the trails' logging state (StartLogging/StopLogging)
    # S3 data events (docs/capture.md, "S3 data events"): buckets (with EventBridge notifications
    # on) whose object-level notifications a second EventBridge rule sends to capture.
    s3_data_event_buckets: list[str] | None = None

    @property
    def trail_list(self) -> tuple[Trail, ...]:
        """Every configured trail (validated by load_config)."""
        if self.trails is None:
            single = default_trail_dict(self.trail_name, self.s3_key_prefix)
            return (trail_from_dict(single, default_log_file_validation=self.log_file_validation),)
        return trails_from_list(self.trails, default_log_file_validation=self.log_file_validation)

    @property
    def home(self) -> str | None:
        """The home region (None: single-region deployment, wherever the stack goes)."""
        if not self.regions:
            return None
        return self.home_region or self.regions[0]

    def is_home(self, region: str | None) -> bool:
        return self.home is None or region == self.home

    def trails_in(self, region: str | None) -> tuple[Trail, ...]:
        """The trails recording in `region` (single-region trails only in the home region)."""
        home = self.home
        if home is None or region is None:
            return self.trail_list
        return tuple(trail for trail in self.trail_list if trail.records_in(region, home))

    @property
    def visibility_timeout_seconds(self) -> int:
        """The buffer queue's visibility timeout: six times the batcher timeout (AWS guidance)."""
        return 6 * self.batcher_timeout_seconds

    @property
    def powertools_layer_arn_suffix(self) -> str | None:
        """``<account>:layer:<name>:<version>`` (the stack prepends partition and region), or
        None when the layer comes from POWERTOOLS_LAYER_PARAMETER."""
        if self.powertools_layer_version is None:
            return None
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
    _check_trails_and_regions(config)
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
    buckets = config.s3_data_event_buckets
    if buckets is not None and (
        not buckets
        or len(buckets) > MAX_S3_DATA_EVENT_BUCKETS
        or len(set(buckets)) != len(buckets)
        or not all(_BUCKET.match(name) for name in buckets)
    ):
        raise ConfigError("s3DataEventBuckets", RULES["s3DataEventBuckets"], buckets)
    pattern = config.event_bridge_capture_pattern
    if not pattern or not set(pattern) <= set(EVENT_PATTERN_FIELDS):
        raise ConfigError("eventBridgeCapturePattern", RULES["eventBridgeCapturePattern"], pattern)
    for field, value in pattern.items():
        expected = dict if field == "detail" else list
        if not isinstance(value, expected) or not value:
            kind = "an object" if expected is dict else "a non-empty list"
            raise ConfigError(f"eventBridgeCapturePattern.{field}", f"must be {kind}", value)


_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
# Lambda's environment (all variables) is at most 4 KB; the trails share it with the rest.
MAX_TRAILS_JSON_BYTES: Final = 2500
MAX_S3_DATA_EVENT_BUCKETS: Final = 100


def _check_trails_and_regions(config: OpenTrailConfig) -> None:
    """Trails (each error names the trail and the field) and the region plan (docs/trails.md)."""
    if config.trails is not None and (config.trail_name != "opentrail" or config.s3_key_prefix is not None):
        key = "trailName" if config.trail_name != "opentrail" else "s3KeyPrefix"
        raise ConfigError(key, "leave it unset when trails is set: give each trail its Name and S3KeyPrefix there")
    try:
        trails = config.trail_list
    except TrailError as error:
        if config.trails is None:  # the single trail from trailName/s3KeyPrefix
            key = "trailName" if error.field == "Name" else "s3KeyPrefix"
            raise ConfigError(
                key, RULES[key], config.trail_name if key == "trailName" else config.s3_key_prefix
            ) from None
        raise ConfigError("trails", str(error), show_value=False) from None
    for trail in trails:
        if trail.log_file_validation_enabled and not config.log_file_validation:
            raise ConfigError(
                "trails",
                f"trail {trail.name!r}: LogFileValidationEnabled: needs logFileValidation true "
                "(the digester and its signing key)",
                show_value=False,
            )
    size = len(trails_to_json(trails).encode())
    if size > MAX_TRAILS_JSON_BYTES:
        raise ConfigError(
            "trails",
            f"the trails take {size} bytes as JSON, more than {MAX_TRAILS_JSON_BYTES} (Lambda's environment "
            "holds 4 KB): use fewer selector values, e.g. StartsWith prefixes",
            show_value=False,
        )
    if config.regions is None:
        given = {
            "homeRegion": config.home_region,
            "homeLogBucket": config.home_log_bucket,
            "homeKmsKeyArn": config.home_kms_key_arn,
            "homeLedgerTable": config.home_ledger_table,
        }
        for key, value in given.items():
            if value:
                raise ConfigError(key, "only with regions")
        return
    regions = config.regions
    if not regions or len(set(regions)) != len(regions) or not all(_REGION.match(r) for r in regions):
        raise ConfigError("regions", RULES["regions"], regions)
    home = config.home
    if config.home_region is not None and config.home_region not in regions:
        raise ConfigError("homeRegion", RULES["homeRegion"], config.home_region)
    if len(regions) == 1:
        return
    if config.home_log_bucket is None or not _BUCKET.match(config.home_log_bucket):
        raise ConfigError(
            "homeLogBucket",
            "required when regions lists more than one region: deploy the home region first, then copy its "
            "LogBucketName output here",
            config.home_log_bucket,
        )
    arn = config.home_kms_key_arn or ""
    parts = arn.split(":")
    if (
        len(parts) != 6
        or parts[0] != "arn"
        or not parts[1].startswith("aws")
        or parts[2] != "kms"
        or parts[3] != home
        or not parts[5].startswith("key/")
    ):
        partition_hint = f"arn:aws:kms:{home}:<account>:key/<id>"
        raise ConfigError("homeKmsKeyArn", f"the home stack's LogKmsKeyArn output ({partition_hint})", arn or None)
    if config.home_ledger_table is None or not _TABLE.match(config.home_ledger_table):
        raise ConfigError(
            "homeLedgerTable",
            "required when regions lists more than one region: copy the home stack's LedgerTableName output "
            "here (StartLogging/StopLogging in the home region hold in every region)",
            config.home_ledger_table,
        )
