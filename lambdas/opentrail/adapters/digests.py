"""Digest storage: digest objects (S3), chain heads and the public-key registry (DynamoDB,
the ledger table), and the digester's view of the delivery ledger.

Items in the ledger table (keys ``pk``/``sk``; docs/integrity.md has the full shapes):

* chain head ``DIGESTCHAIN#<trail>`` / ``<account>#<region>#regular|backfill``: the chain's
  newest digest (bucket, key, times, signature, sha256, fingerprint) and ``sequence``,
  advanced only by a conditional write on the previous sequence;
* public key ``PUBLICKEY`` / ``<fingerprint>``: PKCS#1 DER (``value``, binary), the KMS key
  ARN and a validity range (``validityStart``/``validityEnd``, epoch seconds) that grows
  with every signature;
* ledger items (``LEDGER#<trail>#<YYYYMMDDHH>``, written by the batcher) gain ``digestKey``
  once a digest lists them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from opentrail.domain.batch import ledger_partition, parse_iso_time, parse_ledger_sort_key
from opentrail.domain.chain import ChainHead, ChainKind, LedgerFile
from opentrail.domain.digest import (
    BACKFILL_METADATA,
    SIGNATURE_ALGORITHM,
    SIGNATURE_ALGORITHM_METADATA,
    SIGNATURE_METADATA,
    LogFileEntry,
    format_time,
    parse_time,
)

CHAIN_PREFIX: Final = "DIGESTCHAIN#"
PUBLIC_KEY_PK: Final = "PUBLICKEY"
DIGEST_CONTENT_TYPE: Final = "application/json"

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class DigestStoreError(RuntimeError):
    """S3 or DynamoDB refused a request; the digester stops and the next run retries."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _dump(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _SERIALIZER.serialize(value) for name, value in values.items()}


def _load(item: dict[str, Any]) -> dict[str, Any]:
    loaded = {name: _DESERIALIZER.deserialize(value) for name, value in item.items()}
    return {
        name: (int(value) if isinstance(value, Decimal) else value.value if hasattr(value, "value") else value)
        for name, value in loaded.items()
    }


# -- digest objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDigest:
    """A digest object read back: its uncompressed bytes and signature metadata."""

    raw: bytes
    signature: str | None
    metadata: dict[str, str]

    @property
    def body(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.raw))


class DigestStore:
    """Writes digest objects to the log bucket, once (``If-None-Match: *``), SSE-S3.

    SSE-S3 (AES256) as CloudTrail's own digests: a validator needs only ``s3:GetObject``,
    no ``kms:Decrypt`` on the project key, and the digest holds hashes, not log content.
    """

    def __init__(self, bucket: str, *, client: Any = None) -> None:
        self.bucket = bucket
        self._s3 = client or boto3.client("s3")

    def put_new(
        self, key: str, compressed: bytes, *, signature: str, backfill_generated_at: datetime | None = None
    ) -> bool:
        """True when written; False when an object is already at `key` (never overwritten)."""
        metadata = {SIGNATURE_METADATA: signature, SIGNATURE_ALGORITHM_METADATA: SIGNATURE_ALGORITHM}
        if backfill_generated_at is not None:
            metadata[BACKFILL_METADATA] = format_time(backfill_generated_at)
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=compressed,
                ContentType=DIGEST_CONTENT_TYPE,
                Metadata=metadata,
                ServerSideEncryption="AES256",
                # Integrity of the upload, and required by S3 Object Lock (WORM mode) buckets.
                ChecksumAlgorithm="SHA256",
                IfNoneMatch="*",
            )
        except ClientError as error:
            if _code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise DigestStoreError(f"s3://{self.bucket}/{key}: PutObject failed: {_code(error) or error}") from error
        return True

    def get(self, key: str) -> StoredDigest | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise DigestStoreError(f"s3://{self.bucket}/{key}: GetObject failed: {_code(error) or error}") from error
        metadata = {str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()}
        try:
            raw = gzip.decompress(response["Body"].read())
        except (OSError, EOFError) as error:
            raise DigestStoreError(f"s3://{self.bucket}/{key}: not a gzip digest") from error
        return StoredDigest(raw=raw, signature=metadata.get(SIGNATURE_METADATA), metadata=metadata)


# -- chain heads -------------------------------------------------------------------------


