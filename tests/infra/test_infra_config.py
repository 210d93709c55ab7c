"""The `opentrail` context is validated at synth; errors name the key and the rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import infra  # noqa: F401
from infra.config import ConfigError, OpenTrailConfig, load_config
from opentrail.local import resources as local

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def test_config_cdk_json_context_is_valid() -> None:
    # given the committed cdk.json / when loaded
    config = load_config(json.loads(CDK_JSON.read_text())["context"]["opentrail"])
    # then it equals the documented defaults
    assert config == OpenTrailConfig()


def test_config_missing_context_gives_defaults() -> None:
    config = load_config(None)
    assert config.batch_schedule_minutes == 1
    assert config.batcher_timeout_seconds == 120
    assert config.visibility_timeout_seconds == 720
    assert config.event_bridge_capture_pattern == {"detail-type": ["OpenTrail Audit Event"]}


def test_config_accepts_json_string_from_command_line() -> None:
    assert load_config('{"batchScheduleMinutes": 3}').batch_schedule_minutes == 3


@pytest.mark.parametrize(
    ("overrides", "key", "rule"),
    [
        ({"batchScheduleMinutes": 0}, "batchScheduleMinutes", "between 1 and 5"),
        ({"objectLockMode": "WORM"}, "objectLockMode", "GOVERNANCE or COMPLIANCE"),
        ({"objectLockMode": "GOVERNANCE", "objectLockRetentionDays": 0}, "objectLockRetentionDays", "at least 1"),
        (
            {"objectLockMode": "COMPLIANCE", "objectLockRetentionDays": 400, "logExpirationDays": 365},
            "objectLockRetentionDays",
            "at most logExpirationDays",
        ),
        ({"tracing": "yes"}, "tracing", "true or false"),
        ({"batchScheduleMinutes": 6}, "batchScheduleMinutes", "between 1 and 5"),
        ({"batchScheduleMinutes": "2"}, "batchScheduleMinutes", "between 1 and 5"),
        ({"batcherTimeoutSeconds": 901}, "batcherTimeoutSeconds", "between 30 and 900"),
        ({"logTransitionDays": 0}, "logTransitionDays", "at least 1"),
        ({"logTransitionStorageClass": "GLACIER_FLEXIBLE"}, "logTransitionStorageClass", "one of"),
        ({"logTransitionDays": 90, "logExpirationDays": 30}, "logExpirationDays", "greater than logTransitionDays"),
        ({"logTransitionDays": 90, "logExpirationDays": 90}, "logExpirationDays", "greater than logTransitionDays"),
        ({"accessLogging": False}, "accessLoggingDisabledReason", "non-empty string when accessLogging is false"),
        (
            {"accessLogging": False, "accessLoggingDisabledReason": "  "},
            "accessLoggingDisabledReason",
            "non-empty string",
        ),
        ({"logRetentionDays": 31}, "logRetentionDays", "CloudWatch Logs retention period"),
        ({"s3KeyPrefix": "logs/"}, "s3KeyPrefix", "no trailing slash"),
        ({"s3KeyPrefix": "x" * 201}, "s3KeyPrefix", "1-200 characters"),
        ({"trailName": "a"}, "trailName", "3-128 characters"),
        ({"channelName": "no spaces"}, "channelName", "3-128 characters"),
        ({"powertoolsLayerVersion": 0}, "powertoolsLayerVersion", "positive integer"),
        ({"eventBridgeCapturePattern": {}}, "eventBridgeCapturePattern", "non-empty EventBridge event pattern"),
        ({"eventBridgeCapturePattern": {"detailType": ["x"]}}, "eventBridgeCapturePattern", "using only"),
        ({"eventBridgeCapturePattern": {"source": "x"}}, "eventBridgeCapturePattern.source", "non-empty list"),
        ({"historyRetentionDays": 0}, "historyRetentionDays", "between 1 and 3650"),
        ({"historyRetentionDays": "90"}, "historyRetentionDays", "between 1 and 3650"),
        ({"historyDataEvents": "yes"}, "historyDataEvents", "true or false"),
        ({"batchSchedule": 1}, "batchSchedule", "unknown key"),
    ],
)
def test_config_rejects_bad_value_naming_key_and_rule(overrides: dict[str, Any], key: str, rule: str) -> None:
    # given a context value that breaks a rule / when validated
    with pytest.raises(ConfigError) as caught:
        load_config(overrides)
    # then the message starts with opentrail.<key> and states the rule
    message = str(caught.value)
    assert message.startswith(f"opentrail.{key}: "), message
    assert rule in message
    assert caught.value.key == key


def test_config_access_logging_off_with_reason_is_accepted() -> None:
    config = load_config({"accessLogging": False, "accessLoggingDisabledReason": "central access logging"})
    assert not config.access_logging


def test_config_defaults_match_local_mirror() -> None:
    # opentrail.local.resources mirrors the stack for moto; its shapes must follow the defaults
    config = OpenTrailConfig()
    assert config.batcher_timeout_seconds == local.BATCHER_TIMEOUT_SECONDS
    assert config.visibility_timeout_seconds == local.VISIBILITY_TIMEOUT_SECONDS
    assert config.channel_name == local.CHANNEL_NAME
