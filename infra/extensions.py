"""Extension points on OpenTrailStack (docs/extending.md): your own functions, no edits here.

* `add_capture_source(function)`: the function may call `opentrail.producer.emit` (and use
  `@audited` / `record_boto3`): exactly ``sqs:SendMessage`` on the buffer queue (SendMessageBatch
  is authorised by it) and ``kms:GenerateDataKey`` + ``kms:Decrypt`` on the queue's key, plus
  the environment ``OPENTRAIL_BUFFER_QUEUE_URL`` and ``AWS_ACCOUNT_ID``.
* `add_subscriber(function, event_pattern)`: an EventBridge rule on the default bus for what
  OpenTrail delivers there (source ``opentrail``; Insights events by default, detail-type
  ``AWS Insight via CloudTrail``), filtered by `event_pattern`, targeting the function.

Both put what they create beside the function (its stack), so a function in another stack of
the same app works and no dependency cycle appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aws_cdk import Names, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

OPENTRAIL_SOURCE: Final = "opentrail"
INSIGHT_DETAIL_TYPE: Final = "AWS Insight via CloudTrail"
QUEUE_URL_ENV: Final = "OPENTRAIL_BUFFER_QUEUE_URL"


def add_capture_source(queue: sqs.IQueue, function: lambda_.Function) -> None:
    """Let `function` emit records into `queue` (the buffer), nothing more."""
    if function.role is None:
        raise ValueError(f"{function.node.path}: add_capture_source needs a function with an execution role")
    key = queue.encryption_master_key
    function.add_to_role_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue.queue_arn]))
    if key is not None:
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn])
        )
    function.add_environment(QUEUE_URL_ENV, queue.queue_url)
    function.add_environment("AWS_ACCOUNT_ID", Stack.of(function).account)


def add_subscriber(function: lambda_.IFunction, event_pattern: Mapping[str, Any] | None = None) -> events.CfnRule:
    """An EventBridge rule (default bus) sending OpenTrail's matching events to `function`.

    `event_pattern` is an EventBridge pattern (content filters allowed); ``source`` defaults
    to ``["opentrail"]`` and ``detail-type`` to Insights events.
    """
    pattern: dict[str, Any] = {"source": [OPENTRAIL_SOURCE], "detail-type": [INSIGHT_DETAIL_TYPE]}
    pattern.update(event_pattern or {})
    scope = function.node.scope
    assert isinstance(scope, Construct), function.node.path
    base = f"{Names.node_unique_id(function.node)}OpenTrailSubscription"
    index = 1
    while scope.node.try_find_child(f"{base}{index}") is not None:
        index += 1
    rule = events.CfnRule(
        scope,
        f"{base}{index}",
        description=f"OpenTrail events for {function.node.id}",
        event_bus_name="default",
        event_pattern=pattern,
        state="ENABLED",
        targets=[events.CfnRule.TargetProperty(id="Subscriber", arn=function.function_arn)],
    )
    function.add_permission(
        f"OpenTrailSubscription{index}",
        principal=iam.ServicePrincipal("events.amazonaws.com"),
        source_arn=rule.attr_arn,
    )
    return rule


class OpenTrailExtensions:
    """Mixin for OpenTrailStack: the public extension methods."""

    buffer: Any  # infra.buffer.Buffer, set by OpenTrailStack

    def add_capture_source(self, function: lambda_.Function) -> None:
        """Grant `function` what `opentrail.producer.emit` needs and set its environment."""
        add_capture_source(self.buffer.queue, function)

    def add_subscriber(self, function: lambda_.IFunction, event_pattern: Mapping[str, Any] | None = None) -> Any:
        """Send OpenTrail's delivered events matching `event_pattern` (default: Insights) to `function`."""
        return add_subscriber(function, event_pattern)
