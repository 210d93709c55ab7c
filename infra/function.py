"""The one function factory: every OpenTrail Lambda function is built here, the same way.

Python 3.12 on x86_64 (the Powertools layer is the x86_64 build), active X-Ray tracing, an
explicit log group with the configured retention, the public Powertools layer, code straight
from ``lambdas/`` (no Docker, no bundling), an execution role with no managed policies, and an
environment built from the function's pydantic settings model (``opentrail.settings``).
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra import LAMBDAS_DIR
from infra.config import POWERTOOLS_LAYER_PARAMETER, OpenTrailConfig
from infra.nag import acknowledge
from opentrail.settings import Settings

INGEST_HANDLER: Final = "opentrail.handlers.ingest.handler"
EVENTBRIDGE_CAPTURE_HANDLER: Final = "opentrail.handlers.eventbridge_capture.handler"
BATCHER_HANDLER: Final = "opentrail.handlers.batcher.handler"
SCHEDULED_INPUT: Final = {"action": "scheduled"}  # what every schedule sends its function

# What the Lambda asset leaves out: the local runtime (moto), the command line and its
# command modules, caches, tests.
ASSET_EXCLUDE: Final = [
    "opentrail/local",
    "opentrail/cli*",
    "opentrail/lookup_cli.py",
    "opentrail/validate_logs.py",
    "opentrail/insights_offline.py",
    "opentrail/trails_cli.py",
    "opentrail/testing.py",
    "**/__pycache__",
    "**/*.pyc",
    "*.egg-info",
    "tests",
    "**/tests",
]

RETENTION: Final[dict[int, logs.RetentionDays]] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}

_LAYER_ID: Final = "PowertoolsLayer"


def retention(days: int) -> logs.RetentionDays:
    return RETENTION[days]


def powertools_layer(scope: Construct, config: OpenTrailConfig) -> lambda_.ILayerVersion:
    """The public Powertools v3 layer, referenced once per stack: the configured layer number,
    or (default) the layer Powertools publishes for the pinned version, whose ARN CloudFormation
    reads from Powertools' public SSM parameter in the stack's region at deploy time."""
    stack = Stack.of(scope)
    existing = stack.node.try_find_child(_LAYER_ID)
    if existing is not None:
        return existing  # type: ignore[return-value]
    suffix = config.powertools_layer_arn_suffix
    if suffix is None:
        arn = ssm.StringParameter.value_for_string_parameter(stack, POWERTOOLS_LAYER_PARAMETER)
    else:
        arn = f"arn:{stack.partition}:lambda:{stack.region}:{suffix}"
    return lambda_.LayerVersion.from_layer_version_arn(stack, _LAYER_ID, arn)


def lambda_code() -> lambda_.Code:
    return lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=ASSET_EXCLUDE)


def create_function(
    scope: Construct,
    construct_id: str,
    *,
    config: OpenTrailConfig,
    handler: str,
    settings: Settings,
    description: str,
    timeout: Duration,
    memory_size: int = 256,
    dead_letter_queue: sqs.IQueue | None = None,
    retry_attempts: int | None = None,
) -> lambda_.Function:
    """Create ``<construct_id>`` with its ``<construct_id>Role`` and ``<construct_id>LogGroup``.

    The role starts empty apart from writing to its own log group and X-Ray; callers add
    least-privilege grants for the resources the function touches.
    """
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}LogGroup",
        retention=retention(config.log_retention_days),
        removal_policy=RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Execution role of the OpenTrail {construct_id}",
    )
    log_group.grant_write(role)
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=lambda_.Architecture.X86_64,
        handler=handler,
        code=lambda_code(),
        layers=[powertools_layer(scope, config)],
        environment=settings.to_env(),
        description=description,
        timeout=timeout,
        memory_size=memory_size,
        tracing=lambda_.Tracing.ACTIVE if config.tracing else lambda_.Tracing.DISABLED,
        log_group=log_group,
        role=role,
        dead_letter_queue=dead_letter_queue,
        retry_attempts=retry_attempts,
    )
    acknowledge(
        role,
        {
            "AwsSolutions-IAM5[Resource::*]": "X-Ray PutTraceSegments/PutTelemetryRecords (active tracing) support "
            "no resource-level permissions; CDK adds them with Resource '*'.",
        },
    )
    acknowledge(
        function,
        {
            "AwsSolutions-L1": "Python 3.12 is pinned on purpose: the public Powertools layer used here is the "
            "python312 build; runtime and layer are bumped together.",
        },
    )
    return function


def schedule(function: lambda_.Function, when: events.Schedule, description: str) -> events.Rule:
    """An EventBridge rule (child ``Schedule`` of the function's parent) invoking `function`
    with ``{"action": "scheduled"}`` on `when`."""
    scope = function.node.scope
    assert isinstance(scope, Construct)
    return events.Rule(
        scope,
        "Schedule",
        description=description,
        schedule=when,
        targets=[targets.LambdaFunction(function, event=events.RuleTargetInput.from_object(SCHEDULED_INPUT))],
    )
