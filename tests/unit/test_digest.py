"""Digest files (spec §3): key layout, body, string to sign, key encoding, signatures."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from opentrail.domain.digest import (
    LogFileEntry,
    PreviousDigest,
    build_digest,
    digest_key,
    fingerprint,
    hour_window,
    parse_digest_key,
    pkcs1_der,
    serialize,
    spki_der,
    string_to_sign,
    verify_signature,
)

END = datetime(2015, 8, 17, 15, 1, 31, tzinfo=UTC)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_digest_key_follows_cloudtrail_layout() -> None:
    key = digest_key(
        account_id="111122223333",
        source_region="us-east-2",
        trail_name="your-trail-name",
        home_region="us-east-2",
        end_time=END,
    )
    assert key == (
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/"
        "111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz"
    )


def test_digest_key_round_trips_through_the_parser() -> None:
    key = digest_key(
        account_id="111122223333",
        source_region="eu-west-1",
        trail_name="my_trail.v2",
        home_region="us-east-1",
        end_time=END,
        prefix="team/logs",
        organization_id="o-abc123",
        backfill=True,
    )
    parsed = parse_digest_key(key)

    assert key.endswith("_20150817T150131Z_backfill.json.gz")
    assert parsed is not None
    assert (parsed.prefix, parsed.organization_id, parsed.trail_name, parsed.home_region) == (
        "team/logs",
        "o-abc123",
        "my_trail.v2",
        "us-east-1",
    )
    assert parsed.end_time == END
    assert parsed.backfill
    assert parse_digest_key("AWSLogs/111122223333/CloudTrail/us-east-1/2015/08/17/x.json.gz") is None


def test_string_to_sign_matches_the_cli_test_vector() -> None:
    digest = {"digestEndTime": "a", "digestS3Bucket": "b", "digestS3Object": "c", "previousDigestSignature": None}

    assert string_to_sign(digest, b"abc") == (
        b"a\nb/c\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\nnull"
    )


def test_build_digest_has_every_field_and_chains() -> None:
    files = [
        LogFileEntry("b", "k2", "f" * 64, "2015-08-17T14:10:00Z", "2015-08-17T14:20:00Z"),
        LogFileEntry("b", "k1", "e" * 64, "2015-08-17T13:59:00Z", "2015-08-17T14:05:00Z"),
    ]
    start, end = hour_window(datetime(2015, 8, 17, 14, 30, tzinfo=UTC))
    first = build_digest(
        account_id="111122223333",
        start_time=start,
        end_time=end,
        bucket="b",
        key="d1",
        fingerprint="0" * 32,
        log_files=files,
        previous=None,
    )
    assert first["digestStartTime"] == "2015-08-17T14:00:00Z"
    assert first["digestEndTime"] == "2015-08-17T15:00:00Z"
    assert [f["s3Object"] for f in first["logFiles"]] == ["k1", "k2"]
    assert (first["oldestEventTime"], first["newestEventTime"]) == ("2015-08-17T13:59:00Z", "2015-08-17T14:20:00Z")
    assert all(first[f"previousDigest{name}"] is None for name in ("S3Bucket", "S3Object", "HashValue", "Signature"))

    raw = serialize(first)
    second = build_digest(
        account_id="111122223333",
        start_time=end,
        end_time=end.replace(hour=16),
        bucket="b",
        key="d2",
        fingerprint="0" * 32,
        log_files=[],
        previous=PreviousDigest("b", "d1", hashlib.sha256(raw).hexdigest(), "ab" * 256),
    )
    assert second["logFiles"] == []
    assert second["newestEventTime"] is None
    assert second["previousDigestHashValue"] == hashlib.sha256(raw).hexdigest()
    assert second["previousDigestHashAlgorithm"] == "SHA-256"
    assert string_to_sign(second, serialize(second)).endswith(b"\n" + b"ab" * 256)


def test_public_key_encoding_and_fingerprint(private_key: rsa.RSAPrivateKey) -> None:
    public = private_key.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)

    assert pkcs1_der(spki) == pkcs1
    assert pkcs1_der(pkcs1) == pkcs1
    assert spki_der(pkcs1) == spki
    assert pkcs1.startswith(bytes.fromhex("3082010a0282010100"))
    assert fingerprint(pkcs1) == hashlib.md5(pkcs1).hexdigest()


AWS_CLI_EXAMPLE_KEY = (  # `aws cloudtrail list-public-keys` example output (awscli docs)
    "MIIBCgKCAQEAlSS3cl92HDycr/MTj0moOhas8habjrraXw+KzlWF0axSI2tcF+3iJ9BKQAVSKxGwxwu3m0wG3J+kUl1xboEcEPHYoIYMbgfSw7KG"
    "nuDKwkLzsQWhUJ0cIbOHASox1vv/5fNXkrHhGbDCHeVXm804c83nvHUEFYThr1PfyP/8HwrCtR3FX5OANtQCP61C1nJtSSkC8JSQUOrIP4CuwJjc"
    "+4WGDk+BGH5m9iuiAKkipEHWmUl8/P7XpfpWQuk4h8g3pXZOrNXr08lbh4d39svj7UqdhvOXoBISp9t/EXYuePGEtBdrKD9Dz+VHwyUPtBQvYr9B"
    "nkF88qBnaPNhS44rzwIDAQAB"
)


def test_fingerprint_of_the_documented_key() -> None:
    der = base64.b64decode(AWS_CLI_EXAMPLE_KEY)

    assert fingerprint(der) == "7f3f401420072e50a65a141430817ab3"
    assert pkcs1_der(spki_der(der)) == der


def test_verify_signature(private_key: rsa.RSAPrivateKey) -> None:
    pkcs1 = private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    message = b"2015-08-17T15:01:31Z\nb/k\n" + b"0" * 64 + b"\nnull"
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()

    assert verify_signature(pkcs1, message, signature)
    assert verify_signature(pkcs1, message, signature.upper())
    assert not verify_signature(pkcs1, message + b"x", signature)
    assert not verify_signature(pkcs1, message, "zz")
    assert not verify_signature(b"not a key", message, signature)


def test_pkcs1_der_rejects_non_rsa_input() -> None:
    with pytest.raises(ValueError, match="public key"):
        pkcs1_der(b"\x02\x01\x00")
