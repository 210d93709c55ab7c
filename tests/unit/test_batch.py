"""Batch planning: reading lines, grouping, dedupe, splitting, naming, ledger shapes."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentrail.domain.batch import (
    BatchPlan,
    DeliveredFile,
    FileGroup,
    Intent,
    LedgerEntry,
    PlannedFile,
    PoisonRecord,
    batch_id,
    file_seed,
    ledger_partition,
    ledger_sort_key,
    name_files,
    parse_ledger_sort_key,
    read_bundle,
    read_line,
)
from opentrail.domain.bundle import encode_record
from opentrail.domain.log_file import unique_string
from opentrail.domain.trail import EventSelector, Trail

DELIVERED = datetime(2026, 11, 23, 10, 15, 42, tzinfo=UTC)
ALL = Trail(name="main")
READS = Trail(name="reads", s3_key_prefix="org/reads", event_selectors=(EventSelector(read_write_type="ReadOnly"),))


def record(
    *, event_id: str | None = None, account: str = "111122223333", region: str = "us-east-1", read_only: bool = False
) -> dict[str, Any]:
    return {
        "eventVersion": "1.11",
        "eventID": event_id or str(uuid.uuid4()),
        "eventTime": "2026-11-23T10:01:02Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "GetUser" if read_only else "CreateUser",
        "readOnly": read_only,
        "eventCategory": "Management",
        "userIdentity": {"type": "IAMUser", "userName": "alice"},
        "recipientAccountId": account,
        "awsRegion": region,
        "requestParameters": {"userName": "bob", "note": "ünïcode"},
    }


def body_records(planned: PlannedFile) -> list[dict[str, Any]]:
    planned.log_file.body.seek(0)
    raw = gzip.decompress(planned.log_file.body.read())
    records: list[dict[str, Any]] = json.loads(raw)["Records"]
    return records


def plan_of(records: list[dict[str, Any]], trails: tuple[Trail, ...] = (ALL,), **kwargs: Any) -> BatchPlan:
    plan = BatchPlan(trails, max_file_bytes=kwargs.pop("max_file_bytes", 50 * 1024 * 1024), **kwargs)
    plan.add(read_bundle([encode_record(r) for r in records], trails))
    return plan


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (
            b'{"eventTime":"2026-11-23T10:01:02Z","recipientAccountId":"111122223333","awsRegion":"us-east-1"}',
            "eventID",
        ),
        (b'{"eventID":"e","recipientAccountId":"111122223333","awsRegion":"us-east-1"}', "eventTime"),
        (
            b'{"eventID":"e","eventTime":"t","recipientAccountId":"../etc","awsRegion":"us-east-1"}',
            "recipientAccountId",
        ),
        (b'{"eventID":"e","eventTime":"t","recipientAccountId":"111122223333","awsRegion":"US/East"}', "awsRegion"),
    ],
)
def test_read_line_rejects_what_cannot_be_delivered(line: bytes, reason: str) -> None:
    with pytest.raises(PoisonRecord, match=reason):
        read_line(line, (ALL,))


def test_read_bundle_names_the_bad_record() -> None:
    lines = [encode_record(record()), b"{}"]
    with pytest.raises(PoisonRecord, match=r"^record 2: eventID"):
        read_bundle(lines, (ALL,))


def test_read_line_keeps_the_line_and_the_selecting_trails() -> None:
    line = encode_record(record(read_only=True))
    selected = read_line(line, (ALL, READS))
    assert selected.line == line
    assert selected.trails == ("main", "reads")
    assert read_line(encode_record(record(read_only=False)), (ALL, READS)).trails == ("main",)


def test_plan_groups_by_trail_account_and_region() -> None:
    # given records in two accounts and two regions, some read-only
    records = [
        record(account="111122223333", region="us-east-1", read_only=True),
        record(account="111122223333", region="eu-west-1"),
        record(account="444455556666", region="us-east-1", read_only=True),
        record(account="444455556666", region="us-east-1"),
    ]
    # when planned for a catch-all trail and a read-only trail
    files = plan_of(records, (ALL, READS)).finish()
    # then each (trail, account, region) has one file with exactly its records
    groups = {f.group: [r["eventID"] for r in body_records(f)] for f in files}
    assert groups == {
        FileGroup("main", "111122223333", "eu-west-1"): [records[1]["eventID"]],
        FileGroup("main", "111122223333", "us-east-1"): [records[0]["eventID"]],
        FileGroup("main", "444455556666", "us-east-1"): [records[2]["eventID"], records[3]["eventID"]],
        FileGroup("reads", "111122223333", "us-east-1"): [records[0]["eventID"]],
        FileGroup("reads", "444455556666", "us-east-1"): [records[2]["eventID"]],
    }
    assert [f.group for f in files] == sorted(f.group for f in files)


def test_plan_keeps_every_field_of_every_record() -> None:
    records = [record(), record()]
    (only,) = plan_of(records).finish()
    assert body_records(only) == records
    assert only.log_file.record_count == 2


def test_plan_drops_duplicate_event_ids_first_one_wins() -> None:
    first = record(event_id="6f0e4c1a-0000-4000-8000-000000000001")
    again = dict(first, eventName="Changed")
    plan = plan_of([first, record(), again])
    files = plan.finish()
    assert plan.duplicates == 1
    assert plan.records == 2
    assert [r["eventName"] for r in body_records(files[0])].count("Changed") == 0


def test_plan_counts_records_no_trail_selects() -> None:
    plan = plan_of([record(read_only=False)], (READS,))
    assert plan.finish() == []
    assert plan.unselected == 1


def test_plan_splits_files_before_they_pass_the_cap() -> None:
    records = [record() for _ in range(300)]
    files = plan_of(records, max_file_bytes=2048).finish()
    assert len(files) > 3
    assert all(f.log_file.compressed_bytes <= 2048 for f in files)
    assert [f.part for f in files] == list(range(len(files)))
    assert [r["eventID"] for f in files for r in body_records(f)] == [r["eventID"] for r in records]


def test_plan_puts_a_record_larger_than_the_cap_alone_in_its_file() -> None:
    big = record()
    big["requestParameters"] = {"blob": os.urandom(3000).hex()}
    files = plan_of([record(), big, record()], max_file_bytes=1024).finish()
    assert [f.log_file.record_count for f in files] == [1, 1, 1]
    assert files[1].log_file.compressed_bytes > 1024


def test_plan_fits_limits_the_number_of_files() -> None:
    plan = BatchPlan((ALL,), max_file_bytes=1024 * 1024, max_files=2)
    first = read_bundle([encode_record(record(account="111122223333"))], (ALL,))
    second = read_bundle([encode_record(record(account="444455556666"))], (ALL,))
    third = read_bundle([encode_record(record(account="777788889999"))], (ALL,))
    assert plan.fits(first)
    plan.add(first)
    assert plan.fits(second)
    plan.add(second)
    assert plan.fits(read_bundle([encode_record(record(account="111122223333"))], (ALL,)))
    assert not plan.fits(third)


def test_batch_id_is_the_sha256_of_the_sorted_bundle_ids() -> None:
    assert batch_id(["b", "a"]) == batch_id(["a", "b", "a"])
    assert batch_id(["a", "b"]) != batch_id(["a"])
    assert len(batch_id(["a"])) == 64


def test_name_files_follows_cloudtrail_key_layout() -> None:
    files = plan_of([record(read_only=True)], (ALL, READS)).finish()
    named = name_files(files, batch="b1", attempt=0, delivered_at=DELIVERED, bucket="logs", trails=(ALL, READS))
    main = unique_string("b1/main/111122223333/us-east-1/0")
    reads = unique_string("b1/reads/111122223333/us-east-1/0")
    assert [n.key for n in named] == [
        f"AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/23/111122223333_CloudTrail_us-east-1_20261123T1015Z_{main}.json.gz",
        f"org/reads/AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/23/111122223333_CloudTrail_us-east-1_20261123T1015Z_{reads}.json.gz",
    ]
    assert named[0].bucket == "logs"
    assert named[0].sha256 == files[0].log_file.sha256
    assert (named[0].trail, named[0].account, named[0].region) == ("main", "111122223333", "us-east-1")


def test_a_later_attempt_names_its_files_differently() -> None:
    group = FileGroup("main", "111122223333", "us-east-1")
    assert file_seed("b1", 0, group, 0) == "b1/main/111122223333/us-east-1/0"
    assert file_seed("b1", 1, group, 0) == "b1#1/main/111122223333/us-east-1/0"


def test_ledger_entry_shape() -> None:
    file = DeliveredFile("logs", "AWSLogs/k.json.gz", "ab" * 32, 3, "t1", "t2", "main", "111122223333", "us-east-1", 99)
    intent = Intent("b1", 0, "PENDING", (file,), ("x",), DELIVERED, DELIVERED, 0)
    (entry,) = intent.ledger_entries(ttl_days=10)
    assert entry == LedgerEntry.of(file, intent, ttl_days=10)
    assert entry.to_item() == {
        "pk": "LEDGER#main#2026112310",
        "sk": "111122223333#us-east-1#2026-11-23T10:15:42Z#AWSLogs/k.json.gz",
        "bucket": "logs",
        "key": "AWSLogs/k.json.gz",
        "account": "111122223333",
        "region": "us-east-1",
        "sha256": "ab" * 32,
        "recordCount": 3,
        "oldestEventTime": "t1",
        "newestEventTime": "t2",
        "compressedBytes": 99,
        "deliveryTime": "2026-11-23T10:15:42Z",
        "batchId": "b1",
        "expiresAt": int(DELIVERED.timestamp()) + 10 * 86_400,
    }
    assert ledger_partition("t", DELIVERED) == "LEDGER#t#2026112310"
    assert ledger_sort_key("a", "r", DELIVERED, "k#1") == "a#r#2026-11-23T10:15:42Z#k#1"
    assert parse_ledger_sort_key("a#r#2026-11-23T10:15:42Z#k#1") == ("a", "r", DELIVERED, "k#1")
    assert DeliveredFile.from_dict(file.to_dict()) == file


# -- property: every record lands in exactly one file per selecting trail ----------------

_ACCOUNTS = ("111122223333", "444455556666")
_REGIONS = ("us-east-1", "eu-west-1")
_IDS = [f"6f0e4c1a-0000-4000-8000-{n:012d}" for n in range(40)]

records_strategy = st.lists(
    st.builds(
        lambda event_id, account, region, read_only, pad: dict(
            record(event_id=event_id, account=account, region=region, read_only=read_only), pad=pad
        ),
        st.sampled_from(_IDS),
        st.sampled_from(_ACCOUNTS),
        st.sampled_from(_REGIONS),
        st.booleans(),
        st.text(max_size=300),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bundles=st.lists(records_strategy, min_size=1, max_size=4),
    max_file_bytes=st.sampled_from([1024, 3000, 50 * 1024 * 1024]),
)
def test_plan_property_every_record_in_exactly_one_file_per_selecting_trail(
    bundles: list[list[dict[str, Any]]], max_file_bytes: int
) -> None:
    trails = (ALL, READS)
    plan = BatchPlan(trails, max_file_bytes=max_file_bytes)
    for bundle in bundles:
        plan.add(read_bundle([encode_record(r) for r in bundle], trails))
    files = plan.finish()

    first_seen: dict[str, dict[str, Any]] = {}
    for bundle in bundles:
        for item in bundle:
            first_seen.setdefault(item["eventID"], item)
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for event_id, item in first_seen.items():
        for trail in trails:
            if trail.selects(item):
                expected[(trail.name, event_id)] = item

    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for f in files:
        assert f.log_file.record_count == 1 or f.log_file.compressed_bytes <= max_file_bytes
        for item in body_records(f):
            assert (item["recipientAccountId"], item["awsRegion"]) == (f.group.account, f.group.region)
            key = (f.group.trail, item["eventID"])
            assert key not in seen, "a record appears twice in one trail"
            seen[key] = item
    assert seen == expected
    assert plan.records + plan.unselected + plan.duplicates == sum(len(b) for b in bundles)
