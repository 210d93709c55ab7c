"""The event history index's pure half: record fields, keys, refs, item sizes, building."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain import history as h
from opentrail.domain.log_file import LogFileWriter

T0 = datetime(2026, 11, 23, 10, 1, 2, tzinfo=UTC)


def record(n: int = 0, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventVersion": "1.11",
        "eventID": f"00000000-0000-4000-8000-{n:012d}",
        "eventTime": (T0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "readOnly": False,
        "eventCategory": "Management",
        "userIdentity": {"type": "IAMUser", "userName": "alice", "accessKeyId": "AKIAEXAMPLE"},
        "awsRegion": "us-east-1",
        "recipientAccountId": "111122223333",
        "resources": [{"type": "AWS::IAM::User", "ARN": "arn:aws:iam::111122223333:user/bob"}],
    }
    item.update(extra)
    return item


def line(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode()


# -- record fields -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"type": "IAMUser", "userName": "alice", "arn": "arn:aws:iam::1:user/alice"}, "alice"),
        ({"type": "Root", "arn": "arn:aws:iam::1:root"}, "root"),
        ({"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/Deploy/ci-run-7"}, "ci-run-7"),
        ({"type": "FederatedUser", "arn": "arn:aws:sts::1:federated-user/carol"}, "carol"),
        ({"type": "AWSService", "invokedBy": "lambda.amazonaws.com"}, "lambda.amazonaws.com"),
        ({"type": "AWSAccount", "accountId": "1"}, None),
    ],
)
def test_username_follows_the_identity_type(identity: dict[str, Any], expected: str | None) -> None:
    assert h.username({"userIdentity": identity}) == expected


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("arn:aws:s3:::bucket", "bucket"),
        ("arn:aws:s3:::bucket/dir/file.txt", "file.txt"),
        ("arn:aws:iam::111122223333:user/bob", "bob"),
        ("arn:aws:lambda:us-east-1:111122223333:function:orders", "orders"),
        ("arn:aws:ec2:us-east-1:111122223333:instance/i-0abc", "i-0abc"),
        ("i-0abc", "i-0abc"),
    ],
)
def test_short_resource_name_is_the_id_after_the_last_separator(name: str, short: str) -> None:
    assert h.short_resource_name(name) == short


def test_attribute_values_cover_the_eight_keys_and_several_resources() -> None:
    item = record(
        resources=[
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::logs"},
            {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::logs/a/b.gz"},
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::other"},
        ]
    )
    values = h.attribute_values(item)
    assert values == {
        "EventId": [item["eventID"]],
        "EventName": ["CreateUser"],
        "ReadOnly": ["false"],
        "Username": ["alice"],
        "EventSource": ["iam.amazonaws.com"],
        "AccessKeyId": ["AKIAEXAMPLE"],
        "ResourceType": ["AWS::S3::Bucket", "AWS::S3::Object"],
        "ResourceName": ["logs", "b.gz", "other"],
    }
    assert h.matches(item, "ResourceName", "arn:aws:s3:::logs/a/b.gz")
    assert h.matches(item, "ResourceName", "b.gz")
    assert not h.matches(item, "ResourceName", "arn:aws:s3:::elsewhere/b.gz")  # same short name, other ARN
    assert h.response_resources(item)[1] == {"ResourceType": "AWS::S3::Object", "ResourceName": "b.gz"}


def test_which_records_are_indexed() -> None:
    assert h.is_indexed(record())
    assert h.is_indexed(record(eventCategory="Insight"))
    assert not h.is_indexed(record(eventCategory="Data"))
    assert h.is_indexed(record(eventCategory="Data"), data_events=True)
    assert not h.is_indexed(record(eventCategory="NetworkActivity"), data_events=True)


# -- keys and refs ----------------------------------------------------------------------------


def test_partition_keys_are_short_and_hash_long_values() -> None:
    assert h.partition_key("us-east-1", "EventName", "CreateUser") == "us-east-1#E#CreateUser"
    assert h.partition_key("us-east-1", None) == "us-east-1#*"
    assert h.partition_key("us-east-1", "EventName", "X", insight=True) == "us-east-1#iE#X"
    arn = "arn:aws:s3:::bucket"
    assert h.partition_key("eu-west-1", "ResourceName", arn) == h.partition_key("eu-west-1", "ResourceName", "bucket")
    long_value = "x" * 500
    key = h.partition_key("us-east-1", "EventName", long_value)
    assert len(key) < 40
    assert key == h.partition_key("us-east-1", "EventName", long_value)


@given(
    st.integers(0, 59), st.integers(0, 0xFFFF), st.integers(0, h.MAX_PAGES - 1), st.integers(0, h.MAX_PAGE_RECORDS - 1)
)
def test_refs_round_trip_and_order_by_second_then_hash(second: int, hash16: int, page: int, index: int) -> None:
    packed = h.pack_ref(second, hash16, page, index)
    assert h.Ref.unpack(packed) == h.Ref(second, hash16, page, index)
    assert h.decode_refs(h.encode_refs([packed, 0])) == [packed, 0]
    if second < 59:
        assert h.pack_ref(second + 1, 0, 0, 0) > packed


# -- write units ------------------------------------------------------------------------------


def test_item_size_counts_names_and_values_and_units_round_up_per_kb() -> None:
    item = {
        "pk": "us-east-1#E#CreateUser",
        "sk": "202611231001AAAAAAAAAA00",
        "r": b"\x00" * 600,
        "expiresAt": 1_795_000_000,
    }
    # names 2+2+1+9, values 22+24+600, number 1795000000 → 4 significant digits → 3 bytes
    assert h.item_size(item) == 14 + 22 + 24 + 600 + 3
    assert h.write_units(item) == 1
    item["r"] = b"\x00" * 1024
    assert h.write_units(item) == 2
    assert h.write_units({"pk": "x"}) == 1


def test_builder_costs_one_event_id_posting_per_record_and_amortizes_the_rest() -> None:
    lines = [
        line(record(n % 60, eventID=f"id-{n}", userIdentity={"type": "IAMUser", "userName": f"u{n % 7}"}))
        for n in range(600)
    ]
    items, builder = build(lines)
    stats = builder.stats
    assert stats.records == 600
    assert stats.event_id_units == 600
    assert stats.write_units == sum(h.write_units(i) for i in items)
    assert stats.write_units / stats.records < 1.2


# -- building ---------------------------------------------------------------------------------


def build(lines: list[bytes], **options: Any) -> tuple[list[dict[str, Any]], h.IndexBuilder]:
    builder = h.IndexBuilder("batch-1", **options)
    items = [item for one in lines for item in builder.add(one)]
    return items + builder.finish(), builder


def test_builder_is_deterministic() -> None:
    lines = [line(record(n)) for n in range(300)]
    first, _ = build(lines, page_max_records=50)
    second, _ = build(lines, page_max_records=50)
    assert first == second
    assert len([i for i in first if i["pk"].startswith("P#")]) == 6


def test_builder_ttl_is_minute_plus_retention_on_postings_and_newest_on_pages() -> None:
    items, _ = build([line(record(0)), line(record(70))], retention_days=30)
    minute0 = int(T0.replace(second=0).timestamp())
    postings = {(i["pk"], i["sk"][:12]): i["expiresAt"] for i in items if not i["pk"].startswith("P#")}
    assert postings[("us-east-1#*", "202611231001")] == minute0 + 30 * 86_400
    assert postings[("us-east-1#*", "202611231002")] == minute0 + 60 + 30 * 86_400
    (page,) = [i for i in items if i["pk"].startswith("P#")]
    assert page["expiresAt"] == int(T0.timestamp()) + 70 + 30 * 86_400
    assert h.page_lines(page["d"]) == [line(record(0)), line(record(70))]


def test_builder_skips_duplicates_data_events_and_bad_times() -> None:
    items, builder = build(
        [
            line(record(1)),
            line(record(1)),
            line(record(2, eventCategory="Data")),
            line(record(3, eventTime="yesterday")),
        ]
    )
    assert builder.stats.records == 1
    assert builder.stats.duplicates == 1
    assert builder.stats.skipped == 2
    assert sum(1 for i in items if i["pk"].startswith("us-east-1#I#")) == 1


def test_builder_posts_insights_in_their_own_key_space() -> None:
    items, _ = build([line(record(1, eventCategory="Insight", eventType="AwsCloudTrailInsight"))])
    keys = {i["pk"] for i in items if not i["pk"].startswith("P#")}
    assert keys == {
        "us-east-1#i*",
        f"us-east-1#iI#{record(1)['eventID']}",
        "us-east-1#iE#CreateUser",
        "us-east-1#iS#iam.amazonaws.com",
    }


def test_builder_splits_long_posting_lists_into_chunks() -> None:
    items, _ = build([line(record(n % 50, eventID=f"e{n}")) for n in range(250)], chunk_refs=100)
    chunks = sorted(i["sk"][-2:] for i in items if i["pk"] == "us-east-1#*")
    assert chunks == ["00", "01", "02"]
    refs = [r for i in items if i["pk"] == "us-east-1#*" for r in h.decode_refs(i["r"])]
    assert len(refs) == len(set(refs)) == 250


def test_pages_stay_under_the_item_limit() -> None:
    big = "x" * 200_000
    items, _ = build([line(record(n, requestParameters={"blob": big + str(n)})) for n in range(3)])
    pages = [i for i in items if i["pk"].startswith("P#")]
    assert len(pages) == 3  # a page closes before it passes 128 KB raw: one record each here
    assert all(h.item_size(p) < 400 * 1024 for p in pages)


# -- reading log files back -----------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(max_size=40), min_size=1, max_size=20),
    st.integers(min_value=1, max_value=64),
)
def test_iter_log_records_returns_each_line_exactly(texts: list[str], chunk: int) -> None:
    writer = LogFileWriter()
    lines = [
        json.dumps({"eventID": str(n), "note": text, "nested": {"a": [1, "]"]}}).encode()
        for n, text in enumerate(texts)
    ]
    for one in lines:
        writer.add(one, "2026-11-23T10:00:00Z")
    body = writer.finish().body.read()
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    assert list(h.iter_log_records(chunks)) == lines


def test_iter_log_records_rejects_a_truncated_file() -> None:
    writer = LogFileWriter()
    writer.add(line(record()), "2026-11-23T10:00:00Z")
    body = writer.finish().body.read()
    raw = zlib.decompress(body, 16 + zlib.MAX_WBITS)[:-5]
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    truncated = compressor.compress(raw) + compressor.flush()
    with pytest.raises(ValueError, match="truncated"):
        list(h.iter_log_records([truncated]))


def test_cursor_round_trip_and_rejects_garbage() -> None:
    position = h.Position(1_795_000_000, 7, "id")
    assert h.Position.from_cursor(position.to_cursor()) == position
    with pytest.raises(ValueError, match="cursor"):
        h.Position.from_cursor({"t": "x"})
