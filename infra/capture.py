"""Capture: the PutAuditEvents API (IAM auth) and the EventBridge rule, both feeding the buffer."""

from __future__ import annotations

from typing import Final

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.buffer import Buffer, dead_letter_alarm
from infra.config import OpenTrailConfig
from infra.function import EVENTBRIDGE_CAPTURE_HANDLER, INGEST_HANDLER, create_function, retention
from infra.nag import acknowledge, acknowledge_kms_grants
from opentrail.domain.s3_notifications import S3_DETAIL_TYPES, S3_SOURCE
from opentrail.settings import EventBridgeCaptureSettings, IngestSettings

STAGE_NAME: Final = "v1"
# CloudTrail's PutAuditEvents quota is 100 TPS; keep the stage in the same range.
THROTTLE_RATE: Final = 100
THROTTLE_BURST: Final = 200


class Capture(Construct):
    """``POST /PutAuditEvents`` (SigV4 / AWS_IAM on every method) and an EventBridge rule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: OpenTrailConfig,
        buffer: Buffer,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.channel_arn = stack.format_arn(
            service="cloudtrail",
            resource="channel",
            resource_name=config.channel_name,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

        self.ingest_function = create_function(
            self,
            "IngestFunction",
            config=config,
            handler=INGEST_HANDLER,
            settings=IngestSettings(buffer_queue_url=buffer.queue.queue_url, channel_arns=self.channel_arn),
            description="OpenTrail PutAuditEvents: validates audit events and buffers them as records",
            timeout=Duration.seconds(29),
        )
        buffer.queue.grant_send_messages(self.ingest_function)
        acknowledge_kms_grants(self.ingest_function.role or self.ingest_function)

        self.api = self._ingest_api(config)

        # Failed asynchronous invocations (after 2 retries) land here instead of vanishing.
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.dead_letter_alarm = dead_letter_alarm(
            self,
            "DeadLetterAlarm",
            self.dead_letter_queue,
            "OpenTrail: EventBridge events failed capture 3 times and reached the capture dead-letter queue.",
        )

        self.eventbridge_capture_function = create_function(
            self,
            "EventBridgeCaptureFunction",
            config=config,
            handler=EVENTBRIDGE_CAPTURE_HANDLER,
            settings=EventBridgeCaptureSettings(buffer_queue_url=buffer.queue.queue_url),
            description="OpenTrail EventBridge capture: turns matching events into buffered records",
            timeout=Duration.seconds(30),
            dead_letter_queue=self.dead_letter_queue,
            retry_attempts=2,
        )
        buffer.queue.grant_send_messages(self.eventbridge_capture_function)
        acknowledge_kms_grants(self.eventbridge_capture_function.role or self.eventbridge_capture_function)

        # L1 rule: the configured pattern may use content filters ({"prefix": ...}), which the
        # typed EventPattern (lists of strings) cannot express.
        self.rule = events.CfnRule(
            self,
            "EventRule",
            description="OpenTrail: events on the default bus that become audit records",
            event_bus_name="default",
            event_pattern=dict(config.event_bridge_capture_pattern),
            state="ENABLED",
            targets=[
                events.CfnRule.TargetProperty(
                    id="EventBridgeCaptureFunction",
                    arn=self.eventbridge_capture_function.function_arn,
                )
            ],
        )
        self.eventbridge_capture_function.add_permission(
            "InvokeFromEventRule",
            principal=iam.ServicePrincipal("events.amazonaws.com"),
            source_arn=self.rule.attr_arn,
        )

        # S3 data events (docs/capture.md): the buckets' own EventBridge notifications. CDK cannot
        # switch notifications on for buckets it does not own; their owners do (the docs show how).
        self.s3_data_event_rule = self._s3_rule(config.s3_data_event_buckets) if config.s3_data_event_buckets else None

    def _s3_rule(self, buckets: list[str]) -> events.CfnRule:
        rule = events.CfnRule(
            self,
            "S3DataEventRule",
            description="OpenTrail: object-level S3 notifications of the configured buckets become S3 data events",
            event_bus_name="default",
            event_pattern={
                "source": [S3_SOURCE],
                "detail-type": sorted(S3_DETAIL_TYPES),
                "detail": {"bucket": {"name": list(buckets)}},
            },
            state="ENABLED",
            targets=[
                events.CfnRule.TargetProperty(
                    id="EventBridgeCaptureFunction", arn=self.eventbridge_capture_function.function_arn
                )
            ],
        )
        self.eventbridge_capture_function.add_permission(
            "InvokeFromS3DataEventRule",
            principal=iam.ServicePrincipal("events.amazonaws.com"),
            source_arn=rule.attr_arn,
        )
        return rule

    def _ingest_api(self, config: OpenTrailConfig) -> apigateway.RestApi:
        access_logs = logs.LogGroup(
            self,
            "IngestApiAccessLogs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        api = apigateway.RestApi(
            self,
            "IngestApi",
            description="OpenTrail ingestion: cloudtrail-data PutAuditEvents (SigV4, service execute-api)",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            default_method_options=apigateway.MethodOptions(authorization_type=apigateway.AuthorizationType.IAM),
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
            ),
        )
        # The stack exports the URL as IngestApiUrl; drop RestApi's own generated "Endpoint" output.
        api.node.try_remove_child("Endpoint")
        validator = api.add_request_validator(
            "ChannelArnValidator",
            validate_request_parameters=True,
            validate_request_body=True,
        )
        api.root.add_resource("PutAuditEvents").add_method(
            "POST",
            apigateway.LambdaIntegration(self.ingest_function, proxy=True),
            authorization_type=apigateway.AuthorizationType.IAM,
            request_parameters={"method.request.querystring.channelArn": True},
            request_validator=validator,
        )
        acknowledge(
            api,
            {
                "AwsSolutions-APIG3": "No WAF: every method requires SigV4 (AWS_IAM) and the stage is throttled; "
                "a web ACL adds fixed monthly cost and can be attached later without code changes.",
                "AwsSolutions-COG4": "Callers are AWS principals authenticated with SigV4 (AWS_IAM), like "
                "CloudTrail's own PutAuditEvents; there are no end users for a Cognito user pool.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]": "API Gateway's account-level CloudWatch role, required for "
                "stage access and execution logs; this AWS managed policy is the documented policy for that role.",
            },
        )
        return api
