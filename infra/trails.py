"""Trails and regions in the stacks (docs/trails.md): which trails a region's functions get,
the key patterns their grants cover, and how cdk-nag names the (possibly imported) bucket."""

from __future__ import annotations

from aws_cdk import Stack, Token
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.nag import arn_token
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


def key_patterns(trails: tuple[Trail, ...], folder: str) -> list[str]:
    """``[prefix/]AWSLogs/<folder>`` for each distinct S3KeyPrefix of `trails`, e.g. folder ``*``
    (log files) or ``*/CloudTrail-Digest/*`` (digests)."""
    prefixes = sorted({trail.s3_key_prefix or "" for trail in trails})
    return [f"{prefix}/AWSLogs/{folder}" if prefix else f"AWSLogs/{folder}" for prefix in prefixes]


def bucket_arn_token(bucket: s3.IBucket) -> str:
    """How cdk-nag prints the bucket's ARN in a finding id (imported buckets included)."""
    return arn_token(bucket)
