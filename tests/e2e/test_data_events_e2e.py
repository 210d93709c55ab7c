"""Issue 7's "Done when", end to end on moto: S3 data events (EventBridge notifications through
`eventbridge_capture.handler`), Lambda data events (`@audited`), SDK-recorded calls
(`record_boto3` against moto S3 and DynamoDB) and the webhook example's events all go through
the buffer and the batcher (a trail with S3 and Lambda data selectors beside a management trail
with Insights) into log files, the event history (LookupEvents, history data events on), the
Insights minute aggregates, and `opentrail usage`'s counts and prices."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from test_batcher import Harness

from examples.webhook_capture.handler import handle
from opentrail.adapters.buffer import Buffer
from opentrail.adapters.insights_store import InsightsStore
from opentrail.adapters.usage_store import UsageStore
from opentrail.audited import audited
from opentrail.cli import main
from opentrail.domain.insights.aggregates import minute_of
from opentrail.domain.lookup import LookupQuery
from opentrail.domain.usage import UsageCounts, summarise
from opentrail.handlers import eventbridge_capture
from opentrail.handlers.batcher import history_for
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources
from opentrail.recorder import record_boto3
from opentrail.settings import EventBridgeCaptureSettings
from opentrail.sinks import BufferSink

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "e2e-reports"
SECRET = "hook-secret"
TRAILS = [
    {
        "Name": "management",
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}],
    },
    {
        "Name": "data",
        "S3KeyPrefix": "data",
        "EventSelectors": [
            {
                "ReadWriteType": "All",
                "IncludeManagementEvents": True,
                "DataResources": [
                    {"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{BUCKET}/"]},
                    {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]},
                ],
            }
        ],
    },
]


def s3_notification(now: datetime, key: str, n: int) -> dict[str, Any]:
    """An EventBridge "Object Created" envelope from S3 (S3 user guide's documented shape)."""
    return {
        "version": "0",
        "id": f"17793124-05d4-b198-2fde-7ededc63b1{n:02d}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "617f0829"},
            "request-id": f"N4N7GDK58NMKJ1{n:02d}",
            "requester": ACCOUNT,
            "source-ip-address": "198.51.100.4",
            "reason": "PutObject",
        },
    }


