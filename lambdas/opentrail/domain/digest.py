"""Digest files for log file integrity validation (spec §3), bit-compatible with CloudTrail.

Pure Python: the key layout, the digest body, the string to sign, hashes, the public key
encoding and fingerprint, and signature verification. Signing itself is the signer
adapter's job (KMS, RSASSA_PKCS1_V1_5_SHA_256, MessageType RAW, over `string_to_sign`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

SIGNATURE_ALGORITHM: Final = "SHA256withRSA"
HASH_ALGORITHM: Final = "SHA-256"
DIGEST_PERIOD: Final = timedelta(hours=1)
DIGEST_FOLDER: Final = "CloudTrail-Digest"
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
# S3 user metadata keys (x-amz-meta-...) of a digest object.
SIGNATURE_METADATA: Final = "signature"
SIGNATURE_ALGORITHM_METADATA: Final = "signature-algorithm"
BACKFILL_METADATA: Final = "backfill-generation-timestamp"

_DIGEST_KEY = re.compile(
    r"^(?:(?P<prefix>.+)/)?AWSLogs/(?:(?P<org>o-[a-z0-9]+)/)?(?P<account>\d{12})/CloudTrail-Digest/(?P<source>[^/]+)/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P=account)_CloudTrail-Digest_(?P=source)_(?P<trail>.+)_"
    r"(?P<home>[a-z0-9-]+)_(?P<stamp>\d{8}T\d{6}Z)(?P<backfill>_backfill)?\.json\.gz$"
)


class DigestFormatError(ValueError):
    """A digest body is not what spec §3.2 describes."""


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def hour_window(moment: datetime) -> tuple[datetime, datetime]:
    """The hourly digest window [start, end) holding `moment` (windows anchored on the hour)."""
    start = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start, start + DIGEST_PERIOD


def digest_key(
    *,
    account_id: str,
    source_region: str,
    trail_name: str,
    home_region: str,
    end_time: datetime,
    prefix: str | None = None,
    organization_id: str | None = None,
    backfill: bool = False,
) -> str:
    """``[prefix/]AWSLogs/[o-id/]<acct>/CloudTrail-Digest/<src>/YYYY/MM/DD/<acct>_CloudTrail-Digest_<src>_<trail>_<home>_<YYYYMMDDTHHMMSSZ>[_backfill].json.gz``.

    Date folders and stamp are the digest's end time (UTC); the stamp has seconds.
    """
    end = end_time.astimezone(UTC)
    name = (
        f"{account_id}_{DIGEST_FOLDER}_{source_region}_{trail_name}_{home_region}_{end.strftime('%Y%m%dT%H%M%SZ')}"
        f"{'_backfill' if backfill else ''}.json.gz"
    )
    parts = [prefix] if prefix else []
    parts.append("AWSLogs")
    if organization_id:
        parts.append(organization_id)
    parts += [account_id, DIGEST_FOLDER, source_region, end.strftime("%Y/%m/%d"), name]
    return "/".join(parts)


@dataclass(frozen=True)
class DigestKey:
    prefix: str | None
    organization_id: str | None
    account_id: str
    source_region: str
    trail_name: str
    home_region: str
    end_time: datetime
    backfill: bool


def parse_digest_key(key: str) -> DigestKey | None:
    match = _DIGEST_KEY.match(key)
    if match is None:
        return None
    return DigestKey(
        prefix=match["prefix"],
        organization_id=match["org"],
        account_id=match["account"],
        source_region=match["source"],
        trail_name=match["trail"],
        home_region=match["home"],
        end_time=datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        backfill=match["backfill"] is not None,
    )


@dataclass(frozen=True)
class LogFileEntry:
    """One delivered log file, as the delivery ledger records it."""

    bucket: str
    key: str
    sha256: str  # lowercase hex of the uncompressed body
    oldest_event_time: str
    newest_event_time: str

    def to_json(self) -> dict[str, str]:
        return {
            "s3Bucket": self.bucket,
            "s3Object": self.key,
            "hashValue": self.sha256,
            "hashAlgorithm": HASH_ALGORITHM,
            "newestEventTime": self.newest_event_time,
            "oldestEventTime": self.oldest_event_time,
        }


@dataclass(frozen=True)
class PreviousDigest:
    """The link to the digest before this one (absent at the start of a chain)."""

    bucket: str
    key: str
    sha256: str  # of its uncompressed bytes
    signature: str  # hex


def build_digest(
    *,
    account_id: str,
    start_time: datetime,
    end_time: datetime,
    bucket: str,
    key: str,
    fingerprint: str,
    log_files: Iterable[LogFileEntry],
    previous: PreviousDigest | None,
) -> dict[str, Any]:
    """The digest body, every field of spec §3.2, log files in key order (deterministic)."""
    files = sorted(log_files, key=lambda entry: entry.key)
    return {
        "awsAccountId": account_id,
        "digestStartTime": format_time(start_time),
        "digestEndTime": format_time(end_time),
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": fingerprint,
        "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
        "newestEventTime": max((f.newest_event_time for f in files), default=None),
        "oldestEventTime": min((f.oldest_event_time for f in files), default=None),
        "previousDigestS3Bucket": previous.bucket if previous else None,
        "previousDigestS3Object": previous.key if previous else None,
        "previousDigestHashValue": previous.sha256 if previous else None,
        "previousDigestHashAlgorithm": HASH_ALGORITHM if previous else None,
        "previousDigestSignature": previous.signature if previous else None,
        "logFiles": [entry.to_json() for entry in files],
    }


def serialize(digest: Mapping[str, Any]) -> bytes:
    """The exact uncompressed bytes stored (the digest hash is over these bytes)."""
    return json.dumps(digest, separators=(",", ":")).encode("utf-8")


def compress(raw: bytes) -> bytes:
    """One gzip member, deterministic (mtime 0)."""
    return gzip.compress(raw, compresslevel=9, mtime=0)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def string_to_sign(digest: Mapping[str, Any], raw: bytes) -> bytes:
    """The four lines CloudTrail signs (spec §3.4), UTF-8, LF-joined, no trailing newline."""
    previous = digest.get("previousDigestSignature")
    lines = [
        str(digest["digestEndTime"]),
        f"{digest['digestS3Bucket']}/{digest['digestS3Object']}",
        sha256_hex(raw),
        previous if previous is not None else "null",
    ]
    return "\n".join(lines).encode("utf-8")


_RSA_ALGORITHM_ID: Final = bytes.fromhex("2a864886f70d010101")  # OID 1.2.840.113549.1.1.1 (rsaEncryption)


def pkcs1_der(public_key_der: bytes) -> bytes:
    """A public key as PKCS#1 RSAPublicKey DER, from DER in either PKCS#1 or SubjectPublicKeyInfo
    form (KMS GetPublicKey returns SubjectPublicKeyInfo; ListPublicKeys returns PKCS#1).

    Plain DER walking, so the Lambda functions need no crypto library.
    """
    tag, body, _ = _der_element(public_key_der, 0)
    if tag != 0x30:
        raise ValueError("public key: not a DER SEQUENCE")
    first_tag, first, after_first = _der_element(body, 0)
    if first_tag == 0x02:  # INTEGER modulus: already PKCS#1 RSAPublicKey
        return public_key_der
    if first_tag != 0x30 or _RSA_ALGORITHM_ID not in first:
        raise ValueError("public key: not an RSA SubjectPublicKeyInfo")
    bits_tag, bits, _ = _der_element(body, after_first)
    if bits_tag != 0x03 or not bits or bits[0] != 0:
        raise ValueError("public key: malformed BIT STRING")
    return bits[1:]


def _der_element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after) of the DER element at `offset`."""
    if offset + 2 > len(data):
        raise ValueError("public key: truncated DER")
    tag, length = data[offset], data[offset + 1]
    position = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise ValueError("public key: truncated DER")
    return tag, data[position:end], end


def fingerprint(pkcs1: bytes) -> str:
    """CloudTrail's key fingerprint: lowercase hex MD5 of the PKCS#1 DER."""
    return hashlib.md5(pkcs1, usedforsecurity=False).hexdigest()


def verify_signature(pkcs1: bytes, message: bytes, signature_hex: str) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256; False on any mismatch or malformed signature or key.

    Uses `cryptography` (the validator's side: the CLI and tests, not the Lambda functions).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        signature = bytes.fromhex(signature_hex)
        key = serialization.load_der_public_key(spki_der(pkcs1))
    except ValueError:
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def spki_der(pkcs1: bytes) -> bytes:
    """Wrap PKCS#1 RSAPublicKey DER as SubjectPublicKeyInfo DER (what PEM "PUBLIC KEY" holds)."""
    algorithm = _der(0x30, _der(0x06, _RSA_ALGORITHM_ID) + b"\x05\x00")
    return _der(0x30, algorithm + _der(0x03, b"\x00" + pkcs1))


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content
