"""The usage meter's counting and price arithmetic (opentrail.domain.usage)."""

from __future__ import annotations

from typing import Any

import pytest

from opentrail.domain.trail import trail_from_dict
from opentrail.domain.usage import (
    CLOUDTRAIL_PRICE,
    PRICES,
    REQUESTS_PER_100K,
    TrailMeter,
    UsageCounter,
    UsageCounts,
    cloudtrail_price,
    insights_analysed,
    meters_of,
    opentrail_cost,
    opentrail_cost_per_100k,
    summarise,
)

BOTH = frozenset({"ApiCallRateInsight", "ApiErrorRateInsight"})


def rec(
    event_id: str, *, category: str = "Management", read_only: Any = False, name: str = "CreateUser"
) -> dict[str, Any]:
    return {"eventID": event_id, "eventCategory": category, "readOnly": read_only, "eventName": name}


def test_first_copy_goes_to_the_first_configured_trail_whatever_the_file_order() -> None:
    counter = UsageCounter([TrailMeter("a"), TrailMeter("b"), TrailMeter("c")])
    for trail in ("c", "b", "a"):
        counter.add(trail, rec("e1"))
    counter.add("b", rec("e2"))  # only b carries e2: b's copy is the first
    counter.add("c", rec("e2"))
    counts = counter.counts()
    assert counts["a"] == UsageCounts(management_first=1)
    assert counts["b"] == UsageCounts(management_first=1, management_additional=1)
    assert counts["c"] == UsageCounts(management_additional=2)


def test_data_events_count_every_copy_and_a_record_counts_once_per_trail() -> None:
    counter = UsageCounter([TrailMeter("a"), TrailMeter("b")])
    counter.add("a", rec("d1", category="Data"))
    counter.add("a", rec("d1", category="Data"))  # the same record twice in a's files (parts)
    counter.add("b", rec("d1", category="Data"))
    counter.add("b", rec("n1", category="NetworkActivity"))
    counts = counter.counts()
    assert counts["a"] == UsageCounts(data=1)
    assert counts["b"] == UsageCounts(data=1)  # network activity: not metered here


@pytest.mark.parametrize(
    ("types", "write", "expected"),
    [
        (BOTH, True, 2),  # spec §8: writes counted twice when both types are on
        (BOTH, False, 1),
        ({"ApiCallRateInsight"}, True, 1),
        ({"ApiCallRateInsight"}, False, 0),  # call-rate analyses write events only
        ({"ApiErrorRateInsight"}, False, 1),
        (set(), True, 0),
    ],
)
def test_insights_analysed_per_type(types: set[str], write: bool, expected: int) -> None:
    assert insights_analysed(write=write, insight_types=types) == expected


def test_insights_counts_follow_the_trails_selectors() -> None:
    trails = [
        trail_from_dict(
            {
                "Name": "main",
                "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}],
            }
        ),
        trail_from_dict({"Name": "copy"}),
    ]
    counter = UsageCounter(meters_of(trails))
    for trail in ("main", "copy"):
        counter.add(trail, rec("w1"))
        counter.add(trail, rec("r1", read_only=True, name="GetUser"))
        counter.add(trail, rec("r2", read_only="true", name="GetUser"))
        counter.add(trail, rec("r3", read_only=None, name="ListUsers"))  # inferred from the name
        counter.add(trail, rec("d1", category="Data"))
    counts = counter.counts()
    assert counts["main"] == UsageCounts(management_first=4, data=1, insights_analysed=2 + 1 + 1 + 1)
    assert counts["copy"] == UsageCounts(management_additional=4, data=1)


def test_cloudtrail_price_per_category() -> None:
    counts = UsageCounts(
        management_first=1_000_000, management_additional=250_000, data=3_000_000, insights_analysed=200_000
    )
    price = cloudtrail_price(counts)
    assert price["managementFirstCopy"] == 0.0
    assert price["managementAdditionalCopies"] == pytest.approx(5.00)  # 2.5 x $2.00
    assert price["dataEvents"] == pytest.approx(3.00)  # 30 x $0.10
    assert price["insightsAnalysed"] == pytest.approx(0.70)  # 2 x $0.35
    assert CLOUDTRAIL_PRICE["additional copy of management events"] == 2.00


def test_opentrail_cost_is_request_counts_times_list_prices() -> None:
    lines = opentrail_cost_per_100k()
    assert set(lines) == set(REQUESTS_PER_100K)
    assert lines["S3 PUT"] == pytest.approx(17 * 0.005 / 1000)
    assert lines["API Gateway REST requests"] == pytest.approx(1000 * PRICES["apigw_request"][0])
    per_100k = sum(lines.values())
    assert 0.001 < per_100k < 0.01  # docs/benchmarks.md: ~$0.0065 per 100k on the PutAuditEvents path
    assert opentrail_cost(0) == 0.0
    assert opentrail_cost(250_000) == pytest.approx(2.5 * per_100k)


def test_summarise_sums_days_per_trail() -> None:
    rows = summarise(
        [
            ("b", "2026-11-02", UsageCounts(data=5)),
            ("a", "2026-11-01", UsageCounts(management_first=3)),
            ("a", "2026-11-03", UsageCounts(management_first=2, management_additional=1)),
        ]
    )
    assert [(r.trail, r.first_day, r.last_day) for r in rows] == [
        ("a", "2026-11-01", "2026-11-03"),
        ("b", "2026-11-02", "2026-11-02"),
    ]
    assert rows[0].counts == UsageCounts(management_first=5, management_additional=1)
    assert rows[0].cloudtrail == pytest.approx(2.00 / 100_000)
    assert rows[0].opentrail == pytest.approx(opentrail_cost(6))


def test_counts_round_trip() -> None:
    counts = UsageCounts(1, 2, 3, 4)
    assert UsageCounts.from_dict(counts.to_dict()) == counts
    assert not UsageCounts()
