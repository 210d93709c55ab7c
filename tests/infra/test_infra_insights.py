"""The Insights table and the InsightsFunction: schedule, environment, least-privilege grants."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import synth

from infra.function import BATCHER_HANDLER
from infra.insights import HISTORY_LEADING_KEYS, INSIGHTS_HANDLER, TABLE_ACTIONS
from infra.tables import TTL_ATTRIBUTE
from opentrail.domain.insights import INSIGHT_TYPES


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in _listed(s["Action"])}


def _table_id(synth: Any, prefix: str) -> str:
    table_id, _ = synth.one("AWS::DynamoDB::Table", prefix=prefix)
    return str(table_id)


def _key_id(synth: Any) -> str:
    key_id, _ = synth.one("AWS::KMS::Key", prefix="LogArchive")
    return str(key_id)


@pytest.fixture(scope="module")
def quiet_synth() -> Any:
    return synth({"insightsEventBridge": False, "insightsScheduleMinutes": 15, "insightsSensitivity": "low"})


def test_insights_table_shape_pitr_sse_ttl_retained(default_synth: Any) -> None:
    _, table = default_synth.one("AWS::DynamoDB::Table", prefix="InsightsStore")
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert "GlobalSecondaryIndexes" not in props
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [_key_id(default_synth), "Arn"]},
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"


def test_insights_schedule_and_input(default_synth: Any, quiet_synth: Any) -> None:
    for synth_, rate in ((default_synth, "rate(5 minutes)"), (quiet_synth, "rate(15 minutes)")):
        function_id, _ = synth_.function(INSIGHTS_HANDLER)
        _, rule = synth_.one("AWS::Events::Rule", lambda r: "ScheduleExpression" in r["Properties"], prefix="Insights")
        assert rule["Properties"]["ScheduleExpression"] == rate
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
        assert json.loads(target["Input"]) == {"action": "scheduled"}


def test_insights_environment(default_synth: Any, quiet_synth: Any, variant_synth: Any) -> None:
    _, function = default_synth.function(INSIGHTS_HANDLER)
    env = function["Properties"]["Environment"]["Variables"]
    assert env["INSIGHTS_TABLE"] == {"Ref": _table_id(default_synth, "InsightsStore")}
    assert env["HISTORY_TABLE"] == {"Ref": _table_id(default_synth, "BatcherEventHistory")}
    assert env["SENSITIVITY"] == "medium"
    assert env["EVENT_BUS"] == "default"
    assert env["EVENT_BRIDGE_ALL"] == "true"
    assert env["LEDGER_TABLE"] == {"Ref": _table_id(default_synth, "BatcherDeliveryLedger")}
    # the default trail analyses every Insights type
    (trail,) = json.loads(env["TRAILS"])
    assert [s["InsightType"] for s in trail["InsightSelectors"]] == list(INSIGHT_TYPES)
    _, quiet = quiet_synth.function(INSIGHTS_HANDLER)
    assert quiet["Properties"]["Environment"]["Variables"]["SENSITIVITY"] == "low"
    assert quiet["Properties"]["Environment"]["Variables"]["EVENT_BUS"] == ""
    _, variant = variant_synth.function(INSIGHTS_HANDLER)
    (trail,) = json.loads(variant["Properties"]["Environment"]["Variables"]["TRAILS"])
    assert trail["S3KeyPrefix"] == "audit/prod"
    _, batcher = default_synth.function(BATCHER_HANDLER)
    assert batcher["Properties"]["Environment"]["Variables"]["INSIGHTS_TABLE"] == {
        "Ref": _table_id(default_synth, "InsightsStore")
    }


def test_insights_function_policy_is_scoped(default_synth: Any, variant_synth: Any) -> None:
    for synth_, prefix in ((default_synth, ""), (variant_synth, "audit/prod/")):
        statements = synth_.role_policy_statements(INSIGHTS_HANDLER)
        by_sid = {s.get("Sid"): s for s in statements}
        insights_arn = {"Fn::GetAtt": [_table_id(synth_, "InsightsStore"), "Arn"]}
        history_arn = {"Fn::GetAtt": [_table_id(synth_, "BatcherEventHistory"), "Arn"]}
        ledger_arn = {"Fn::GetAtt": [_table_id(synth_, "BatcherDeliveryLedger"), "Arn"]}
        assert set(_listed(by_sid["InsightsState"]["Action"])) == set(TABLE_ACTIONS)
        assert by_sid["InsightsState"]["Resource"] == insights_arn
        index = by_sid["IndexInsightsEvents"]
        assert set(_listed(index["Action"])) == {"dynamodb:BatchWriteItem", "dynamodb:PutItem"}
        assert index["Resource"] == history_arn
        assert index["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(HISTORY_LEADING_KEYS)}}
        files = by_sid["WriteInsightsFiles"]
        assert set(_listed(files["Action"])) == {"s3:PutObject", "s3:GetObject"}
        assert files["Resource"]["Fn::Join"][1][-1] == f"/{prefix}AWSLogs/*/CloudTrail-Insight/*"
        put_events = by_sid["SendInsightsEvents"]
        assert put_events["Action"] == "events:PutEvents"
        assert put_events["Resource"] == "arn:aws:events:us-east-1:123456789012:event-bus/default"
        # nothing else on S3, no other table, no wildcard actions
        dynamo = [s for s in statements if any(a.startswith("dynamodb:") for a in _listed(s["Action"]))]
        assert all(s["Resource"] in (insights_arn, history_arn, ledger_arn) for s in dynamo)
        state = by_sid["TrailState"]  # the trails' logging state and status, nothing else of the ledger
        assert set(_listed(state["Action"])) == {"dynamodb:Query", "dynamodb:UpdateItem"}
        assert state["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["TRAILSTATE"]}}
        assert "TrailCloudWatchLogs" not in by_sid  # no trail delivers to CloudWatch Logs
        actions = _actions(statements)
        assert not {a for a in actions if a.startswith("s3:")} - {"s3:PutObject", "s3:GetObject"}
        assert not {a for a in actions if a.startswith("sqs:")}
        assert not any(a.endswith(":*") or a == "*" for a in actions if not a.startswith("xray:"))


def test_insights_without_eventbridge_has_no_put_events(quiet_synth: Any) -> None:
    actions = _actions(quiet_synth.role_policy_statements(INSIGHTS_HANDLER))
    assert "events:PutEvents" not in actions


def test_batcher_may_only_put_aggregates_into_the_insights_table(default_synth: Any) -> None:
    arn = {"Fn::GetAtt": [_table_id(default_synth, "InsightsStore"), "Arn"]}
    granted = [s for s in default_synth.role_policy_statements(BATCHER_HANDLER) if arn in _listed(s["Resource"])]
    (statement,) = granted
    assert set(_listed(statement["Action"])) == {"dynamodb:PutItem", "dynamodb:BatchWriteItem"}
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["M#*"]}}


def test_insights_config_rejects_bad_values() -> None:
    from infra.config import ConfigError, load_config

    for key, value in (("insightsScheduleMinutes", 0), ("insightsSensitivity", "max"), ("insightsEventBridge", "yes")):
        with pytest.raises(ConfigError, match=key):
            load_config({key: value})


TRAILS = [
    {"Name": "audit", "S3KeyPrefix": "audit"},
    {
        "Name": "security",
        "S3KeyPrefix": "security",
        "EventSelectors": [{"ReadWriteType": "WriteOnly"}],
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}],
        "Deliveries": {"CloudWatchLogs": True, "EventBridge": True},
    },
]


@pytest.fixture(scope="module")
def trails_synth() -> Any:
    return synth({"trails": TRAILS, "insightsEventBridge": False})


def test_insights_per_trail_grants_only_its_prefix_group_and_bus(trails_synth: Any) -> None:
    statements = trails_synth.role_policy_statements(INSIGHTS_HANDLER)
    by_sid = {s.get("Sid"): s for s in statements}
    files = by_sid["WriteInsightsFiles"]
    assert files["Resource"]["Fn::Join"][1][-1] == "/security/AWSLogs/*/CloudTrail-Insight/*"  # not audit/
    logs = by_sid["TrailCloudWatchLogs"]
    assert set(_listed(logs["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert all("opentrail/security" in json.dumps(arn) for arn in _listed(logs["Resource"]))
    # insightsEventBridge is off, but the security trail delivers to EventBridge
    assert by_sid["SendInsightsEvents"]["Action"] == "events:PutEvents"
    _, function = trails_synth.function(INSIGHTS_HANDLER)
    env = function["Properties"]["Environment"]["Variables"]
    assert env["EVENT_BUS"] == "default"
    assert env["EVENT_BRIDGE_ALL"] == "false"
    assert [t["Name"] for t in json.loads(env["TRAILS"])] == ["audit", "security"]


def test_no_insights_trail_no_insights_function_or_table() -> None:
    quiet = synth({"trails": [{"Name": "audit"}]})
    template = quiet.template.to_json()
    assert not [f for f in quiet.resources("AWS::Lambda::Function").values() if INSIGHTS_HANDLER in json.dumps(f)]
    assert not [t for t in template["Resources"] if t.startswith("InsightsStore")]
    _, batcher = quiet.function(BATCHER_HANDLER)
    assert batcher["Properties"]["Environment"]["Variables"]["INSIGHTS_TABLE"] == ""
    assert "InsightsFunctionName" not in template.get("Outputs", {})


def test_insight_selectors_must_match_what_the_trail_logs() -> None:
    from infra.config import ConfigError, load_config

    reads_only = {"Name": "reads", "EventSelectors": [{"ReadWriteType": "ReadOnly"}]}
    with pytest.raises(ConfigError, match=r"trail 'reads': InsightSelectors\[0\]: ApiCallRateInsight"):
        load_config({"trails": [{**reads_only, "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]}]})
    load_config({"trails": [{**reads_only, "InsightSelectors": [{"InsightType": "ApiErrorRateInsight"}]}]})
    with pytest.raises(ConfigError, match="InsightType: must be one of"):
        load_config({"trails": [{"Name": "x1x", "InsightSelectors": [{"InsightType": "Spikes"}]}]})


def test_nag_insights_per_trail_has_no_unacknowledged_findings(trails_synth: Any) -> None:
    from test_infra_nag import _findings

    assert _findings(trails_synth) == []
