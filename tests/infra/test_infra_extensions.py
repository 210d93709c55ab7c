"""S3 data event rule (s3DataEventBuckets) and the stack's extension methods."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import ConfigError, load_config
from tests.infra.conftest import Synth, synth


@pytest.fixture(scope="module")
def s3_synth() -> Synth:
    return synth({"s3DataEventBuckets": ["acme-reports", "acme-uploads"]})


def test_no_s3_rule_by_default(default_synth: Synth) -> None:
    patterns = [r["Properties"].get("EventPattern") for r in default_synth.resources("AWS::Events::Rule").values()]
    assert not any(p.get("source") == ["aws.s3"] for p in patterns if isinstance(p, dict))


def test_s3_rule_sends_the_buckets_notifications_to_capture(s3_synth: Synth) -> None:
    rule_id, rule = s3_synth.one(
        "AWS::Events::Rule", lambda r: r["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
    )
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail"] == {"bucket": {"name": ["acme-reports", "acme-uploads"]}}
    assert "Object Created" in pattern["detail-type"]
    assert "Object Deleted" in pattern["detail-type"]
    capture_id, _ = s3_synth.function("opentrail.handlers.eventbridge_capture.handler")
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [capture_id, "Arn"]}
    permissions = [
        p["Properties"] for p in s3_synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"].get("SourceArn") == {"Fn::GetAtt": [rule_id, "Arn"]}
    ]  # fmt: skip
    assert len(permissions) == 1
    assert permissions[0]["Principal"] == "events.amazonaws.com"


@pytest.mark.parametrize(
    "value", [[], ["Bad_Bucket"], ["a-bucket", "a-bucket"], "acme", [f"b-{i:03d}" for i in range(101)]]
)
def test_s3_data_event_buckets_rule(value: Any) -> None:
    with pytest.raises((ConfigError, ValueError), match="s3DataEventBuckets"):
        load_config({"s3DataEventBuckets": value})


@pytest.fixture(scope="module")
def extended() -> Any:
    from aws_cdk import App, Environment, Stack
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from infra.config import load_config
    from infra.stack import OpenTrailStack
    from tests.infra.conftest import cdk_context

    app = App(context=cdk_context())
    env = Environment(account="123456789012", region="us-east-1")
    trail = OpenTrailStack(app, "OpenTrail", config=load_config(cdk_context()["opentrail"]), env=env)
    team = Stack(app, "Team", env=env)
    code = lambda_.Code.from_inline("def handler(event, context):\n    return None\n")
    source = lambda_.Function(team, "Source", runtime=lambda_.Runtime.PYTHON_3_14, handler="index.handler", code=code)
    subscriber = lambda_.Function(team, "Sub", runtime=lambda_.Runtime.PYTHON_3_14, handler="index.handler", code=code)
    trail.add_capture_source(source)
    trail.add_subscriber(subscriber)
    trail.add_subscriber(subscriber, {"detail": {"insightDetails": {"state": ["Start"]}}})
    return trail, Template.from_stack(team)


def test_add_capture_source_grants_exactly_emit(extended: Any) -> None:
    _, template = extended
    (policy,) = [
        p for p in template.find_resources("AWS::IAM::Policy").values() if "Source" in p["Properties"]["PolicyName"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(json_actions(s) for s in statements) == [["kms:Decrypt", "kms:GenerateDataKey"], ["sqs:SendMessage"]]
    assert all("*" not in str(s["Resource"]) for s in statements)
    (function,) = [f for k, f in template.find_resources("AWS::Lambda::Function").items() if k.startswith("Source")]
    variables = function["Properties"]["Environment"]["Variables"]
    assert set(variables) == {"OPENTRAIL_BUFFER_QUEUE_URL", "AWS_ACCOUNT_ID"}


def json_actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return sorted(actions if isinstance(actions, list) else [actions])


def test_add_subscriber_rules_filter_opentrail_events(extended: Any) -> None:
    _, template = extended
    patterns = [r["Properties"]["EventPattern"] for r in template.find_resources("AWS::Events::Rule").values()]
    assert {"source": ["opentrail"], "detail-type": ["AWS Insight via CloudTrail"]} in patterns
    assert {
        "source": ["opentrail"],
        "detail-type": ["AWS Insight via CloudTrail"],
        "detail": {"insightDetails": {"state": ["Start"]}},
    } in patterns
    assert len(template.find_resources("AWS::Lambda::Permission")) == 2
