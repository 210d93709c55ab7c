"""Security and behaviour properties of the synthesized template (one synth per configuration)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.buffer import MAX_RECEIVE_COUNT
from infra.function import BATCHER_HANDLER, EVENTBRIDGE_CAPTURE_HANDLER, INGEST_HANDLER
from infra.tables import TTL_ATTRIBUTE
from opentrail.local import resources as local


def _key_id(synth: Any) -> str:
    key_id, _ = synth.one("AWS::KMS::Key", prefix="LogArchive")
    return str(key_id)


def _log_bucket(synth: Any) -> Any:
    return synth.one("AWS::S3::Bucket", lambda r: "VersioningConfiguration" in r["Properties"])


def _access_log_bucket(synth: Any) -> Any:
    return synth.one("AWS::S3::Bucket", lambda r: "VersioningConfiguration" not in r["Properties"])


def _queue(synth: Any, *, dead_letter: bool) -> Any:
    return synth.one("AWS::SQS::Queue", lambda r: ("RedrivePolicy" in r["Properties"]) != dead_letter, prefix="Buffer")


# --- LogArchive -------------------------------------------------------------------------------


def test_log_archive_key_rotates_and_is_retained(default_synth: Any) -> None:
    _, key = default_synth.one("AWS::KMS::Key", prefix="LogArchive")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_log_archive_bucket_uses_sse_kms_with_project_key_and_bucket_keys(default_synth: Any) -> None:
    _, bucket = _log_bucket(default_synth)
    (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [_key_id(default_synth), "Arn"]}
    assert rule["BucketKeyEnabled"] is True
    assert bucket["DeletionPolicy"] == "Retain"


def test_log_archive_bucket_is_versioned(default_synth: Any) -> None:
    _, bucket = _log_bucket(default_synth)
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}


def test_log_archive_access_log_bucket_uses_sse_s3(default_synth: Any) -> None:
    _, bucket = _access_log_bucket(default_synth)
    (rule,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_log_archive_buckets_block_all_public_access(default_synth: Any) -> None:
    buckets = default_synth.resources("AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }


def test_log_archive_buckets_deny_requests_without_tls(default_synth: Any) -> None:
    policies = default_synth.resources("AWS::S3::BucketPolicy")
    protected: set[str] = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny"
                assert statement["Action"] == "s3:*"
                protected.add(policy["Properties"]["Bucket"]["Ref"])
    assert protected == set(default_synth.resources("AWS::S3::Bucket"))


def test_log_archive_bucket_sends_access_logs_to_access_log_bucket(default_synth: Any) -> None:
    access_id, _ = _access_log_bucket(default_synth)
    _, bucket = _log_bucket(default_synth)
    assert bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": access_id}


def test_log_archive_lifecycle_defaults(default_synth: Any) -> None:
    _, bucket = _log_bucket(default_synth)
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Transitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 90}]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert "ExpirationInDays" not in rule


def test_log_archive_lifecycle_as_configured(variant_synth: Any) -> None:
    _, bucket = _log_bucket(variant_synth)
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Transitions"] == [{"StorageClass": "DEEP_ARCHIVE", "TransitionInDays": 30}]
    assert rule["ExpirationInDays"] == 2555
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}


def test_log_archive_access_logging_disabled_creates_no_access_log_bucket(variant_synth: Any) -> None:
    (bucket,) = variant_synth.resources("AWS::S3::Bucket").values()
    assert "LoggingConfiguration" not in bucket["Properties"]


# --- Buffer -----------------------------------------------------------------------------------


def test_buffer_queues_are_encrypted_with_project_key(default_synth: Any) -> None:
    key = {"Fn::GetAtt": [_key_id(default_synth), "Arn"]}
    for dead_letter in (False, True):
        _, queue = _queue(default_synth, dead_letter=dead_letter)
        assert queue["Properties"]["KmsMasterKeyId"] == key


def test_buffer_redrives_to_dead_letter_queue_after_five_receives(default_synth: Any) -> None:
    dlq_id, _ = _queue(default_synth, dead_letter=True)
    _, queue = _queue(default_synth, dead_letter=False)
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    assert local.MAX_RECEIVE_COUNT == MAX_RECEIVE_COUNT


def test_buffer_visibility_timeout_is_six_times_batcher_timeout(default_synth: Any, variant_synth: Any) -> None:
    for synth, timeout in ((default_synth, 120), (variant_synth, 300)):
        _, queue = _queue(synth, dead_letter=False)
        assert queue["Properties"]["VisibilityTimeout"] == 6 * timeout
        _, batcher = synth.function(BATCHER_HANDLER)
        assert batcher["Properties"]["Timeout"] == timeout


def test_buffer_queues_deny_requests_without_tls(default_synth: Any) -> None:
    queues = default_synth.resources("AWS::SQS::Queue")
    protected: set[str] = set()
    for policy in default_synth.resources("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny"
                protected.update(ref["Ref"] for ref in policy["Properties"]["Queues"])
    assert protected == set(queues)


def test_buffer_dead_letter_alarm_fires_on_first_message(default_synth: Any) -> None:
    dlq_id, _ = _queue(default_synth, dead_letter=True)
    _, alarm = default_synth.one(
        "AWS::CloudWatch::Alarm",
        lambda r: r["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [dlq_id, "QueueName"]},
    )
    props = alarm["Properties"]
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["Namespace"] == "AWS/SQS"
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


# --- Capture ----------------------------------------------------------------------------------


def test_capture_every_api_method_requires_iam_auth(default_synth: Any) -> None:
    methods = default_synth.resources("AWS::ApiGateway::Method")
    assert methods, "the ingest API has methods"
    for method in methods.values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] != "OPTIONS"


def test_capture_put_audit_events_is_a_lambda_proxy_to_ingest(default_synth: Any) -> None:
    ingest_id, _ = default_synth.function(INGEST_HANDLER)
    resource_id, resource = default_synth.one("AWS::ApiGateway::Resource")
    assert resource["Properties"]["PathPart"] == "PutAuditEvents"
    _, method = default_synth.one(
        "AWS::ApiGateway::Method", lambda r: r["Properties"]["ResourceId"] == {"Ref": resource_id}
    )
    props = method["Properties"]
    assert props["HttpMethod"] == "POST"
    assert props["Integration"]["Type"] == "AWS_PROXY"
    assert ingest_id in json.dumps(props["Integration"]["Uri"])
    assert props["RequestParameters"] == {"method.request.querystring.channelArn": True}


def test_capture_stage_has_access_logs_tracing_and_no_data_trace(default_synth: Any) -> None:
    _, stage = default_synth.one("AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (setting,) = props["MethodSettings"]
    assert setting["DataTraceEnabled"] is False
    assert setting["LoggingLevel"] == "ERROR"


def test_capture_event_rule_uses_configured_pattern(default_synth: Any, variant_synth: Any) -> None:
    for synth, pattern in (
        (default_synth, {"detail-type": ["OpenTrail Audit Event"]}),
        (variant_synth, {"source": [{"prefix": "com.example."}], "detail-type": ["Audit"]}),
    ):
        capture_id, _ = synth.function(EVENTBRIDGE_CAPTURE_HANDLER)
        _, rule = synth.one("AWS::Events::Rule", lambda r: "EventPattern" in r["Properties"])
        assert rule["Properties"]["EventPattern"] == pattern
        assert rule["Properties"]["EventBusName"] == "default"
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [capture_id, "Arn"]}


def test_capture_eventbridge_function_has_dlq_and_two_retries(default_synth: Any) -> None:
    capture_id, capture = default_synth.function(EVENTBRIDGE_CAPTURE_HANDLER)
    dlq_arn = capture["Properties"]["DeadLetterConfig"]["TargetArn"]
    dlq_id = dlq_arn["Fn::GetAtt"][0]
    _, dlq = default_synth.one("AWS::SQS::Queue", prefix="Capture")
    assert dlq_id.startswith("CaptureDeadLetterQueue")
    assert dlq["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [_key_id(default_synth), "Arn"]}
    default_synth.template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"FunctionName": {"Ref": capture_id}, "MaximumRetryAttempts": 2}
    )
    default_synth.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}], "Threshold": 1},
    )


# --- Batcher ----------------------------------------------------------------------------------


def test_batcher_schedule_rate_and_scheduled_input(default_synth: Any, variant_synth: Any) -> None:
    for synth, rate in ((default_synth, "rate(1 minute)"), (variant_synth, "rate(5 minutes)")):
        batcher_id, _ = synth.function(BATCHER_HANDLER)
        _, rule = synth.one("AWS::Events::Rule", lambda r: "ScheduleExpression" in r["Properties"], prefix="Batcher")
        assert rule["Properties"]["ScheduleExpression"] == rate
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [batcher_id, "Arn"]}
        assert json.loads(target["Input"]) == {"action": "scheduled"}


@pytest.mark.parametrize("prefix", ["BatcherDeliveryLedger", "BatcherEventHistory"])
def test_batcher_tables_shape_pitr_sse_ttl(default_synth: Any, prefix: str) -> None:
    _, table = default_synth.one("AWS::DynamoDB::Table", prefix=prefix)
    assert "GlobalSecondaryIndexes" not in table["Properties"]
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [_key_id(default_synth), "Arn"]},
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"


def test_batcher_history_settings_and_grants(default_synth: Any) -> None:
    history_id, _ = default_synth.one("AWS::DynamoDB::Table", prefix="BatcherEventHistory")
    _, batcher = default_synth.function(BATCHER_HANDLER)
    variables = batcher["Properties"]["Environment"]["Variables"]
    assert variables["HISTORY_TABLE"] == {"Ref": history_id}
    assert variables["HISTORY_RETENTION_DAYS"] == "90"
    assert variables["HISTORY_DATA_EVENTS"] == "false"

    def listed(value: Any) -> list[Any]:
        return value if isinstance(value, list) else [value]

    arn = {"Fn::GetAtt": [history_id, "Arn"]}
    granted = [s for s in default_synth.role_policy_statements(BATCHER_HANDLER) if arn in listed(s["Resource"])]
    actions = {action for s in granted for action in listed(s["Action"])}
    assert {"dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:GetItem"} <= actions


def test_batcher_trails_setting_carries_trail_name_and_prefix(default_synth: Any, variant_synth: Any) -> None:
    for synth, prefix in ((default_synth, None), (variant_synth, "audit/prod")):
        _, batcher = synth.function(BATCHER_HANDLER)
        (trail,) = json.loads(batcher["Properties"]["Environment"]["Variables"]["TRAILS"])
        assert trail["Name"] == "opentrail"
        assert trail.get("S3KeyPrefix") == prefix  # compact JSON: absent when null


# --- Outputs ----------------------------------------------------------------------------------


def test_stack_outputs(default_synth: Any) -> None:
    outputs = default_synth.template.find_outputs("*")
    assert set(outputs) == {
        "IngestApiUrl",
        "QueryApiUrl",
        "LogBucketName",
        "LogKmsKeyArn",
        "BufferQueueUrl",
        "DeadLetterQueueUrl",
        "LedgerTableName",
        "ChannelArn",
        "BatcherFunctionName",
        "InsightsFunctionName",
        "InsightsTableName",
        "DigestSigningKeyArn",
        "DigesterFunctionName",
    }
    default_synth.template.has_output(
        "ChannelArn",
        {"Value": Match.string_like_regexp(r"^arn:.*:cloudtrail:us-east-1:123456789012:channel/opentrail$")},
    )


def test_log_bucket_has_no_object_lock_by_default(default_synth: Any) -> None:
    _, bucket = _log_bucket(default_synth)

    assert "ObjectLockEnabled" not in bucket["Properties"]
    assert "ObjectLockConfiguration" not in bucket["Properties"]


def test_log_bucket_object_lock_as_configured(variant_synth: Any) -> None:
    properties = _log_bucket(variant_synth)[1]["Properties"]

    assert properties["ObjectLockEnabled"] is True
    assert properties["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2555}},
    }


def test_tracing_can_be_switched_off(variant_synth: Any) -> None:
    functions = variant_synth.template.find_resources("AWS::Lambda::Function")

    assert functions
    assert all("TracingConfig" not in f["Properties"] for f in functions.values())
