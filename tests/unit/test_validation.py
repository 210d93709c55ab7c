"""The pure validation domain: the AWS CLI's traversal rules and OpenTrail's extra checks,
over an in-memory store (no S3, no files)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from opentrail.domain.validation import (
    ChainGap,
    ChainHead,
    DigestProblem,
    DigestTraverser,
    ObjectNotFound,
    StoredObject,
    TrailTarget,
    ValidDigest,
    hash_log_stream,
    key_date,
    log_stamp,
    opentrail_findings,
    parse_date,
)
from tests.integration.chain_builder import ACCOUNT, REGION, TRAIL, Chain, SigningKey

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TARGET = TrailTarget(bucket="b", prefix=None, account_id=ACCOUNT, trail_name=TRAIL, home_region=REGION,
                     source_region=REGION)  # fmt: skip


class Memory:
    def __init__(self, chain: Chain) -> None:
        self.objects = chain.objects

    def list_keys(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        return iter(sorted(k for k in self.objects if k.startswith(prefix) and k > start_after))

    def get_object(self, bucket: str, key: str) -> StoredObject:
        if key not in self.objects:
            raise ObjectNotFound(key)
        return StoredObject(self.objects[key].body, self.objects[key].metadata)


class Keys:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys = {k.fingerprint: k.value for k in keys}

    def get_public_keys(self, start: datetime, end: datetime) -> dict[str, str]:
        return self.keys


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey()


@pytest.fixture
def chain(signer: SigningKey) -> Chain:
    built = Chain("b", [signer])
    built.hours([1, 0, 2, 1])
    return built


def _traverse(chain: Chain, *keys: SigningKey, end_hours: int = 4) -> tuple[list[object], DigestTraverser]:
    traverser = DigestTraverser(Memory(chain), TARGET, Keys(*(keys or chain.keys)))
    return list(traverser.traverse(T0, T0 + timedelta(hours=end_hours))), traverser


def test_hash_log_stream_outcomes() -> None:
    body = b'{"Records":[]}'
    good = gzip.compress(body)
    sha = __import__("hashlib").sha256(body).hexdigest()

    assert hash_log_stream([good], sha).outcome == "valid"
    assert hash_log_stream([good[:7], good[7:]], sha).inflated_bytes == len(body)
    assert hash_log_stream([good], "0" * 64).outcome == "hash value doesn't match"
    assert (
        hash_log_stream([good + gzip.compress(b"x")], sha).outcome == "unexpected data after end of compressed stream"
    )
    assert hash_log_stream([b"not gzip at all"], sha).outcome == "invalid format"
    # As the CLI: a missing trailer goes unnoticed (same content), a cut into the data is a mismatch.
    assert hash_log_stream([good[:-8]], sha).outcome == "valid"
    assert hash_log_stream([good[: len(good) // 2]], sha).outcome == "hash value doesn't match"
    corrupt = bytearray(good)
    corrupt[-6] ^= 0xFF  # CRC
    assert hash_log_stream([bytes(corrupt)], sha).outcome == "invalid format"
    assert zlib.MAX_WBITS  # the gzip wrapper is zlib's


def test_dates_as_the_cli_reads_them() -> None:
    assert parse_date("2015-01-08T05:21:42Z") == datetime(2015, 1, 8, 5, 21, 42, tzinfo=UTC)
    assert parse_date("20150817T150131Z") == datetime(2015, 8, 17, 15, 1, 31, tzinfo=UTC)
    assert parse_date("2015-01-08T05:21:42+02:00").hour == 5  # zone replaced, not converted
    with pytest.raises(ValueError, match="Unable to parse date value: nope"):
        parse_date("nope")
    assert key_date("x_20150817T150131Z.json.gz") == "20150817T150131Z"
    assert key_date("x_20150817T150131Z_backfill.json.gz") == "20150817T150131Z"
    assert log_stamp("a/123456789012_CloudTrail_us-east-1_20260301T0215Z_abcDEF0123456789.json.gz") == datetime(
        2026, 3, 1, 2, 15, tzinfo=UTC
    )


def test_marker_and_key_filter() -> None:
    assert TARGET.marker(T0).endswith("_20260228T235900Z.json.gz")
    assert TARGET.digest_prefix() == f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}"
    other_trail = TARGET.expected_digest_key(T0).replace(f"_{TRAIL}_", "_other_")
    assert TARGET.key_regex().match(TARGET.expected_digest_key(T0))
    assert not TARGET.key_regex().match(other_trail)


def test_walks_newest_to_oldest_following_links(chain: Chain) -> None:
    events, traverser = _traverse(chain)

    assert [e.key for e in events if isinstance(e, ValidDigest)] == list(reversed(chain.digests))
    assert len(traverser.record.listed_logs) == 4
    assert opentrail_findings(traverser.record, TARGET, start=T0, end=T0 + timedelta(hours=4)) == []


def test_missing_linked_digest_then_falls_back_to_the_listing(chain: Chain) -> None:
    del chain.objects[chain.digests[2]]

    events, _ = _traverse(chain)

    problems = [e for e in events if isinstance(e, DigestProblem)]
    assert [p.missing for p in problems] == [True]
    assert problems[0].line.endswith(f"{chain.digests[2]}\tINVALID: not found")
    assert [e.key for e in events if isinstance(e, ValidDigest)] == [chain.digests[i] for i in (3, 1, 0)]


def test_chain_start_with_older_digests_reports_a_gap(signer: SigningKey) -> None:
    chain = Chain("b", [signer])
    chain.hours([0, 0])
    chain._head = None
    chain.hours([0], start=T0 + timedelta(hours=3))  # restart after a 1-hour hole

    events, traverser = _traverse(chain)

    gaps = [e for e in events if isinstance(e, ChainGap)]
    assert [g.line for g in gaps] == [
        "No log files were delivered by CloudTrail between 2026-03-01T02:00:00Z and 2026-03-01T03:00:00Z"
    ]
    findings = opentrail_findings(traverser.record, TARGET, start=T0, end=T0 + timedelta(hours=4))
    assert [f.message.split(";")[0] for f in findings] == [
        "chain restarted (null previousDigest fields) without a recorded stop"
    ]
    stopped = opentrail_findings(
        traverser.record, TARGET, start=T0, end=T0 + timedelta(hours=4), stops=[T0 + timedelta(hours=2, minutes=5)]
    )
    assert stopped == []


def test_unknown_fingerprint_and_bad_key_bytes(chain: Chain, signer: SigningKey) -> None:
    other = SigningKey()
    events, _ = _traverse(chain, other)
    assert all("public key not found in region us-east-1 for fingerprint" in e.line for e in events)  # type: ignore[union-attr]

    traverser = DigestTraverser(Memory(chain), TARGET, Keys())
    traverser.public_keys = type("K", (), {"get_public_keys": lambda *_: {signer.fingerprint: "AAAA"}})()
    problems = list(traverser.traverse(T0, T0 + timedelta(hours=4)))
    assert all("Unable to load PKCS #1 key with fingerprint" in p.line for p in problems)  # type: ignore[union-attr]


def test_chain_head_detects_missing_newest_and_replaced_newest(chain: Chain) -> None:
    head = chain.head_item()
    del chain.objects[chain.digests[-1]]
    _, traverser = _traverse(chain)
    as_head = ChainHead(bucket="b", key=head["key"], end_time=parse_date(head["endTime"]), sequence=4)

    findings = opentrail_findings(traverser.record, TARGET, start=T0, end=T0 + timedelta(hours=4), head=as_head)

    assert [f.subject for f in findings] == [f"s3://b/{chain.digests[-1]}"]
    assert "sequence 4" in findings[0].message
