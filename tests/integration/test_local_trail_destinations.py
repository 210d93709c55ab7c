"""`opentrail local --trails FILE` provisions the trails' delivery destinations (docs/trails.md,
"Deliveries"): each trail's CloudWatch Logs group and SNS topic, default or configured names."""

from __future__ import annotations

import json

import boto3

from opentrail.local.resources import provision

TRAILS = [
    {"Name": "audit", "Deliveries": {"CloudWatchLogs": True, "SnsTopic": True}},
    {"Name": "ops", "Deliveries": {"CloudWatchLogs": "shared/ops", "SnsTopic": "ops-files", "EventBridge": True}},
    {"Name": "quiet"},
]


def test_provision_creates_the_trails_log_groups_and_topics(aws: None) -> None:
    provision(name="withtrails", trails=json.dumps(TRAILS))

    groups = {
        g["logGroupName"] for g in boto3.client("logs", region_name="us-east-1").describe_log_groups()["logGroups"]
    }
    topics = {
        t["TopicArn"].rsplit(":", 1)[1] for t in boto3.client("sns", region_name="us-east-1").list_topics()["Topics"]
    }
    assert groups == {"opentrail/audit", "shared/ops"}
    assert topics == {"opentrail-audit", "ops-files"}
