"""Digest chains (domain/chain.py): windows due, regular and backfill plans, links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentrail.domain.chain import (
    BACKFILL,
    REGULAR,
    ChainHead,
    ChainKind,
    LedgerFile,
    Source,
    TrailTarget,
    backfill_hours,
    last_window_end,
    next_head,
    plan_backfill,
    plan_regular,
    windows_due,
)
from opentrail.domain.digest import LogFileEntry

H = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DELAY = timedelta(minutes=5)
TRAIL = TrailTarget(name="main", home_region="eu-west-1", prefix="p")
S1 = Source("111111111111", "us-east-1")
S2 = Source("222222222222", "eu-west-1")


def head(source: Source, end: datetime, *, kind: ChainKind = REGULAR, sequence: int = 1) -> ChainHead:
    return ChainHead(
        trail="main", account=source.account, region=source.region, kind=kind, sequence=sequence, bucket="b",
        key=f"k-{end:%H}", start_time=end - HOUR, end_time=end, signature="ab", sha256="cd", fingerprint="ef",
        written_at=end + DELAY,
    )  # fmt: skip


def file(source: Source, delivered: datetime, key: str, digest_key: str | None = None) -> LedgerFile:
    return LedgerFile(
        pk="pk", sk=key, account=source.account, region=source.region, delivered_at=delivered, recorded_at=delivered,
        entry=LogFileEntry("b", key, "0" * 64, "t", "t"), digest_key=digest_key,
    )  # fmt: skip


def test_last_window_end_waits_for_the_delay() -> None:
    assert last_window_end(H + timedelta(minutes=4, seconds=59), DELAY) == H - HOUR
    assert last_window_end(H + DELAY, DELAY) == H


def test_windows_due_without_a_chain_is_the_newest_window() -> None:
    assert windows_due([], now=H + DELAY, delay=DELAY, max_windows=10) == [H - HOUR]


def test_windows_due_without_a_chain_starts_at_the_first_window_with_files() -> None:
    windows = windows_due([], now=H + DELAY, delay=DELAY, max_windows=10, first_window=H - 3 * HOUR)
    assert windows == [H - 3 * HOUR, H - 2 * HOUR, H - HOUR]


def test_windows_due_catch_up_from_the_oldest_head_and_cap() -> None:
    heads = [head(S1, H - 3 * HOUR), head(S2, H - HOUR), head(S1, H - 9 * HOUR, kind=BACKFILL)]
    assert windows_due(heads, now=H + DELAY, delay=DELAY, max_windows=10) == [H - 3 * HOUR, H - 2 * HOUR, H - HOUR]
    assert windows_due(heads, now=H + DELAY, delay=DELAY, max_windows=2) == [H - 3 * HOUR, H - 2 * HOUR]
    assert windows_due([head(S1, H)], now=H + DELAY, delay=DELAY, max_windows=10) == []


def test_plan_regular_due_new_and_skipped_sources() -> None:
    s3 = Source("333333333333", "us-east-1")
    files = [file(S1, H + timedelta(minutes=1), "a"), file(s3, H + timedelta(minutes=2), "c")]
    heads = {S1: head(S1, H), S2: head(S2, H + HOUR)}  # S2 is already past this window
    plans = plan_regular(TRAIL, H, files, heads)
    assert [(p.source, [f.entry.key for f in p.files]) for p in plans] == [(S1, ["a"]), (s3, ["c"])]
    plan = plans[0]
    assert (plan.kind, plan.start_time, plan.end_time) == (REGULAR, H, H + HOUR)
    assert plan.key == (
        "p/AWSLogs/111111111111/CloudTrail-Digest/us-east-1/2026/11/23/"
        "111111111111_CloudTrail-Digest_us-east-1_main_eu-west-1_20261123T110000Z.json.gz"
    )


def test_plan_regular_gives_an_empty_window_a_digest() -> None:
    (plan,) = plan_regular(TRAIL, H, [], {S1: head(S1, H)})
    assert plan.files == ()


def test_plan_backfill_covers_unlisted_files_of_digested_hours_only() -> None:
    listed = "p/AWSLogs/x_20261123T110000Z.json.gz"
    files = [
        file(S1, H + timedelta(minutes=1), "a", digest_key=listed),
        file(S1, H + timedelta(minutes=2), "late"),
        file(S2, H + timedelta(minutes=3), "not-yet"),  # S2's chain has not reached this hour
    ]
    heads = {S1: head(S1, H + 2 * HOUR), S2: head(S2, H)}
    (plan,) = plan_backfill(TRAIL, H, files, heads, digested_until=H + 2 * HOUR)
    assert (plan.source, plan.kind, [f.entry.key for f in plan.files]) == (S1, BACKFILL, ["late"])
    assert plan.key.endswith("_main_eu-west-1_20261123T110000Z_backfill.json.gz")
    assert (plan.start_time, plan.end_time) == (H, H + HOUR)


def test_plan_backfill_a_second_backfill_of_an_hour_gets_the_next_second() -> None:
    first = plan_backfill(TRAIL, H, [file(S1, H, "late1")], {S1: head(S1, H + HOUR)}, digested_until=H + HOUR)[0]
    files = [file(S1, H, "late1", digest_key=first.key), file(S1, H, "late2")]
    (second,) = plan_backfill(TRAIL, H, files, {S1: head(S1, H + HOUR)}, digested_until=H + HOUR)
    assert second.end_time == H + HOUR + timedelta(seconds=1)
    assert second.key.endswith("_20261123T110001Z_backfill.json.gz")


def test_plan_backfill_a_source_without_a_chain_uses_the_trail_cursor() -> None:
    files = [file(S2, H, "orphan")]
    assert plan_backfill(TRAIL, H, files, {}, digested_until=H + HOUR)[0].files[0].entry.key == "orphan"
    assert plan_backfill(TRAIL, H, files, {}, digested_until=H) == []


def test_backfill_hours_cover_the_lookback() -> None:
    assert backfill_hours(digested_until=H, lookback=3 * HOUR) == [H - 3 * HOUR, H - 2 * HOUR, H - HOUR]


def test_next_head_links_and_counts() -> None:
    (plan,) = plan_regular(TRAIL, H, [], {S1: head(S1, H, sequence=7)})
    previous = head(S1, H, sequence=7)
    new = next_head(plan, previous, bucket="b", signature="s", sha256="h", fingerprint="f", written_at=H)
    assert (new.sequence, new.key, new.end_time) == (8, plan.key, H + HOUR)
    first = next_head(plan, None, bucket="b", signature="s", sha256="h", fingerprint="f", written_at=H)
    assert first.sequence == 1
    link = new.link()
    assert (link.bucket, link.key, link.sha256, link.signature) == ("b", plan.key, "h", "s")
