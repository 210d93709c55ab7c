"""`IndexBuilder` against the plain definition of the index's items, and the planning pass
handing its parsed records to the index step.

The builder runs for every record the batcher delivers, so it computes keys with caches and
inline arithmetic; `Reference` below builds the same items the obvious way from the public
pieces (`attribute_values`, `partition_key`, `pack_ref`, `order_hash`, `sort_key`,
`item_size`). Items must be equal key for key and value for value: the index is idempotent
by key, a rebuild must overwrite what a first run wrote.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from array import array
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain import history as h
from opentrail.domain.batch import BatchPlan, read_bundle
from opentrail.domain.bundle import encode_record
from opentrail.domain.record import RecordError, parse_event_time
from opentrail.domain.trail import EventSelector, Trail

T0 = datetime(2026, 11, 23, 10, 1, 2, tzinfo=UTC)


class Reference:
    """The index items of a batch by definition (docs/history.md), no shortcuts."""

    def __init__(self, batch_id: str, *, retention_days: int = 90, data_events: bool = False, **limits: int) -> None:
        self.bref = h.batch_ref(batch_id)
        self.retention = retention_days * 86_400
        self.data_events = data_events
        self.page_raw_bytes = limits.get("page_raw_bytes", h.PAGE_RAW_BYTES)
        self.page_max_records = limits.get("page_max_records", h.PAGE_MAX_RECORDS)
        self.chunk_refs = limits.get("chunk_refs", h.CHUNK_REFS)
        self.stats = h.BuildStats()
        self.items: list[dict[str, Any]] = []
        self.page: list[bytes] = []
        self.raw = 0
        self.newest = 0
        self.page_number = 0
        self.seen: set[str] = set()
        self.postings: dict[tuple[str, int], list[int]] = {}

    def add(self, line: bytes) -> None:
        record = json.loads(line)
        event_id, region = record.get("eventID"), record.get("awsRegion")
        if not isinstance(event_id, str) or not event_id or not isinstance(region, str) or not region:
            self.stats.skipped += 1
            return
        if event_id in self.seen:
            self.stats.duplicates += 1
            return
        if not h.is_indexed(record, data_events=self.data_events):
            self.stats.skipped += 1
            return
        try:
            epoch = int(parse_event_time(record.get("eventTime")).timestamp())
        except RecordError:
            self.stats.skipped += 1
            return
        self.seen.add(event_id)
        if self.page and (self.raw + len(line) > self.page_raw_bytes or len(self.page) >= self.page_max_records):
            self.close_page()
            self.page_number += 1
        minute, second = divmod(epoch, 60)
        ref = h.pack_ref(second, h.order_hash(event_id), self.page_number, len(self.page))
        self.page.append(line)
        self.raw += len(line) + 1
        self.newest = max(self.newest, epoch)
        insight = h.is_insight(record)
        values = h.attribute_values(record)
        keys = {h.partition_key(region, None, insight=insight)}
        for key in h.INSIGHT_KEYS if insight else tuple(h.KEY_CODES):
            keys.update(h.partition_key(region, key, value, insight=insight) for value in values.get(key, ()))
        for pk in keys:
            self.postings.setdefault((pk, minute * 60), []).append(ref)
        self.stats.records += 1

    def close_page(self) -> None:
        item = {
            "pk": h.page_partition(self.bref, self.page_number),
            "sk": h.PAGE_CODE,
            h.DATA_ATTRIBUTE: zlib.compress(b"\n".join(self.page), h.PAGE_ZLIB_LEVEL),
            h.TTL_ATTRIBUTE: self.newest + self.retention,
        }
        self.stats.pages += 1
        self.stats.page_bytes += h.item_size(item)
        self.stats.page_units += h.write_units(item)
        self.items.append(item)
        self.page, self.raw, self.newest = [], 0, 0

    def finish(self) -> list[dict[str, Any]]:
        if self.page:
            self.close_page()
        for (pk, minute), refs in sorted(self.postings.items()):
            ordered = sorted(refs, reverse=True)
            stamp = h.minute_text(datetime.fromtimestamp(minute, UTC))
            for chunk, start in enumerate(range(0, len(ordered), self.chunk_refs)):
                item = {
                    "pk": pk,
                    "sk": h.sort_key(stamp, self.bref, chunk),
                    h.REFS_ATTRIBUTE: h.encode_refs(ordered[start : start + self.chunk_refs]),
                    h.TTL_ATTRIBUTE: minute + self.retention,
                }
                self.stats.postings += 1
                self.stats.posting_bytes += h.item_size(item)
                self.stats.posting_units += h.write_units(item)
                if pk.split("#", 2)[1] in ("I", "iI"):
                    self.stats.event_id_units += h.write_units(item)
                self.items.append(item)
        return self.items


def built(lines: list[bytes], *, parsed: bool, **options: Any) -> tuple[list[dict[str, Any]], h.BuildStats]:
    builder = h.IndexBuilder("batch-1", **options)
    items: list[dict[str, Any]] = []
    for line in lines:
        items.extend(builder.add(line, json.loads(line)) if parsed else builder.add(line))
    return items + builder.finish(), builder.stats


def reference(lines: list[bytes], **options: Any) -> tuple[list[dict[str, Any]], h.BuildStats]:
    ref = Reference("batch-1", **options)
    for line in lines:
        ref.add(line)
    return ref.finish(), ref.stats


def assert_same(lines: list[bytes], **options: Any) -> None:
    expected, expected_stats = reference(lines, **options)
    for parsed in (False, True):
        items, stats = built(lines, parsed=parsed, **options)
        assert [list(i.items()) for i in items] == [list(i.items()) for i in expected]  # same order, same keys
        assert stats == expected_stats


# -- records with every shape the builder has a fast path (or a fallback) for ----------------

_texts = st.one_of(
    st.sampled_from(["CreateUser", "GetObject", "s3.amazonaws.com", "", "é" * 30, "x" * 96, "x" * 97, "a#b"]),
    st.text(max_size=120),
)
_times = st.one_of(
    st.integers(-86_400, 86_400 * 3).map(lambda s: (T0 + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(
        [
            "2026-11-23T10:01:60Z",
            "2026-02-30T10:01:02Z",
            "2026-11-23 10:01:02Z",
            "2026-11-23T10:01:02.123Z",
            "2026-11-23T23:59:59+05:30",
            "2026-11-23T10:01:02",
            "1969-12-31T23:59:30Z",
            "2026-11-23T10:01:٠٢Z",
            "yesterday",
            "",
        ]
    ),
    st.integers(0, 5),
    st.none(),
)
_identities = st.one_of(
    st.none(),
    st.just("not a mapping"),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["IAMUser", "Root", "AssumedRole", "AWSService", "AWSAccount"]),
            "userName": st.one_of(_texts, st.integers()),
            "arn": st.sampled_from(["arn:aws:sts::1:assumed-role/R/sess", "arn:aws:iam::1:user/", "noslash"]),
            "invokedBy": _texts,
            "accessKeyId": st.one_of(_texts, st.none()),
        },
    ),
)
_resources = st.one_of(
    st.none(),
    st.just("x"),
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.one_of(st.sampled_from(["AWS::S3::Object", "AWS::IAM::User", ""]), st.integers()),
                    "ARN": st.sampled_from(
                        ["arn:aws:s3:::b/k.txt", "arn:aws:s3:::b/", "arn:aws:iam::1:user/bob", "bob", "", "arn:x"]
                    ),
                    "ARNPrefix": st.sampled_from(["arn:aws:s3:::b/", "arn:aws:s3:::c/" + "p" * 100]),
                },
            ),
            st.just("junk"),
        ),
        max_size=4,
    ),
)


@st.composite
def records(draw: st.DrawFn, n: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventID": draw(st.one_of(st.just(f"id-{n % 40}"), st.just("z" * 120 + str(n % 3)), _texts)),
        "eventTime": draw(_times),
        "awsRegion": draw(st.sampled_from(["us-east-1", "eu-west-1", "", "x#I", "eu#x"])),
    }
    optional = {
        "eventCategory": st.sampled_from(["Management", "Insight", "Data", "NetworkActivity", None]),
        "eventName": _texts,
        "eventSource": _texts,
        "readOnly": st.sampled_from([True, False, "TRUE", "false", "maybe", None, 1]),
        "userIdentity": _identities,
        "resources": _resources,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            item[name] = draw(strategy)
    return item


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    count = draw(st.integers(1, 60))
    return [encode_record(draw(records(n))) for n in range(count)]


@settings(max_examples=150, deadline=None)
@given(batches(), st.booleans(), st.sampled_from([(512, 128 * 1024, 4096), (3, 2_000, 2)]))
def test_builder_items_are_the_definitions_items(
    lines: list[bytes], data_events: bool, limits: tuple[int, ...]
) -> None:
    page_max_records, page_raw_bytes, chunk_refs = limits
    assert_same(
        lines,
        data_events=data_events,
        page_max_records=page_max_records,
        page_raw_bytes=page_raw_bytes,
        chunk_refs=chunk_refs,
    )


def test_builder_items_are_the_definitions_items_for_a_dense_batch() -> None:
    # many records per minute and value: long posting lists, several chunks and pages
    lines = [
        encode_record(
            {
                "eventID": f"{n:08d}-0000-4000-8000-000000000000",
                "eventTime": (T0 + timedelta(seconds=n % 300)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "awsRegion": "us-east-1",
                "eventName": f"Call{n % 5}",
                "eventSource": "s3.amazonaws.com",
                "readOnly": n % 2 == 0,
                "userIdentity": {"type": "IAMUser", "userName": f"u{n % 7}", "accessKeyId": f"AKIA{n % 3}"},
                "resources": [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::b/k{n % 11}"}],
            }
        )
        for n in range(3_000)
    ]
    assert_same(lines, chunk_refs=100)
    assert_same(lines)


def test_builder_keeps_single_refs_out_of_arrays_until_a_second_arrives() -> None:
    builder = h.IndexBuilder("batch-1")
    one = {"eventID": "a", "eventTime": "2026-11-23T10:01:02Z", "awsRegion": "us-east-1", "eventName": "X"}
    builder.add(encode_record(one), one)
    builder.add(encode_record({**one, "eventID": "b"}), {**one, "eventID": "b"})
    (bucket,) = builder._postings.values()
    assert isinstance(bucket["us-east-1#I#a"], int)
    assert isinstance(bucket["us-east-1#E#X"], array)


# -- planning hands the parsed records over ---------------------------------------------------


def _lines(n: int, **extra: Any) -> list[bytes]:
    return [
        encode_record(
            {
                "eventID": f"e-{i}-{extra.get('tag', '')}",
                "eventTime": "2026-11-23T10:01:02Z",
                "recipientAccountId": "111122223333" if i % 3 else "444455556666",
                "awsRegion": "us-east-1" if i % 4 else "eu-west-1",
                "eventCategory": "Management",
                "readOnly": i % 2 == 0,
                **extra,
            }
        )
        for i in range(n)
    ]


TRAILS = (Trail(name="all"), Trail(name="reads", event_selectors=(EventSelector("ReadOnly"),)))


def _plan(bundles: list[list[bytes]], **options: Any) -> Any:
    plan = BatchPlan(TRAILS, max_file_bytes=options.pop("max_file_bytes", 50 * 1024 * 1024), **options)
    for bundle in bundles:
        plan.add(read_bundle(bundle, TRAILS, keep_records=True))
    return plan.finish()


def test_plan_keeps_each_files_records_in_file_order() -> None:
    first = _lines(40)
    files = _plan([first, first[:5] + _lines(30, tag="b")], keep_records_bytes=1024 * 1024)
    assert {f.group.trail for f in files} == {"all", "reads"}
    for planned in files:
        body = planned.log_file.body.read()
        planned.log_file.body.seek(0)
        expected = [(line, json.loads(line)) for line in h.iter_log_records([body])]
        assert planned.records == expected  # the file's lines, in its order; duplicates dropped


def test_plan_keeps_records_across_file_parts() -> None:
    # a small size cap splits a group into parts; each part keeps its own records
    lines = [encode_record({**json.loads(line), "note": hashlib.sha512(line).hexdigest() * 4}) for line in _lines(200)]
    files = _plan([lines], keep_records_bytes=10 * 1024 * 1024, max_file_bytes=8_000)
    assert max(f.part for f in files) > 0
    for planned in files:
        body = planned.log_file.body.read()
        assert planned.records is not None
        assert [line for line, _ in planned.records] == list(h.iter_log_records([body]))


def test_plan_over_the_budget_keeps_no_records() -> None:
    lines = _lines(50)
    budget = sum(len(line) for line in lines[:20])
    files = _plan([lines], keep_records_bytes=budget)
    assert files
    assert all(f.records is None for f in files)
    assert all(f.records is None for f in _plan([lines]))  # not asked to keep


def test_plan_without_parsed_records_keeps_none() -> None:
    plan = BatchPlan(TRAILS, max_file_bytes=50 * 1024 * 1024, keep_records_bytes=1024 * 1024)
    plan.add(read_bundle(_lines(5), TRAILS))  # lines read without keep_records
    assert all(f.records is None for f in plan.finish())


def test_handed_records_build_the_same_items_as_the_files_read_back() -> None:
    lines = _lines(300)
    files = _plan([lines[:170], lines[170:]], keep_records_bytes=1024 * 1024)
    handed = h.IndexBuilder("batch-1", page_max_records=40)
    read_back = h.IndexBuilder("batch-1", page_max_records=40)
    items_handed: list[dict[str, Any]] = []
    items_read: list[dict[str, Any]] = []
    for planned in files:
        assert planned.records is not None
        for line, record in planned.records:
            items_handed.extend(handed.add(line, record))
        for line in h.iter_log_records([planned.log_file.body.read()]):
            items_read.extend(read_back.add(line, _parsed(line)))
    assert items_handed + handed.finish() == items_read + read_back.finish()
    assert handed.stats == read_back.stats
    assert handed.stats.duplicates > 0  # records in both trails' files are indexed once


def _parsed(line: bytes) -> Mapping[str, Any]:
    value: Mapping[str, Any] = json.loads(line)
    return value
