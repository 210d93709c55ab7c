"""Insights per trail over moto (docs/insights.md, "Per trail"): each trail with InsightSelectors
analyses the records it logs and reports the types it selects, under its own prefix and to its
own deliveries; an insight several trails report is one event in the history and on EventBridge;
StopLogging holds a trail's Insights and StartLogging resumes them without counting the pause as
silence."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import boto3
import pytest
from test_batcher import A1, Harness
from test_insights_live import SPIKE, T0, Live, baseline, spike

from opentrail.adapters.insights_store import InsightsStore
from opentrail.adapters.trail_state import TrailStateStore
from opentrail.domain.deliveries import log_stream_name
from opentrail.domain.record import format_event_time
from opentrail.local.resources import LocalResources

pytestmark = [
    pytest.mark.filterwarnings("ignore:No application metrics:UserWarning"),
    pytest.mark.xdist_group("insights_live"),
]

TRAILS = [
    {"Name": "opentrail", "InsightSelectors": [{"InsightType": "ApiErrorRateInsight"}]},
    {
        "Name": "security",
        "S3KeyPrefix": "security",
        "EventSelectors": [{"ReadWriteType": "WriteOnly"}],
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}],
        "Deliveries": {"CloudWatchLogs": True, "EventBridge": True},
    },
    {
        "Name": "ops",
        "S3KeyPrefix": "ops",
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "UnusualActivityInsight"}],
    },
    {"Name": "quiet", "S3KeyPrefix": "quiet"},
]
SECURITY_GROUP = "opentrail/security"


def trails_live(resources: LocalResources, trails: list[dict[str, Any]], **settings: Any) -> Live:
    live = Live(resources, trails=json.dumps(trails), event_bridge_all=False, **settings)
    live.batcher = Harness(resources, trails=json.dumps(trails))
    return live


def insight_files(live: Live) -> dict[str, list[dict[str, Any]]]:
    """Every CloudTrail-Insight file in the bucket, whatever the prefix."""
    out = {}
    for item in live.s3.list_objects_v2(Bucket=live.resources.log_bucket).get("Contents", []):
        if "/CloudTrail-Insight/" in item["Key"]:
            body = live.s3.get_object(Bucket=live.resources.log_bucket, Key=item["Key"])["Body"].read()
            out[item["Key"]] = json.loads(gzip.decompress(body))["Records"]
    return out


def test_each_trail_reports_its_types_under_its_prefix_and_to_its_deliveries(resources: LocalResources) -> None:
    logs = boto3.client("logs", region_name=resources.region)
    logs.create_log_group(logGroupName=SECURITY_GROUP)
    live = trails_live(resources, TRAILS)

    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    batch = live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    assert batch["aggregateItems"] > 0
    live.analyse(at=SPIKE - timedelta(minutes=1))
    summary = live.analyse(at=SPIKE + timedelta(minutes=15))

    files = insight_files(live)
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for key, records in files.items():
        by_prefix.setdefault(key.split("/AWSLogs/")[0] if "/AWSLogs/" in key else "", []).extend(records)
    # the call-rate spike: security and ops select ApiCallRateInsight; opentrail (error rate only)
    # and quiet (no Insights) report nothing
    assert sorted(by_prefix) == ["ops", "security"], sorted(files)
    for prefix in ("ops", "security"):
        (start,) = by_prefix[prefix]
        assert start["insightDetails"]["insightType"] == "ApiCallRateInsight"
        assert start["insightDetails"]["state"] == "Start"
        assert any(k.startswith(f"{prefix}/AWSLogs/{A1}/CloudTrail-Insight/us-east-1/") for k in files)
    # the same insight from two trails is one event: same id, one history entry, one EventBridge event
    assert by_prefix["ops"][0]["eventID"] == by_prefix["security"][0]["eventID"]
    assert [r["eventID"] for r in live.lookup_insights()] == [by_prefix["ops"][0]["eventID"]]
    assert summary["eventBridgeSent"] == 1  # security has EventBridge; ops does not (event_bridge_all off)
    assert {f["trail"] for f in summary["files"]} == {"ops", "security"}
    # security's CloudWatch Logs group gets its Insights event (next to its API calls, which the
    # batcher delivered), in CloudTrail's stream
    events = logs.get_log_events(logGroupName=SECURITY_GROUP, logStreamName=log_stream_name(A1, "us-east-1"))
    messages = [json.loads(e["message"]) for e in events["events"]]
    insights = [m["eventID"] for m in messages if m["eventType"] == "AwsCloudTrailInsight"]
    assert insights == [by_prefix["security"][0]["eventID"]]
    assert summary["cloudWatchLogsSent"] == 1
    status = TrailStateStore(resources.ledger_table).get("security")
    assert "latestCloudWatchLogsDeliveryTime" in status.attributes


def test_a_failing_cloudwatch_logs_delivery_is_recorded_and_never_blocks_s3(resources: LocalResources) -> None:
    live = trails_live(resources, TRAILS)  # the security log group does not exist
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    live.analyse(at=SPIKE - timedelta(minutes=1))
    summary = live.analyse(at=SPIKE + timedelta(minutes=15))
    assert summary["cloudWatchLogsFailed"] == 1
    assert {f["trail"] for f in summary["files"]} == {"ops", "security"}
    status = TrailStateStore(resources.ledger_table).get("security").to_response()
    assert "ResourceNotFoundException" in status["LatestCloudWatchLogsDeliveryError"]


def test_event_bridge_all_sends_an_insight_reported_by_several_trails_once(resources: LocalResources) -> None:
    logs = boto3.client("logs", region_name=resources.region)
    logs.create_log_group(logGroupName=SECURITY_GROUP)
    live = trails_live(resources, TRAILS)
    live.settings = live.settings.model_copy(update={"event_bridge_all": True})
    live.deliver(baseline(T0, SPIKE), at=T0 + timedelta(hours=3, minutes=12))
    live.deliver(spike() + baseline(SPIKE, SPIKE + timedelta(minutes=5)), at=SPIKE + timedelta(minutes=6))
    live.analyse(at=SPIKE - timedelta(minutes=1))
    summary = live.analyse(at=SPIKE + timedelta(minutes=15))
    assert len(summary["files"]) == 2
    assert summary["eventBridgeSent"] == 1


# -- StopLogging / StartLogging --------------------------------------------------------------------

CLOCKWORK = [{"Name": "opentrail", "InsightSelectors": [{"InsightType": "MissingActivityInsight"}]}]
# A job is "regular" after an hour and 12 runs (as in the demo), so a missing-activity insight is
# possible within the test's hours.
MISSING_SOON = json.dumps({"missing_min_history_minutes": 60, "missing_min_occurrences": 12})
STOP = T0 + timedelta(hours=2)  # 08:00
START = T0 + timedelta(hours=3)  # 09:00


def _clockwork_then_gap(resources: LocalResources, *, stop_logging: bool) -> tuple[Live, list[dict[str, Any]]]:
    """DescribeInstances every minute 06:00-08:00, nothing 08:00-09:00, again from 09:00 to
    09:40; with `stop_logging` the trail is stopped at 08:00 and started at 09:00."""
    live = trails_live(resources, CLOCKWORK, sensitivity_overrides=MISSING_SOON)
    state = TrailStateStore(resources.ledger_table)
    live.deliver(baseline(T0, STOP), at=STOP + timedelta(minutes=1))
    live.analyse(at=STOP - timedelta(minutes=5))
    if stop_logging:
        state.set_logging("opentrail", False, STOP)
    held = live.analyse(at=STOP + timedelta(minutes=40))
    if stop_logging:
        assert held["paused"] == 1
        assert held["starts"] == 0
        state.set_logging("opentrail", True, START)
    live.deliver(baseline(START, START + timedelta(minutes=40)), at=START + timedelta(minutes=41))
    summaries = [live.analyse(at=START + timedelta(minutes=m)) for m in (20, 45)]  # until 09:34
    return live, [held, *summaries]


def test_stopped_trail_is_held_and_resumes_without_counting_the_pause_as_silence(resources: LocalResources) -> None:
    live, summaries = _clockwork_then_gap(resources, stop_logging=True)
    assert sum(s["starts"] for s in summaries) == 0, summaries
    assert insight_files(live) == {}
    assert summaries[1]["paused"] == 1  # the run that skipped the pause


def test_without_stop_logging_the_same_gap_is_missing_activity(resources: LocalResources) -> None:
    # the control: the same hour of silence while logging is a missing-activity insight
    live, summaries = _clockwork_then_gap(resources, stop_logging=False)
    records = [r for records in insight_files(live).values() for r in records]
    kinds = {(r["insightDetails"]["insightType"], r["insightDetails"]["state"]) for r in records}
    assert ("MissingActivityInsight", "Start") in kinds, summaries


def test_a_stopped_trail_does_not_hold_back_the_others(resources: LocalResources) -> None:
    trails = [
        {"Name": "opentrail", "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]},
        {"Name": "paused", "S3KeyPrefix": "paused", "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]},
    ]
    live = trails_live(resources, trails, max_minutes_per_run=60, initial_lookback_minutes=30)
    state = TrailStateStore(resources.ledger_table)
    live.deliver(baseline(T0, T0 + timedelta(minutes=30)), at=T0 + timedelta(minutes=31))
    live.analyse(at=T0 + timedelta(minutes=45))  # both trails analysed until 06:34
    state.set_logging("paused", False, T0 + timedelta(minutes=40))
    moment = T0 + timedelta(minutes=45)
    for _ in range(4):  # four hours of runs, 60 minutes each at most
        moment += timedelta(hours=1)
        live.deliver(baseline(moment - timedelta(hours=1), moment), at=moment)
        summary = live.analyse(at=moment + timedelta(minutes=11))
        assert summary["paused"] == 1
    # the logging trail advanced 60 minutes a run, from 06:34 (a pinned start would stop it at
    # 07:39); the stopped one is held at the minute before its stop
    analysed = T0 + timedelta(minutes=34 + 4 * 60)
    assert summary["until"] == format_event_time(analysed), summary
    heads = InsightsStore(resources.insights_table).heads()
    assert heads[("paused", A1, "us-east-1")].last_minute == int((T0 + timedelta(minutes=39)).timestamp()) // 60
    assert heads[("opentrail", A1, "us-east-1")].last_minute == int(analysed.timestamp()) // 60
