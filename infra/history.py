"""History: the query API on the OpenTrail RestApi — ``POST /`` (CloudTrail's JSON 1.1
protocol, AWS_IAM) served by the LookupFunction over the event history table.

The table itself belongs to the batcher (`infra.batcher.Batcher.history`), which writes it.
The LookupFunction only reads it (Query, GetItem, BatchGetItem), and may write one item:
the NextToken key (pk ``CONFIG``), enforced with a ``dynamodb:LeadingKeys`` condition.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.function import create_function
from infra.trails import grant_home_trail_state, home_ledger_setting, home_region_setting, region_trails
from opentrail.adapters.trail_state import TRAIL_STATE_PK
from opentrail.domain.lookup import CONFIG_PK
from opentrail.domain.trail import trails_to_json
from opentrail.settings import QuerySettings

QUERY_HANDLER: Final = "opentrail.handlers.query.handler"
READ_ACTIONS: Final = ("dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchGetItem")
TARGET_HEADER: Final = "method.request.header.X-Amz-Target"


class History(Construct):
    """LookupFunction + ``POST /`` (AWS_IAM) on `api`, reading `table` (encrypted with `key`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: OpenTrailConfig,
        api: apigateway.RestApi,
        table: dynamodb.ITable,
        key: kms.IKey,
        ledger: dynamodb.ITable | None = None,
        log_bucket: str = "",
        log_kms_key_arn: str = "",
    ) -> None:
        super().__init__(scope, construct_id)

        self.function = create_function(
            self,
            "LookupFunction",
            config=config,
            handler=QUERY_HANDLER,
            settings=QuerySettings(
                history_table=table.table_name,
                history_retention_days=config.history_retention_days,
                # The trail operations (docs/trails.md): configuration from cdk.json, logging
                # state and status in the ledger table.
                ledger_table=ledger.table_name if ledger is not None else "",
                trails=trails_to_json(region_trails(self, config)),
                log_bucket=log_bucket,
                log_kms_key_arn=log_kms_key_arn,
                home_region=home_region_setting(self, config),
                home_ledger_table=home_ledger_setting(self, config),
            ),
            description="OpenTrail query API: CloudTrail LookupEvents over the event history index",
            # API Gateway's integration timeout is 29 s.
            timeout=Duration.seconds(29),
            memory_size=512,
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadHistory",
                actions=list(READ_ACTIONS),
                resources=[table.table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="CreateNextTokenKey",
                # The first lookup that returns a NextToken creates the key item (conditional put).
                actions=["dynamodb:PutItem"],
                resources=[table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [CONFIG_PK]}},
            )
        )
        if ledger is not None:
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="TrailState",
                    # GetTrailStatus reads, StartLogging/StopLogging update the trail state items.
                    actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"],
                    resources=[ledger.table_arn],
                    conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [TRAIL_STATE_PK]}},
                )
            )
            grant_home_trail_state(self.function, config)
        # The tables are encrypted with the project key: reads decrypt, the puts encrypt.
        key.grant(self.function, "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")

        self.validator = api.add_request_validator("QueryTargetValidator", validate_request_parameters=True)
        self.method = api.root.add_method(
            "POST",
            apigateway.LambdaIntegration(self.function, proxy=True),
            authorization_type=apigateway.AuthorizationType.IAM,
            request_parameters={TARGET_HEADER: True},
            request_validator=self.validator,
        )
        self.url = api.url
