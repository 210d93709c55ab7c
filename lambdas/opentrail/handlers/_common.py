"""Powertools set-up shared by the handlers (one Logger/Tracer/Metrics per process).

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_METRICS_NAMESPACE (see opentrail.settings.Settings).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "OpenTrail")


def deployment_of(context: Any) -> tuple[str, str]:
    """(account id, region) of this function, from the invoked function ARN."""
    parts = str(context.invoked_function_arn).split(":")
    if len(parts) < 7 or parts[0] != "arn":
        raise ValueError(f"context.invoked_function_arn: not a Lambda ARN: {context.invoked_function_arn!r}")
    return parts[4], parts[3]
