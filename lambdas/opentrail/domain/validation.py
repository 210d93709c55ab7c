"""Log file integrity validation: the digest-chain traversal of ``aws cloudtrail validate-logs``
(spec §3.6, reproduced step for step) and OpenTrail's additional checks, over abstract sources.

Pure: no AWS, no files. The caller provides

* a `DigestStore` (list keys in S3 order after a marker; fetch an object's bytes and user metadata,
  raising `ObjectNotFound` for a missing key) — S3 or a directory copy;
* a `PublicKeySource` (fingerprint -> base64 text of the PKCS#1 DER, as ListPublicKeys sends it);
* log file hashing goes through `hash_log_stream` (streaming gunzip + SHA-256, one chunk at a time).

`DigestTraverser.traverse` yields, in the AWS CLI's order, `ValidDigest`, `DigestProblem` and
`ChainGap` events, and records what it saw in a `ChainRecord`; `opentrail_findings` then runs the
checks the AWS CLI does not do (links, contiguity, chain head, unlisted log files).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from opentrail.domain.digest import (
    BACKFILL_METADATA,
    DIGEST_PERIOD,
    SIGNATURE_ALGORITHM_METADATA,
    SIGNATURE_METADATA,
    digest_key,
    spki_der,
)

KEY_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
DISPLAY_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
REQUIRED_DIGEST_KEYS: Final = (
    "digestPublicKeyFingerprint",
    "digestS3Bucket",
    "digestS3Object",
    "previousDigestSignature",
    "digestEndTime",
    "digestStartTime",
)
CHUNK_BYTES: Final = 1024 * 1024
# A log file whose stamp is this close to the end of the newest digest window examined may be
# listed by the next digest (written after the range), so it is not reported as unlisted.
LATE_FILE_GRACE: Final = timedelta(minutes=15)
_LOG_NAME = re.compile(r"_CloudTrail_[^_/]+_(?P<stamp>\d{8}T\d{4}Z)_[A-Za-z0-9]+\.json\.gz$")


# -- sources ------------------------------------------------------------------------------


class ObjectNotFound(Exception):
    """The object does not exist (S3 NoSuchKey, or no such file in a directory copy)."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    metadata: Mapping[str, str]


class DigestStore(Protocol):
    def list_keys(self, bucket: str, prefix: str, start_after: str = "") -> Iterable[str]:
        """Keys starting with `prefix` and sorting after `start_after`, in S3 (UTF-8 byte) order."""
        ...

    def get_object(self, bucket: str, key: str) -> StoredObject: ...


class PublicKeySource(Protocol):
    def get_public_keys(self, start: datetime, end: datetime) -> Mapping[str, str]:
        """fingerprint -> base64 text of the PKCS#1 RSAPublicKey DER (ListPublicKeys' Value)."""
        ...


class NoPublicKeysError(RuntimeError):
    """ListPublicKeys returned nothing for the range (the AWS CLI aborts, rc 255)."""


# -- dates as the AWS CLI handles them -----------------------------------------------------


def display(moment: datetime) -> str:
    return moment.strftime(DISPLAY_FORMAT)


def key_stamp(moment: datetime) -> str:
    return moment.strftime(KEY_DATE_FORMAT)


def parse_date(text: str) -> datetime:
    """ISO 8601 (extended or basic) -> datetime; the zone is *replaced* by UTC, as the CLI does."""
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except (ValueError, TypeError):
        raise ValueError(f"Unable to parse date value: {text}") from None


def is_backfill_key(key: str) -> bool:
    return key.endswith("_backfill.json.gz")


def key_date(key: str) -> str:
    """The 16-character ``YYYYMMDDTHHMMSSZ`` cut from a digest key by position (as the CLI does)."""
    return key[-33:-17] if is_backfill_key(key) else key[-24:-8]


# -- the trail being validated -------------------------------------------------------------


