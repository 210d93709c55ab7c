"""Trail deliveries in the stacks (docs/trails.md, "Deliveries"): the home region creates each
trail's log group and topic (KMS, retention, TLS-only), the batchers may write to exactly those,
and events:PutEvents on the default bus only when a trail enables EventBridge."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.function import BATCHER_HANDLER
from tests.infra.conftest import Synth, synth
from tests.infra.test_infra_nag import _findings
from tests.infra.test_infra_trails import HOME_BUCKET, HOME_KEY, HOME_LEDGER, synth_regions

TRAILS = [
    {"Name": "opentrail"},
    {"Name": "security", "S3KeyPrefix": "sec", "Deliveries": {"CloudWatchLogs": True, "SnsTopic": "alerts"}},
    {"Name": "ops", "S3KeyPrefix": "ops", "Deliveries": {"EventBridge": True}},
]


@pytest.fixture(scope="module")
def home() -> Synth:
    return synth({"trails": TRAILS})


def statements(s: Synth, sid: str) -> list[dict[str, Any]]:
    return [st for st in s.role_policy_statements(BATCHER_HANDLER) if st.get("Sid") == sid]


def text(value: Any) -> str:
    return json.dumps(value)


def test_home_creates_encrypted_log_group_and_tls_only_topic(home: Synth) -> None:
    _, group = home.one("AWS::Logs::LogGroup", lambda r: r["Properties"].get("LogGroupName") == "opentrail/security")
    assert "KmsKeyId" in group["Properties"]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Retain"
    _, topic = home.one("AWS::SNS::Topic")
    assert topic["Properties"]["TopicName"] == "alerts"
    assert "KmsMasterKeyId" in topic["Properties"]
    _, policy = home.one("AWS::SNS::TopicPolicy")
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert denies
    assert denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    _, key = home.one("AWS::KMS::Key", prefix="LogArchiveKey")
    logs = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Sid") == "TrailLogGroups"]
    assert logs
    assert logs[0]["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}


def test_batcher_grants_cover_exactly_the_trails_destinations(home: Synth) -> None:
    (logs,) = statements(home, "TrailCloudWatchLogs")
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert "log-group:opentrail/security" in text(logs["Resource"])
    (sns,) = statements(home, "TrailNotifications")
    assert sns["Action"] == "sns:Publish"
    assert sns["Resource"] == "arn:aws:sns:us-east-1:123456789012:alerts"
    (events,) = statements(home, "TrailEventBridge")
    assert events["Action"] == "events:PutEvents"
    assert "event-bus/default" in text(events["Resource"])
    assert _findings(home) == []


def test_no_deliveries_no_resources_and_no_grants(default_synth: Synth) -> None:
    assert default_synth.resources("AWS::SNS::Topic") == {}
    sids = {s.get("Sid") for s in default_synth.role_policy_statements(BATCHER_HANDLER)}
    assert not sids & {"TrailCloudWatchLogs", "TrailNotifications", "TrailEventBridge"}


def test_other_regions_write_to_the_home_regions_groups_and_topics() -> None:
    stacks = synth_regions(
        {
            "trails": TRAILS,
            "regions": ["us-east-1", "eu-west-1"],
            "homeRegion": "us-east-1",
            "homeLogBucket": HOME_BUCKET,
            "homeKmsKeyArn": HOME_KEY,
            "homeLedgerTable": HOME_LEDGER,
        }
    )
    other = stacks["eu-west-1"]
    assert other.resources("AWS::SNS::Topic") == {}
    names = [r["Properties"].get("LogGroupName") for r in other.resources("AWS::Logs::LogGroup").values()]
    assert "opentrail/security" not in names
    (logs,) = statements(other, "TrailCloudWatchLogs")
    assert ":logs:us-east-1:" in text(logs["Resource"])
    (sns,) = statements(other, "TrailNotifications")
    assert ":sns:us-east-1:" in text(sns["Resource"])
    (events,) = statements(other, "TrailEventBridge")
    assert ":events:eu-west-1:" in text(events["Resource"])
    env = other.function(BATCHER_HANDLER)[1]["Properties"]["Environment"]["Variables"]
    assert env["HOME_REGION"] == "us-east-1"
    assert _findings(other) == []
