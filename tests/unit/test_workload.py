"""The demo workload: deterministic, realistic, and shaped for every capture path."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from opentrail.domain.audit_events import Caller, parse_request, process
from opentrail.domain.eventbridge import record_from_envelope
from opentrail.domain.record import CaptureContext, normalize
from opentrail.local.workload import (
    AUDIT_EVENT_DETAIL_TYPE,
    CLOUDTRAIL_DETAIL_TYPE,
    DEFAULT_ACCOUNT_ID,
    HOME_REGION,
    generate,
)


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return generate()


def _dump(w) -> str:  # type: ignore[no-untyped-def]
    return json.dumps([(e.at.isoformat(), e.path, e.region, e.uid, e.record) for e in w.events], sort_keys=True)


def test_workload_same_seed_gives_identical_events(workload) -> None:  # type: ignore[no-untyped-def]
    # given the default seed twice / when generated / then byte-identical
    assert _dump(generate()) == _dump(workload)


def test_workload_other_seed_gives_other_events(workload) -> None:  # type: ignore[no-untyped-def]
    assert _dump(generate(seed=8)) != _dump(workload)


def test_workload_has_the_requested_count_sorted_within_the_window() -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    w = generate(300, 1.0, 3, start=start)
    assert len(w.events) == 300
    times = [e.at for e in w.events]
    assert times == sorted(times)
    assert w.start == start
    assert w.end == start + timedelta(hours=1)
    assert all(start <= t < w.end for t in times)
    assert len({e.uid for e in w.events}) == 300


def test_workload_reads_far_outnumber_writes(workload) -> None:  # type: ignore[no-untyped-def]
    reads = sum(e.read_only for e in workload.events)
    writes = len(workload.events) - reads
    assert writes > 50
    assert reads > 4 * writes


def test_workload_includes_failures_with_messages(workload) -> None:  # type: ignore[no-untyped-def]
    codes = Counter(e.error_code for e in workload.events if e.error_code)
    assert codes["AccessDenied"] > 0
    assert codes["Client.UnauthorizedOperation"] > 0
    failed = [e.record for e in workload.events if e.error_code]
    assert all(r["errorMessage"] and r["responseElements"] is None for r in failed)
    assert 0.005 < len(failed) / len(workload.events) < 0.1


def test_workload_spans_two_regions_with_global_services_in_us_east_1(workload) -> None:  # type: ignore[no-untyped-def]
    regions = Counter(e.region for e in workload.events)
    assert set(regions) == {"us-east-1", "eu-west-1"}
    assert regions["eu-west-1"] > 100
    global_events = [
        e for e in workload.events if e.record["eventSource"] in ("iam.amazonaws.com", "sts.amazonaws.com")
    ]
    assert global_events
    assert {e.record["awsRegion"] for e in global_events} == {"us-east-1"}


def test_workload_has_several_principals_services_and_agents(workload) -> None:  # type: ignore[no-untyped-def]
    identities = {e.record["userIdentity"].get("arn", e.record["userIdentity"]["type"]) for e in workload.events}
    assert {
        "AWSService",
        f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/alice",
        f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/bob",
    } <= identities
    assert any(":assumed-role/ci-deploy/" in i for i in identities)
    sources = {e.record["eventSource"] for e in workload.events}
    assert {"s3.amazonaws.com", "ec2.amazonaws.com", "iam.amazonaws.com", "sts.amazonaws.com",
            "lambda.amazonaws.com", "dynamodb.amazonaws.com", "kms.amazonaws.com"} <= sources  # fmt: skip
    agents = {e.record["userAgent"].split("/")[0] for e in workload.events}
    assert {"aws-cli", "Boto3", "console.amazonaws.com"} <= agents


def test_workload_follows_a_daytime_rhythm() -> None:
    # given 24 simulated hours / then the afternoon is busier than the night
    w = generate(3000, 24, 1, start=datetime(2026, 3, 16, 0, 0, tzinfo=UTC))
    per_hour = Counter(e.at.hour for e in w.events)
    assert per_hour[13] > 3 * per_hour[2]


def test_workload_uses_all_three_capture_paths_mostly_put_audit_events(workload) -> None:  # type: ignore[no-untyped-def]
    paths = Counter(e.path for e in workload.events)
    assert set(paths) == {"ingest", "eventbridge", "producer"}
    assert paths["ingest"] == max(paths.values())


def test_workload_ingest_events_pass_put_audit_events_validation(workload) -> None:  # type: ignore[no-untyped-def]
    # given the ingest events as PutAuditEvents requests of up to 100 / then none is rejected
    channel = f"arn:aws:cloudtrail:{HOME_REGION}:{DEFAULT_ACCOUNT_ID}:channel/demo"
    events = workload.by_path("ingest")
    assert all(e.region == HOME_REGION for e in events)
    for start in range(0, len(events), 100):
        chunk = events[start : start + 100]
        body = {"auditEvents": [{"id": e.uid, "eventData": json.dumps(e.event_data())} for e in chunk]}
        request = parse_request(
            channel_arn=channel,
            external_id=None,
            body=json.dumps(body).encode(),
            caller=Caller(account_id=DEFAULT_ACCOUNT_ID),
            accepted_channels={channel},
        )
        accepted, rejected = process(request, region=HOME_REGION, now=chunk[-1].at + timedelta(minutes=1))
        assert rejected == []
        assert [a.record["requestID"] for a in accepted] == [e.uid for e in chunk]


def test_workload_envelopes_become_records(workload) -> None:  # type: ignore[no-untyped-def]
    kinds: Counter[str] = Counter()
    for event in workload.by_path("eventbridge"):
        envelope = event.eventbridge_envelope()
        kinds[envelope["detail-type"]] += 1
        record = record_from_envelope(envelope, now=event.at + timedelta(minutes=1))
        assert record["awsRegion"] == event.region
        assert record["eventTime"] == event.record["eventTime"]
    assert kinds[CLOUDTRAIL_DETAIL_TYPE] > 0
    assert kinds[AUDIT_EVENT_DETAIL_TYPE] > 0


def test_workload_producer_records_normalise(workload) -> None:  # type: ignore[no-untyped-def]
    for event in workload.by_path("producer"):
        record = normalize(event.producer_record(), CaptureContext(DEFAULT_ACCOUNT_ID, event.region), now=event.at)
        assert record["readOnly"] is event.read_only


def test_workload_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="events"):
        generate(-1)
    with pytest.raises(ValueError, match="hours"):
        generate(10, 0)


# -- injected anomalies (the demo's Insights section) -------------------------------------


def test_workload_anomalies_are_labelled_one_per_kind_in_the_last_part() -> None:
    w = generate(anomalies=True)
    kinds = Counter(a.insight_type for a in w.anomalies)
    assert kinds == {
        "ApiCallRateInsight": 1,
        "ApiErrorRateInsight": 1,
        "UnusualActivityInsight": 2,
        "MissingActivityInsight": 1,
    }
    for anomaly in w.anomalies:
        assert w.start + timedelta(minutes=90) < anomaly.start < anomaly.end <= w.end - timedelta(minutes=20)
    assert _dump(generate(anomalies=True)) == _dump(w)  # deterministic


def test_workload_anomalies_come_on_top_of_an_unchanged_background(workload) -> None:  # type: ignore[no-untyped-def]
    w = generate(anomalies=True)
    background = {e.uid for e in workload.events}
    assert background <= {e.uid for e in w.events}
    injected = [e for e in w.events if e.uid not in background]
    assert len(w.events) == len(workload.events) + len(injected)
    assert [e.at for e in w.events] == sorted(e.at for e in w.events)
    by_name = Counter(e.record["eventName"] for e in injected)
    assert by_name["CreateOrder"] == 150  # 25 a minute for 6 minutes
    assert by_name["GetBucketPolicy"] == 90
    assert all(e.error_code == "AccessDenied" for e in injected if e.record["eventName"] == "GetBucketPolicy")
    intruder = [e for e in injected if "orders-web-instance-role" in e.record["userIdentity"]["arn"]]
    assert {e.record["eventName"] for e in intruder} == {"ListBuckets", "GetBucketAcl", "GetObject", "PutBucketPolicy"}
    assert {e.record["sourceIPAddress"] for e in intruder} == {"198.18.0.61"}
    assert all(e.record["eventCategory"] == "Data" for e in intruder if e.record["eventName"] == "GetObject")
    job = sorted(e.at for e in injected if "inventory-sync-role" in e.record["userIdentity"]["arn"])
    gaps = Counter(int((b - a).total_seconds() // 60) for a, b in itertools.pairwise(job))
    assert max(gaps, key=lambda gap: gaps[gap]) in (4, 5)  # every 5 minutes
    assert max(gaps) >= 40  # the stop


def test_workload_injected_events_pass_their_capture_paths() -> None:
    w = generate(anomalies=True)
    background = {e.uid for e in generate().events}
    channel = f"arn:aws:cloudtrail:{HOME_REGION}:{DEFAULT_ACCOUNT_ID}:channel/demo"
    for event in (e for e in w.events if e.uid not in background):
        if event.path == "ingest":
            body = {"auditEvents": [{"id": event.uid, "eventData": json.dumps(event.event_data())}]}
            request = parse_request(
                channel_arn=channel,
                external_id=None,
                body=json.dumps(body).encode(),
                caller=Caller(account_id=DEFAULT_ACCOUNT_ID),
                accepted_channels={channel},
            )
            _accepted, rejected = process(request, region=HOME_REGION, now=event.at + timedelta(minutes=1))
            assert rejected == []
        else:
            assert event.path == "eventbridge"
            record = record_from_envelope(event.eventbridge_envelope(), now=event.at + timedelta(minutes=1))
            assert record["eventName"] == event.record["eventName"]


def test_workload_anomalies_need_three_hours() -> None:
    with pytest.raises(ValueError, match="at least 180 minutes"):
        generate(300, 2.0, anomalies=True)