@dataclass(frozen=True)
class TrailTarget:
    bucket: str
    prefix: str | None
    account_id: str
    trail_name: str
    home_region: str
    source_region: str
    organization_id: str | None = None

    @property
    def _root(self) -> str:
        parts = [self.prefix] if self.prefix else []
        parts.append("AWSLogs")
        if self.organization_id:
            parts.append(self.organization_id)
        parts.append(self.account_id)
        return "/".join(parts)

    def digest_prefix(self) -> str:
        return f"{self._root}/CloudTrail-Digest/{self.source_region}"

    def log_prefix(self) -> str:
        return f"{self._root}/CloudTrail/{self.source_region}/"

    def marker(self, start: datetime) -> str:
        """The key a digest ending one minute before `start` would have (ListObjects' Marker)."""
        return digest_key(
            account_id=self.account_id,
            source_region=self.source_region,
            trail_name=self.trail_name,
            home_region=self.home_region,
            end_time=start - timedelta(minutes=1),
            prefix=self.prefix,
            organization_id=self.organization_id,
        )

    def expected_digest_key(self, end: datetime) -> str:
        return digest_key(
            account_id=self.account_id,
            source_region=self.source_region,
            trail_name=self.trail_name,
            home_region=self.home_region,
            end_time=end,
            prefix=self.prefix,
            organization_id=self.organization_id,
        )

    def key_regex(self) -> re.Pattern[str]:
        account, source = re.escape(self.account_id), re.escape(self.source_region)
        org = f"{re.escape(self.organization_id)}/" if self.organization_id else ""
        pattern = (
            f"AWSLogs/{org}{account}/CloudTrail\\-Digest/{source}/\\d+/\\d+/\\d+/{account}_CloudTrail\\-Digest_"
            f"{source}_{re.escape(self.trail_name)}_{re.escape(self.home_region)}_.+(?:_backfill)?\\.json\\.gz"
        )
        if self.prefix:
            pattern = re.escape(self.prefix) + "/" + pattern
        return re.compile("^" + pattern + "$")


# -- signatures ----------------------------------------------------------------------------


class DigestError(ValueError):
    """A digest failed validation; str() is the whole output line."""


def _line(bucket: str, key: str, outcome: str) -> str:
    return f"Digest file\ts3://{bucket}/{key}\tINVALID: {outcome}"


