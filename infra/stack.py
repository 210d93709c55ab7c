"""OpenTrailStack: composes the constructs and exports what operators and clients need."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.batcher import Batcher
from infra.buffer import Buffer
from infra.capture import Capture
from infra.config import OpenTrailConfig
from infra.history import History
from infra.integrity import Integrity
from infra.log_archive import LogArchive


class OpenTrailStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: OpenTrailConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        self.log_archive = LogArchive(self, "LogArchive", config=config)
        self.buffer = Buffer(self, "Buffer", config=config, key=self.log_archive.key)
        self.capture = Capture(self, "Capture", config=config, buffer=self.buffer, key=self.log_archive.key)
        self.batcher = Batcher(self, "Batcher", config=config, buffer=self.buffer, archive=self.log_archive)
        self.history = History(
            self,
            "History",
            config=config,
            api=self.capture.api,
            table=self.batcher.history,
            key=self.log_archive.key,
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
            "BufferQueueUrl": (self.buffer.queue.queue_url, "Buffer queue between capture and the batcher"),
            "DeadLetterQueueUrl": (self.buffer.dead_letter_queue.queue_url, "Records the batcher failed 5 times"),
            "LedgerTableName": (self.batcher.ledger.table_name, "Delivery ledger table"),
            "ChannelArn": (self.capture.channel_arn, "channelArn to pass to PutAuditEvents"),
            "BatcherFunctionName": (self.batcher.function.function_name, "The scheduled batcher function"),
        }
        if self.integrity is not None:
            outputs["DigestSigningKeyArn"] = (
                self.integrity.signing_key.key_arn,
                "KMS key signing the digest files (RSA_2048, SHA256withRSA)",
            )
            outputs["DigesterFunctionName"] = (self.integrity.function.function_name, "The hourly digester function")
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)
