"""Create, in whatever boto3 points at (moto in tests and the demo), the resources the
CDK stack defines, with the same shapes: KMS key, log bucket, buffer queue + DLQ with
redrive, delivery ledger table with TTL, event history table. Keep in step with infra/ (a test
compares them).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import boto3

from opentrail.settings import (
    BatcherSettings,
    DigesterSettings,
    EventBridgeCaptureSettings,
    IngestSettings,
    InsightsSettings,
    QuerySettings,
)

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
BATCHER_TIMEOUT_SECONDS = 120
VISIBILITY_TIMEOUT_SECONDS = 6 * BATCHER_TIMEOUT_SECONDS
MAX_RECEIVE_COUNT = 5
CHANNEL_NAME = "opentrail"


@dataclass(frozen=True)
class LocalResources:
    account_id: str
    region: str
    kms_key_arn: str
    log_bucket: str
    buffer_queue_url: str
    dead_letter_queue_url: str
    ledger_table: str
    channel_arn: str
    history_table: str
    signing_key_arn: str = ""  # RSA_2048 SIGN_VERIFY key for digests (alias alias/<name>-digest-signing)
    insights_table: str = ""  # Insights aggregates + state (docs/insights.md, "Live")

    def ingest_settings(self) -> IngestSettings:
        return IngestSettings(buffer_queue_url=self.buffer_queue_url, channel_arns=self.channel_arn)

    def eventbridge_capture_settings(self) -> EventBridgeCaptureSettings:
        return EventBridgeCaptureSettings(buffer_queue_url=self.buffer_queue_url)

    def batcher_settings(self, **overrides: Any) -> BatcherSettings:
        values: dict[str, Any] = {
            "buffer_queue_url": self.buffer_queue_url,
            "dead_letter_queue_url": self.dead_letter_queue_url,
            "log_bucket": self.log_bucket,
            "log_kms_key_arn": self.kms_key_arn,
            "ledger_table": self.ledger_table,
            "history_table": self.history_table,
            "insights_table": self.insights_table,
        }
        values.update(overrides)
        return BatcherSettings(**values)

    def digester_settings(self, **overrides: Any) -> DigesterSettings:
        values: dict[str, Any] = {
            "log_bucket": self.log_bucket,
            "ledger_table": self.ledger_table,
            "signing_key_id": self.signing_key_arn,
        }
        values.update(overrides)
        return DigesterSettings(**values)

    def query_settings(self, **overrides: Any) -> QuerySettings:
        """The query API's settings: LookupEvents over the history table, ListPublicKeys over the
        key registry in the ledger table."""
        values: dict[str, Any] = {"history_table": self.history_table, "ledger_table": self.ledger_table}
        values.update(overrides)
        return QuerySettings(**values)

    # -- Insights (docs/insights.md, "Live") ----------------------------------------------

    def insights_settings(self, **overrides: Any) -> InsightsSettings:
        """The Insights function's settings: aggregates and state in the Insights table, files
        in the log bucket, records in the history table, trail states in the ledger table,
        events on the default bus (pass ``trails`` as for the batcher)."""
        values: dict[str, Any] = {
            "insights_table": self.insights_table,
            "history_table": self.history_table,
            "log_bucket": self.log_bucket,
            "log_kms_key_arn": self.kms_key_arn,
            "ledger_table": self.ledger_table,
        }
        values.update(overrides)
        return InsightsSettings(**values)


def provision(
    *,
    region: str = REGION,
    account_id: str = ACCOUNT_ID,
    name: str = "opentrail",
    visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    trails: str | None = None,
) -> LocalResources:
    """Create the resources (idempotent for a fresh mock) and return their names. `trails` (the
    TRAILS setting, docs/trails.md): also each trail's delivery log group and SNS topic."""
    kms = boto3.client("kms", region_name=region)
    key_arn = kms.create_key(Description=f"{name} log encryption key")["KeyMetadata"]["Arn"]
    kms.enable_key_rotation(KeyId=key_arn)
    signing_key_arn = create_signing_key(kms, name)

    s3 = boto3.client("s3", region_name=region)
    bucket = f"{name}-logs-{account_id}-{region}"
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )

    sqs = boto3.client("sqs", region_name=region)
    dlq_url = sqs.create_queue(QueueName=f"{name}-buffer-dlq", Attributes={"KmsMasterKeyId": key_arn})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{name}-buffer",
        Attributes={
            "KmsMasterKeyId": key_arn,
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
        },
    )["QueueUrl"]

    dynamodb = boto3.client("dynamodb", region_name=region)
    table = f"{name}-ledger"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn},
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"}
    )

    history_table = f"{name}-history"
    create_history_table(dynamodb, history_table, key_arn)
    insights_table = f"{name}-insights"
    create_history_table(dynamodb, insights_table, key_arn)  # same shape: pk/sk, KMS, TTL, PITR
    if trails:
        create_delivery_destinations(trails, region)

    return LocalResources(
        account_id=account_id,
        region=region,
        kms_key_arn=key_arn,
        log_bucket=bucket,
        buffer_queue_url=queue_url,
        dead_letter_queue_url=dlq_url,
        ledger_table=table,
        channel_arn=f"arn:aws:cloudtrail:{region}:{account_id}:channel/{CHANNEL_NAME}",
        history_table=history_table,
        signing_key_arn=signing_key_arn,
        insights_table=insights_table,
    )


def create_delivery_destinations(trails: str, region: str) -> None:
    """The trails' CloudWatch Logs groups and SNS topics (infra/batcher.py creates them in the
    stack), so that `opentrail local --trails FILE` delivers to them."""
    from opentrail.domain.trail import trails_from_json

    logs = boto3.client("logs", region_name=region)
    sns = boto3.client("sns", region_name=region)
    for trail in trails_from_json(trails):
        group = trail.deliveries.cloud_watch_logs
        if group is not None:
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_group(logGroupName=group)  # two trails may share a group
        if trail.deliveries.sns_topic is not None:
            sns.create_topic(Name=trail.deliveries.sns_topic)  # idempotent


def create_history_table(dynamodb: Any, table: str, kms_key_arn: str | None = None) -> None:
    """The event history table (docs/history.md): pk/sk strings, on-demand, KMS, TTL, PITR."""
    sse: dict[str, Any] = {"Enabled": True, "SSEType": "KMS"}
    if kms_key_arn:
        sse["KMSMasterKeyId"] = kms_key_arn
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification=sse,
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"}
    )
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def create_signing_key(kms: Any, name: str = "opentrail", *, alias: bool = True) -> str:
    """The digest signing key (as infra/integrity.py): RSA_2048, SIGN_VERIFY; returns its ARN."""
    arn = str(
        kms.create_key(Description=f"{name} digest signing key", KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"
        ]["Arn"]
    )
    if alias:
        kms.create_alias(AliasName=f"alias/{name}-digest-signing", TargetKeyId=arn)
    return arn