def chain_head_key(trail: str, account: str, region: str, kind: ChainKind) -> dict[str, Any]:
    return {"pk": {"S": f"{CHAIN_PREFIX}{trail}"}, "sk": {"S": f"{account}#{region}#{kind}"}}


def _head_from_item(item: dict[str, Any]) -> ChainHead:
    data = _load(item)
    account, region, kind = str(data["sk"]).split("#")
    return ChainHead(
        trail=str(data["pk"]).removeprefix(CHAIN_PREFIX),
        account=account,
        region=region,
        kind=cast(ChainKind, kind),
        sequence=int(data["sequence"]),
        bucket=str(data["bucket"]),
        key=str(data["key"]),
        start_time=parse_time(str(data["startTime"])),
        end_time=parse_time(str(data["endTime"])),
        signature=str(data["signature"]),
        sha256=str(data["sha256"]),
        fingerprint=str(data["fingerprint"]),
        written_at=parse_time(str(data["writtenAt"])),
        stops=tuple(parse_time(str(stop)) for stop in data.get("stops") or ()),
    )


class ChainHeads:
    """Chain heads in the ledger table; `advance` is the only writer (conditional)."""

    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")

    def list(self, trail: str) -> list[ChainHead]:
        """Every chain head of a trail (all accounts, regions, both kinds), strongly consistent."""
        return [
            _head_from_item(item)
            for item in _query(self._ddb, self.table, {":pk": {"S": f"{CHAIN_PREFIX}{trail}"}}, "pk = :pk")
        ]

    def get(self, trail: str, account: str, region: str, kind: ChainKind = "regular") -> ChainHead | None:
        try:
            response = self._ddb.get_item(
                TableName=self.table, Key=chain_head_key(trail, account, region, kind), ConsistentRead=True
            )
        except ClientError as error:
            raise DigestStoreError(f"chain head read: {_code(error) or error}") from error
        return _head_from_item(response["Item"]) if "Item" in response else None

    def advance(self, head: ChainHead, *, trail_arn: str, home_region: str) -> bool:
        """Write `head` if the stored head still has ``sequence - 1`` (absent for sequence 1).
        False when another digester moved the chain first."""
        values = {
            "sequence": head.sequence,
            "bucket": head.bucket,
            "key": head.key,
            "startTime": format_time(head.start_time),
            "endTime": format_time(head.end_time),
            "signature": head.signature,
            "sha256": head.sha256,
            "fingerprint": head.fingerprint,
            "writtenAt": format_time(head.written_at),
            "trailArn": trail_arn,
            "homeRegion": home_region,
            "kind": head.kind,
            "account": head.account,
            "region": head.region,
        }
        if head.stops:
            values["stops"] = [format_time(stop) for stop in head.stops]
        item = {**chain_head_key(head.trail, head.account, head.region, head.kind), **_dump(values)}
        if head.sequence == 1:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "#sequence = :previous",
                "ExpressionAttributeNames": {"#sequence": "sequence"},
                "ExpressionAttributeValues": {":previous": {"N": str(head.sequence - 1)}},
            }
        try:
            self._ddb.put_item(TableName=self.table, Item=item, **condition)
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise DigestStoreError(f"chain head write {head.key}: {_code(error) or error}") from error
        return True

    def record_stop(self, head: ChainHead, stop: datetime) -> ChainHead | None:
        """Record a StopLogging moment on the chain head (``stops``, read by validate-logs), if
        the head is still `head`; the updated head, or None when another digester moved it."""
        if stop in head.stops:
            return head
        stops = (*head.stops, stop)
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=chain_head_key(head.trail, head.account, head.region, head.kind),
                UpdateExpression="SET stops = :stops",
                ConditionExpression="#sequence = :sequence",
                ExpressionAttributeNames={"#sequence": "sequence"},
                ExpressionAttributeValues={
                    ":stops": {"L": [{"S": format_time(moment)} for moment in stops]},
                    ":sequence": {"N": str(head.sequence)},
                },
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return None
            raise DigestStoreError(f"chain head stop {head.key}: {_code(error) or error}") from error
        return replace(head, stops=stops)


# -- public keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredKey:
    fingerprint: str
    der: bytes  # PKCS#1 RSAPublicKey DER
    key_arn: str
    validity_start: int  # epoch seconds
    validity_end: int


