"""Live Insights over moto: the batcher writes minute aggregates, the InsightsFunction turns them
into Start/End records in S3 (CloudTrail-Insight), the event history and EventBridge, exactly
once across reruns, crashes and concurrent runs (docs/insights.md, "Live")."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from test_batcher import A1, Harness, record
from test_batcher_crash import Crash
from test_history_batcher import CrashingHistory

from opentrail.adapters.events import INSIGHT_DETAIL_TYPE, SOURCE, InsightEvents
from opentrail.adapters.insights_store import AGGREGATE_PREFIX, InsightsStore
from opentrail.adapters.log_store import LogStore
from opentrail.domain.record import format_event_time
from opentrail.handlers import insights as insights_handler
from opentrail.handlers import query
from opentrail.handlers.batcher import handler as batcher_handler
from opentrail.handlers.batcher import history_for
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources
from opentrail.settings import InsightsSettings

pytestmark = [
    pytest.mark.filterwarnings("ignore:No application metrics:UserWarning"),
    pytest.mark.xdist_group("insights_live"),
]

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # baseline from 06:00
SPIKE = T0 + timedelta(hours=3, minutes=10)  # 09:10: 50 RunInstances a minute for 3 minutes
CI = f"arn:aws:sts::{A1}:assumed-role/ci/runner"
ROGUE = f"arn:aws:sts::{A1}:assumed-role/ci/rogue-session"
TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"


def api_call(moment: datetime, name: str, *, arn: str = CI, read_only: bool = False, n: int = 0) -> dict[str, Any]:
    return record(
        eventTime=format_event_time(moment + timedelta(seconds=n % 60)),
        eventSource="ec2.amazonaws.com",
        eventName=name,
        readOnly=read_only,
        userIdentity={"type": "AssumedRole", "arn": arn, "accountId": A1},
        userAgent="aws-cli/2.15.30",
    )


def baseline(first: datetime, last: datetime) -> list[dict[str, Any]]:
    """A RunInstances every other minute, a DescribeInstances every minute."""
    out = []
    moment = first
    while moment < last:
        minute = int(moment.timestamp() // 60)
        out.append(api_call(moment, "DescribeInstances", read_only=True))
        if minute % 2 == 0:
            out.append(api_call(moment, "RunInstances", n=7))
        moment += timedelta(minutes=1)
    return out


def spike(minutes: int = 3, per_minute: int = 50) -> list[dict[str, Any]]:
    return [
        api_call(SPIKE + timedelta(minutes=m), "RunInstances", arn=ROGUE, n=i)
        for m in range(minutes)
        for i in range(per_minute)
    ]


def chunks(records: list[dict[str, Any]], size: int = 120) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


class Live:
    """A batcher harness plus the Insights function, on one simulated clock."""

    def __init__(self, resources: LocalResources, **settings: Any) -> None:
        self.resources = resources
        self.batcher = Harness(resources)
        self.ddb = self.batcher.ddb
        self.s3 = self.batcher.s3
        self.settings: InsightsSettings = resources.insights_settings(**{"initial_lookback_minutes": 600, **settings})
        self.events_client = boto3.client("events", region_name=resources.region)

    def deliver(self, records: list[dict[str, Any]], *, at: datetime, **kwargs: Any) -> dict[str, Any]:
        self.batcher.send(*chunks(records))
        return self.batcher.run(at=at, **kwargs)

    def analyse(self, *, at: datetime, **adapters: Any) -> dict[str, Any]:
        adapters.setdefault("dynamodb_client", self.ddb)
        adapters.setdefault("s3_client", self.s3)
        adapters.setdefault("events_client", self.events_client)
        return insights_handler.handler(
            {"action": "analyse"},
            LocalContext(function_name="opentrail-insights"),
            settings=self.settings,
            clock=lambda: at,
            **adapters,
        )

    def insight_files(self) -> dict[str, list[dict[str, Any]]]:
        listing = self.s3.list_objects_v2(Bucket=self.resources.log_bucket, Prefix="AWSLogs/")
        out = {}
        for item in listing.get("Contents", []):
            if "/CloudTrail-Insight/" in item["Key"]:
                body = self.s3.get_object(Bucket=self.resources.log_bucket, Key=item["Key"])["Body"].read()
                out[item["Key"]] = json.loads(gzip.decompress(body))["Records"]
        return out

    def insight_records(self) -> list[dict[str, Any]]:
        return sorted(
            (r for records in self.insight_files().values() for r in records),
            key=lambda r: (r["eventTime"], r["insightDetails"]["state"]),
        )

    def lookup_insights(self) -> list[dict[str, Any]]:
        event = {
            "httpMethod": "POST",
            "headers": {"X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1"},
            "body": json.dumps(
                {
                    "EventCategory": "insight",
                    "StartTime": (T0 - timedelta(hours=1)).timestamp(),
                    "EndTime": (T0 + timedelta(days=1)).timestamp(),
                }
            ),
        }
        history = history_for(self.batcher.settings, client=self.ddb)
        reply = query.handler(
            event,
            LocalContext(function_name="opentrail-query"),
            history=history,
            settings=self.resources.query_settings(),
            clock=lambda: T0 + timedelta(hours=5),
            token_key=b"0123456789abcdef0123456789abcdef",
        )
        assert reply["statusCode"] == 200, reply["body"]
        return [json.loads(e["CloudTrailEvent"]) for e in json.loads(reply["body"])["Events"]]

    def aggregate_items(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.resources.insights_table)["Items"]
        return sorted(
            (i for i in items if i["pk"]["S"].startswith(AGGREGATE_PREFIX)), key=lambda i: (i["pk"]["S"], i["sk"]["S"])
        )


def run_to_start(live: Live) -> dict[str, Any]:
    """Baseline 06:00-09:10 delivered at 09:12, the spike and more baseline at 09:16; analysed at 09:25."""
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    first = live.analyse(at=SPIKE - timedelta(minutes=1))  # 06:00..09:-: the baseline only
    assert first["starts"] == 0
    assert first["files"] == []
    return live.analyse(at=SPIKE + timedelta(minutes=15))  # until 09:14


@pytest.fixture
def live(resources: LocalResources) -> Live:
    return Live(resources)


def _start_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    (start,) = [
        r
        for r in records
        if r["insightDetails"]["state"] == "Start" and r["insightDetails"]["insightType"] == "ApiCallRateInsight"
    ]
    return start


# -- the story: spike → Start in S3 and the history → End after it subsides --------------------------


def test_live_spike_gives_start_in_s3_history_and_end_after(live: Live) -> None:
    summary = run_to_start(live)
    assert summary["starts"] == 1, summary
    files = live.insight_files()
    (key,) = files
    assert key.startswith(f"AWSLogs/{A1}/CloudTrail-Insight/us-east-1/2026/11/23/{A1}_CloudTrail-Insight_us-east-1_")
    assert key.endswith(".json.gz")
    start = _start_of(files[key])
    assert set(start) == {
        "eventVersion",
        "eventTime",
        "awsRegion",
        "eventID",
        "eventType",
        "recipientAccountId",
        "sharedEventID",
        "insightDetails",
        "eventCategory",
    }
    assert start["eventType"] == "AwsCloudTrailInsight"
    assert start["eventCategory"] == "Insight"
    assert start["eventTime"] == format_event_time(SPIKE)
    details = start["insightDetails"]
    assert (details["eventSource"], details["eventName"]) == ("ec2.amazonaws.com", "RunInstances")
    stats = details["insightContext"]["statistics"]
    assert stats["insight"]["average"] > 10 * stats["baseline"]["average"] > 0
    assert stats["insightDuration"] == 1
    assert stats["baselineDuration"] >= 180
    attributions = {a["attribute"]: a for a in details["insightContext"]["attributions"]}
    assert attributions["userIdentityArn"]["insight"][0]["value"] == ROGUE
    head = live.s3.head_object(Bucket=live.resources.log_bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == live.resources.kms_key_arn

    # LookupEvents EventCategory=insight through the query API finds it
    found = live.lookup_insights()
    assert [r["eventID"] for r in found] == [start["eventID"]]

    # the spike subsides: baseline until 09:45, analysed at 09:50 (until 09:39) → End
    live.deliver(
        baseline(SPIKE + timedelta(minutes=5), SPIKE + timedelta(minutes=35)), at=SPIKE + timedelta(minutes=36)
    )
    later = live.analyse(at=SPIKE + timedelta(minutes=40))
    assert later["ends"] == 1, later
    assert later["starts"] == 0, later
    records = live.insight_records()
    end = next(r for r in records if r["insightDetails"]["state"] == "End")
    assert end["sharedEventID"] == start["sharedEventID"]
    assert end["eventID"] != start["eventID"]
    assert end["eventTime"] > start["eventTime"]
    assert end["insightDetails"]["insightContext"]["statistics"]["insightDuration"] >= 3
    assert sorted(r["eventID"] for r in live.lookup_insights()) == sorted([start["eventID"], end["eventID"]])


def test_live_rerun_is_a_no_op(live: Live) -> None:
    run_to_start(live)
    files = live.insight_files()
    again = live.analyse(at=SPIKE + timedelta(minutes=15))
    assert again["starts"] == again["ends"] == again["scopes"] == 0
    assert again["files"] == []
    assert live.insight_files() == files
    assert len(live.lookup_insights()) == 1


def test_live_eventbridge_gets_the_cloudtrail_envelope(live: Live) -> None:
    sqs = boto3.client("sqs", region_name=live.resources.region)
    queue = sqs.create_queue(QueueName="insights-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    live.events_client.put_rule(
        Name="insights", EventPattern=json.dumps({"source": [SOURCE], "detail-type": [INSIGHT_DETAIL_TYPE]})
    )
    live.events_client.put_targets(Rule="insights", Targets=[{"Id": "q", "Arn": arn}])
    summary = run_to_start(live)
    assert summary["eventBridgeSent"] == 1
    assert summary["eventBridgeFailed"] == 0
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["source"] == "opentrail"
    assert envelope["detail-type"] == "AWS Insight via CloudTrail"
    assert envelope["detail"] == _start_of(live.insight_records())
    assert envelope["time"] == format_event_time(SPIKE)


class FailingEvents:
    def put_events(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalException", "Message": "down"}}, "PutEvents")


def test_live_eventbridge_failure_does_not_block_s3_or_history(live: Live) -> None:
    events = InsightEvents("default", client=FailingEvents(), backoff_seconds=0)
    summary = run_to_start_with(live, events=events)
    assert summary["eventBridgeFailed"] == 1
    assert summary["eventBridgeSent"] == 0
    assert summary["starts"] == 1
    assert len(live.insight_files()) == 1
    assert len(live.lookup_insights()) == 1
    # and the records count as delivered: a rerun does not send them again
    assert live.analyse(at=SPIKE + timedelta(minutes=16))["redelivered"] == 0


def run_to_start_with(live: Live, **adapters: Any) -> dict[str, Any]:
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    return live.analyse(at=SPIKE + timedelta(minutes=15), **adapters)


# -- crash safety ------------------------------------------------------------------------------------


class CrashingStore(InsightsStore):
    """Dies before or right after a commit (the head write)."""

    def __init__(self, *args: Any, when: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.when = when

    def commit(self, scope: Any, **kwargs: Any) -> Any:
        if self.when == "before-commit" and kwargs["pending"]:
            self._write_chunks_only(scope, kwargs)
            raise Crash("after the state chunks, before the head")
        head = super().commit(scope, **kwargs)
        if self.when == "after-commit" and kwargs["pending"]:
            raise Crash("after the commit, before delivery")
        return head

    def _write_chunks_only(self, scope: Any, kwargs: dict[str, Any]) -> None:
        """The chunks of a commit that never got its head: written, never referenced."""
        pk, sk = "STATE#" + "#".join(scope), "9999999999#orphan#000"
        self._write([{"PutRequest": {"Item": {"pk": {"S": pk}, "sk": {"S": sk}, "d": {"B": b"x"}}}}])


class CrashingLogStoreAfterPut(LogStore):
    def put_new(self, key: str, body: Any, length: int) -> bool:
        super().put_new(key, body, length)
        raise Crash("after the Insights file, before the history")


def _store(live: Live, when: str) -> CrashingStore:
    return CrashingStore(live.resources.insights_table, client=live.ddb, when=when)


@pytest.mark.parametrize("when", ["before-commit", "after-commit", "after-s3"])
def test_live_crash_between_steps_neither_loses_nor_duplicates(live: Live, when: str) -> None:
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    live.analyse(at=SPIKE - timedelta(minutes=1))
    crashing: dict[str, Any] = (
        {"log_store": CrashingLogStoreAfterPut(live.resources.log_bucket, live.resources.kms_key_arn, client=live.s3)}
        if when == "after-s3"
        else {"store": _store(live, when)}
    )
    with pytest.raises(Crash):
        live.analyse(at=SPIKE + timedelta(minutes=15), **crashing)
    # the next scheduled run, after the dead run's lease: delivers exactly once
    live.analyse(at=SPIKE + timedelta(minutes=40))
    live.deliver(
        baseline(SPIKE + timedelta(minutes=5), SPIKE + timedelta(minutes=35)), at=SPIKE + timedelta(minutes=36)
    )
    live.analyse(at=SPIKE + timedelta(minutes=41))
    records = live.insight_records()
    starts = [r for r in records if r["insightDetails"]["state"] == "Start"]
    assert len(starts) == 1, [r["eventID"] for r in records]
    assert starts[0]["eventTime"] == format_event_time(SPIKE)
    assert len({r["eventID"] for r in records}) == len(records)
    assert len(live.lookup_insights()) == len(records)


def test_live_redelivery_waits_for_a_live_runs_lease(live: Live) -> None:
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    live.analyse(at=SPIKE - timedelta(minutes=1))
    with pytest.raises(Crash):
        live.analyse(at=SPIKE + timedelta(minutes=15), store=_store(live, "after-commit"))
    busy = live.analyse(at=SPIKE + timedelta(minutes=16))  # the lease (remaining time + 30 s) holds
    assert busy["busy"] == 1
    assert busy["files"] == []
    assert live.insight_files() == {}
    later = live.analyse(at=SPIKE + timedelta(minutes=30))
    assert later["redelivered"] == 1
    states = [r["insightDetails"]["state"] for r in live.insight_records()]
    assert states == ["Start", "End"]  # the dead run's Start, then this run's End


def test_live_concurrent_runs_emit_once(live: Live) -> None:
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    live.analyse(at=SPIKE - timedelta(minutes=1))
    store = InsightsStore(live.resources.insights_table, client=live.ddb)
    stale = store.heads()  # what a second run read before the first one committed
    stale_state = store.load(stale[("opentrail", A1, "us-east-1")])

    class StaleStore(InsightsStore):
        def heads(self) -> Any:
            return dict(stale)

        def load(self, head: Any) -> Any:
            return stale_state

    first = live.analyse(at=SPIKE + timedelta(minutes=15))
    second = live.analyse(
        at=SPIKE + timedelta(minutes=15), store=StaleStore(live.resources.insights_table, client=live.ddb)
    )
    assert first["starts"] == 1
    assert second["conflicts"] == 1
    assert second["files"] == []
    assert len(live.insight_files()) == 1
    assert len(live.lookup_insights()) == 1
    # a run that lists the stale head but loads after the commit finds its chunks gone: a conflict too
    late = live.analyse(
        at=SPIKE + timedelta(minutes=15),
        store=type("S", (InsightsStore,), {"heads": lambda self: dict(stale)})(
            live.resources.insights_table, client=live.ddb
        ),
    )
    assert late["conflicts"] == 1
    assert late["errors"] == []
    assert late["files"] == []


def test_live_batcher_crash_before_marker_rebuilds_aggregates_without_double_counting(live: Live) -> None:
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    before = len(live.aggregate_items())
    # the spike's batch: history and aggregates written, the run dies before the marker
    crashing = CrashingHistory(live.resources.history_table, client=live.ddb, writes=10**6, crash_marker=True)
    live.batcher.send(*chunks(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5))))
    with pytest.raises(Crash):
        batcher_handler(
            {"action": "flush"},
            LocalContext(function_name="opentrail-batcher"),
            buffer=live.batcher.buffer,
            log_store=live.batcher.log_store,
            ledger=live.batcher.ledger,
            history=crashing,
            settings=live.batcher.settings,
            clock=lambda: SPIKE + timedelta(minutes=6),
        )
    written = live.aggregate_items()
    assert len(written) > before
    # the messages come back: DONE without marker → rebuilt from S3, aggregates overwritten
    live.batcher.buffer.release()
    rerun = live.batcher.run(at=SPIKE + timedelta(hours=1))
    assert rerun["reindexedBatches"] == 1
    assert rerun["aggregateItems"] > 0
    assert live.aggregate_items() == written
    store = InsightsStore(live.resources.insights_table, client=live.ddb)
    minute = int(SPIKE.timestamp() // 60)
    merged = store.read_aggregates(minute, minute)[("opentrail", A1, "us-east-1")][minute]
    assert merged[("ec2.amazonaws.com", "RunInstances")].calls == 50 + (1 if minute % 2 == 0 else 0)
    assert merged[("ec2.amazonaws.com", "RunInstances")].writers.to_dict() == {
        f"arn:aws:sts::{A1}:assumed-role/ci/*": 50 + (1 if minute % 2 == 0 else 0)
    }
    assert merged[("ec2.amazonaws.com", "DescribeInstances")].calls == 1


# -- the store -----------------------------------------------------------------------------------------


def test_store_commit_is_conditional_and_keeps_state(live: Live) -> None:
    store = InsightsStore(live.resources.insights_table, client=live.ddb)
    now = T0
    scope = ("opentrail", A1, "us-east-1")
    noise = random.Random(1)
    engine = {"v": 1, "l": 10, "big": "".join(noise.choice("abcdefghij") for _ in range(900_000))}  # > 1 chunk
    head = store.commit(scope, previous=None, engine=engine, pending=[], now=now, ttl_days=35, lease_seconds=60)
    assert head is not None
    assert head.chunks >= 2
    assert store.load(head).engine == engine
    assert store.commit(scope, previous=None, engine=engine, pending=[], now=now, ttl_days=35, lease_seconds=60) is None
    second = store.commit(
        scope, previous=head, engine={"v": 1, "l": 11}, pending=[{"a": 1}], now=now, ttl_days=35, lease_seconds=60
    )
    assert second is not None
    assert second.version == 2
    # the stale head cannot commit again, and nothing commits over undelivered records
    assert (
        store.commit(scope, previous=head, engine={"l": 12}, pending=[], now=now, ttl_days=35, lease_seconds=60) is None
    )
    assert (
        store.commit(scope, previous=second, engine={"l": 12}, pending=[], now=now, ttl_days=35, lease_seconds=60)
        is None
    )
    assert store.mark_delivered(second)
    assert store.heads()[scope].pending == 0
    chunks_left = [
        i for i in live.ddb.scan(TableName=live.resources.insights_table)["Items"] if i["pk"]["S"].startswith("STATE#")
    ]
    assert len(chunks_left) == second.chunks  # the first version's chunks were removed


def test_settings_and_local_resources() -> None:
    with pytest.raises(ValueError, match="sensitivity must be one of"):
        InsightsSettings(insights_table="t", history_table="h", log_bucket="b", log_kms_key_arn="k", sensitivity="x")
    with pytest.raises(ValueError, match="unknown sensitivity knob"):
        InsightsSettings(
            insights_table="t",
            history_table="h",
            log_bucket="b",
            log_kms_key_arn="k",
            sensitivity_overrides='{"nope": 1}',
        )
    settings = InsightsSettings(
        insights_table="t", history_table="h", log_bucket="b", log_kms_key_arn="k", sensitivity="high",
        sensitivity_overrides='{"rate_sigma": 5}',
    )  # fmt: skip
    assert settings.sensitivity_model().rate_sigma == 5
