"""Per-minute aggregates: bounded breakdowns, merging, serialisation, records in."""

from __future__ import annotations

import random
from typing import Any

import pytest

from opentrail.domain.insights.aggregates import (
    OTHER,
    Aggregator,
    ApiMinute,
    CountTable,
    apis_from_dict,
    apis_to_dict,
    merge_minutes,
    principal_key,
)


def record(name: str = "RunInstances", *, minute: int = 0, error: str | None = None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventVersion": "1.11",
        "eventTime": f"2026-03-02T10:{minute:02d}:30Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "recipientAccountId": "123456789012",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice"},
        "userAgent": "aws-cli/2.15.30",
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
    }
    if error:
        base["errorCode"] = error
    base.update(extra)
    return base


def test_count_table_keeps_top_values_and_folds_the_rest_into_other() -> None:
    table = CountTable(limit=3)
    for value, count in {"a": 10, "b": 8, "c": 5, "d": 2, "e": 1}.items():
        table.add(value, count)

    assert table.to_dict() == {"a": 10, "b": 8, "c": 5, OTHER: 3}
    assert table.total() == 26
    assert table.top(2) == [("a", 10), ("b", 8)]


def test_api_minute_merge_equals_adding_everything_to_one() -> None:
    rng = random.Random(3)
    calls = [(rng.random() < 0.3, rng.choice([None, "AccessDenied"]), f"p{rng.randrange(4)}") for _ in range(200)]
    whole, left, right = ApiMinute(), ApiMinute(), ApiMinute()
    for i, (write, error, who) in enumerate(calls):
        for target in (whole, left if i % 2 else right):
            target.add(write=write, error_code=error, principal=who, user_agent="ua", principal_key=who)

    left.merge(right)

    assert left.to_dict() == whole.to_dict()


def test_aggregates_round_trip_through_compact_dicts() -> None:
    minute = ApiMinute()
    minute.add(write=True, error_code="AccessDenied", principal="arn:a", user_agent="ua", principal_key="arn:a")
    minute.add(write=True, error_code=None, principal="arn:b", user_agent="ua", principal_key="arn:b")
    apis = {("ec2.amazonaws.com", "RunInstances"): minute}

    again = apis_from_dict(apis_to_dict(apis))

    assert again[("ec2.amazonaws.com", "RunInstances")].to_dict() == minute.to_dict()
    assert merge_minutes([apis, again])[("ec2.amazonaws.com", "RunInstances")].calls == 4


def test_aggregator_counts_management_events_per_minute_and_skips_data_events() -> None:
    aggregator = Aggregator()
    aggregator.add(record(minute=1))
    aggregator.add(record(minute=1, error="Client.UnauthorizedOperation"))
    aggregator.add(record("DescribeInstances", minute=2))
    aggregator.add(record("GetObject", minute=2, eventCategory="Data", managementEvent=False))

    drained = list(aggregator.drain())

    assert [(scope, len(apis)) for scope, _, apis in drained] == [(("123456789012", "us-east-1"), 1)] * 2
    run = drained[0][2][("ec2.amazonaws.com", "RunInstances")]
    assert (run.calls, run.writes, run.errors) == (2, 2, 1)
    assert run.by_error.to_dict() == {"Client.UnauthorizedOperation": 1}
    assert drained[1][2][("ec2.amazonaws.com", "DescribeInstances")].writes == 0
    assert aggregator.skipped == 1
    assert list(aggregator.drain()) == []


def test_aggregator_drains_only_minutes_before_the_watermark() -> None:
    aggregator = Aggregator()
    for minute in (5, 1, 3):
        aggregator.add(record(minute=minute))

    watermark = 29_540_764  # 2026-03-02T10:04Z

    first = [minute - watermark for _, minute, _ in aggregator.drain(before_minute=watermark)]

    assert first == [-3, -1]
    assert [minute - watermark for _, minute, _ in aggregator.drain()] == [1]


def test_old_records_without_category_are_management_events() -> None:
    aggregator = Aggregator()
    old = record()
    del old["eventCategory"], old["managementEvent"]

    assert aggregator.add(old) is not None


def test_role_sessions_collapse_to_their_role() -> None:
    assert principal_key("arn:aws:sts::1:assumed-role/ci-deploy/gha-8841") == "arn:aws:sts::1:assumed-role/ci-deploy/*"
    assert principal_key("arn:aws:iam::1:user/alice") == "arn:aws:iam::1:user/alice"


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-14T09:26:53Z",
        "2025-03-14T09:26:59Z",
        "2024-02-29T23:59:00Z",
        "2025-03-14T09:26:53+01:00",
        "2025-03-14T09:26:53.123Z",
        "2025-03-14T09:26:53",
        "2025-02-30T09:26:53Z",
        "2025-03-14T24:00:00Z",
        "2025-03-14T09:60:00Z",
        "2025-03-14T09:26:61Z",
        "2025-3-14T09:26:53Z",
        "not a time",
    ],
)
def test_event_minute_agrees_with_parse_event_time(value: str) -> None:
    # the cached path for CloudTrail's own form gives parse_event_time's minute, or its error
    from opentrail.domain.insights.aggregates import event_minute
    from opentrail.domain.record import parse_event_time

    try:
        expected: int | str = int(parse_event_time(value).timestamp() // 60)
    except ValueError:
        expected = "error"
    try:
        got: int | str = event_minute(value)
    except ValueError:
        got = "error"
    assert got == expected
