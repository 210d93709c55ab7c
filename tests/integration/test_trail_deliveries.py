"""Trail deliveries besides S3 (docs/trails.md, "Deliveries"): CloudWatch Logs (one record per
log event, stream <account>_CloudTrail_<region>, records over 256 KB skipped), EventBridge
(CloudTrail envelopes and detail-types, read-only calls filtered; observed through an SQS
target), SNS (the per-delivery notification, observed through a raw SQS subscription). A
failing delivery never blocks S3, is recorded in GetTrailStatus and retried on a later run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from opentrail.adapters.deliveries import (
    CloudWatchLogsSender,
    Deliveries,
    EventBridgeSender,
    NotificationSender,
    PendingDeliveries,
)
from opentrail.handlers.batcher import handler
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources
from tests.integration.test_batcher import A1, NOW, Harness, record
from tests.integration.test_trail_api import query_settings, serve

ACCOUNT = "123456789012"
TRAILS = [
    {"Name": "plain"},
    {
        "Name": "audit",
        "S3KeyPrefix": "audit",
        "Deliveries": {"CloudWatchLogs": True, "EventBridge": True, "SnsTopic": True},
    },
]


class Targets:
    """The audit trail's log group and topic, and SQS queues watching the topic and the bus."""

    def __init__(self, region: str) -> None:
        self.logs = boto3.client("logs", region_name=region)
        self.sns = boto3.client("sns", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.events = boto3.client("events", region_name=region)
        self.logs.create_log_group(logGroupName="opentrail/audit")
        topic = self.sns.create_topic(Name="opentrail-audit")["TopicArn"]
        self.topic_queue = self._queue("topic-watch")
        self.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=self._arn(self.topic_queue),
            Attributes={"RawMessageDelivery": "true"},
        )
        self.bus_queue = self._queue("bus-watch")
        self.events.put_rule(Name="opentrail-events", EventPattern=json.dumps({"source": ["opentrail"]}))
        self.events.put_targets(Rule="opentrail-events", Targets=[{"Id": "q", "Arn": self._arn(self.bus_queue)}])

    def _queue(self, name: str) -> str:
        return str(self.sqs.create_queue(QueueName=name)["QueueUrl"])

    def _arn(self, url: str) -> str:
        return str(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    def drain(self, url: str) -> list[str]:
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def log_events(self, stream: str) -> list[dict[str, Any]]:
        try:
            events = self.logs.get_log_events(logGroupName="opentrail/audit", logStreamName=stream, startFromHead=True)
        except ClientError:
            return []
        return list(events["events"])

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.drain(self.topic_queue)]

    def bus_events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.drain(self.bus_queue)]


