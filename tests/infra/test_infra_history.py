"""History: the LookupFunction, its read-only grants on the history table, and ``POST /`` with AWS_IAM."""

from __future__ import annotations

import json
from typing import Any

from infra.history import QUERY_HANDLER
from opentrail.settings import QuerySettings


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _history_id(synth: Any) -> str:
    history_id, _ = synth.one("AWS::DynamoDB::Table", prefix="BatcherEventHistory")
    return str(history_id)


def _root_post(synth: Any) -> dict[str, Any]:
    _, method = synth.one(
        "AWS::ApiGateway::Method",
        lambda r: r["Properties"]["HttpMethod"] == "POST" and "Fn::GetAtt" in r["Properties"]["ResourceId"],
    )
    return method


def test_history_lookup_function_environment_is_query_settings(default_synth: Any, variant_synth: Any) -> None:
    for synth, days in ((default_synth, "90"), (variant_synth, "90")):
        _, function = synth.function(QUERY_HANDLER)
        variables = function["Properties"]["Environment"]["Variables"]
        assert set(variables) == QuerySettings.env_names()
        assert variables["HISTORY_TABLE"] == {"Ref": _history_id(synth)}
        assert variables["HISTORY_RETENTION_DAYS"] == days


def test_history_lookup_function_retention_follows_config() -> None:
    from tests.infra.conftest import synth

    _, function = synth({"historyRetentionDays": 365}).function(QUERY_HANDLER)
    assert function["Properties"]["Environment"]["Variables"]["HISTORY_RETENTION_DAYS"] == "365"


def test_history_lookup_function_reads_the_history_table_only(default_synth: Any) -> None:
    history_arn = {"Fn::GetAtt": [_history_id(default_synth), "Arn"]}
    statements = default_synth.role_policy_statements(QUERY_HANDLER)
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in _list(s["Action"]))]
    by_sid = {s["Sid"]: s for s in dynamodb}
    # + ListPublicKeys: Query on the ledger's PUBLICKEY partition (infra/integrity.py, test_infra_integrity.py)
    # + TrailState: the ledger's TRAILSTATE partition (trail operations, docs/trails.md)
    assert set(by_sid) == {"ReadHistory", "CreateNextTokenKey", "ListPublicKeys", "TrailState"}
    state = by_sid["TrailState"]
    assert set(_list(state["Action"])) == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"}
    assert state["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["TRAILSTATE"]}}
    read = by_sid["ReadHistory"]
    assert set(_list(read["Action"])) == {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchGetItem"}
    assert _list(read["Resource"]) == [history_arn]
    assert "Condition" not in read
    put = by_sid["CreateNextTokenKey"]
    assert _list(put["Action"]) == ["dynamodb:PutItem"]
    assert _list(put["Resource"]) == [history_arn]
    assert put["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["CONFIG"]}}


def test_history_lookup_function_touches_nothing_else(default_synth: Any) -> None:
    key_id, _ = default_synth.one("AWS::KMS::Key", prefix="LogArchive")
    actions: set[str] = set()
    for statement in default_synth.role_policy_statements(QUERY_HANDLER):
        statement_actions = set(_list(statement["Action"]))
        actions |= statement_actions
        if any(a.startswith("kms:") for a in statement_actions):
            assert _list(statement["Resource"]) == [{"Fn::GetAtt": [key_id, "Arn"]}]
    assert not any(a.startswith(("s3:", "sqs:")) for a in actions), actions
    assert not {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} & actions
    for statement in default_synth.role_policy_statements(QUERY_HANDLER):
        if "dynamodb:UpdateItem" in _list(statement["Action"]):  # only the trail state items
            assert statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] == ["TRAILSTATE"]
    assert {a for a in actions if a.startswith("kms:")} == {
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    }
    assert not any(a.endswith("*") for a in actions if not a.startswith(("xray:", "logs:"))), actions


def test_history_post_root_is_an_iam_lambda_proxy_to_the_lookup_function(default_synth: Any) -> None:
    lookup_id, _ = default_synth.function(QUERY_HANDLER)
    props = _root_post(default_synth)["Properties"]
    assert props["AuthorizationType"] == "AWS_IAM"
    assert props["Integration"]["Type"] == "AWS_PROXY"
    assert lookup_id in json.dumps(props["Integration"]["Uri"])
    assert props["RequestParameters"] == {"method.request.header.X-Amz-Target": True}
    assert "RequestValidatorId" in props


def test_history_every_method_of_the_api_requires_iam(default_synth: Any) -> None:
    methods = default_synth.resources("AWS::ApiGateway::Method")
    assert len(methods) == 2
    assert {m["Properties"]["AuthorizationType"] for m in methods.values()} == {"AWS_IAM"}


def test_history_query_api_url_output_is_the_stage_url(default_synth: Any) -> None:
    outputs = default_synth.template.find_outputs("*")
    assert outputs["QueryApiUrl"]["Value"] == outputs["IngestApiUrl"]["Value"]
    assert "DeploymentStagev1" in json.dumps(outputs["QueryApiUrl"]["Value"])


def test_history_lookup_function_only_invoked_by_the_api(default_synth: Any) -> None:
    lookup_id, _ = default_synth.function(QUERY_HANDLER)
    permissions = [
        p for p in default_synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [lookup_id, "Arn"]}
    ]  # fmt: skip
    assert permissions
    for permission in permissions:
        assert permission["Properties"]["Principal"] == "apigateway.amazonaws.com"
        assert "SourceArn" in permission["Properties"]