class RsaSha256Verifier:
    """RSASSA-PKCS1-v1_5 / SHA-256 checks with the public keys loaded once per Value."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}

    def verify(self, bucket: str, key: str, public_key_b64: str, data: Mapping[str, Any], raw: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        public_key = self._load(public_key_b64, bucket, key, str(data["digestPublicKeyFingerprint"]))
        message = string_to_sign(data, raw)
        signature = binascii.unhexlify(str(data["_signature"]))
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise DigestError(_line(bucket, key, "signature verification failed")) from None

    def _load(self, value: str, bucket: str, key: str, fingerprint: str) -> Any:
        cached = self._keys.get(value)
        if cached is not None:
            return cached
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        der = base64.b64decode(value)
        try:
            loaded = serialization.load_der_public_key(spki_der(der))
        except ValueError:
            loaded = None
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise DigestError(_line(bucket, key, f"Unable to load PKCS #1 key with fingerprint {fingerprint}"))
        self._keys[value] = loaded
        return loaded


def string_to_sign(data: Mapping[str, Any], raw: bytes) -> bytes:
    previous = data["previousDigestSignature"]
    lines = (
        f"{data['digestEndTime']}\n{data['digestS3Bucket']}/{data['digestS3Object']}\n"
        f"{hashlib.sha256(raw).hexdigest()}\n{'null' if previous is None else previous}"
    )
    return lines.encode()


# -- traversal events and what the traversal saw -------------------------------------------


@dataclass(frozen=True)
class ValidDigest:
    bucket: str
    key: str
    data: Mapping[str, Any]
    backfill: bool

    @property
    def line(self) -> str:
        return f"{'(backfill) ' if self.backfill else ''}Digest file\ts3://{self.bucket}/{self.key}\tvalid"


@dataclass(frozen=True)
class DigestProblem:
    line: str  # the whole stderr line, "(backfill) " prefix included
    bucket: str
    key: str
    backfill: bool
    missing: bool


@dataclass(frozen=True)
class ChainGap:
    line: str


TraversalEvent = ValidDigest | DigestProblem | ChainGap


@dataclass
class SeenDigest:
    """One digest key the traversal looked at (fetched, or reported missing)."""

    bucket: str
    key: str
    backfill: bool
    status: str  # "valid" | "invalid" | "missing"
    end: datetime  # digestEndTime, or the key's date when the body could not be read
    start: datetime | None = None
    previous_bucket: str | None = None
    previous_key: str | None = None
    previous_hash: str | None = None
    previous_signature: str | None = None
    sha256: str | None = None  # of the uncompressed body
    signature: str | None = None  # x-amz-meta-signature


@dataclass
class ChainRecord:
    seen: dict[tuple[str, str], SeenDigest] = field(default_factory=dict)
    listed_logs: set[tuple[str, str]] = field(default_factory=set)
    listed_digests: set[tuple[str, str]] = field(default_factory=set)  # regular digest keys in the listing

    def note(self, item: SeenDigest) -> None:
        previous = self.seen.get((item.bucket, item.key))
        if previous is not None and previous.status == "valid":
            return
        self.seen[(item.bucket, item.key)] = item


class DigestTraverser:
    """``DigestTraverser`` of awscli's validation.py, with the same order, rules and messages."""

    def __init__(
        self,
        store: DigestStore,
        target: TrailTarget,
        public_keys: PublicKeySource,
        verifier: RsaSha256Verifier | None = None,
        record: ChainRecord | None = None,
    ) -> None:
        self.store = store
        self.target = target
        self.public_keys = public_keys
        self.verifier = verifier or RsaSha256Verifier()
        self.record = record if record is not None else ChainRecord()
        self._listing: dict[tuple[str, datetime, datetime], tuple[list[str], list[str]]] = {}

    # listing: ListObjects(Prefix, Marker), regex filter, date window by position
    def digest_keys(self, bucket: str, start: datetime, end: datetime, backfill: bool) -> list[str]:
        cache_key = (bucket, start, end)
        if cache_key not in self._listing:
            standard: list[str] = []
            backfills: list[str] = []
            first, last = key_stamp(start), key_stamp(end + timedelta(hours=1))
            pattern = self.target.key_regex()
            for key in self.store.list_keys(bucket, self.target.digest_prefix(), self.target.marker(start)):
                if not (key and pattern.match(key)):
                    continue
                date = key_date(key)
                if date > last:
                    break
                if date < first:
                    continue
                (backfills if is_backfill_key(key) else standard).append(key)
            self.record.listed_digests.update((bucket, key) for key in standard)
            self._listing[cache_key] = (standard, backfills)
        standard, backfills = self._listing[cache_key]
        return list(backfills if backfill else standard)

    def load_public_keys(self, start: datetime, end: datetime) -> dict[str, str]:
        keys = dict(self.public_keys.get_public_keys(start, end))
        if not keys:
            raise NoPublicKeysError(f"No public keys found between {display(start)} and {display(end)}")
        return keys

    def traverse(self, start: datetime, end: datetime, *, backfill: bool = False) -> Iterator[TraversalEvent]:
        bucket = self.target.bucket
        digests = self.digest_keys(bucket, start, end, backfill)
        public_keys: dict[str, str] = {} if backfill else self.load_public_keys(start, end + timedelta(hours=2))
        key, end_date = _last_digest(digests)
        last_start = end_date
        tag = "(backfill) " if backfill else ""
        while key and last_start is not None and start <= last_start:
            current: str = key
            try:
                data, end_date = self._load_and_validate(public_keys, bucket, current, backfill)
                last_start = parse_date(str(data["digestStartTime"]))
                previous_bucket = data.get("previousDigestS3Bucket")
                previous_key = data.get("previousDigestS3Object")
                yield ValidDigest(bucket, current, data, backfill)
                if previous_bucket is None or previous_key is None:
                    key, next_end = _last_digest(digests, current)
                    if key and next_end is not None:
                        yield ChainGap(
                            f"{tag}No log files were delivered by CloudTrail between "
                            f"{display(next_end)} and {display(last_start)}"
                        )
                    end_date = next_end
                else:
                    key = str(previous_key)
                    if previous_bucket != bucket:
                        bucket = str(previous_bucket)
                        digests = self.digest_keys(bucket, start, end_date, backfill)
                continue
            except ObjectNotFound:
                self.record.note(SeenDigest(bucket, current, backfill, "missing", _key_end(current)))
                line = f"{tag}Digest file\ts3://{bucket}/{current}\tINVALID: not found"
                yield DigestProblem(line, bucket, current, backfill, True)
            except DigestError as error:
                yield DigestProblem(f"{tag}{error}", bucket, current, backfill, False)
            except (ValueError, KeyError, TypeError, AttributeError, NoPublicKeysError) as error:
                # NoPublicKeysError here comes from a backfill digest's own key look-up: reported, not fatal.
                self._note_invalid(bucket, current, backfill)
                yield DigestProblem(f"{tag}{_line(bucket, current, str(error))}", bucket, current, backfill, False)
            key, end_date = _last_digest(digests, current)

    def _note_invalid(self, bucket: str, key: str, backfill: bool) -> None:
        if (bucket, key) not in self.record.seen:
            self.record.note(SeenDigest(bucket, key, backfill, "invalid", _key_end(key)))

    def _load_and_validate(
        self, public_keys: dict[str, str], bucket: str, key: str, backfill: bool
    ) -> tuple[dict[str, Any], datetime]:
        stored = self.store.get_object(bucket, key)
        seen = SeenDigest(bucket, key, backfill, "invalid", _key_end(key), signature=stored.metadata.get("signature"))
        self.record.note(seen)
        try:
            raw = zlib.decompress(stored.body, zlib.MAX_WBITS | 16)
            data = json.loads(raw.decode())
        except (ValueError, zlib.error):
            raise DigestError(_line(bucket, key, "invalid format")) from None
        if not isinstance(data, dict):
            raise DigestError(_line(bucket, key, "invalid format"))
        seen.sha256 = hashlib.sha256(raw).hexdigest()
        _describe(seen, data)
        metadata = stored.metadata
        if SIGNATURE_METADATA not in metadata or SIGNATURE_ALGORITHM_METADATA not in metadata:
            raise DigestError(_line(bucket, key, "signature verification failed"))
        data["_signature"] = metadata[SIGNATURE_METADATA]
        data["_signature_algorithm"] = metadata[SIGNATURE_ALGORITHM_METADATA]
        if is_backfill_key(key):
            if BACKFILL_METADATA not in metadata:
                raise DigestError(_line(bucket, key, "invalid format"))
            data["_backfill_generation_timestamp"] = metadata[BACKFILL_METADATA]
        for required in REQUIRED_DIGEST_KEYS:
            if required not in data:
                raise DigestError(_line(bucket, key, "invalid format"))
        if data["digestS3Bucket"] != bucket or data["digestS3Object"] != key:
            raise DigestError(_line(bucket, key, "has been moved from its original location"))
        fingerprint = data["digestPublicKeyFingerprint"]
        if fingerprint not in public_keys and backfill:
            generated = parse_date(str(data["_backfill_generation_timestamp"]))
            public_keys.update(self.load_public_keys(generated - timedelta(hours=1), generated + timedelta(hours=1)))
        if fingerprint not in public_keys:
            raise DigestError(
                _line(
                    bucket,
                    key,
                    f"public key not found in region {self.target.home_region} for fingerprint {fingerprint}",
                )
            )
        self.verifier.verify(bucket, key, public_keys[fingerprint], data, raw)
        if not isinstance(data.get("logFiles"), list):
            # The AWS CLI crashes here ('logFiles', rc 255); OpenTrail reports the digest instead.
            raise DigestError(_line(bucket, key, "invalid format"))
        end_date = parse_date(str(data["digestEndTime"]))
        seen.status = "valid"
        for log in data["logFiles"]:
            if isinstance(log, dict):
                self.record.listed_logs.add((str(log.get("s3Bucket")), str(log.get("s3Object"))))
        return data, end_date


