"""Insights per trail, the pure parts: what a trail's InsightSelectors need from its event
selectors, the types an engine reports, and StopLogging/StartLogging as engine steps."""

from __future__ import annotations

from typing import Any

import pytest

from opentrail.domain.insights import CALL_RATE, ERROR_RATE, INSIGHT_TYPES, MISSING, ApiMinute, InsightsEngine
from opentrail.domain.insights.aggregates import Aggregator, is_analysed
from opentrail.domain.insights.pauses import LoggingState, next_minute, steps
from opentrail.domain.trail import ALL_INSIGHTS, TrailError, default_trail_dict, trail_from_dict

# -- trails -----------------------------------------------------------------------------------


def _trail(**fields: Any) -> Any:
    return trail_from_dict({"Name": "t-1", **fields})


@pytest.mark.parametrize(
    ("selectors", "insight", "ok"),
    [
        ([{}], "ApiCallRateInsight", True),
        ([{"ReadWriteType": "WriteOnly"}], "ApiCallRateInsight", True),
        ([{"ReadWriteType": "ReadOnly"}], "ApiCallRateInsight", False),  # call rate looks at writes
        ([{"ReadWriteType": "ReadOnly"}], "ApiErrorRateInsight", True),
        (
            [
                {
                    "IncludeManagementEvents": False,
                    "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}],
                }
            ],
            "ApiErrorRateInsight",
            False,
        ),
        ([{"ReadWriteType": "ReadOnly"}], "MissingActivityInsight", True),
    ],
)
def test_insight_selectors_need_the_management_events_they_analyse(
    selectors: list[dict[str, Any]], insight: str, ok: bool
) -> None:
    fields = {"EventSelectors": selectors, "InsightSelectors": [{"InsightType": insight}]}
    if ok:
        assert _trail(**fields).insight_types == {insight}
    else:
        with pytest.raises(TrailError, match=rf"InsightSelectors\[0\]: {insight} on Management events"):
            _trail(**fields)


