"""Insights: the Insights table and the scheduled InsightsFunction (docs/insights.md, "Live").

Both exist only in the regions where some trail has InsightSelectors (`insight_trails`).

* ``InsightsTable`` (`InsightsStore` construct): pk/sk strings, on-demand, PITR, SSE-KMS with the
  project key, TTL ``expiresAt``, retained. The batcher writes the minute aggregates into it
  (PutItem/BatchWriteItem on leading keys ``M#*`` only); the InsightsFunction reads them and
  keeps the engine state and open insights there. A table of its own: neither the ledger's
  readers (digester, ListPublicKeys) nor the history's (LookupEvents) see Insights' state.
* ``InsightsFunction``: `InsightsSettings` environment, ``rate(insightsScheduleMinutes)``
  with ``{"action": "scheduled"}``; grants: the Insights table (read/write), the history table
  (BatchWriteItem/PutItem on the Insights key space and record pages only), ``s3:PutObject`` /
  ``s3:GetObject`` on ``[prefix/]AWSLogs/*/CloudTrail-Insight/*`` of the Insights trails'
  prefixes, the project key, the trail state items of the ledger (logging state; delivery
  status), ``events:PutEvents`` on the account's default bus when ``insightsEventBridge`` is on
  or an Insights trail has ``Deliveries.EventBridge``, and the Insights trails' log groups.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.function import create_function, schedule
from infra.log_archive import LogArchive
from infra.nag import acknowledge, acknowledge_kms_grants
from infra.tables import audit_table
from infra.trails import (
    bucket_arn_token,
    grant_home_trail_state,
    grant_log_streams,
    home_ledger_setting,
    home_region_setting,
    key_patterns,
    region_trails,
)
from opentrail.adapters.insights_store import AGGREGATE_PREFIX
from opentrail.adapters.trail_state import TRAIL_STATE_PK
from opentrail.domain.history import INSIGHT_PREFIX, PAGE_CODE
from opentrail.domain.trail import Trail, trails_to_json
from opentrail.settings import InsightsSettings

INSIGHTS_HANDLER: Final = "opentrail.handlers.insights.handler"
TIMEOUT_SECONDS: Final = 300
DEFAULT_EVENT_BUS: Final = "default"
TABLE_ACTIONS: Final = (
    "dynamodb:Query",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
)
AGGREGATE_WRITE_ACTIONS: Final = ("dynamodb:PutItem", "dynamodb:BatchWriteItem")
# History items an Insights delivery writes: record pages (P#...) and Insights postings
# (<region>#i<code>#<value>, <region>#i*), never an ordinary event's posting list.
HISTORY_LEADING_KEYS: Final = (f"{PAGE_CODE}#*", f"*#{INSIGHT_PREFIX}*")


def insight_trails(scope: Construct, config: OpenTrailConfig) -> tuple[Trail, ...]:
    """The trails recording in this stack's region that have InsightSelectors."""
    return tuple(trail for trail in region_trails(scope, config) if trail.has_insight_selectors)


class InsightsStore(Construct):
    """The Insights table (aggregates, state, open insights)."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table = audit_table(self, "InsightsTable", key=key)

    def grant_aggregate_writes(self, grantee: iam.IGrantable) -> None:
        """What the batcher needs: put aggregate items (leading key ``M#...``), nothing else."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteInsightsAggregates",
                actions=list(AGGREGATE_WRITE_ACTIONS),
                resources=[self.table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{AGGREGATE_PREFIX}*"]}},
            )
        )


class Insights(Construct):
    """InsightsFunction on a schedule, over `store`, writing Insights files, history and events."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: OpenTrailConfig,
        store: InsightsStore,
        archive: LogArchive,
        history: dynamodb.ITable,
        ledger: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        table = store.table
        trails = region_trails(self, config)
        analysed = insight_trails(self, config)
        event_bridge = config.insights_event_bridge or any(t.deliveries.event_bridge for t in analysed)

        self.function = create_function(
            self,
            "InsightsFunction",
            config=config,
            handler=INSIGHTS_HANDLER,
            settings=InsightsSettings(
                insights_table=table.table_name,
                history_table=history.table_name,
                history_retention_days=config.history_retention_days,
                log_bucket=archive.bucket.bucket_name,
                log_kms_key_arn=archive.log_key.key_arn,  # the home region's key in other regions
                trails=trails_to_json(trails),
                ledger_table=ledger.table_name,
                home_region=home_region_setting(self, config),
                home_ledger_table=home_ledger_setting(self, config),
                sensitivity=config.insights_sensitivity,
                event_bus=DEFAULT_EVENT_BUS if event_bridge else "",
                event_bridge_all=config.insights_event_bridge,
            ),
            description="OpenTrail Insights: analyses minute aggregates, delivers CloudTrail Insights events",
            timeout=Duration.seconds(TIMEOUT_SECONDS),
            memory_size=1024,
            # A failed run is not retried: the next scheduled run continues where state says.
            retry_attempts=0,
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(sid="InsightsState", actions=list(TABLE_ACTIONS), resources=[table.table_arn])
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="IndexInsightsEvents",
                actions=["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
                resources=[history.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(HISTORY_LEADING_KEYS)}},
            )
        )
        archive.key.grant_encrypt_decrypt(self.function)
        if archive.log_key is not archive.key:  # a non-home region writes with the home region's key
            archive.log_key.grant_encrypt_decrypt(self.function)
        acknowledge_kms_grants(self.function.role or self.function)
        objects = key_patterns(analysed, "*/CloudTrail-Insight/*")
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteInsightsFiles",
                # Put a file with If-None-Match; Get(Head) to recognise a retried put's own file.
                actions=["s3:PutObject", "s3:GetObject"],
                resources=[archive.bucket.arn_for_objects(pattern) for pattern in objects],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="TrailState",
                # The trails' logging state (StopLogging pauses their Insights) and delivery status.
                actions=["dynamodb:Query", "dynamodb:UpdateItem"],
                resources=[ledger.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [TRAIL_STATE_PK]}},
            )
        )
        grant_home_trail_state(self.function, config)
        grant_log_streams(
            self.function,
            sorted({t.deliveries.cloud_watch_logs for t in analysed if t.deliveries.cloud_watch_logs}),
            config.home or stack.region,
            "The Insights function creates streams <account>_CloudTrail_<region> per analysed account and "
            "region, in its trails' own log groups only.",
        )
        if event_bridge:
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="SendInsightsEvents",
                    actions=["events:PutEvents"],
                    resources=[
                        stack.format_arn(service="events", resource="event-bus", resource_name=DEFAULT_EVENT_BUS)
                    ],
                )
            )

        self.schedule = schedule(
            self.function,
            events.Schedule.rate(Duration.minutes(config.insights_schedule_minutes)),
            "OpenTrail: run the Insights analysis",
        )

        acknowledge(
            self.function.role or self.function,
            {
                f"AwsSolutions-IAM5[Resource::{bucket_arn_token(archive.bucket)}/{pattern}]": "Insights file keys "
                "are generated per delivery (account, region, date); the grant covers only the CloudTrail-Insight "
                "folders of the Insights trails' prefixes in the log bucket."
                for pattern in objects
            },
        )
