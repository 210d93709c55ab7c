"""OpenTrailStack: composes the constructs and exports what operators and clients need."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.batcher import Batcher
from infra.buffer import Buffer
from infra.capture import Capture
from infra.config import OpenTrailConfig
from infra.extensions import OpenTrailExtensions
from infra.history import History
from infra.insights import Insights, InsightsStore, insight_trails
from infra.integrity import Integrity
from infra.log_archive import LogArchive
from infra.trails import stack_region


class OpenTrailStack(OpenTrailExtensions, Stack):
    """Extension points (docs/extending.md): add_capture_source(function), add_subscriber(function, pattern)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: OpenTrailConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        # Multi-region (docs/trails.md): only the home region's stack owns the log bucket.
        self.home = config.is_home(stack_region(self))
        self.log_archive = LogArchive(self, "LogArchive", config=config, home=self.home)
        self.buffer = Buffer(self, "Buffer", config=config, key=self.log_archive.key)
        self.capture = Capture(self, "Capture", config=config, buffer=self.buffer, key=self.log_archive.key)
        # Insights (docs/insights.md): only where some trail has InsightSelectors.
        has_insights = bool(insight_trails(self, config))
        self.insights_store = InsightsStore(self, "InsightsStore", key=self.log_archive.key) if has_insights else None
        self.batcher = Batcher(
            self, "Batcher", config=config, buffer=self.buffer, archive=self.log_archive, insights=self.insights_store
        )
        self.history = History(
            self,
            "History",
            config=config,
            api=self.capture.api,
            table=self.batcher.history,
            key=self.log_archive.key,
            ledger=self.batcher.ledger,
            log_bucket=self.log_archive.bucket.bucket_name,
            log_kms_key_arn=self.log_archive.log_key.key_arn,
        )

        self.insights = (
            Insights(
                self,
                "Insights",
                config=config,
                store=self.insights_store,
                archive=self.log_archive,
                history=self.batcher.history,
                ledger=self.batcher.ledger,
            )
            if self.insights_store is not None
            else None
        )

        self.integrity = (
            Integrity(
                self,
                "Integrity",
                config=config,
                bucket=self.log_archive.bucket,
                ledger=self.batcher.ledger,
                ledger_key=self.log_archive.key,
                query_function=self.history.function,
            )
            if config.log_file_validation
            else None
        )

        outputs = {
            "IngestApiUrl": (self.capture.api.url, "Endpoint URL for the cloudtrail-data client (SigV4, execute-api)"),
            "QueryApiUrl": (
                self.history.url,
                "Endpoint URL for the cloudtrail client, LookupEvents (SigV4, execute-api; opentrail.client)",
            ),
            "LogBucketName": (self.log_archive.bucket.bucket_name, "Bucket holding the CloudTrail log files"),
            "LogKmsKeyArn": (
                self.log_archive.log_key.key_arn,
                "KMS key of the log files (homeKmsKeyArn for the other regions' stacks)",
            ),
            "BufferQueueUrl": (self.buffer.queue.queue_url, "Buffer queue between capture and the batcher"),
            "DeadLetterQueueUrl": (self.buffer.dead_letter_queue.queue_url, "Records the batcher failed 5 times"),
            "LedgerTableName": (self.batcher.ledger.table_name, "Delivery ledger table"),
            "ChannelArn": (self.capture.channel_arn, "channelArn to pass to PutAuditEvents"),
            "BatcherFunctionName": (self.batcher.function.function_name, "The scheduled batcher function"),
        }
        if self.insights is not None and self.insights_store is not None:
            outputs["InsightsFunctionName"] = (
                self.insights.function.function_name,
                'The scheduled Insights function (invoke with {"action": "analyse"} to run it now)',
            )
            outputs["InsightsTableName"] = (
                self.insights_store.table.table_name,
                "Insights aggregates, baselines, open insights",
            )
        if self.integrity is not None:
            outputs["DigestSigningKeyArn"] = (
                self.integrity.signing_key.key_arn,
                "KMS key signing the digest files (RSA_2048, SHA256withRSA)",
            )
            outputs["DigesterFunctionName"] = (self.integrity.function.function_name, "The hourly digester function")
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
