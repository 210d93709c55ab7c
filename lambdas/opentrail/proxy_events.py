"""API Gateway REST proxy events as IAM auth delivers them, for calling the API handlers
in-process (`opentrail local`, the demo, tests). One builder for both APIs."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


def rest_proxy_event(
    *,
    method: str,
    path: str,
    resource: str,
    body: str | bytes | None,
    headers: Mapping[str, str],
    query: Mapping[str, str] | None,
    caller_account_id: str | None,
    caller_arn: str | None,
    stage: str,
) -> dict[str, Any]:
    is_base64 = isinstance(body, bytes)
    text = base64.b64encode(body).decode() if isinstance(body, bytes) else body
    all_headers = {"Host": "api.opentrail.local", **headers}
    query = dict(query or {})
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} or None,
        "pathParameters": {"proxy": path.lstrip("/")} if resource == "/{proxy+}" else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": "local-request",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {
                "accountId": caller_account_id,
                "userArn": caller_arn,
                "caller": caller_arn,
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers.get("User-Agent", "opentrail-local"),
            },
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }
