"""Buffer: the SQS queue between capture and the batcher, its dead-letter queue and alarm."""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import OpenTrailConfig

MAX_RECEIVE_COUNT: Final = 5
RETENTION: Final = Duration.days(14)


class Buffer(Construct):
    """Buffer queue (KMS, TLS-only) that redrives to a dead-letter queue after 5 receives.

    Visibility timeout = 6 x the batcher timeout, so a message a running batcher holds is
    not handed to a second batcher invocation.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: OpenTrailConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.minutes(5),
            enforce_ssl=True,
            retention_period=RETENTION,
            visibility_timeout=Duration.seconds(config.visibility_timeout_seconds),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
        )
        self.dead_letter_alarm = dead_letter_alarm(
            self,
            "DeadLetterAlarm",
            self.dead_letter_queue,
            "OpenTrail: records reached the buffer dead-letter queue (the batcher failed them 5 times).",
        )


def dead_letter_alarm(scope: Construct, construct_id: str, queue: sqs.IQueue, description: str) -> cloudwatch.Alarm:
    """Alarm as soon as one message is visible in a dead-letter queue."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum"),
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
