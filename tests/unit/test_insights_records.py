"""Insights records: exactly CloudTrail's shape (spec §4), Start/End pairs, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime

from opentrail.domain.insights import CALL_RATE, ERROR_RATE, CountTable
from opentrail.domain.insights.records import insight_record
from opentrail.domain.insights.state import InsightTracker, OpenInsight, insight_key, shared_event_id
from opentrail.domain.record import CaptureContext, normalize

SCOPE = ("111122223333", "us-west-2")
START = int(datetime(2025, 2, 3, 11, 42, tzinfo=UTC).timestamp()) // 60
TOP_LEVEL = {
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


def an_insight(kind: str = CALL_RATE, detail: str = "") -> OpenInsight:
    key = insight_key(kind, ("ec2.amazonaws.com", "RunInstances"), detail)
    tables = {
        "userIdentityArn": CountTable({f"arn:aws:iam::111122223333:user/u{i}": 10 - i for i in range(7)}),
        "userAgent": CountTable({"aws-cli/2.15.30": 12}),
        "errorCode": CountTable({"null": 12}),
    }
    insight = OpenInsight(
        kind=kind,
        api=("ec2.amazonaws.com", "RunInstances"),
        detail=detail,
        shared_event_id=shared_event_id(SCOPE, key, START),
        start=START,
        last_active=START + 9,
        start_average=12.0,
        baseline_average=0.0417,
        baseline_duration=10080,
        explanation="RunInstances: 12 write calls/min vs a usual 0.04 at this hour (Monday 11:00 UTC)",
        start_tables=tables,
        start_minutes=1,
        baseline_attributions={"userIdentityArn": [("arn:aws:iam::111122223333:user/u0", 0.0417)]},
    )
    for minute in range(START, START + 10):
        insight.add(minute, 6.0, tables)
    return insight


def test_start_record_has_exactly_cloudtrails_fields() -> None:
    record = insight_record(SCOPE, an_insight(), "Start")

    assert set(record) == TOP_LEVEL
    assert record["eventVersion"] == "1.11"
    assert record["eventType"] == "AwsCloudTrailInsight"
    assert record["eventCategory"] == "Insight"
    assert record["eventTime"] == "2025-02-03T11:42:00Z"
    assert (record["recipientAccountId"], record["awsRegion"]) == SCOPE
    details = record["insightDetails"]
    assert set(details) == {"state", "eventSource", "eventName", "insightType", "insightContext"}
    assert details["state"] == "Start"
    context = details["insightContext"]
    assert set(context) == {"statistics", "attributions", "explanation"}
    assert context["statistics"] == {
        "baseline": {"average": 0.0417},
        "insight": {"average": 12.0},
        "insightDuration": 1,
        "baselineDuration": 10080,
    }
    assert [a["attribute"] for a in context["attributions"]] == ["userIdentityArn", "userAgent", "errorCode"]
    principals = context["attributions"][0]
    assert len(principals["insight"]) == 5
    assert [v["average"] for v in principals["insight"]] == sorted((v["average"] for v in principals["insight"]),
                                                                   reverse=True)  # fmt: skip
    assert principals["baseline"] == [{"value": "arn:aws:iam::111122223333:user/u0", "average": 0.0417}]
    assert context["attributions"][2]["insight"] == [{"value": "null", "average": 12.0}]


def test_end_record_shares_the_start_id_and_reports_the_whole_insight() -> None:
    insight = an_insight()
    start, end = insight_record(SCOPE, insight, "Start"), insight_record(SCOPE, insight, "End")

    assert end["sharedEventID"] == start["sharedEventID"]
    assert end["eventID"] != start["eventID"]
    assert end["eventTime"] == "2025-02-03T11:52:00Z"
    statistics = end["insightDetails"]["insightContext"]["statistics"]
    assert statistics["insightDuration"] == 10
    assert statistics["insight"]["average"] == 6.0
    assert insight_record(SCOPE, insight, "End") == end  # derived ids: a re-run writes the same record


def test_error_rate_records_carry_the_error_code() -> None:
    record = insight_record(SCOPE, an_insight(ERROR_RATE, "AccessDenied"), "Start")

    assert record["insightDetails"]["errorCode"] == "AccessDenied"


def test_insight_records_pass_capture_normalisation_unchanged() -> None:
    record = insight_record(SCOPE, an_insight(), "Start")

    normalized = normalize(record, CaptureContext("111122223333", "us-west-2"), now=datetime(2025, 2, 4, tzinfo=UTC))

    assert normalized == record


def test_tracker_ends_insights_quiet_for_the_configured_minutes_and_round_trips() -> None:
    tracker = InsightTracker(quiet_minutes=5)
    insight = an_insight()
    tracker.begin(insight)

    again = InsightTracker.from_dict(tracker.to_dict())

    assert again.open[insight.key].to_dict() == insight.to_dict()
    assert tracker.subsided(START + 13, frozenset({CALL_RATE})) == []
    assert [i.key for i in tracker.subsided(START + 14, frozenset({CALL_RATE}))] == [insight.key]
    assert tracker.open == {}
