"""Integrity: the digest signing key, the hourly DigesterFunction, and ListPublicKeys' access.

* ``DigestSigningKey``: KMS RSA_2048 SIGN_VERIFY, retained (old digests must stay verifiable
  after the stack is gone; its public key is also kept in the registry). Key policy: the
  account administers it and may read the public key, only the digester role may sign.
* ``DigesterFunction``: `DigesterSettings` environment, an hourly ``cron(M * * * ? *)`` with
  ``M = ceil(digestDelaySeconds / 60)``, where the delay covers the batcher's longest run plus
  clock skew (docs/integrity.md). Grants: ``kms:Sign``/``kms:GetPublicKey`` on the signing
  key, ``s3:PutObject``/``s3:GetObject`` on ``[prefix/]AWSLogs/*/CloudTrail-Digest/*`` only,
  Query/GetItem/PutItem/UpdateItem on the ledger table (+ the table's KMS key).
* The query function (ListPublicKeys) gets ``LEDGER_TABLE`` and Query on the ``PUBLICKEY``
  partition only.
"""

from __future__ import annotations

import math
from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.function import create_function, schedule
from infra.nag import acknowledge, acknowledge_kms_grants
from infra.trails import (
    bucket_arn_token,
    grant_home_trail_state,
    home_ledger_setting,
    home_region_setting,
    key_patterns,
    region_trails,
)
from opentrail.adapters.digests import PUBLIC_KEY_PK
from opentrail.domain.trail import trails_to_json
from opentrail.settings import DigesterSettings

DIGESTER_HANDLER: Final = "opentrail.handlers.digester.handler"
CLOCK_SKEW_SECONDS: Final = 60
MIN_DIGEST_DELAY_SECONDS: Final = 300
LEDGER_ACTIONS: Final = ("dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
KEY_ADMIN_ACTIONS: Final = (
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)  # fmt: skip


def digest_delay_seconds(config: OpenTrailConfig) -> int:
    """How long after a window's end it is digested: the batcher's longest run (its ledger
    items land at most that long after their deliveredAt) plus clock skew, at least 5 minutes."""
    return max(MIN_DIGEST_DELAY_SECONDS, config.batcher_timeout_seconds + CLOCK_SKEW_SECONDS)


def digest_prefix(config: OpenTrailConfig) -> str:
    return f"{config.s3_key_prefix}/AWSLogs/*/CloudTrail-Digest/*" if config.s3_key_prefix else (
        "AWSLogs/*/CloudTrail-Digest/*"
    )  # fmt: skip


class Integrity(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: OpenTrailConfig,
        bucket: s3.IBucket,
        ledger: dynamodb.ITable,
        ledger_key: kms.IKey,
        query_function: lambda_.Function | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        delay = digest_delay_seconds(config)
        trails = region_trails(self, config)

        self.signing_key = kms.Key(
            self,
            "DigestSigningKey",
            description="OpenTrail digest signing key (RSA_2048, SHA256withRSA; CloudTrail log file validation)",
            key_spec=kms.KeySpec.RSA_2048,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            removal_policy=RemovalPolicy.RETAIN,
            policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="KeyAdministration",
                        principals=[iam.AccountRootPrincipal()],
                        actions=list(KEY_ADMIN_ACTIONS),
                        resources=["*"],
                    )
                ]
            ),
        )
        self.alias = self.signing_key.add_alias(f"alias/{stack.stack_name}-digest-signing")

        self.function = create_function(
            self,
            "DigesterFunction",
            config=config,
            handler=DIGESTER_HANDLER,
            settings=DigesterSettings(
                log_bucket=bucket.bucket_name,
                ledger_table=ledger.table_name,
                signing_key_id=self.signing_key.key_arn,
                # Every trail of the region; the digester skips LogFileValidationEnabled=false ones.
                trails=trails_to_json(trails),
                home_region=home_region_setting(self, config),
                home_ledger_table=home_ledger_setting(self, config),
                digest_delay_seconds=delay,
            ),
            description="OpenTrail digester: hourly signed digest files (CloudTrail log file validation)",
            timeout=Duration.minutes(5),
            memory_size=512,
            # A failed run is not retried: the next hourly run catches up every missed window.
            retry_attempts=0,
        )
        grant_home_trail_state(self.function, config)
        role = self.function.role
        assert role is not None
        # Only the digester signs: key policy (the account's statement above has no kms:Sign)
        # and identity policy, both on this one key.
        self.signing_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DigesterSigns",
                principals=[iam.ArnPrincipal(role.role_arn)],
                actions=["kms:Sign", "kms:GetPublicKey"],
                resources=["*"],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="SignDigests",
                actions=["kms:Sign", "kms:GetPublicKey"],
                resources=[self.signing_key.key_arn],
            )
        )
        digests = key_patterns(tuple(t for t in trails if t.log_file_validation_enabled), "*/CloudTrail-Digest/*")
        if digests:  # no trail with LogFileValidationEnabled: nothing to write
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="WriteDigests",
                    # Put a digest (If-None-Match); Get: adopt a digest a racing or crashed run wrote.
                    actions=["s3:PutObject", "s3:GetObject"],
                    resources=[bucket.arn_for_objects(pattern) for pattern in digests],
                )
            )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="LedgerAndChainHeads",
                # Query ledger hours, mark listed items, read/advance chain heads, register keys.
                actions=list(LEDGER_ACTIONS),
                resources=[ledger.table_arn],
            )
        )
        ledger_key.grant(self.function, "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")
        acknowledge_kms_grants(role)

        minute = math.ceil(delay / 60)
        self.schedule = schedule(
            self.function,
            events.Schedule.cron(minute=str(minute), hour="*"),
            f"OpenTrail: digest the last hour, {minute} minutes past each hour",
        )

        acknowledge(
            role,
            {
                f"AwsSolutions-IAM5[Resource::{bucket_arn_token(bucket)}/{pattern}]": "Digest keys carry the "
                "account, region and hour; the grant covers only the CloudTrail-Digest folders of the log bucket."
                for pattern in digests
            },
        )

        if query_function is not None:
            # ListPublicKeys reads the key registry (the PUBLICKEY partition of the ledger table).
            query_function.add_environment("LEDGER_TABLE", ledger.table_name)
            query_function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="ListPublicKeys",
                    actions=["dynamodb:Query"],
                    resources=[ledger.table_arn],
                    conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [PUBLIC_KEY_PK]}},
                )
            )
            ledger_key.grant(query_function, "kms:Decrypt", "kms:DescribeKey")