def webhook(payload: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    body = json.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return {
        "headers": {"X-Signature": signature, "X-Delivery-Id": delivery_id, "X-Event-Name": "repository.push"},
        "body": body,
        "requestContext": {"identity": {"sourceIp": "192.0.2.10"}},
    }


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    return Harness(resources, trails=json.dumps(TRAILS), history_data_events=True)


def records_in(harness: Harness, prefix: str) -> list[dict[str, Any]]:
    return [r for key in harness.object_keys() if key.startswith(prefix) for r in harness.records(key)]


def test_data_events_sdk_calls_and_extensions_flow_into_files_history_insights_and_usage(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    resources = harness.resources
    now = datetime.now(UTC).replace(microsecond=0)
    sqs = boto3.client("sqs", region_name=REGION)
    sink = BufferSink(resources.buffer_queue_url, client=sqs, account_id=ACCOUNT, region=REGION)

    # 1. S3 data events: EventBridge notifications → EventBridgeCaptureFunction → buffer.
    capture_settings = EventBridgeCaptureSettings(buffer_queue_url=resources.buffer_queue_url)
    s3_ids = [
        eventbridge_capture.handler(
            s3_notification(now, f"daily/{n}.csv", n),
            LocalContext(function_name="opentrail-eventbridge-capture"),
            buffer=Buffer(resources.buffer_queue_url, client=sqs),
            settings=capture_settings,
        )["eventID"]
        for n in range(3)
    ]

    # 2. Lambda data events: a team's @audited handler (one call fails: recorded, re-raised)
    # and the webhook example's handler, audited too, whose events are 3. the extension's.
    @audited(sink=sink)
    def orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("fail"):
            raise ValueError("no such order")
        return {"ok": True}

    @audited(sink=sink)
    def webhook_function(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return handle(event, secret=SECRET, send=sink)

    orders_context = LocalContext(function_name="orders")
    orders({"orderId": "o-1"}, orders_context)
    with pytest.raises(ValueError, match="no such order"):
        orders({"fail": True}, orders_context)
    webhook_ids: list[str] = []
    for n in range(2):
        reply = webhook_function(
            webhook({"actor": {"id": "u-7", "name": "dana"}, "ref": f"main-{n}"}, f"delivery-{n}"),
            LocalContext(function_name="webhook-capture"),
        )
        assert reply["statusCode"] == 202
        webhook_ids.extend(json.loads(reply["body"])["eventIDs"])

    # 4. SDK calls recorded with record_boto3 against moto S3 and DynamoDB.
    session = boto3.Session(region_name=REGION)
    recorder = record_boto3(session, emit=sink)
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="daily/3.csv", Body=b"a,b\n")
    s3.get_object(Bucket=BUCKET, Key="daily/3.csv")["Body"].read()
    ddb = session.client("dynamodb")
    ddb.create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="orders", Item={"id": {"S": "o-1"}})
    recorder.flush()

    # The batcher drains everything the sources buffered. Usage is counted per delivery day:
    # this run's, which is tomorrow when `now` is in the last 2 minutes of the UTC day.
    delivered = now + timedelta(minutes=2)
    summary = harness.run(at=delivered)
    assert summary["failedBatches"] == 0
    assert summary["deadLettered"] == 0
    assert harness.queue_depth() == 0

    # -- log files: per trail, as the selectors say ---------------------------------------
    management = records_in(harness, "AWSLogs/")
    data = records_in(harness, "data/AWSLogs/")
    by_name = Counter((r["eventSource"], r["eventName"]) for r in data)
    assert {r["eventID"] for r in data if r["eventSource"] == "s3.amazonaws.com"} >= set(s3_ids)
    assert by_name[("s3.amazonaws.com", "PutObject")] == 4  # 3 notifications + the recorded call
    assert by_name[("s3.amazonaws.com", "GetObject")] == 1
    invokes = [r for r in data if r["eventName"] == "Invoke"]
    assert len(invokes) == 4  # 2 orders + 2 webhook invocations
    assert {r["resources"][0]["ARN"] for r in invokes} == {
        orders_context.invoked_function_arn,
        LocalContext(function_name="webhook-capture").invoked_function_arn,
    }
    assert [r.get("errorCode") for r in invokes if r["resources"][0]["ARN"].endswith(":orders")].count(None) == 1
    # DynamoDB data events: recorded, but no trail selects them.
    assert all(r["eventName"] != "PutItem" for r in management + data)
    assert all(r.get("eventCategory", "Management") == "Management" for r in management)
    management_ids = {r["eventID"] for r in management}
    assert set(webhook_ids) <= management_ids
    assert {("s3.amazonaws.com", "CreateBucket"), ("dynamodb.amazonaws.com", "CreateTable")} <= {
        (r["eventSource"], r["eventName"]) for r in management
    }
    assert management_ids <= {r["eventID"] for r in data}  # the data trail takes management events too

    # -- event history: LookupEvents finds every kind -------------------------------------
    history = history_for(harness.settings, client=harness.ddb)

    def lookup(*attribute: tuple[str, str]) -> list[dict[str, Any]]:
        query = LookupQuery(
            region=REGION, start=now - timedelta(hours=1), end=now + timedelta(hours=1), attributes=attribute
        )
        return list(history.lookup(query, None).records)

    for event_id in [*s3_ids, *webhook_ids, invokes[0]["eventID"]]:
        assert [r["eventID"] for r in lookup(("EventId", event_id))] == [event_id]
    assert {r["eventName"] for r in lookup(("EventSource", "lambda.amazonaws.com"))} == {"Invoke"}
    assert len(lookup(("EventSource", "webhooks.example.com"))) == 2
    assert {r["eventName"] for r in lookup(("EventSource", "dynamodb.amazonaws.com"))} == {"CreateTable"}

    # -- Insights: the minute aggregates hold the management events -----------------------
    first = minute_of((now - timedelta(minutes=5)).timestamp())
    minutes = InsightsStore(resources.insights_table, client=harness.ddb).read_aggregates(first, first + 15)
    apis: Counter[tuple[str, str]] = Counter()
    for per_minute in minutes.values():
        for minute in per_minute.values():
            for api, aggregate in minute.items():
                apis[api] += aggregate.calls
    assert sum(apis.values()) == len(management_ids)
    assert apis[("webhooks.example.com", "RepositoryPush")] == 2
    assert apis[("s3.amazonaws.com", "CreateBucket")] == 1
    assert ("lambda.amazonaws.com", "Invoke") not in apis  # data events are not analysed

    # -- usage: counts per trail and category, and both prices ----------------------------
    writes = sum(1 for r in management if r.get("readOnly") is not True)
    reads = len(management_ids) - writes
    rows = {
        row.trail: row.counts
        for row in summarise(
            UsageStore(resources.ledger_table, client=harness.ddb).read(delivered.date(), delivered.date())
        )
    }
    assert rows == {
        "management": UsageCounts(management_first=len(management_ids), insights_analysed=2 * writes + reads),
        "data": UsageCounts(management_additional=len(management_ids), data=len(data) - len(management_ids)),
    }
    day = delivered.date().isoformat()
    region = ["--region", REGION, "--ledger-table", resources.ledger_table]
    assert main(["usage", "--since", day, "--until", day, *region]) == 0
    out = "\n".join(line for line in capsys.readouterr().out.splitlines() if not line.startswith("{"))
    table = {(line[:24].strip(), line[49:80].strip()): line[80:].split() for line in out.splitlines()[2:12]}
    assert table[("data", "management, additional copies")][0] == str(len(management_ids))
    assert table[("data", "data events")][0] == str(len(data) - len(management_ids))
    assert table[("management", "Insights events analysed")][0] == str(2 * writes + reads)
    assert all(price.startswith("$") for price in table[("data", "total")][1:])  # CloudTrail's, OpenTrail's
    assert "CloudTrail list prices" in out
    assert "OpenTrail's estimated AWS cost" in out
