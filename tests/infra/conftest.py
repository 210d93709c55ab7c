"""Synthesize the stack once per configuration (session scope); template tests only read it.

CDK_VALIDATION=false (tests/conftest.py) skips CDK's built-in CloudFormation validation, which
makes Template.from_stack ~0.1 s; `make synth` runs the full validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def cdk_context() -> dict[str, Any]:
    """The context `cdk synth` sees: the `opentrail` knobs and the feature flags from cdk.json."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


@dataclass
class Synth:
    app: Any
    stack: Any
    template: Any  # aws_cdk.assertions.Template

    def resources(self, type_name: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.template.find_resources(type_name)
        return found

    def one(
        self,
        type_name: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        *,
        prefix: str = "",
    ) -> tuple[str, dict[str, Any]]:
        """The single resource of a type (logical id starting with ``prefix``, matching ``predicate``)."""
        matches = [(k, v) for k, v in self.resources(type_name).items() if k.startswith(prefix) and predicate(v)]
        assert len(matches) == 1, f"expected one {type_name}, found {[k for k, _ in matches]}"
        return matches[0]

    def function(self, handler: str) -> tuple[str, dict[str, Any]]:
        return self.one("AWS::Lambda::Function", lambda r: r["Properties"]["Handler"] == handler)

    def role_policy_statements(self, function_handler: str) -> list[dict[str, Any]]:
        _, function = self.function(function_handler)
        role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
        statements: list[dict[str, Any]] = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
        return statements


def synth(overrides: dict[str, Any] | None = None) -> Synth:
    from aws_cdk import App, Environment
    from aws_cdk.assertions import Template

    import infra  # noqa: F401
    from infra.config import load_config
    from infra.stack import OpenTrailStack

    context = cdk_context()
    context["opentrail"] = {**context["opentrail"], **(overrides or {})}
    app = App(context=context)
    stack = OpenTrailStack(
        app,
        "OpenTrail",
        config=load_config(context["opentrail"]),
        env=Environment(account="123456789012", region="us-east-1"),
    )
    return Synth(app=app, stack=stack, template=Template.from_stack(stack))


# Non-default knobs exercised by a second synth.
VARIANT = {
    "s3KeyPrefix": "audit/prod",
    "batchScheduleMinutes": 5,
    "batcherTimeoutSeconds": 300,
    "logTransitionDays": 30,
    "logTransitionStorageClass": "DEEP_ARCHIVE",
    "logExpirationDays": 2555,
    "noncurrentVersionExpirationDays": 7,
    "accessLogging": False,
    "accessLoggingDisabledReason": "the organisation's central S3 access logging covers this account",
    "logRetentionDays": 90,
    "powertoolsLayerVersion": 31,
    "channelName": "payments",
    "eventBridgeCapturePattern": {"source": [{"prefix": "com.example."}], "detail-type": ["Audit"]},
    "objectLockMode": "COMPLIANCE",
    "objectLockRetentionDays": 2555,
    "tracing": False,
}


@pytest.fixture(scope="session")
def default_synth() -> Synth:
    return synth()


@pytest.fixture(scope="session")
def variant_synth() -> Synth:
    return synth(VARIANT)