def _describe(seen: SeenDigest, data: Mapping[str, Any]) -> None:
    for name, attribute in (("digestEndTime", "end"), ("digestStartTime", "start")):
        value = data.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                setattr(seen, attribute, parse_date(value))
    seen.previous_bucket = _text(data.get("previousDigestS3Bucket"))
    seen.previous_key = _text(data.get("previousDigestS3Object"))
    seen.previous_hash = _text(data.get("previousDigestHashValue"))
    seen.previous_signature = _text(data.get("previousDigestSignature"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _key_end(key: str) -> datetime:
    try:
        return datetime.strptime(key_date(key), KEY_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _last_digest(digests: list[str], before_key: str | None = None) -> tuple[str | None, datetime | None]:
    """The CLI's ``_get_last_digest``: pop the newest key, or the newest one dated before `before_key`."""
    if not digests:
        return None, None
    if before_key is None:
        key = digests.pop()
        return key, parse_date(key_date(key))
    before = parse_date(key_date(before_key))
    while digests:
        key = digests.pop()
        date = parse_date(key_date(key))
        if date < before:
            return key, date
    return None, None


# -- log files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogCheck:
    bucket: str
    key: str
    outcome: str  # "valid" or the INVALID reason
    compressed_bytes: int = 0
    inflated_bytes: int = 0

    @property
    def valid(self) -> bool:
        return self.outcome == "valid"

    @property
    def line(self) -> str:
        status = "valid" if self.valid else f"INVALID: {self.outcome}"
        return f"Log file\ts3://{self.bucket}/{self.key}\t{status}"


@dataclass(frozen=True)
class HashOutcome:
    outcome: str  # "valid" or the AWS CLI's INVALID reason
    compressed_bytes: int
    inflated_bytes: int


def hash_log_stream(chunks: Iterable[bytes], expected: str) -> HashOutcome:
    """Stream-gunzip (one member) and SHA-256 a log file, one chunk at a time (bounded memory).

    Bad data raises nothing: a truncated stream gives a hash mismatch and an unreadable one
    "invalid format", as the AWS CLI. Errors of the source itself propagate.
    """
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    digest = hashlib.sha256()
    compressed = inflated = 0
    try:
        for chunk in chunks:
            compressed += len(chunk)
            data = inflater.decompress(chunk)
            inflated += len(data)
            digest.update(data)
        data = inflater.flush()
        inflated += len(data)
        digest.update(data)
    except zlib.error:
        return HashOutcome("invalid format", compressed, inflated)
    if inflater.unused_data:
        return HashOutcome("unexpected data after end of compressed stream", compressed, inflated)
    if digest.hexdigest() != expected:
        return HashOutcome("hash value doesn't match", compressed, inflated)
    return HashOutcome("valid", compressed, inflated)


def log_stamp(key: str) -> datetime | None:
    """The delivery time stamp (minute precision) in a log file's name."""
    match = _LOG_NAME.search(key)
    if match is None:
        return None
    try:
        return datetime.strptime(match["stamp"], "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# -- OpenTrail's checks beyond the AWS CLI -------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """The newest digest of a chain, as recorded outside the bucket (DynamoDB)."""

    bucket: str
    key: str
    end_time: datetime
    signature: str | None = None
    sha256: str | None = None
    sequence: int | None = None
    stops: tuple[datetime, ...] = ()  # recorded StopLogging / validation-off moments


@dataclass(frozen=True)
class Finding:
    kind: str  # "Digest file", "Log file", "Hour"
    subject: str  # s3 URI or a time range
    message: str

    @property
    def line(self) -> str:
        return f"{self.kind}\t{self.subject}\tINVALID: {self.message}"


def opentrail_findings(
    record: ChainRecord,
    target: TrailTarget,
    *,
    start: datetime,
    end: datetime,
    head: ChainHead | None = None,
    log_keys: Iterable[str] = (),
    stops: Sequence[datetime] = (),
) -> list[Finding]:
    """Links, contiguity, chain head and unlisted log files (see docs/validate-logs.md)."""
    regular = sorted(
        (item for item in record.seen.values() if not item.backfill and item.bucket == target.bucket),
        key=lambda item: item.end,
    )
    findings: list[Finding] = []
    all_stops = tuple(stops) + (head.stops if head else ())
    findings += _link_findings(record, regular)
    findings += _contiguity_findings(regular, target, all_stops)
    findings += _head_findings(regular, target, head, start=start, end=end)
    findings += _unlinked_findings(record, regular)
    findings += _log_findings(record, regular, target, log_keys)
    return findings


def _uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _link_findings(record: ChainRecord, regular: Sequence[SeenDigest]) -> list[Finding]:
    findings = []
    for item in regular:
        if item.status != "valid" or item.previous_key is None or item.previous_bucket is None:
            continue
        previous = record.seen.get((item.previous_bucket, item.previous_key))
        if previous is None or previous.status != "valid":
            continue  # not examined (before the range) or already reported
        uri = _uri(item.bucket, item.key)
        previous_uri = _uri(previous.bucket, previous.key)
        if item.previous_hash != previous.sha256:
            findings.append(Finding("Digest file", uri, f"previousDigestHashValue doesn't match {previous_uri}"))
        if (item.previous_signature or "").lower() != (previous.signature or "").lower():
            findings.append(
                Finding("Digest file", uri, f"previousDigestSignature doesn't match the signature of {previous_uri}")
            )
        if item.start is not None and previous.end != item.start:
            findings.append(
                Finding(
                    "Digest file",
                    uri,
                    f"starts at {display(item.start)} but the previous digest {previous_uri} ends at "
                    f"{display(previous.end)}",
                )
            )
    return findings


def _window_start(item: SeenDigest) -> datetime:
    return item.start if item.start is not None else item.end - DIGEST_PERIOD


def _contiguity_findings(
    regular: Sequence[SeenDigest], target: TrailTarget, stops: Sequence[datetime]
) -> list[Finding]:
    findings = []
    for older, newer in itertools.pairwise(regular):
        newer_start = _window_start(newer)
        restarted = newer.status == "valid" and newer.previous_key is None
        if restarted:
            if not any(_window_start(older) <= stop <= newer_start for stop in stops):
                findings.append(
                    Finding(
                        "Digest file",
                        _uri(newer.bucket, newer.key),
                        f"chain restarted (null previousDigest fields) without a recorded stop; the older digest "
                        f"{_uri(older.bucket, older.key)} ends at {display(older.end)}",
                    )
                )
            continue
        moment = older.end + DIGEST_PERIOD
        while moment <= newer_start:
            findings.append(
                Finding(
                    "Digest file",
                    _uri(target.bucket, target.expected_digest_key(moment)),
                    f"not found (no digest covers {display(moment - DIGEST_PERIOD)} to {display(moment)})",
                )
            )
            moment += DIGEST_PERIOD
    return findings


def _head_findings(
    regular: Sequence[SeenDigest], target: TrailTarget, head: ChainHead | None, *, start: datetime, end: datetime
) -> list[Finding]:
    if head is None or head.bucket != target.bucket:
        return []
    findings: list[Finding] = []
    limit = end + DIGEST_PERIOD  # the CLI lists digests up to end + 1 h
    label = f"the chain head names s3://{head.bucket}/{head.key}"
    if head.sequence is not None:
        label += f" (sequence {head.sequence})"
    label += " as the newest digest"
    newest = regular[-1] if regular else None
    if newest is not None and newest.key == head.key:
        if newest.status == "valid":
            if head.signature and newest.signature and head.signature.lower() != newest.signature.lower():
                findings.append(
                    Finding("Digest file", _uri(newest.bucket, newest.key), f"signature differs from what the {label}")
                )
            if head.sha256 and newest.sha256 and head.sha256 != newest.sha256:
                findings.append(
                    Finding("Digest file", _uri(newest.bucket, newest.key), f"SHA-256 differs from what the {label}")
                )
        return findings
    if newest is not None and newest.end >= head.end_time:
        return findings  # newer digests than the head (head not updated yet) or the head is older
    if head.end_time < start:
        return findings
    # Every window after the newest digest found, up to the head (or the end of the range), is missing.
    if newest is not None:
        moment = newest.end + DIGEST_PERIOD
    else:
        windows = int((head.end_time - start) // DIGEST_PERIOD)
        if head.sequence is not None:
            windows = min(windows, max(head.sequence - 1, 0))
        moment = head.end_time - DIGEST_PERIOD * windows
    while moment <= min(head.end_time, limit):
        key = head.key if moment == head.end_time else target.expected_digest_key(moment)
        findings.append(Finding("Digest file", _uri(target.bucket, key), f"not found ({label})"))
        moment += DIGEST_PERIOD
    return findings


def _unlinked_findings(record: ChainRecord, regular: Sequence[SeenDigest]) -> list[Finding]:
    """Listed digest keys the walk never reached although it went past their date: no digest links to them."""
    if not regular:
        return []
    oldest = min(item.end for item in regular)
    return [
        Finding("Digest file", _uri(bucket, key), "not linked from the chain (no digest names it as its previous)")
        for bucket, key in sorted(record.listed_digests)
        if (bucket, key) not in record.seen and _key_end(key) > oldest
    ]


def _log_findings(
    record: ChainRecord, regular: Sequence[SeenDigest], target: TrailTarget, log_keys: Iterable[str]
) -> list[Finding]:
    windows = [(_window_start(item), item.end, item) for item in regular]
    if not windows:
        return []
    valid_windows = [w for w in windows if w[2].status == "valid"]
    newest_valid_end = max((w[1] for w in valid_windows), default=None)
    oldest_start = min(w[0] for w in windows)
    newest_end = max(w[1] for w in windows)
    findings: list[Finding] = []
    uncovered: dict[datetime, int] = {}
    for key in log_keys:
        if (target.bucket, key) in record.listed_logs:
            continue
        stamp = log_stamp(key)
        if stamp is None:
            continue
        # The stamp has minute precision: the file was delivered in [stamp, stamp + 1 min).
        containing = [w for w in windows if w[0] < stamp + timedelta(minutes=1) and stamp < w[1]]
        if containing:
            if any(w[2].status != "valid" for w in containing):
                continue  # that digest is already reported
            if newest_valid_end is not None and stamp >= newest_valid_end - LATE_FILE_GRACE:
                continue  # may be listed by the next digest, written after the range
            findings.append(Finding("Log file", _uri(target.bucket, key), "not listed in any digest"))
        elif oldest_start <= stamp < newest_end:
            hour = stamp.replace(minute=0)
            uncovered[hour] = uncovered.get(hour, 0) + 1
    for hour, count in sorted(uncovered.items()):
        files = "log file" if count == 1 else "log files"
        findings.append(
            Finding(
                "Hour",
                f"{display(hour)} to {display(hour + DIGEST_PERIOD)}",
                f"{count} {files} delivered under s3://{target.bucket}/{target.log_prefix()} but no digest covers "
                "the hour",
            )
        )
    return findings


def log_keys_in_range(
    list_keys: Callable[[str], Iterable[str]], target: TrailTarget, start: datetime, end: datetime
) -> Iterator[str]:
    """Log file keys under the trail's CloudTrail/<region>/ day folders whose stamp is in [start, end]."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = start.replace(second=0, microsecond=0)
    while day <= end:
        for key in list_keys(f"{target.log_prefix()}{day:%Y/%m/%d}/"):
            stamp = log_stamp(key)
            if stamp is not None and first <= stamp <= end:
                yield key
        day += timedelta(days=1)
