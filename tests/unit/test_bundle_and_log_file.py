"""Bundles (SQS message bodies) and CloudTrail log files (key layout, gzip body)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import zlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain.bundle import MAX_BODY_BYTES, BundleError, encode_record, pack, unpack
from opentrail.domain.log_file import LogFileWriter, log_file_key, unique_string

DELIVERED = datetime(2015, 8, 1, 2, 10, 42, tzinfo=UTC)


def lines(count: int, size: int = 200) -> list[bytes]:
    return [encode_record({"eventID": f"id-{i}", "pad": "x" * size, "n": i}) for i in range(count)]


def test_pack_round_trips_every_line_in_order() -> None:
    original = lines(500)
    bodies = pack(original)

    unpacked = [line for body in bodies for line in unpack(body).lines]
    assert unpacked == original


def test_pack_puts_many_records_in_one_message() -> None:
    assert len(pack(lines(1000))) == 1


def test_pack_splits_to_fit_the_message_limit() -> None:
    incompressible = [encode_record({"r": base64.b64encode(os.urandom(3000)).decode()}) for _ in range(300)]
    bodies = pack(incompressible)

    assert len(bodies) > 1
    assert all(len(body) <= MAX_BODY_BYTES for body in bodies)
    assert [line for body in bodies for line in unpack(body).lines] == incompressible


def test_pack_rejects_a_single_record_too_big_for_any_message() -> None:
    huge = encode_record({"r": base64.b64encode(os.urandom(250_000)).decode()})
    with pytest.raises(BundleError, match="record: "):
        pack([huge])


def test_each_body_gets_its_own_bundle_id() -> None:
    incompressible = [encode_record({"r": os.urandom(300).hex()}) for _ in range(20)]
    bodies = pack(incompressible, max_body_bytes=2_000)

    assert len(bodies) > 1
    assert len({unpack(body).bundle_id for body in bodies}) == len(bodies)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "body: is not JSON"),
        ('{"v": 2}', "v: must be 1"),
        ('{"v": 1, "data": ""}', "bundleId: is required"),
        ('{"v": 1, "bundleId": "x", "data": "%%%"}', "data: must be base64"),
        ('{"v": 1, "bundleId": "x", "data": "aGVsbG8="}', "data: must be base64 of gzip"),
    ],
)
def test_unpack_names_what_is_wrong_with_a_poison_message(body: str, problem: str) -> None:
    with pytest.raises(BundleError, match=re.escape(problem)):
        unpack(body)


def test_unpack_checks_the_record_count() -> None:
    envelope = json.loads(pack(lines(3))[0])
    envelope["count"] = 4
    with pytest.raises(BundleError, match="count"):
        unpack(json.dumps(envelope))


def test_log_file_key_follows_cloudtrail_layout() -> None:
    key = log_file_key(account_id="111122223333", region="us-east-2", delivered_at=DELIVERED, unique="Mu0KsOhtH1ar15ZZ")

    assert key == (
        "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/01/"
        "111122223333_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz"
    )


def test_log_file_key_with_prefix_organization_and_insight_folder() -> None:
    key = log_file_key(
        account_id="123456789016",
        region="ca-central-1",
        delivered_at=datetime(2020, 8, 30, 1, 15, tzinfo=UTC),
        unique="3YQJxwt5qUaOzMtL",
        prefix="o-fxozgwu6rc",
        organization_id="o-fxozgwu6rc",
    )
    assert key == (
        "o-fxozgwu6rc/AWSLogs/o-fxozgwu6rc/123456789016/CloudTrail/ca-central-1/2020/08/30/"
        "123456789016_CloudTrail_ca-central-1_20200830T0115Z_3YQJxwt5qUaOzMtL.json.gz"
    )
    insight = log_file_key(
        account_id="1" * 12, region="eu-west-1", delivered_at=DELIVERED, unique="A" * 16, folder="CloudTrail-Insight"
    )
    assert "/CloudTrail-Insight/eu-west-1/2015/08/01/111111111111_CloudTrail-Insight_eu-west-1_" in insight


@settings(max_examples=50)
@given(st.text(max_size=50))
def test_unique_string_is_16_alphanumerics_and_deterministic(seed: str) -> None:
    value = unique_string(seed)

    assert re.fullmatch(r"[A-Za-z0-9]{16}", value)
    assert unique_string(seed) == value


def test_unique_string_differs_between_seeds() -> None:
    assert len({unique_string(f"batch-{i}") for i in range(1000)}) == 1000


def write(records: list[dict[str, str]]) -> tuple[bytes, object]:
    writer = LogFileWriter()
    for record in records:
        writer.add(encode_record(record), record["eventTime"])
    log_file = writer.finish()
    return log_file.body.read(), log_file


def test_log_file_body_is_one_gzip_member_of_records() -> None:
    records = [
        {"eventID": "b", "eventTime": "2025-01-02T00:00:00Z"},
        {"eventID": "a", "eventTime": "2025-01-01T00:00:00Z"},
        {"eventID": "c", "eventTime": "2025-01-03T00:00:00Z"},
    ]
    body, log_file = write(records)

    decompressor = zlib.decompressobj(wbits=31)
    raw = decompressor.decompress(body)
    assert decompressor.eof
    assert decompressor.unused_data == b""
    assert json.loads(raw) == {"Records": records}
    assert log_file.sha256 == hashlib.sha256(raw).hexdigest()  # type: ignore[attr-defined]
    assert log_file.record_count == 3  # type: ignore[attr-defined]
    assert log_file.oldest_event_time == "2025-01-01T00:00:00Z"  # type: ignore[attr-defined]
    assert log_file.newest_event_time == "2025-01-03T00:00:00Z"  # type: ignore[attr-defined]
    assert log_file.compressed_bytes == len(body)  # type: ignore[attr-defined]
    assert body[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # one member, no file name, mtime 0


def test_log_file_body_is_deterministic() -> None:
    records = [{"eventID": str(i), "eventTime": "2025-01-01T00:00:00Z"} for i in range(50)]

    assert write(records)[0] == write(records)[0]


def test_log_file_large_body_round_trips() -> None:
    records = [{"eventID": str(i), "eventTime": "2025-01-01T00:00:00Z", "p": os.urandom(64).hex()} for i in range(5000)]
    body, _ = write(records)

    assert json.loads(gzip.decompress(body))["Records"] == records


def test_empty_log_file_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        LogFileWriter().finish()
