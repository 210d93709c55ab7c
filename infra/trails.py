"""Trails and regions in the stacks (docs/trails.md): which trails a region's functions get,
the key patterns their grants cover, and how cdk-nag names the (possibly imported) bucket."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.nag import acknowledge, arn_token
from opentrail.adapters.trail_state import TRAIL_STATE_PK
from opentrail.domain.trail import Trail


def stack_region(scope: Construct) -> str | None:
    """The stack's region, or None for an environment-agnostic stack."""
    region = Stack.of(scope).region
    return None if Token.is_unresolved(region) else region


def region_trails(scope: Construct, config: OpenTrailConfig) -> tuple[Trail, ...]:
    """The trails recording in this stack's region."""
    return config.trails_in(stack_region(scope))


def home_region_setting(scope: Construct, config: OpenTrailConfig) -> str:
    """``HOME_REGION`` of a function: empty in the home region (the function's own region)."""
    return "" if config.is_home(stack_region(scope)) else str(config.home)


def home_ledger_setting(scope: Construct, config: OpenTrailConfig) -> str:
    """``HOME_LEDGER_TABLE`` of a function: empty in the home region (its own ledger holds the
    trails' logging state), else the home region's ledger table."""
    return "" if config.is_home(stack_region(scope)) else str(config.home_ledger_table)


def grant_home_trail_state(function: lambda_.IFunction, config: OpenTrailConfig) -> None:
    """In a non-home region, let `function` read the trails' logging state in the home region's
    ledger: its TRAILSTATE items only, decrypted with the home region's key."""
    stack = Stack.of(function)
    if config.is_home(stack_region(stack)):
        return
    table = stack.format_arn(
        service="dynamodb", region=config.home, resource="table", resource_name=config.home_ledger_table
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            sid="ReadHomeTrailState",
            actions=["dynamodb:GetItem", "dynamodb:Query"],
            resources=[table],
            conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [TRAIL_STATE_PK]}},
        )
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            sid="DecryptHomeTrailState",
            actions=["kms:Decrypt", "kms:DescribeKey"],
            resources=[str(config.home_kms_key_arn)],
        )
    )


def key_patterns(trails: tuple[Trail, ...], folder: str) -> list[str]:
    """``[prefix/]AWSLogs/<folder>`` for each distinct S3KeyPrefix of `trails`, e.g. folder ``*``
    (log files) or ``*/CloudTrail-Digest/*`` (digests)."""
    prefixes = sorted({trail.s3_key_prefix or "" for trail in trails})
    return [f"{prefix}/AWSLogs/{folder}" if prefix else f"AWSLogs/{folder}" for prefix in prefixes]


def bucket_arn_token(bucket: s3.IBucket) -> str:
    """How cdk-nag prints the bucket's ARN in a finding id (imported buckets included)."""
    return arn_token(bucket)


def grant_log_streams(function: lambda_.IFunction, groups: Sequence[str], home_region: str, reason: str) -> None:
    """Let `function` create streams in and put events into the trails' log `groups` (in the
    home region); cdk-nag's finding on the stream wildcard is acknowledged with `reason`."""
    if not groups:
        return
    stack = Stack.of(function)
    arns: list[str] = []
    for name in groups:
        arn = stack.format_arn(
            service="logs",
            region=home_region,
            resource="log-group",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        arns += [arn, f"{arn}:log-stream:*"]
    function.add_to_role_policy(
        iam.PolicyStatement(
            sid="TrailCloudWatchLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=arns
        )
    )

    def shown(value: str, placeholder: str) -> str:  # how cdk-nag prints a pseudo parameter
        return placeholder if Token.is_unresolved(value) else value

    partition = shown(stack.partition, "<AWS::Partition>")
    region = shown(home_region, "<AWS::Region>")
    account = shown(stack.account, "<AWS::AccountId>")
    streams = f"arn:{partition}:logs:{region}:{account}:log-group:{{}}:log-stream:*"
    acknowledge(
        function.role or function,
        {f"AwsSolutions-IAM5[Resource::{streams.format(name)}]": reason for name in groups},
    )
