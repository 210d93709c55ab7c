"""Every function comes from the one factory: runtime, layer, tracing, logs, env contract, grants."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

from infra.config import POWERTOOLS_LAYER_PARAMETER, POWERTOOLS_VERSION
from infra.function import BATCHER_HANDLER, EVENTBRIDGE_CAPTURE_HANDLER, INGEST_HANDLER
from infra.history import QUERY_HANDLER
from infra.insights import INSIGHTS_HANDLER
from infra.integrity import DIGESTER_HANDLER
from opentrail.settings import (
    BatcherSettings,
    DigesterSettings,
    EventBridgeCaptureSettings,
    IngestSettings,
    InsightsSettings,
    QuerySettings,
    Settings,
)

SETTINGS: dict[str, type[Settings]] = {
    INGEST_HANDLER: IngestSettings,
    EVENTBRIDGE_CAPTURE_HANDLER: EventBridgeCaptureSettings,
    BATCHER_HANDLER: BatcherSettings,
    QUERY_HANDLER: QuerySettings,
    DIGESTER_HANDLER: DigesterSettings,
    INSIGHTS_HANDLER: InsightsSettings,
}
ROOT = Path(__file__).resolve().parents[2]
LAYER = "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:{}"


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


def test_functions_are_exactly_the_known_handlers(default_synth: Any) -> None:
    handlers = {f["Properties"]["Handler"] for f in default_synth.resources("AWS::Lambda::Function").values()}
    assert handlers == set(SETTINGS)


@pytest.mark.parametrize("handler", sorted(SETTINGS))
def test_function_environment_matches_settings_model(default_synth: Any, handler: str) -> None:
    _, function = default_synth.function(handler)
    assert set(function["Properties"]["Environment"]["Variables"]) == SETTINGS[handler].env_names()


@pytest.mark.parametrize("handler", sorted(SETTINGS))
def test_function_runtime_layer_tracing_and_log_group(default_synth: Any, handler: str) -> None:
    _, function = default_synth.function(handler)
    props = function["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["x86_64"]
    [layer] = props["Layers"]
    parameter = default_synth.template.to_json()["Parameters"][layer["Ref"]]
    assert parameter == {"Type": "AWS::SSM::Parameter::Value<String>", "Default": POWERTOOLS_LAYER_PARAMETER}
    assert props["TracingConfig"] == {"Mode": "Active"}
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = default_synth.resources("AWS::Logs::LogGroup")[log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == 30


def test_default_layer_is_the_one_published_for_the_pinned_powertools() -> None:
    # requirements.txt pins what the tests ran on; the deployed layer must carry the same version
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert (
        pins["aws-lambda-powertools[tracer,parser]"]
        == POWERTOOLS_VERSION
        == importlib.metadata.version("aws-lambda-powertools")
    )


def test_function_layer_version_and_retention_follow_config(variant_synth: Any) -> None:
    for handler in SETTINGS:
        _, function = variant_synth.function(handler)
        assert function["Properties"]["Layers"] == [LAYER.format(31)]
        log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert variant_synth.resources("AWS::Logs::LogGroup")[log_group_id]["Properties"]["RetentionInDays"] == 90


def test_function_roles_have_no_managed_policies(default_synth: Any) -> None:
    for handler in SETTINGS:
        _, function = default_synth.function(handler)
        role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
        role = default_synth.resources("AWS::IAM::Role")[role_id]
        assert "ManagedPolicyArns" not in role["Properties"]


def test_ingest_channel_arns_is_the_configured_channel(default_synth: Any, variant_synth: Any) -> None:
    for synth, channel in ((default_synth, "opentrail"), (variant_synth, "payments")):
        _, function = synth.function(INGEST_HANDLER)
        value = function["Properties"]["Environment"]["Variables"]["CHANNEL_ARNS"]
        assert str(value).endswith(f":cloudtrail:us-east-1:123456789012:channel/{channel}"), value


@pytest.mark.parametrize("handler", [INGEST_HANDLER, EVENTBRIDGE_CAPTURE_HANDLER])
def test_capture_functions_only_send_to_buffer(default_synth: Any, handler: str) -> None:
    actions = _actions(default_synth.role_policy_statements(handler))
    assert not any(a.startswith(("s3:", "dynamodb:")) for a in actions), actions
    assert "sqs:SendMessage" in actions
    assert not {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & actions


def test_batcher_policy_is_scoped(default_synth: Any, variant_synth: Any) -> None:
    for synth, prefix in ((default_synth, ""), (variant_synth, "audit/prod/")):
        statements = synth.role_policy_statements(BATCHER_HANDLER)
        actions = _actions(statements)
        assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"} <= actions
        assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem", "dynamodb:Query"} <= actions
        assert {"kms:Decrypt", "kms:Encrypt"} <= actions
        s3_statements = {s["Sid"]: s for s in statements if any(a.startswith("s3:") for a in _actions([s]))}
        assert set(s3_statements) == {"WriteLogFiles", "FindLogFileVersions"}
        objects = s3_statements["WriteLogFiles"]
        assert _actions([objects]) == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"}
        assert objects["Resource"]["Fn::Join"][1][-1] == f"/{prefix}AWSLogs/*"
        listing = s3_statements["FindLogFileVersions"]
        assert _actions([listing]) == {"s3:ListBucket", "s3:ListBucketVersions"}
        assert listing["Resource"]["Fn::GetAtt"][1] == "Arn"
        assert not any(a.endswith(":*") or a == "*" for a in actions if not a.startswith("xray:"))


def test_lambda_asset_ships_handlers_but_not_the_command_line(default_synth: Any) -> None:
    """The asset directory CDK staged for the functions: runtime code in, CLI/local mode out."""
    from pathlib import Path

    assets = [p for p in Path(default_synth.app.outdir).iterdir() if p.is_dir() and p.name.startswith("asset.")]
    shipped = {str(f.relative_to(asset)) for asset in assets for f in asset.rglob("*.py")}

    assert "opentrail/handlers/batcher.py" in shipped
    assert "opentrail/handlers/query.py" in shipped
    assert not {"opentrail/cli.py", "opentrail/lookup_cli.py", "opentrail/validate_logs.py"} & shipped
    assert not any(path.startswith("opentrail/local/") for path in shipped)
