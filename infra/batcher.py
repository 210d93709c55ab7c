"""Batcher: the scheduled function that turns buffered records into log files, and its ledger."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.buffer import Buffer
from infra.config import OpenTrailConfig
from infra.function import BATCHER_HANDLER, create_function, retention, schedule
from infra.insights import InsightsStore
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
    stack_region,
)
from opentrail.domain.trail import Trail, trails_to_json
from opentrail.settings import BatcherSettings


class Batcher(Construct):
    """BatcherFunction on a ``rate(N minutes)`` schedule + the DeliveryLedger table."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: OpenTrailConfig,
        buffer: Buffer,
        archive: LogArchive,
        insights: InsightsStore | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        self.ledger = audit_table(self, "DeliveryLedger", key=archive.key)
        # The event history index (docs/history.md): one table, no secondary indexes (an
        # index entry costs write units), items expire by TTL after their eventTime.
        self.history = audit_table(self, "EventHistory", key=archive.key)

        # Every trail recording in this region (docs/trails.md); the batcher fans out per trail.
        trails = region_trails(self, config)
        self.function = create_function(
            self,
            "BatcherFunction",
            config=config,
            handler=BATCHER_HANDLER,
            settings=BatcherSettings(
                buffer_queue_url=buffer.queue.queue_url,
                dead_letter_queue_url=buffer.dead_letter_queue.queue_url,
                log_bucket=archive.bucket.bucket_name,
                log_kms_key_arn=archive.log_key.key_arn,
                ledger_table=self.ledger.table_name,
                trails=trails_to_json(trails),
                history_table=self.history.table_name,
                history_retention_days=config.history_retention_days,
                history_data_events=config.history_data_events,
                insights_table=insights.table.table_name if insights is not None else "",
                home_region=home_region_setting(self, config),
                home_ledger_table=home_ledger_setting(self, config),
            ),
            description="OpenTrail batcher: drains the buffer into CloudTrail log files",
            timeout=Duration.seconds(config.batcher_timeout_seconds),
            memory_size=1024,
            # A failed tick is not retried: the next scheduled tick picks up the same messages.
            retry_attempts=0,
        )

        buffer.queue.grant_consume_messages(self.function)
        grant_home_trail_state(self.function, config)
        buffer.dead_letter_queue.grant_send_messages(self.function)
        archive.key.grant_encrypt_decrypt(self.function)
        if archive.log_key is not archive.key:  # a non-home region: the home region's log key
            archive.log_key.grant_encrypt_decrypt(self.function)
        self.ledger.grant_read_write_data(self.function)
        self.history.grant_read_write_data(self.function)
        if insights is not None:
            insights.grant_aggregate_writes(self.function)
        acknowledge_kms_grants(self.function.role or self.function)
        log_files = key_patterns(trails, "*")
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteLogFiles",
                # Put a file; Get/Head to check a retried put; Delete(Version) to roll back every
                # version of a file whose batch was aborted (opentrail.adapters.log_store).
                actions=["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=[archive.bucket.arn_for_objects(pattern) for pattern in log_files],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindLogFileVersions",
                # ListBucketVersions: find the versions to roll back. ListBucket: without it S3
                # answers HeadObject on a missing key with 403 instead of 404.
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
                resources=[archive.bucket.bucket_arn],
            )
        )

        self.trail_log_groups: dict[str, logs.LogGroup] = {}
        self.trail_topics: dict[str, sns.Topic] = {}
        self._deliveries(config, trails, archive)

        self.schedule = schedule(
            self.function,
            events.Schedule.rate(Duration.minutes(config.batch_schedule_minutes)),
            "OpenTrail: run the batcher",
        )

        acknowledge(
            self.function.role or self.function,
            {
                f"AwsSolutions-IAM5[Resource::{bucket_arn_token(archive.bucket)}/{pattern}]": "Log file keys are "
                "generated per delivery; the grant covers only the trails' AWSLogs/ trees of the log bucket."
                for pattern in log_files
            },
        )

    def _deliveries(self, config: OpenTrailConfig, trails: tuple[Trail, ...], archive: LogArchive) -> None:
        """The trails' deliveries (docs/trails.md, "Deliveries"): the home region's stack creates
        the log groups and topics (KMS-encrypted with the project key); every region's batcher
        may create streams in / put events into those groups, publish to those topics, and put
        events on its own region's default bus when a trail enables EventBridge."""
        stack = Stack.of(self)
        home = config.is_home(stack_region(self))
        home_region = config.home or stack.region
        groups = sorted({t.deliveries.cloud_watch_logs for t in trails if t.deliveries.cloud_watch_logs})
        topics = sorted({t.deliveries.sns_topic for t in trails if t.deliveries.sns_topic})
        if home and groups and isinstance(archive.key, kms.Key):
            # CloudWatch Logs encrypts a group with a customer key only when the key policy lets it.
            archive.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="TrailLogGroups",
                    principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                    actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"],
                    conditions={
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                                service="logs",
                                resource="log-group",
                                resource_name="*",
                                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                            )
                        }
                    },
                )
            )
        for index, name in enumerate(groups):
            if home:
                group = logs.LogGroup(
                    self,
                    f"TrailLogGroup{index}",
                    log_group_name=name,
                    encryption_key=archive.key,
                    retention=retention(config.log_retention_days),
                    removal_policy=RemovalPolicy.RETAIN,  # audit records outlive the stack
                )
                self.trail_log_groups[name] = group
        grant_log_streams(
            self.function,
            groups,
            home_region,
            "The batcher creates streams <account>_CloudTrail_<region> per recorded account and region, "
            "in this trail's own log group only.",
        )
        topic_arns: list[str] = []
        for index, name in enumerate(topics):
            if home:
                self.trail_topics[name] = sns.Topic(
                    self,
                    f"TrailTopic{index}",
                    topic_name=name,
                    master_key=archive.key,
                    enforce_ssl=True,
                )
            topic_arns.append(stack.format_arn(service="sns", region=home_region, resource=name))
        if topic_arns:
            self.function.add_to_role_policy(
                iam.PolicyStatement(sid="TrailNotifications", actions=["sns:Publish"], resources=topic_arns)
            )
        if any(t.deliveries.event_bridge for t in trails):
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="TrailEventBridge",
                    actions=["events:PutEvents"],
                    resources=[stack.format_arn(service="events", resource="event-bus", resource_name="default")],
                )
            )
