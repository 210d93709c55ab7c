#!/usr/bin/env python3
"""The CDK app: read and validate the ``opentrail`` context, build the stack, run cdk-nag.

Synth needs no AWS credentials and no network: the environment comes from
CDK_DEFAULT_ACCOUNT/CDK_DEFAULT_REGION when the CLI knows them, else the stack is
environment-agnostic.
"""

from __future__ import annotations

import os
import sys

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

import infra  # noqa: F401  (puts lambdas/ on sys.path)
from infra.config import CONTEXT_KEY, ConfigError, OpenTrailConfig, load_config
from infra.stack import OpenTrailStack

STACK_NAME = "OpenTrail"


def build_stacks(app: App, config: OpenTrailConfig, *, account: str | None, region: str | None) -> list[OpenTrailStack]:
    """One stack, or with ``regions`` one per region (docs/trails.md, "Multi-region"): the home
    region's stack keeps the name ``OpenTrail`` (it owns the log bucket), the others are
    ``OpenTrail-<region>`` and write into the home bucket."""
    description = "OpenTrail: self-hosted audit trail"
    if not config.regions:
        env = Environment(account=account, region=region) if account or region else None
        return [OpenTrailStack(app, STACK_NAME, config=config, env=env, description=description)]
    return [
        OpenTrailStack(
            app,
            STACK_NAME if name == config.home else f"{STACK_NAME}-{name}",
            config=config,
            env=Environment(account=account, region=name),
            description=f"{description} ({'home region' if name == config.home else f'writes to {config.home}'})",
        )
        for name in config.regions
    ]


def main() -> None:
    app = App()
    try:
        config = load_config(app.node.try_get_context(CONTEXT_KEY))
    except (ConfigError, ValueError) as error:
        sys.exit(f"cdk.json context: {error}")
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    build_stacks(app, config, account=account, region=os.environ.get("CDK_DEFAULT_REGION"))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


if __name__ == "__main__":
    main()
