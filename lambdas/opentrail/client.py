"""boto3 ``cloudtrail`` and ``cloudtrail-data`` clients for OpenTrail's API behind API Gateway.

The stock clients sign with SigV4 for the service ``cloudtrail`` / ``cloudtrail-data``; API
Gateway's IAM authorization only accepts signatures scoped to ``execute-api``. These helpers
return the stock clients (same methods, paginators and exceptions) whose requests are signed
for ``execute-api``::

    from opentrail.client import cloudtrail_client, cloudtrail_data_client

    api = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"
    cloudtrail_data_client(api).put_audit_events(channelArn=channel_arn, auditEvents=[...])
    for page in cloudtrail_client(api).get_paginator("lookup_events").paginate():
        ...

Against ``opentrail local`` (no API Gateway) the stock clients work as they are.
"""

from __future__ import annotations

from typing import Any, Final

import boto3

SIGNING_NAME: Final = "execute-api"
# OpenTrail's opt-in to AND several LookupEvents attributes (opentrail.domain.lookup).
MATCH_ALL_HEADER: Final = "X-OpenTrail-Match-All"


def _sign_for_api_gateway(context: dict[str, Any], **_: Any) -> None:
    # botocore's RequestSigner uses request.context["signing"]["signing_name"] when set
    # (the same hook endpoint rule sets use); `before-call` runs after endpoint resolution.
    context.setdefault("signing", {})["signing_name"] = SIGNING_NAME


def _api_gateway_client(service: str, endpoint_url: str, session: boto3.Session | None, region_name: str | None) -> Any:
    session = session or boto3.Session()
    client = session.client(service, endpoint_url=endpoint_url, region_name=region_name)
    client.meta.events.register(
        f"before-call.{client.meta.service_model.service_id.hyphenize()}", _sign_for_api_gateway
    )
    return client


def cloudtrail_data_client(
    endpoint_url: str,
    *,
    session: boto3.Session | None = None,
    region_name: str | None = None,
) -> Any:
    """A ``cloudtrail-data`` client for `endpoint_url` (keep the stage path, e.g. ``/v1``),
    signing for ``execute-api`` in `region_name` (default: the session's region)."""
    return _api_gateway_client("cloudtrail-data", endpoint_url, session, region_name)


def cloudtrail_client(
    endpoint_url: str,
    *,
    session: boto3.Session | None = None,
    region_name: str | None = None,
    match_all_attributes: bool = False,
) -> Any:
    """A ``cloudtrail`` client (LookupEvents, ...) for `endpoint_url` (keep the stage path),
    signing for ``execute-api`` in `region_name` (default: the session's region), which is
    also the region whose events are looked up.

    `match_all_attributes`: send OpenTrail's AND opt-in with every LookupEvents call (see
    `enable_match_all_attributes`)."""
    client = _api_gateway_client("cloudtrail", endpoint_url, session, region_name)
    if match_all_attributes:
        enable_match_all_attributes(client)
    return client


def _add_match_all_header(request: Any, **_: Any) -> None:
    request.headers[MATCH_ALL_HEADER] = "true"


def enable_match_all_attributes(client: Any) -> Any:
    """Make `client`'s LookupEvents calls send ``X-OpenTrail-Match-All: true``, so several
    ``LookupAttributes`` must all match (AND) instead of being rejected. Works with any
    ``cloudtrail`` client, including the stock one pointed at ``opentrail local``. Returns it."""
    client.meta.events.register("before-sign.cloudtrail.LookupEvents", _add_match_all_header)
    return client