class PublicKeyRegistry:
    """One item per signing-key fingerprint; validity = [first covered time, last signature]."""

    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")

    def record_use(self, *, fingerprint: str, der: bytes, key_arn: str, start: datetime, end: datetime) -> None:
        """Register the key (first use) or extend its validity to cover [start, end]."""
        start_s, end_s = int(start.timestamp()), int(end.timestamp())
        key = {"pk": {"S": PUBLIC_KEY_PK}, "sk": {"S": fingerprint}}
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression=(
                    "SET #value = :value, keyArn = :arn, validityStart = if_not_exists(validityStart, :start), "
                    "validityEnd = :end"
                ),
                ConditionExpression="attribute_not_exists(validityEnd) OR validityEnd < :end",
                ExpressionAttributeNames={"#value": "value"},
                ExpressionAttributeValues={
                    ":value": {"B": der},
                    ":arn": {"S": key_arn},
                    ":start": {"N": str(start_s)},
                    ":end": {"N": str(end_s)},
                },
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise DigestStoreError(f"public key {fingerprint}: {_code(error) or error}") from error
        # A window older than the key's recorded start (catch-up after a key change): widen it.
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET validityStart = :start",
                ConditionExpression="validityStart > :start",
                ExpressionAttributeValues={":start": {"N": str(start_s)}},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise DigestStoreError(f"public key {fingerprint}: {_code(error) or error}") from error

    def all(self) -> list[RegisteredKey]:
        keys = []
        for item in _query(self._ddb, self.table, {":pk": {"S": PUBLIC_KEY_PK}}, "pk = :pk"):
            data = _load(item)
            keys.append(
                RegisteredKey(
                    fingerprint=str(data["sk"]),
                    der=bytes(data["value"]),
                    key_arn=str(data.get("keyArn", "")),
                    validity_start=int(data["validityStart"]),
                    validity_end=int(data["validityEnd"]),
                )
            )
        return sorted(keys, key=lambda k: (k.validity_start, k.fingerprint))

    def overlapping(self, start: int | None, end: int | None) -> list[RegisteredKey]:
        """Keys whose validity overlaps [start, end] (epoch seconds; None = unbounded)."""
        return [
            key
            for key in self.all()
            if (end is None or key.validity_start <= end) and (start is None or key.validity_end >= start)
        ]


# -- the digester's view of the delivery ledger ----------------------------------------------


class LedgerReader:
    """Reads a trail's ledger items of one delivery hour and marks the ones a digest lists."""

    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")

    def hour(self, trail: str, hour_start: datetime) -> list[LedgerFile]:
        pk = ledger_partition(trail, hour_start)
        files = []
        for item in _query(self._ddb, self.table, {":pk": {"S": pk}}, "pk = :pk"):
            data = _load(item)
            account, region, delivered_at, key = parse_ledger_sort_key(str(data["sk"]))
            recorded = data.get("recordedAt")
            files.append(
                LedgerFile(
                    pk=pk,
                    sk=str(data["sk"]),
                    account=account,
                    region=region,
                    delivered_at=delivered_at,
                    recorded_at=parse_iso_time(str(recorded)) if recorded else None,
                    entry=LogFileEntry(
                        bucket=str(data["bucket"]),
                        key=key,
                        sha256=str(data["sha256"]),
                        oldest_event_time=str(data["oldestEventTime"]),
                        newest_event_time=str(data["newestEventTime"]),
                    ),
                    digest_key=str(data["digestKey"]) if data.get("digestKey") else None,
                )
            )
        return files

    def mark(self, files: Iterable[LedgerFile], digest_key: str) -> None:
        """Record on each item the digest listing it (first digest wins; gone items skipped)."""
        for file in files:
            try:
                self._ddb.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": file.pk}, "sk": {"S": file.sk}},
                    UpdateExpression="SET digestKey = if_not_exists(digestKey, :key)",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":key": {"S": digest_key}},
                )
            except ClientError as error:
                if _code(error) != "ConditionalCheckFailedException":
                    raise DigestStoreError(f"ledger mark {file.entry.key}: {_code(error) or error}") from error


def _query(ddb: Any, table: str, values: dict[str, Any], condition: str) -> Iterator[dict[str, Any]]:
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ConsistentRead": True,
    }
    while True:
        try:
            response = ddb.query(**request)
        except ClientError as error:
            raise DigestStoreError(f"query {table}: {_code(error) or error}") from error
        yield from response.get("Items", [])
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def epoch(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp())
