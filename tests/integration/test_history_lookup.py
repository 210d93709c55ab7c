"""EventHistory over moto: every attribute, time bounds, order, pagination, duplicates,
insights, AND, TTL values, and DynamoDB requests per page."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentrail.adapters.history import EventHistory
from opentrail.domain import history as h
from opentrail.domain.lookup import LookupQuery
from opentrail.local.resources import create_history_table

REGION = "us-east-1"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
DAY_BEFORE, DAY_AFTER = T0 - timedelta(days=1), T0 + timedelta(days=1)
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def record(seconds: int = 0, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventVersion": "1.11",
        "eventID": str(uuid.uuid4()),
        "eventTime": at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
        "userIdentity": {"type": "IAMUser", "userName": "alice", "accessKeyId": "AKIAALICE"},
        "awsRegion": REGION,
        "recipientAccountId": "111122223333",
        "resources": [{"type": "AWS::IAM::User", "ARN": "arn:aws:iam::111122223333:user/bob"}],
    }
    item.update(extra)
    return item


def lines(records: Iterable[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in records]


@pytest.fixture
def history(aws: None) -> EventHistory:
    client = boto3.client("dynamodb", region_name=REGION)
    create_history_table(client, "history")
    return EventHistory("history", client=client)


def query(
    start: datetime = DAY_BEFORE, end: datetime = DAY_AFTER, *attributes: tuple[str, str], **kw: Any
) -> LookupQuery:
    return LookupQuery(region=kw.pop("region", REGION), start=start, end=end, attributes=tuple(attributes), **kw)


def lookup_all(history: EventHistory, q: LookupQuery) -> Iterator[list[dict[str, Any]]]:
    cursor = None
    for _ in range(10_000):
        page = history.lookup(q, cursor)
        yield page.records
        cursor = page.cursor
        if cursor is None:
            return
    raise AssertionError("pagination did not end")


def found(history: EventHistory, q: LookupQuery) -> list[str]:
    return [r["eventID"] for page in lookup_all(history, q) for r in page]


def newest_first(records: Iterable[dict[str, Any]]) -> list[str]:
    ordered = sorted(records, key=lambda r: (r["eventTime"], h.order_hash(r["eventID"]), r["eventID"]), reverse=True)
    return [r["eventID"] for r in ordered]


# -- attributes -------------------------------------------------------------------------------


def test_history_finds_a_record_by_each_of_the_eight_attributes(history: EventHistory) -> None:
    target = record(
        5,
        eventName="DeleteBucket",
        eventSource="s3.amazonaws.com",
        readOnly=True,
        userIdentity={"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/Ops/eve", "accessKeyId": "ASIAEVE"},
        resources=[{"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::evidence"}],
    )
    history.index_lines("b1", lines([record(1), target, record(9)]))
    for key, value in [
        ("EventId", target["eventID"]),
        ("EventName", "DeleteBucket"),
        ("ReadOnly", "true"),
        ("Username", "eve"),
        ("ResourceType", "AWS::S3::Bucket"),
        ("ResourceName", "evidence"),
        ("ResourceName", "arn:aws:s3:::evidence"),
        ("EventSource", "s3.amazonaws.com"),
        ("AccessKeyId", "ASIAEVE"),
    ]:
        assert found(history, query(DAY_BEFORE, DAY_AFTER, (key, value))) == [target["eventID"]], key
    assert found(history, query(DAY_BEFORE, DAY_AFTER, ("Username", "nobody"))) == []


def test_history_records_with_several_resources_are_found_by_each(history: EventHistory) -> None:
    target = record(
        3,
        resources=[
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::src"},
            {"type": "AWS::KMS::Key", "ARN": "arn:aws:kms:us-east-1:1:key/k-1"},
        ],
    )
    history.index_lines("b1", lines([target, record(4)]))
    for key, value in [
        ("ResourceName", "src"),
        ("ResourceName", "k-1"),
        ("ResourceName", "arn:aws:kms:us-east-1:1:key/k-1"),
        ("ResourceType", "AWS::KMS::Key"),
    ]:
        assert found(history, query(DAY_BEFORE, DAY_AFTER, (key, value))) == [target["eventID"]], value
    # the same short name under another ARN is not a match for the full ARN
    assert found(history, query(DAY_BEFORE, DAY_AFTER, ("ResourceName", "arn:aws:s3:::elsewhere/src"))) == []


def dataset_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted((DATASETS / "stratus-red-team-detonation-logs").glob("*.json")):
        records.extend(json.loads(path.read_text()))
    for path in sorted((DATASETS / "otrf-aws-cloud-bank-breach-s3" / "normalized").glob("*.json.gz")):
        records.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return records


@pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets is not beside the repository")
def test_history_finds_every_dataset_record_by_each_of_its_attributes(aws: None) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    create_history_table(client, "history")
    history = EventHistory("history", client=client, data_events=True)  # the OTRF set has S3 data events
    records = dataset_records()
    assert len(records) == 413
    for start in range(0, len(records), 100):
        history.index_lines(f"dataset-{start}", lines(records[start : start + 100]))
    times = sorted(r["eventTime"] for r in records)
    start, end = datetime.fromisoformat(times[0]), datetime.fromisoformat(times[-1])
    wanted: dict[tuple[str, str, str], set[str]] = {}
    for item in records:
        for key, values in h.attribute_values(item).items():
            for value in values:
                wanted.setdefault((item["awsRegion"], key, value), set()).add(item["eventID"])
    checked = 0
    for (region, key, value), expected in sorted(wanted.items()):
        q = query(start, end, (key, value), region=region)
        result = found(history, q)
        assert len(result) == len(set(result))
        # exact for every key; ResourceName by short name also finds other ARNs with that short name
        assert set(result) == {r["eventID"] for r in records if r["awsRegion"] == region and h.matches(r, key, value)}
        assert expected <= set(result)
        checked += 1
    assert checked > 400


# -- time, order, pagination -------------------------------------------------------------------


def test_history_time_bounds_are_inclusive_at_the_second(history: EventHistory) -> None:
    records = [record(s) for s in (9, 10, 11, 20, 21)]
    history.index_lines("b1", lines(records))
    ids = [r["eventID"] for r in records]
    assert found(history, query(at(10), at(20))) == [ids[3], ids[2], ids[1]]
    assert found(history, query(at(9.5), at(20.9))) == [ids[3], ids[2], ids[1]]
    assert found(history, query(at(10), at(10))) == [ids[1]]
    assert found(history, query(at(12), at(19))) == []


def test_history_is_newest_first_across_batches_minutes_and_late_events(history: EventHistory) -> None:
    first = [record(s) for s in (0, 30, 59, 61, 200)]
    late = [record(-3600), record(45), record(130)]  # delivered later, with older eventTimes
    history.index_lines("b1", lines(first))
    history.index_lines("b2", lines(late))
    everything = first + late
    assert found(history, query()) == newest_first(everything)
    assert found(history, query(at(-3600), at(-3600))) == [late[0]["eventID"]]
    assert found(history, query(at(40), at(140))) == newest_first([late[1], first[2], first[3], late[2]])


def test_history_duplicates_across_batches_are_returned_once(history: EventHistory) -> None:
    shared = [record(s) for s in range(10)]
    history.index_lines("b1", lines([*shared[:7], record(3)]))
    history.index_lines("b2", lines(shared[4:]))  # producers re-sent 4..6
    history.index_lines("b3", lines(shared))
    expected = newest_first(shared)
    for size in (1, 2, 3, 50):
        result = found(history, query(max_results=size))
        assert len(result) == 11  # 10 shared + the extra record(3)
        assert [i for i in result if i in set(expected)] == expected
    assert found(history, query(DAY_BEFORE, DAY_AFTER, ("EventId", shared[5]["eventID"]))) == [shared[5]["eventID"]]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seconds=st.lists(st.integers(0, 400), min_size=0, max_size=90),
    batches=st.integers(1, 4),
    page=st.integers(1, 13),
    names=st.integers(1, 3),
)
def test_history_pagination_has_no_gaps_or_duplicates(
    history: EventHistory, seconds: list[int], batches: int, page: int, names: int
) -> None:
    batch_tag = uuid.uuid4().hex  # one table for every example: keep examples apart by time
    offset = int(uuid.UUID(batch_tag)) % 10_000 * 1000  # distinct minute ranges per example
    records = [record(offset + s, eventName=f"N{i % names}") for i, s in enumerate(seconds)]
    for n in range(batches):
        history.index_lines(f"{batch_tag}-{n}", lines(records[n::batches]))
    window = (at(offset), at(offset + 400))
    assert found(history, query(*window, max_results=page)) == newest_first(records)
    subset = [r for r in records if r["eventName"] == "N0"]
    assert found(history, query(*window, ("EventName", "N0"), max_results=page)) == newest_first(subset)


# -- categories, AND -----------------------------------------------------------------------------


def test_history_insight_events_only_with_the_insight_category(history: EventHistory) -> None:
    insight = record(5, eventCategory="Insight", eventType="AwsCloudTrailInsight", eventName="CreateUser")
    normal = record(6)
    history.index_lines("b1", lines([insight, normal]))
    assert found(history, query()) == [normal["eventID"]]
    assert found(history, query(insight=True)) == [insight["eventID"]]
    assert found(history, query(DAY_BEFORE, DAY_AFTER, ("EventName", "CreateUser"), insight=True)) == [
        insight["eventID"]
    ]
    assert found(history, query(DAY_BEFORE, DAY_AFTER, ("EventId", insight["eventID"]))) == []


def test_history_ands_two_attributes(history: EventHistory) -> None:
    alice = {"type": "IAMUser", "userName": "alice", "accessKeyId": "AKIAALICE"}
    bob = {"type": "IAMUser", "userName": "bob", "accessKeyId": "AKIABOB"}
    records = [
        record(1, eventName="DeleteBucket", userIdentity=alice),
        record(2, eventName="DeleteBucket", userIdentity=bob),
        record(3, eventName="CreateBucket", userIdentity=bob),
        record(90, eventName="DeleteBucket", userIdentity=bob),
    ]
    history.index_lines("b1", lines(records[:3]))
    history.index_lines("b2", lines(records[3:]))
    q = query(DAY_BEFORE, DAY_AFTER, ("EventName", "DeleteBucket"), ("Username", "bob"))
    assert found(history, q) == [records[3]["eventID"], records[1]["eventID"]]


# -- items --------------------------------------------------------------------------------------


def test_history_ttl_attribute_values_are_exact(history: EventHistory) -> None:
    history.retention_days = 7
    item = record(75)  # 10:01:15
    history.index_lines("b1", lines([item]))
    scan = boto3.client("dynamodb", region_name=REGION).scan(TableName="history")["Items"]
    expires = {i["pk"]["S"]: int(i["expiresAt"]["N"]) for i in scan}
    minute = int(at(60).timestamp())
    assert expires[f"{REGION}#I#{item['eventID']}"] == minute + 7 * 86_400
    assert expires[f"{REGION}#*"] == minute + 7 * 86_400
    (page,) = [v for k, v in expires.items() if k.startswith("P#")]
    assert page == int(at(75).timestamp()) + 7 * 86_400
    assert len(scan) == 1 + 9  # one page; postings: time + 8 keys (ResourceName once, by short name)


def test_history_rewrite_of_a_batch_writes_the_same_items(history: EventHistory) -> None:
    records = [record(s) for s in range(50)]
    history.index_lines("b1", lines(records))
    client = boto3.client("dynamodb", region_name=REGION)
    before = sorted(client.scan(TableName="history")["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    history.index_lines("b1", lines(records))
    after = sorted(client.scan(TableName="history")["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    assert before == after


# -- requests per page ---------------------------------------------------------------------------


def test_history_dense_pages_take_at_most_three_requests(history: EventHistory) -> None:
    # 3 batches of 400 events over ~3 minutes, one event name in 4 is CreateUser
    names = ("CreateUser", "GetUser", "ListUsers", "GetRole")
    for n in range(3):
        history.index_lines(f"b{n}", lines(record(n * 60 + i % 90, eventName=names[i % 4]) for i in range(400)))
    for q in (query(), query(DAY_BEFORE, DAY_AFTER, ("EventName", "CreateUser"))):
        cursor = None
        for _ in range(3):
            before = sum(history.requests[op] for op in ("Query", "BatchGetItem"))
            page = history.lookup(q, cursor)
            assert len(page.records) == 50
            assert sum(history.requests[op] for op in ("Query", "BatchGetItem")) - before <= 3
            cursor = page.cursor
