"""Integrity construct: signing key, DigesterFunction (least privilege), hourly schedule,
ListPublicKeys access for the query function, and the logFileValidation knob."""

from __future__ import annotations

import json
from typing import Any

from conftest import synth

from infra.history import QUERY_HANDLER
from infra.integrity import DIGESTER_HANDLER


def _key(synth_: Any) -> tuple[str, dict[str, Any]]:
    return synth_.one("AWS::KMS::Key", lambda r: r["Properties"].get("KeySpec") == "RSA_2048")


def _actions(statement: dict[str, Any]) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


def test_signing_key_is_rsa_sign_verify_and_retained(default_synth: Any) -> None:
    _, key = _key(default_synth)
    assert key["Properties"]["KeyUsage"] == "SIGN_VERIFY"
    assert key["DeletionPolicy"] == "Retain"
    assert key["UpdateReplacePolicy"] == "Retain"


def test_only_the_digester_may_sign(default_synth: Any) -> None:
    _, key = _key(default_synth)
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    signers = [s for s in statements if "kms:Sign" in _actions(s) or "kms:*" in _actions(s)]
    assert len(signers) == 1
    _, function = default_synth.function(DIGESTER_HANDLER)
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    assert signers[0]["Principal"] == {"AWS": {"Fn::GetAtt": [role, "Arn"]}}
    assert _actions(signers[0]) == {"kms:Sign", "kms:GetPublicKey"}
    admin = next(s for s in statements if s.get("Sid") == "KeyAdministration")
    assert not any(a in ("kms:*", "kms:Sign") or a.startswith("kms:Sign") for a in _actions(admin))


def test_digester_policy_is_least_privilege(default_synth: Any, variant_synth: Any) -> None:
    for synth_, prefix in ((default_synth, ""), (variant_synth, "audit/prod/")):
        statements = synth_.role_policy_statements(DIGESTER_HANDLER)
        key_id, _ = _key(synth_)
        sign = next(s for s in statements if s.get("Sid") == "SignDigests")
        assert sign["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
        assert _actions(sign) == {"kms:Sign", "kms:GetPublicKey"}
        write = next(s for s in statements if s.get("Sid") == "WriteDigests")
        assert _actions(write) == {"s3:PutObject", "s3:GetObject"}
        assert json.dumps(write["Resource"]).endswith(f'"/{prefix}AWSLogs/*/CloudTrail-Digest/*"]]}}')
        s3_actions = {a for s in statements for a in _actions(s) if a.startswith("s3:")}
        assert s3_actions == {"s3:PutObject", "s3:GetObject"}
        ledger = next(s for s in statements if s.get("Sid") == "LedgerAndChainHeads")
        assert _actions(ledger) == {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
        kms_actions = {a for s in statements for a in _actions(s) if a.startswith("kms:")}
        assert "kms:Sign" in kms_actions
        assert not {"kms:*", "kms:CreateGrant", "kms:ScheduleKeyDeletion"} & kms_actions


def test_digester_runs_hourly_after_the_batcher_delay(default_synth: Any, variant_synth: Any) -> None:
    for synth_, minute, delay in ((default_synth, 5, "300"), (variant_synth, 6, "360")):
        _, function = synth_.function(DIGESTER_HANDLER)
        assert function["Properties"]["Environment"]["Variables"]["DIGEST_DELAY_SECONDS"] == delay
        _, rule = synth_.one(
            "AWS::Events::Rule", lambda r: "cron" in str(r["Properties"].get("ScheduleExpression", ""))
        )
        assert rule["Properties"]["ScheduleExpression"] == f"cron({minute} * * * ? *)"
        assert json.loads(rule["Properties"]["Targets"][0]["Input"]) == {"action": "scheduled"}


def test_query_function_reads_only_the_public_key_partition(default_synth: Any) -> None:
    _, function = default_synth.function(QUERY_HANDLER)
    ledger = function["Properties"]["Environment"]["Variables"]["LEDGER_TABLE"]
    assert ledger == {"Ref": default_synth.one("AWS::DynamoDB::Table", prefix="BatcherDeliveryLedger")[0]}
    statement = next(s for s in default_synth.role_policy_statements(QUERY_HANDLER) if s.get("Sid") == "ListPublicKeys")
    assert _actions(statement) == {"dynamodb:Query"}
    assert statement["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["PUBLICKEY"]}}


def test_outputs_name_the_signing_key(default_synth: Any) -> None:
    outputs = default_synth.template.find_outputs("DigestSigningKeyArn")
    key_id, _ = _key(default_synth)
    assert outputs["DigestSigningKeyArn"]["Value"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_log_file_validation_off_leaves_integrity_out() -> None:
    off = synth({"logFileValidation": False})
    assert all(k["Properties"].get("KeySpec") != "RSA_2048" for k in off.resources("AWS::KMS::Key").values())
    handlers = {f["Properties"]["Handler"] for f in off.resources("AWS::Lambda::Function").values()}
    assert DIGESTER_HANDLER not in handlers
    assert not off.template.find_outputs("DigestSigningKeyArn")
