"""A boto3 ``cloudtrail-data`` client for OpenTrail's PutAuditEvents API behind API Gateway.

The stock client signs with SigV4 for the service ``cloudtrail-data``; API Gateway's IAM
authorization only accepts signatures scoped to ``execute-api``. This helper returns the
stock client (same methods, same exceptions) whose requests are signed for
``execute-api``::

    from opentrail.client import cloudtrail_data_client

    client = cloudtrail_data_client("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    client.put_audit_events(channelArn=channel_arn, auditEvents=[{"id": "1", "eventData": data}])
"""

from __future__ import annotations

from typing import Any

import boto3

SIGNING_NAME = "execute-api"


def _sign_for_api_gateway(context: dict[str, Any], **_: Any) -> None:
    # botocore's RequestSigner uses request.context["signing"]["signing_name"] when set
    # (the same hook endpoint rule sets use); `before-call` runs after endpoint resolution.
    context.setdefault("signing", {})["signing_name"] = SIGNING_NAME


def cloudtrail_data_client(
    endpoint_url: str,
    *,
    session: boto3.Session | None = None,
    region_name: str | None = None,
) -> Any:
    """A ``cloudtrail-data`` client for `endpoint_url` (keep the stage path, e.g. ``/prod``),
    signing for ``execute-api`` in `region_name` (default: the session's region)."""
    session = session or boto3.Session()
    client = session.client("cloudtrail-data", endpoint_url=endpoint_url, region_name=region_name)
    client.meta.events.register("before-call.cloudtrail-data", _sign_for_api_gateway)
    return client