def test_advanced_selectors_and_data_categories() -> None:
    reads = [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                 {"Field": "readOnly", "Equals": ["true"]}]}]  # fmt: skip
    with pytest.raises(TrailError, match="needs the trail to log write management events"):
        _trail(AdvancedEventSelectors=reads, InsightSelectors=[{"InsightType": "ApiCallRateInsight"}])
    trail = _trail(AdvancedEventSelectors=reads, InsightSelectors=[{"InsightType": "ApiErrorRateInsight"}])
    assert trail.insight_categories == {"Management"}
    data = [{"DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}]}]
    trail = _trail(
        EventSelectors=data,
        InsightSelectors=[{"InsightType": "ApiErrorRateInsight", "EventCategories": ["Management", "Data"]}],
    )
    assert trail.insight_categories == {"Management", "Data"}
    with pytest.raises(TrailError, match="needs the trail to log data events"):
        _trail(InsightSelectors=[{"InsightType": "ApiErrorRateInsight", "EventCategories": ["Data"]}])
    with pytest.raises(TrailError, match="EventCategories: each category at most once"):
        _trail(EventSelectors=data, InsightSelectors=[{"InsightType": CALL_RATE, "EventCategories": ["Data", "Data"]}])


def test_the_default_trail_has_every_insight_type_and_an_explicit_trail_none() -> None:
    default = trail_from_dict(default_trail_dict())
    assert default.insight_types == set(INSIGHT_TYPES)
    assert [s.insight_type for s in ALL_INSIGHTS] == list(INSIGHT_TYPES)
    assert not trail_from_dict({"Name": "opentrail"}).has_insight_selectors  # CloudTrail's default: off


def test_aggregator_analyses_the_categories_it_is_given() -> None:
    management = {"eventTime": "2026-11-23T06:00:00Z", "eventSource": "s3.amazonaws.com", "eventName": "PutBucketAcl"}
    data = {**management, "eventName": "GetObject", "eventCategory": "Data", "managementEvent": False}
    assert is_analysed(management)
    assert not is_analysed(data)
    assert is_analysed(data, frozenset({"Data"}))
    assert not is_analysed(management, frozenset({"Data"}))
    both = Aggregator(categories=frozenset({"Management", "Data"}))
    both.add(management)
    both.add(data)
    assert both.records == 2


# -- the types an engine reports ------------------------------------------------------------------

SCOPE = ("111122223333", "us-east-1")


def _minutes(first: int, last: int, calls: int, errors: int = 0) -> dict[int, dict[Any, ApiMinute]]:
    out = {}
    for minute in range(first, last + 1):
        aggregate = ApiMinute()
        for n in range(calls):
            aggregate.add(
                write=True,
                error_code="AccessDenied" if n < errors else None,
                principal="arn:aws:iam::111122223333:user/ci",
                user_agent="cli",
                principal_key="arn:aws:iam::111122223333:user/ci",
            )
        out[minute] = {("ec2.amazonaws.com", "RunInstances"): aggregate}
    return out


def _run(kinds: frozenset[str] | None) -> list[str]:
    start = 29_000_000 - 29_000_000 % 1440  # a midnight
    engine = InsightsEngine(SCOPE, kinds=kinds)
    records = engine.advance(start + 600, _minutes(start, start + 600, 2))  # ten quiet hours
    records += engine.advance(start + 620, _minutes(start + 601, start + 620, 60, errors=50))  # spike, errors
    return sorted({r["insightDetails"]["insightType"] for r in records})


def test_engine_reports_only_the_selected_types_and_learns_all() -> None:
    every = _run(None)
    assert {CALL_RATE, ERROR_RATE} <= set(every)
    assert _run(frozenset({ERROR_RATE})) == [ERROR_RATE]
    assert _run(frozenset({CALL_RATE})) == [CALL_RATE]
    assert _run(frozenset()) == []


# -- StopLogging / StartLogging -------------------------------------------------------------------


def test_steps_logging_trail_advances_to_the_end() -> None:
    assert steps(LoggingState(), 100, 110) == [("advance", 110)]
    assert steps(LoggingState(), 110, 110) == []
    assert steps(LoggingState(), None, 110) == [("advance", 110)]
    assert next_minute(LoggingState(), 100) == 101
    assert next_minute(LoggingState(), None) is None


def test_steps_stopped_trail_analyses_up_to_the_stop_then_waits() -> None:
    stopped = LoggingState(((105, None),))
    assert steps(stopped, 100, 110) == [("advance", 104)]
    assert next_minute(stopped, 100) == 101
    assert steps(stopped, 104, 110) == []
    assert next_minute(stopped, 104) is None  # caught up: needs nothing, holds nobody back
    assert steps(stopped, 100, 102) == [("advance", 102)]


def test_steps_resumed_trail_pauses_over_the_gap() -> None:
    resumed = LoggingState(((105, 150),))
    assert steps(resumed, 104, 160) == [("pause", 150), ("advance", 160)]
    assert next_minute(resumed, 104) == 150
    assert steps(resumed, 100, 160) == [("advance", 104), ("pause", 150), ("advance", 160)]
    assert next_minute(resumed, 100) == 101
    assert steps(resumed, 104, 140) == []  # not yet past the resumption
    assert steps(resumed, 151, 160) == [("advance", 160)]  # the pause is behind
    # a StartLogging on a logging trail (start after an old stop the engine passed): no pause
    assert steps(LoggingState(((50, 150),)), 100, 160) == [("advance", 160)]


def test_steps_pause_over_every_cycle_between_two_runs() -> None:
    # stopped at 105, started at 120, stopped at 130, started at 150: two gaps, each paused over
    cycles = LoggingState(((105, 120), (130, 150)))
    assert steps(cycles, 100, 160) == [
        ("advance", 104),
        ("pause", 120),
        ("advance", 129),
        ("pause", 150),
        ("advance", 160),
    ]
    assert next_minute(cycles, 100) == 101
    assert next_minute(cycles, 104) == 120
    assert next_minute(cycles, 125) == 126
    assert next_minute(cycles, 129) == 150
    assert steps(cycles, 125, 140) == [("advance", 129)]  # then wait for the second start
    # still stopped after the second stop: analysed up to it, then nothing
    stopped = LoggingState(((105, 120), (130, None)))
    assert steps(stopped, 100, 160) == [("advance", 104), ("pause", 120), ("advance", 129)]
    assert steps(stopped, 129, 160) == []
    assert next_minute(stopped, 129) is None
    assert not stopped.is_logging
    assert cycles.is_logging


def test_engine_pause_ends_open_insights_and_shifts_cadences() -> None:
    start = 29_000_000 - 29_000_000 % 1440
    engine = InsightsEngine(SCOPE, kinds=frozenset({CALL_RATE, MISSING}))
    engine.advance(start + 600, _minutes(start, start + 600, 2))
    opened = engine.advance(start + 610, _minutes(start + 601, start + 610, 60))
    assert [r["insightDetails"]["state"] for r in opened] == ["Start"]
    last_call = {key: tracker.last for key, tracker in engine.cadences.items()}
    ended = engine.pause(start + 700)
    assert [(r["insightDetails"]["state"], r["sharedEventID"]) for r in ended] == [("End", opened[0]["sharedEventID"])]
    assert engine.last_minute == start + 699
    assert {key: tracker.last for key, tracker in engine.cadences.items()} == {k: v + 89 for k, v in last_call.items()}
    assert engine.pause(start + 650) == []  # nothing to skip