class Failing:
    """A client whose every call fails (the destination is down)."""

    def __getattr__(self, name: str) -> Any:
        def fail(**_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": f"{name} is down"}}, name)

        return fail


def senders(region: str, *, failing: frozenset[str] = frozenset()) -> Deliveries:
    return Deliveries(
        logs=CloudWatchLogsSender(client=Failing() if "logs" in failing else boto3.client("logs", region_name=region)),
        sns=NotificationSender(client=Failing() if "sns" in failing else boto3.client("sns", region_name=region)),
        events=EventBridgeSender(
            client=Failing() if "events" in failing else boto3.client("events", region_name=region),
            backoff_seconds=0,
        ),
        account=ACCOUNT,
        home_region=region,
    )


def run(harness: Harness, deliveries: Deliveries | None, *, minutes: int = 0) -> dict[str, Any]:
    at = NOW + timedelta(minutes=minutes)
    harness.now = at
    summary: dict[str, Any] = handler(
        {"action": "flush"},
        LocalContext(function_name="opentrail-batcher"),
        buffer=harness.buffer,
        log_store=harness.log_store,
        ledger=harness.ledger,
        settings=harness.settings,
        clock=lambda: at,
        deliveries=deliveries,
        pending_deliveries=PendingDeliveries(harness.resources.ledger_table, client=harness.ddb),
    )
    return summary


@pytest.fixture
def cloudtrail(resources: LocalResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield from serve(query_settings(resources, trails=json.dumps(TRAILS)))


def test_each_delivery_has_cloudtrails_shape(resources: LocalResources) -> None:
    targets = Targets(resources.region)
    harness = Harness(resources, trails=json.dumps(TRAILS))
    write = record()
    read = record(read_only=True)
    token = record(read_only=True, eventSource="sts.amazonaws.com", eventName="GetSessionToken")
    signin = record(eventType="AwsConsoleSignIn", eventSource="signin.amazonaws.com", eventName="ConsoleLogin")
    huge = record(requestParameters={"blob": "x" * (256 * 1024)})
    other_region = record(region="eu-west-1")
    harness.send([write, read, token, signin, huge, other_region])

    summary = run(harness, senders(resources.region))

    assert summary["deliveriesSent"] == 3
    assert summary["deliveriesFailed"] == 0
    audit_keys = [f["key"] for f in summary["files"] if f["trail"] == "audit"]
    assert len(audit_keys) == 2  # us-east-1 and eu-west-1
    # CloudWatch Logs: one log event per record, the record's JSON, per account/region stream
    stream = targets.log_events(f"{A1}_CloudTrail_us-east-1")
    ids = sorted(json.loads(event["message"])["eventID"] for event in stream)
    assert ids == sorted(r["eventID"] for r in (write, read, token, signin))  # huge: over 256 KB, skipped
    assert [json.loads(e["message"])["eventID"] for e in targets.log_events(f"{A1}_CloudTrail_eu-west-1")] == [
        other_region["eventID"]
    ]
    # SNS: one notification listing the trail's files of the delivery
    (message,) = targets.notifications()
    assert message == {"s3Bucket": resources.log_bucket, "s3ObjectKey": audit_keys}
    # EventBridge: envelopes with CloudTrail's detail-types, read-only calls filtered (but STS tokens)
    events = {e["detail"]["eventID"]: e for e in targets.bus_events()}
    assert set(events) == {write["eventID"], token["eventID"], signin["eventID"], other_region["eventID"]}
    assert events[write["eventID"]]["detail-type"] == "AWS API Call via CloudTrail"
    assert events[signin["eventID"]]["detail-type"] == "AWS Console Signin via CloudTrail"
    assert events[write["eventID"]]["source"] == "opentrail"
    assert events[write["eventID"]]["detail"] == write
    # nothing left to retry; the plain trail got its files and nothing else
    assert PendingDeliveries(resources.ledger_table, client=harness.ddb).due(NOW + timedelta(days=1)) == []
    assert any(key.startswith("AWSLogs/") for key in harness.object_keys())


def test_trails_without_deliveries_make_no_delivery_calls(resources: LocalResources) -> None:
    harness = Harness(resources, trails=json.dumps([{"Name": "plain"}]))
    harness.send([record()])
    summary = run(harness, senders(resources.region, failing=frozenset({"logs", "sns", "events"})))
    assert summary["batches"] == 1
    assert summary["deliveriesSent"] == summary["deliveriesFailed"] == 0
    assert harness.items("DELIVERIES") == []
    assert harness.items("TRAILSTATE")[0].keys() == {"pk", "sk", "latestDeliveryTime"}


@pytest.mark.parametrize(
    ("down", "member", "kind"),
    [
        ("logs", "LatestCloudWatchLogsDeliveryError", "cloudWatchLogs"),
        ("sns", "LatestNotificationError", "notification"),
        ("events", None, "eventBridge"),
    ],
)
def test_a_failing_delivery_never_blocks_s3_is_reported_and_retried(
    resources: LocalResources, cloudtrail: Any, down: str, member: str | None, kind: str
) -> None:
    targets = Targets(resources.region)
    harness = Harness(resources, trails=json.dumps(TRAILS))
    write = record()
    harness.send([write])

    first = run(harness, senders(resources.region, failing=frozenset({down})))

    # S3, the ledger and the buffer are unaffected
    assert first["batches"] == 1
    assert first["failedBatches"] == 0
    assert harness.queue_depth() == 0
    assert {f["trail"] for f in first["files"]} == {"plain", "audit"}
    assert first["deliveriesFailed"] == 1
    assert first["deliveriesSent"] == 2
    status = cloudtrail.get_trail_status(Name="audit")
    if member is not None:
        assert "is down" in status[member]
    state = harness.ddb.get_item(
        TableName=resources.ledger_table, Key={"pk": {"S": "TRAILSTATE"}, "sk": {"S": "audit"}}
    )["Item"]
    error_attribute = {"cloudWatchLogs": "latestCloudWatchLogsDeliveryError"}.get(kind, "")
    assert not error_attribute or error_attribute in state
    pending = PendingDeliveries(resources.ledger_table, client=harness.ddb)
    assert pending.due(NOW) == []  # not before its retry time
    (owed,) = pending.due(NOW + timedelta(minutes=5))
    assert [d.split(":")[0] for d in owed.destinations] == [kind]
    assert owed.attempts == 1
    before_notifications, before_events = targets.notifications(), targets.bus_events()

    second = run(harness, senders(resources.region), minutes=5)

    assert second["deliveriesRetried"] == 1
    assert second["deliveriesSent"] == 1
    assert second["batches"] == 0
    assert pending.due(NOW + timedelta(days=1)) == []
    status = cloudtrail.get_trail_status(Name="audit")
    if member is not None:
        assert member not in status
    if kind == "cloudWatchLogs":
        events = targets.log_events(f"{A1}_CloudTrail_us-east-1")
        assert [json.loads(e["message"])["eventID"] for e in events] == [write["eventID"]]
        assert status["LatestCloudWatchLogsDeliveryTime"].timestamp() == (NOW + timedelta(minutes=5)).timestamp()
    elif kind == "notification":
        assert before_notifications == []
        (message,) = targets.notifications()
        assert message["s3ObjectKey"] == [f["key"] for f in first["files"] if f["trail"] == "audit"]
        assert status["LatestNotificationTime"].timestamp() == (NOW + timedelta(minutes=5)).timestamp()
    else:
        assert before_events == []
        assert [e["detail"]["eventID"] for e in targets.bus_events()] == [write["eventID"]]


def test_a_destination_is_given_up_after_the_bounded_attempts(resources: LocalResources, cloudtrail: Any) -> None:
    Targets(resources.region)
    harness = Harness(resources, trails=json.dumps(TRAILS))
    harness.send([record()])
    down = frozenset({"logs"})
    run(harness, senders(resources.region, failing=down))
    minutes = 0
    for _ in range(4):
        minutes += 61
        summary = run(harness, senders(resources.region, failing=down), minutes=minutes)
        assert summary["deliveriesRetried"] == 1
    assert summary["deliveriesAbandoned"] == 1
    assert PendingDeliveries(resources.ledger_table, client=harness.ddb).due(NOW + timedelta(days=2)) == []
    status = cloudtrail.get_trail_status(Name="audit")
    assert "gave up after 5 attempts" in status["LatestCloudWatchLogsDeliveryError"]


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_run_that_dies_after_done_leaves_the_deliveries_for_the_next_run(resources: LocalResources) -> None:
    targets = Targets(resources.region)
    harness = Harness(resources, trails=json.dumps(TRAILS))
    write = record()
    harness.send([write])

    class Dies(Exception):
        pass

    class DyingLogs(CloudWatchLogsSender):
        def send(self, *args: Any, **kwargs: Any) -> int:
            raise Dies  # the Lambda ends here: after DONE, the marker and the delete

    deliveries = senders(resources.region)
    deliveries.logs = DyingLogs(client=boto3.client("logs", region_name=resources.region))
    with pytest.raises(Dies):
        run(harness, deliveries)
    assert harness.queue_depth() == 0
    # the next run, after the dead run's lease: everything it owed is sent (at least once)
    later = run(harness, senders(resources.region), minutes=30)
    assert later["deliveriesRetried"] == 1
    assert later["deliveriesSent"] == 3
    assert [json.loads(e["message"])["eventID"] for e in targets.log_events(f"{A1}_CloudTrail_us-east-1")] == [
        write["eventID"]
    ]
    assert len(targets.notifications()) == 1
