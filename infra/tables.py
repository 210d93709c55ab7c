"""The one table shape OpenTrail uses (ledger, event history, Insights): string ``pk``/``sk``,
on demand, point-in-time recovery, SSE-KMS with the project key, TTL on ``expiresAt``, and
retained when the stack is deleted (audit data outlives the stack)."""

from __future__ import annotations

from typing import Final

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

TTL_ATTRIBUTE: Final = "expiresAt"


def audit_table(scope: Construct, construct_id: str, *, key: kms.IKey) -> dynamodb.Table:
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        time_to_live_attribute=TTL_ATTRIBUTE,
        removal_policy=RemovalPolicy.RETAIN,
    )
