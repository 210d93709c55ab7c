"""The four detectors, driven minute by minute through the engine on synthetic traffic."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from opentrail.domain.insights import (
    CALL_RATE,
    ERROR_RATE,
    MISSING,
    UNUSUAL,
    ApiMinute,
    InsightsEngine,
    MinuteApis,
    Sensitivity,
)
from opentrail.domain.insights.aggregates import principal_key

SCOPE = ("123456789012", "us-east-1")
T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp()) // 60  # Monday 00:00 UTC
RUN = ("ec2.amazonaws.com", "RunInstances")
DESCRIBE = ("ec2.amazonaws.com", "DescribeInstances")
ALICE = "arn:aws:iam::123456789012:user/alice"

Traffic = Callable[[int, random.Random], MinuteApis]


def calls(apis: MinuteApis, api: tuple[str, str], n: int, *, who: str = ALICE, write: bool = True,
          error: str | None = None) -> None:  # fmt: skip
    minute = apis.setdefault(api, ApiMinute())
    for _ in range(n):
        minute.add(
            write=write, error_code=error, principal=who, user_agent="aws-cli/2", principal_key=principal_key(who)
        )


def run(traffic: Traffic, minutes: int, engine: InsightsEngine | None = None, start: int = T0) -> list[dict[str, Any]]:
    engine = engine or InsightsEngine(SCOPE)
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    for minute in range(start, start + minutes):
        out += engine.process_minute(minute, traffic(minute - T0, rng))
    return out


def starts(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        r for r in records if r["insightDetails"]["state"] == "Start" and r["insightDetails"]["insightType"] == kind
    ]


def minute_of(record: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).timestamp()) // 60 - T0


def test_call_rate_spike_starts_within_minutes_and_ends_after_it_subsides() -> None:
    spike = 2 * 1440 + 600  # day 3, 10:00

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        calls(apis, RUN, 1 if rng.random() < 0.2 else 0)
        if spike <= t < spike + 15:
            calls(apis, RUN, 30, who="arn:aws:sts::123456789012:assumed-role/ci/runner")
        return apis

    records = run(traffic, 3 * 1440)

    (start,) = starts(records, CALL_RATE)
    end = next(r for r in records if r["sharedEventID"] == start["sharedEventID"] and r is not start)
    assert 0 <= minute_of(start) - spike <= 2
    assert end["insightDetails"]["state"] == "End"
    assert 14 <= end["insightDetails"]["insightContext"]["statistics"]["insightDuration"] <= 20
    context = start["insightDetails"]["insightContext"]
    assert context["statistics"]["insight"]["average"] > 20 * context["statistics"]["baseline"]["average"]
    assert context["attributions"][0]["insight"][0]["value"].endswith("assumed-role/ci/runner")
    assert "RunInstances: " in context["explanation"]
    assert "write calls/min" in context["explanation"]


def test_a_busy_hour_seen_every_day_is_not_a_call_rate_insight() -> None:
    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        hour = (t % 1440) // 60
        rate = 6.0 if 9 <= hour < 12 else 0.2
        calls(apis, RUN, sum(1 for _ in range(20) if rng.random() < rate / 20))
        return apis

    records = run(traffic, 10 * 1440)

    assert [minute_of(r) for r in starts(records, CALL_RATE) if minute_of(r) >= 2 * 1440] == []


def test_error_burst_of_one_code_is_an_error_rate_insight() -> None:
    burst = 1440 + 300

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        calls(apis, DESCRIBE, 10, write=False)
        if t % 10 == 0:
            calls(apis, DESCRIBE, 1, write=False, error="AccessDenied")
        if burst <= t < burst + 20:
            calls(apis, DESCRIBE, 15, write=False, error="AccessDenied", who="arn:aws:iam::123456789012:user/mallory")
        return apis

    records = run(traffic, 2 * 1440)

    (start,) = starts(records, ERROR_RATE)
    assert start["insightDetails"]["errorCode"] == "AccessDenied"
    assert 0 <= minute_of(start) - burst <= 2
    principals = start["insightDetails"]["insightContext"]["attributions"][0]
    assert principals["attribute"] == "userIdentityArn"
    assert principals["insight"][0]["value"].endswith("user/mallory")


def test_more_calls_failing_at_the_usual_share_is_not_an_error_rate_insight() -> None:
    storm = 1440 + 300

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        factor = 10 if storm <= t < storm + 60 else 1
        calls(apis, DESCRIBE, 9 * factor, write=False)
        calls(apis, DESCRIBE, 1 * factor, write=False, error="ThrottlingException")
        return apis

    assert starts(run(traffic, 2 * 1440), ERROR_RATE) == []


def test_an_api_never_called_and_a_principal_that_never_wrote_are_unusual_after_the_warmup() -> None:
    reader = "arn:aws:sts::123456789012:assumed-role/ReadOnly/session-1"
    secret = ("secretsmanager.amazonaws.com", "GetSecretValue")

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        calls(apis, DESCRIBE, 2, write=False, who=reader)
        if t % 7 == 0:
            calls(apis, RUN, 1)
        if t in (600, 2000, 2001, 2500):  # day 1 (warm-up), then twice on day 2
            calls(apis, secret, 3, write=False)
        if t == 2200:
            calls(apis, RUN, 2, who=reader.replace("session-1", "session-2"))
        return apis

    records = run(traffic, 3000, engine=InsightsEngine(SCOPE, Sensitivity(unusual_warmup_minutes=1440)))

    unusual = starts(records, UNUSUAL)
    assert [(minute_of(r), r["insightDetails"]["eventName"]) for r in unusual] == [(2200, "RunInstances")]
    assert unusual[0]["insightDetails"]["userIdentityArn"] == "arn:aws:sts::123456789012:assumed-role/ReadOnly/*"
    assert unusual[0]["insightDetails"]["insightContext"]["statistics"]["baseline"]["average"] == 0.0

    records = run(traffic, 3000, engine=InsightsEngine(SCOPE, Sensitivity(unusual_warmup_minutes=60)))

    names = [(minute_of(r), r["insightDetails"]["eventName"]) for r in starts(records, UNUSUAL)]
    assert names == [(600, "GetSecretValue"), (2200, "RunInstances")]  # learnt once it ended


def test_a_regular_job_that_stops_is_missing_until_it_resumes() -> None:
    job = "arn:aws:sts::123456789012:assumed-role/backup/job"
    stop, resume = 2 * 1440 + 1, 2 * 1440 + 300  # the run due at 2*1440+5 is the first missed

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        if t % 5 == 0 and not (stop <= t < resume):
            calls(apis, RUN, 1, who=job)
        if rng.random() < 0.3:
            calls(apis, DESCRIBE, 1, write=False)
        return apis

    records = run(traffic, 3 * 1440)

    (start,) = starts(records, MISSING)
    first_missed = 2 * 1440 + 5
    assert 0 < minute_of(start) - first_missed <= 10
    assert start["insightDetails"]["userIdentityArn"] == "arn:aws:sts::123456789012:assumed-role/backup/*"
    end = next(r for r in records if r["sharedEventID"] == start["sharedEventID"] and r is not start)
    assert minute_of(end) == resume
    assert "usually every 5 min" in start["insightDetails"]["insightContext"]["explanation"]


def test_random_calls_at_office_hours_are_not_a_regular_activity() -> None:
    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        if 8 <= (t % 1440) // 60 < 18 and rng.random() < 0.5:
            calls(apis, DESCRIBE, 1, write=False)
        return apis

    assert starts(run(traffic, 4 * 1440), MISSING) == []


def test_engine_state_round_trips_and_resumes_identically() -> None:
    spike = 1440 + 600

    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        calls(apis, RUN, 1 if t % 5 == 0 else 0, who="arn:aws:iam::123456789012:user/job")
        calls(apis, DESCRIBE, 3, write=False, error="AccessDenied" if t % 20 == 0 else None)
        if spike <= t < spike + 30:
            calls(apis, RUN, 25)
        return apis

    whole = run(traffic, 2 * 1440)
    engine = InsightsEngine(SCOPE)
    first = run(traffic, spike + 10, engine=engine)
    item = json.loads(json.dumps(engine.to_dict()))
    resumed = InsightsEngine.from_dict(item)
    rest = run(traffic, 2 * 1440 - spike - 10, engine=resumed, start=T0 + spike + 10)

    assert first + rest == whole
    assert len(json.dumps(item)) < 60_000


def test_sensitivity_presets_and_overrides() -> None:
    assert Sensitivity.preset("medium") == Sensitivity()
    assert Sensitivity.preset("high").rate_sigma < Sensitivity().rate_sigma < Sensitivity.preset("low").rate_sigma
    assert Sensitivity().with_overrides({"rate_sigma": "5", "quiet_minutes": "3"}).quiet_minutes == 3
    with pytest.raises(ValueError, match="unknown sensitivity knob"):
        Sensitivity().with_overrides({"nope": 1})
    with pytest.raises(ValueError, match="must be one of"):
        Sensitivity.preset("extreme")


def test_advance_processes_every_minute_up_to_the_given_one_like_the_live_function() -> None:
    def traffic(t: int, rng: random.Random) -> MinuteApis:
        apis: MinuteApis = {}
        if t % 3 == 0:
            calls(apis, RUN, 1)
        if 1500 <= t < 1520:
            calls(apis, RUN, 40)
        return apis

    expected = run(traffic, 1600)
    engine = InsightsEngine(SCOPE)
    rng = random.Random(7)
    stored = {T0 + t: traffic(t, rng) for t in range(1600)}
    stored = {minute: apis for minute, apis in stored.items() if apis}  # minutes without events are not stored
    got: list[dict[str, Any]] = []
    for until in range(T0 + 4, T0 + 1600, 5):  # every 5 minutes, the minutes since the last run
        got += engine.advance(until, {m: a for m, a in stored.items() if until - 5 < m <= until})

    assert got == expected
    assert len(starts(got, CALL_RATE)) == 1
