#!/usr/bin/env python3
"""The extension example as a CDK app: OpenTrail's stack plus a team's stack with two functions.

    cdk synth --app ".venv/bin/python examples/app.py"      (from the repository root)

* ``WebhookCapture`` (examples/webhook_capture): a capture source behind a function URL,
  wired with ``trail.add_capture_source(fn)``;
* ``InsightsToChat`` (examples/insights_to_chat): a subscriber for Insights events, wired
  with ``trail.add_subscriber(fn)``.

Nothing in infra/ or lambdas/opentrail is edited: the functions use the public methods.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from aws_cdk import App, Duration, Environment, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]

import infra  # noqa: E402, F401  (puts lambdas/ on sys.path)
from infra.config import CONTEXT_KEY, load_config  # noqa: E402
from infra.stack import OpenTrailStack  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent
RUNTIME = lambda_.Runtime.PYTHON_3_14


def function_code(example: str) -> lambda_.Code:
    """The example's package plus the opentrail library, staged into one directory."""
    staging = ROOT / "cdk.out" / ".examples-staging" / example  # rebuilt on every synth
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(EXAMPLES / example, staging / "examples" / example, ignore=shutil.ignore_patterns("__pycache__"))
    (staging / "examples" / "__init__.py").write_text("")
    shutil.copytree(
        ROOT / "lambdas" / "opentrail",
        staging / "opentrail",
        ignore=shutil.ignore_patterns("__pycache__", "local", "cli*.py", "*_cli.py", "testing.py"),
    )
    return lambda_.Code.from_asset(str(staging))


def team_function(scope: Construct, name: str, example: str, environment: dict[str, str]) -> lambda_.Function:
    """A function with its own role (no managed policies) and log group, as cdk-nag wants."""
    log_group = logs.LogGroup(
        scope, f"{name}Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
    )
    role = iam.Role(scope, f"{name}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    log_group.grant_write(role)
    return lambda_.Function(
        scope,
        name,
        runtime=RUNTIME,
        handler=f"examples.{example}.handler.handler",
        code=function_code(example),
        timeout=Duration.seconds(10),
        role=role,
        log_group=log_group,
        environment=environment,
    )


class TeamStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, trail: OpenTrailStack, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        webhook = team_function(self, "WebhookCapture", "webhook_capture", {"WEBHOOK_SECRET": "change-me"})
        webhook.add_function_url(auth_type=lambda_.FunctionUrlAuthType.NONE)  # the HMAC signature authenticates
        trail.add_capture_source(webhook)

        chat = team_function(
            self, "InsightsToChat", "insights_to_chat", {"CHAT_WEBHOOK_URL": "https://chat.example.com/hooks/abc"}
        )
        trail.add_subscriber(chat)  # Insights events; e.g. {"detail": {"insightDetails": {"state": ["Start"]}}}


def build(app: App, *, account: str | None = None, region: str | None = None) -> tuple[OpenTrailStack, TeamStack]:
    config = load_config(app.node.try_get_context(CONTEXT_KEY))
    env = Environment(account=account, region=region) if account or region else None
    trail = OpenTrailStack(app, "OpenTrail", config=config, env=env)
    team = TeamStack(app, "TeamExtensions", trail=trail, env=env)
    return trail, team


if __name__ == "__main__":
    import json

    application = App(context={CONTEXT_KEY: json.loads((ROOT / "cdk.json").read_text())["context"][CONTEXT_KEY]})
    build(application)
    Validations.of(application).add_plugins(AwsSolutionsChecks(application))
    application.synth()
