"""Trails in cdk.json (validated at synth, every function gets them) and multi-region stacks
(docs/trails.md): the home stack owns the bucket, the other regions write into it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cdk_nag import AwsSolutionsChecks

from infra.config import ConfigError, load_config
from infra.function import BATCHER_HANDLER
from infra.history import QUERY_HANDLER
from infra.integrity import DIGESTER_HANDLER
from tests.infra.conftest import Synth, cdk_context

HOME_BUCKET = "opentrail-logbucket-home123"
HOME_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
HOME_LEDGER = "OpenTrail-BatcherLedger1234-ABCDEFGHIJ"
TRAILS = [
    {"Name": "opentrail"},
    {"Name": "security", "S3KeyPrefix": "security", "EventSelectors": [{"ReadWriteType": "WriteOnly"}]},
    {"Name": "home-only", "S3KeyPrefix": "home", "IsMultiRegionTrail": False, "LogFileValidationEnabled": False},
]
MULTI = {
    "trails": TRAILS,
    "regions": ["us-east-1", "eu-west-1"],
    "homeRegion": "us-east-1",
    "homeLogBucket": HOME_BUCKET,
    "homeKmsKeyArn": HOME_KEY,
    "homeLedgerTable": HOME_LEDGER,
}


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        ({"trails": [{"Name": "a"}]}, "trails", "trail 'a': Name: 3-128 characters"),
        (
            {"trails": [{"Name": "audit", "EventSelectors": [{"ReadWriteType": "Some"}]}]},
            "trails",
            "trail 'audit': EventSelectors[0].ReadWriteType: must be ReadOnly, WriteOnly or All",
        ),
        ({"trails": [{"Name": f"trail-{i}"} for i in range(6)]}, "trails", "1 to 5 trails"),
        ({"trails": []}, "trails", "1 to 5 trails"),
        ({"trails": [{"Name": "audit"}], "trailName": "other"}, "trailName", "leave it unset when trails is set"),
        (
            {"trails": [{"Name": "audit", "LogFileValidationEnabled": True}], "logFileValidation": False},
            "trails",
            "trail 'audit': LogFileValidationEnabled: needs logFileValidation true",
        ),
        ({"regions": ["us-east-1", "us-east-1"]}, "regions", "unique region names"),
        ({"regions": ["mars-1"]}, "regions", "region names"),
        ({"regions": ["us-east-1"], "homeRegion": "eu-west-1"}, "homeRegion", "one of regions"),
        ({"regions": ["us-east-1", "eu-west-1"]}, "homeLogBucket", "deploy the home region first"),
        (
            {"regions": ["us-east-1", "eu-west-1"], "homeLogBucket": HOME_BUCKET, "homeKmsKeyArn": "alias/x"},
            "homeKmsKeyArn",
            "LogKmsKeyArn",
        ),
        (
            {
                "regions": ["us-east-1", "eu-west-1"],
                "homeLogBucket": HOME_BUCKET,
                "homeKmsKeyArn": HOME_KEY.replace("us-east-1", "eu-west-1"),
            },
            "homeKmsKeyArn",
            "arn:aws:kms:us-east-1:",
        ),
        (
            {"regions": ["us-east-1", "eu-west-1"], "homeLogBucket": HOME_BUCKET, "homeKmsKeyArn": HOME_KEY},
            "homeLedgerTable",
            "LedgerTableName output",
        ),
        (
            {
                "regions": ["us-east-1", "eu-west-1"],
                "homeLogBucket": HOME_BUCKET,
                "homeKmsKeyArn": HOME_KEY,
                "homeLedgerTable": "a table",
            },
            "homeLedgerTable",
            "LedgerTableName output",
        ),
        ({"homeLogBucket": HOME_BUCKET}, "homeLogBucket", "only with regions"),
        ({"homeLedgerTable": HOME_LEDGER}, "homeLedgerTable", "only with regions"),
        (
            {
                "trails": [
                    {
                        "Name": f"trail-{i}",
                        "EventSelectors": [
                            {
                                "DataResources": [
                                    {"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::b{j:04}/" for j in range(40)]}
                                ]
                            }
                        ],
                    }
                    for i in range(5)
                ]
            },
            "trails",
            "Lambda's environment",
        ),
    ],
)
def test_invalid_trails_and_regions_fail_naming_key_trail_and_field(
    overrides: dict[str, Any], key: str, text: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(overrides)

    assert raised.value.key == key
    assert str(raised.value).startswith(f"opentrail.{key}: ")
    assert text in str(raised.value)


def test_default_trail_comes_from_trail_name_and_prefix() -> None:
    (trail,) = load_config({"trailName": "audit", "s3KeyPrefix": "logs"}).trail_list

    assert (trail.name, trail.s3_key_prefix, trail.log_file_validation_enabled) == ("audit", "logs", True)
    assert not load_config({"logFileValidation": False}).trail_list[0].log_file_validation_enabled


def synth_regions(overrides: dict[str, Any]) -> dict[str, Synth]:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from app import build_stacks

    context = cdk_context()
    context["opentrail"] = {**context["opentrail"], **overrides}
    app = App(context=context)
    stacks = build_stacks(app, load_config(context["opentrail"]), account="123456789012", region=None)
    return {stack.region: Synth(app=app, stack=stack, template=Template.from_stack(stack)) for stack in stacks}


@pytest.fixture(scope="module")
def regions() -> dict[str, Synth]:
    return synth_regions(MULTI)


def env(synth: Synth, handler: str) -> dict[str, str]:
    _, function = synth.function(handler)
    variables: dict[str, str] = function["Properties"]["Environment"]["Variables"]
    return variables


def test_two_stacks_home_keeps_the_stack_name(regions: dict[str, Synth]) -> None:
    assert {region: synth.stack.stack_name for region, synth in regions.items()} == {
        "us-east-1": "OpenTrail",
        "eu-west-1": "OpenTrail-eu-west-1",
    }


def test_only_the_home_region_owns_a_bucket(regions: dict[str, Synth]) -> None:
    assert len(regions["us-east-1"].resources("AWS::S3::Bucket")) == 2  # log bucket + access log bucket
    assert regions["eu-west-1"].resources("AWS::S3::Bucket") == {}


def test_non_home_batcher_writes_to_the_home_bucket_with_the_home_key(regions: dict[str, Synth]) -> None:
    other = regions["eu-west-1"]
    variables = env(other, BATCHER_HANDLER)
    statements = other.role_policy_statements(BATCHER_HANDLER)
    write = next(s for s in statements if s.get("Sid") == "WriteLogFiles")
    rendered = json.dumps(write["Resource"])

    assert variables["LOG_BUCKET"] == HOME_BUCKET
    assert variables["LOG_KMS_KEY_ARN"] == HOME_KEY
    assert f":s3:::{HOME_BUCKET}/AWSLogs/*" in rendered
    assert f":s3:::{HOME_BUCKET}/security/AWSLogs/*" in rendered
    kms = [s for s in statements if any(str(a).startswith("kms:") for a in s["Action"])]
    assert any(HOME_KEY in json.dumps(s["Resource"]) for s in kms)
    # the home-only trail (IsMultiRegionTrail false) records in the home region only
    assert [t["Name"] for t in json.loads(variables["TRAILS"])] == ["opentrail", "security"]
    home_trails = json.loads(env(regions["us-east-1"], BATCHER_HANDLER)["TRAILS"])
    assert [t["Name"] for t in home_trails] == ["opentrail", "security", "home-only"]


def test_non_home_digester_and_query_name_the_home_region(regions: dict[str, Synth]) -> None:
    other, home = regions["eu-west-1"], regions["us-east-1"]

    assert env(other, DIGESTER_HANDLER)["HOME_REGION"] == "us-east-1"
    assert env(other, DIGESTER_HANDLER)["LOG_BUCKET"] == HOME_BUCKET
    assert env(other, QUERY_HANDLER)["HOME_REGION"] == "us-east-1"
    assert env(home, DIGESTER_HANDLER)["HOME_REGION"] == ""
    digests = next(s for s in other.role_policy_statements(DIGESTER_HANDLER) if s.get("Sid") == "WriteDigests")
    rendered = json.dumps(digests["Resource"])
    assert f":s3:::{HOME_BUCKET}/AWSLogs/*/CloudTrail-Digest/*" in rendered
    assert "home/AWSLogs" not in rendered  # the home-only trail has no digests (and is not recorded here)


def test_home_stack_exports_what_the_other_regions_need(regions: dict[str, Synth]) -> None:
    outputs = regions["us-east-1"].template.find_outputs("*")

    assert {"LogBucketName", "LogKmsKeyArn", "LedgerTableName"} <= set(outputs)


@pytest.mark.parametrize("handler", [BATCHER_HANDLER, DIGESTER_HANDLER, QUERY_HANDLER])
def test_non_home_functions_read_the_logging_state_in_the_home_ledger(regions: dict[str, Synth], handler: str) -> None:
    other, home = regions["eu-west-1"], regions["us-east-1"]

    assert env(other, handler)["HOME_LEDGER_TABLE"] == HOME_LEDGER
    assert env(home, handler)["HOME_LEDGER_TABLE"] == ""  # the home region's own ledger
    statements = {s.get("Sid"): s for s in other.role_policy_statements(handler)}
    read = statements["ReadHomeTrailState"]
    assert sorted(read["Action"]) == ["dynamodb:GetItem", "dynamodb:Query"]  # no writes: StopLogging is home's
    assert f":dynamodb:us-east-1:123456789012:table/{HOME_LEDGER}" in json.dumps(read["Resource"])
    assert read["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["TRAILSTATE"]}}
    assert statements["DecryptHomeTrailState"]["Resource"] == HOME_KEY
    home_sids = {s.get("Sid") for s in home.role_policy_statements(handler)}
    assert not home_sids & {"ReadHomeTrailState", "DecryptHomeTrailState"}


def test_multi_region_stacks_have_no_unacknowledged_nag_findings(regions: dict[str, Synth]) -> None:
    synth = regions["eu-west-1"]
    report = AwsSolutionsChecks(synth.app).validate_scope(synth.app)
    findings = [
        f"{violation.rule_name} at {resource.locations}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]

    assert findings == []


# IAM: "the aggregate size of all inline policies of a role" is at most 10,240 characters
# (whitespace not counted); CloudFormation fails the deploy, not the synth, past it.
ROLE_POLICY_LIMIT = 10_240


def _rendered(value: Any) -> Any:
    """A policy document with CloudFormation's intrinsics replaced by values at least as long
    as the deployed ones (a pseudo parameter 16 characters, any other reference an ARN of 160)."""
    if isinstance(value, list):
        return [_rendered(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(str(_rendered(part)) for part in parts)
    if "Ref" in value:
        return "x" * (16 if str(value["Ref"]).startswith("AWS::") else 160)
    if "Fn::GetAtt" in value or "Fn::ImportValue" in value or "Fn::Select" in value:
        return "x" * 160
    return {key: _rendered(item) for key, item in value.items()}


def test_the_largest_configuration_keeps_every_role_policy_under_the_iam_limit() -> None:
    # five trails, each with its own prefix, Insights and every delivery, in two regions
    trails = [
        {
            "Name": f"trail-{index}",
            "S3KeyPrefix": f"team-{index}/audit/logs",
            "InsightSelectors": [{"InsightType": kind} for kind in ("ApiCallRateInsight", "ApiErrorRateInsight")],
            "Deliveries": {
                "CloudWatchLogs": f"opentrail/trail-{index}-audit-log-group",
                "EventBridge": True,
                "SnsTopic": True,
            },
        }
        for index in range(5)
    ]
    sizes = {}
    for region, synth in synth_regions({**MULTI, "trails": trails}).items():
        for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
            document = _rendered(policy["Properties"]["PolicyDocument"])
            sizes[f"{region} {logical_id}"] = len(json.dumps(document, separators=(",", ":")))

    assert max(sizes.values()) < ROLE_POLICY_LIMIT, sizes


# Lambda: all environment variables of a function (names and values) take at most 4 KB.
LAMBDA_ENVIRONMENT_LIMIT = 4096


def test_trails_at_the_size_cap_keep_every_function_environment_under_4_kb() -> None:
    def trails(group_chars: int) -> list[dict[str, Any]]:
        return [
            {
                "Name": f"trail-{index}-{'x' * 30}",
                "S3KeyPrefix": f"team-{index}/{'p' * 40}",
                "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}],
                "EventSelectors": [{"ReadWriteType": "All", "ExcludeManagementEventSources": ["kms.amazonaws.com"]}],
                "Deliveries": {
                    "CloudWatchLogs": f"g{index}-{'g' * group_chars}",
                    "EventBridge": True,
                    "SnsTopic": True,
                },
            }
            for index in range(5)
        ]

    def accepted(group_chars: int) -> bool:
        try:
            load_config({**MULTI, "trails": trails(group_chars)})
        except ConfigError as error:
            assert "Lambda's environment" in str(error)
            return False
        return True

    # the longest trails the synth accepts (MAX_TRAILS_JSON_BYTES)
    chars = 1
    while accepted(chars + 1):
        chars += 1
    sizes = {}
    for region, synth in synth_regions({**MULTI, "trails": trails(chars)}).items():
        for function in synth.resources("AWS::Lambda::Function").values():
            variables = _rendered(function["Properties"]["Environment"]["Variables"])
            name = f"{region} {function['Properties']['Handler']}"
            sizes[name] = sum(len(key) + len(str(value)) for key, value in variables.items())

    assert max(sizes.values()) < LAMBDA_ENVIRONMENT_LIMIT, sizes
