"""Opt-in end-to-end test against a deployed stack (`make deploy`, then `make e2e-deployed`).

Runs only when OPENTRAIL_E2E_STACK names a deployed stack and real AWS credentials are
available; otherwise every test here is skipped with the reason. It sends one event through
the deployed PutAuditEvents API with the stock boto3 `cloudtrail-data` client (signed for API
Gateway), flushes the batcher by invoking it, and finds the record in the log bucket.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

pytestmark = pytest.mark.deployed

STACK = os.environ.get("OPENTRAIL_E2E_STACK", "")


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    if not STACK:
        pytest.skip("set OPENTRAIL_E2E_STACK=<stack name> to run tests against a deployed stack")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # tests/conftest.py installs fake credentials for moto; use the real ones saved by the caller.
    # (an explicit profile makes botocore ignore the fake environment credentials).
    keys = os.environ.get("OPENTRAIL_E2E_AWS_ACCESS_KEY_ID")
    try:
        session = boto3.Session(
            aws_access_key_id=keys,
            aws_secret_access_key=os.environ.get("OPENTRAIL_E2E_AWS_SECRET_ACCESS_KEY"),
            aws_session_token=os.environ.get("OPENTRAIL_E2E_AWS_SESSION_TOKEN"),
            profile_name=None if keys else os.environ.get("OPENTRAIL_E2E_AWS_PROFILE", "default"),
            region_name=os.environ.get("OPENTRAIL_E2E_REGION", "us-east-1"),
        )
        stack = session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    except (BotoCoreError, ClientError) as error:
        pytest.skip(f"no usable AWS credentials or stack {STACK!r}: {error}")
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    return {"session": session, "outputs": outputs}


def test_deployed_put_audit_events_reaches_the_log_bucket(deployed: dict[str, Any]) -> None:
    from opentrail.client import cloudtrail_data_client

    session, outputs = deployed["session"], deployed["outputs"]
    client = cloudtrail_data_client(outputs["IngestApiUrl"].rstrip("/"), session=session)
    marker = str(uuid.uuid4())
    event_data = {
        "version": "1.0",
        "userIdentity": {"type": "E2ETest", "principalId": "opentrail-e2e"},
        "eventSource": "e2e.opentrail.example",
        "eventName": "DeployedRoundTrip",
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "UID": marker,
        "recipientAccountId": outputs["ChannelArn"].split(":")[4],
    }
    response = client.put_audit_events(
        channelArn=outputs["ChannelArn"], auditEvents=[{"id": "e2e-1", "eventData": json.dumps(event_data)}]
    )
    assert response["failed"] == []
    event_id = response["successful"][0]["eventID"]

    session.client("lambda").invoke(FunctionName=outputs["BatcherFunctionName"], Payload=b'{"action": "flush"}')

    s3 = session.client("s3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outputs["LogBucketName"], Prefix=""):
            for item in sorted(page.get("Contents", []), key=lambda i: i["LastModified"], reverse=True)[:50]:
                body = s3.get_object(Bucket=outputs["LogBucketName"], Key=item["Key"])["Body"].read()
                records = json.loads(gzip.decompress(body))["Records"]
                if any(record["eventID"] == event_id for record in records):
                    return
        time.sleep(5)
    pytest.fail(f"event {event_id} not found in s3://{outputs['LogBucketName']} within 2 minutes")
