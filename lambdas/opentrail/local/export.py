"""Copy a bucket (or a prefix of it) to a local directory in the bucket's key layout.

Each object's bytes land at ``<directory>/<key>``; next to it, ``<key>.metadata.json``
holds the object's properties in the shape ``aws s3api head-object`` prints
(``ContentLength``, ``ETag``, ``ContentType``, ``ServerSideEncryption``, ``SSEKMSKeyId``,
``BucketKeyEnabled``, ``Metadata``, ``LastModified`` as an ISO 8601 string, ...), so that
offline tools (and `aws cloudtrail validate-logs`-style checks) can read both.

`export_trail` adds what ``opentrail validate-logs --dir`` needs to check the copy offline,
read from the ledger table (the chain heads and the key registry live there, docs/integrity.md):

* ``public-keys/<fingerprint>.pem``: every digest signing key (PKCS#1 ``RSA PUBLIC KEY``), and
  ``public-keys/keys.json`` with each key's fingerprint and validity;
* ``chain-heads.json``: the chain-head items of every trail whose digests were exported
  (attributes as plain JSON values), so deleted newest digests are detected offline;
* ``export.json``: what was exported (bucket, prefix, time, counts).

The chain heads are read before the objects are copied, and the copy is cut at them: a digest
the digester writes during the export (newer than its chain's head) is left out, and a head's
digest written between the listing and the head read is fetched, so copy and heads agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

METADATA_SUFFIX = ".metadata.json"
PUBLIC_KEYS_DIR = "public-keys"
PUBLIC_KEYS_INDEX = "keys.json"
CHAIN_HEADS_FILE = "chain-heads.json"
MANIFEST_FILE = "export.json"
CHAIN_PARTITION = "DIGESTCHAIN#"
# head-object fields worth keeping, in the order the AWS CLI prints them.
_HEAD_FIELDS = (
    "AcceptRanges",
    "LastModified",
    "ContentLength",
    "ETag",
    "VersionId",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "ContentType",
    "Expires",
    "ServerSideEncryption",
    "Metadata",
    "SSEKMSKeyId",
    "BucketKeyEnabled",
    "StorageClass",
    "ObjectLockMode",
    "ObjectLockRetainUntilDate",
    "ObjectLockLegalHoldStatus",
    "ChecksumSHA256",
    "ChecksumCRC32",
)


@dataclass(frozen=True)
class ExportedObject:
    key: str
    path: Path
    bytes: int


def head_object_document(response: dict[str, Any]) -> dict[str, Any]:
    """head_object's (or get_object's) response as `aws s3api head-object` prints it."""
    document: dict[str, Any] = {}
    for name in _HEAD_FIELDS:
        if name not in response:
            continue
        value = response[name]
        document[name] = value.isoformat() if isinstance(value, datetime) else value
    document.setdefault("Metadata", {})
    return document


def local_path(directory: Path, key: str) -> Path:
    """Where `key` goes under `directory`; refuses keys that would escape it."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(part in ("..", ".") for part in parts):
        raise ValueError(f"object key {key!r} cannot be written under {directory}")
    return directory.joinpath(*parts)


def list_keys(s3_client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    return keys


def export_objects(s3_client: Any, bucket: str, directory: str | Path, keys: Iterable[str]) -> list[ExportedObject]:
    """Write each object to `directory`/<key> plus its ``.metadata.json``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    exported: list[ExportedObject] = []
    for key in keys:
        target = local_path(root, key)
        response = s3_client.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
        head = s3_client.head_object(Bucket=bucket, Key=key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        metadata = target.with_name(target.name + METADATA_SUFFIX)
        metadata.write_text(json.dumps(head_object_document(head), indent=4) + "\n", encoding="utf-8")
        exported.append(ExportedObject(key=key, path=target, bytes=len(body)))
    return exported


def export_bucket(s3_client: Any, bucket: str, directory: str | Path, prefix: str = "") -> list[ExportedObject]:
    """Write every object under `prefix` to `directory`/<key> plus its ``.metadata.json``."""
    return export_objects(s3_client, bucket, directory, list_keys(s3_client, bucket, prefix))


# -- with what validate-logs needs offline --------------------------------------------------


@dataclass
class TrailExport:
    """What `export_trail` wrote."""

    objects: list[ExportedObject] = field(default_factory=list)
    public_keys: list[dict[str, Any]] = field(default_factory=list)  # keys.json entries
    chain_heads: list[dict[str, Any]] = field(default_factory=list)
    trails: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # digests newer than their chain head

    @property
    def digests(self) -> int:
        return sum(1 for item in self.objects if "/CloudTrail-Digest/" in item.key)

    def describe(self) -> str:
        total = sum(item.bytes for item in self.objects)
        text = f"{len(self.objects)} objects ({total:,} bytes; {self.digests} digests)"
        if self.public_keys or self.chain_heads:
            text += f", {len(self.public_keys)} public key(s), {len(self.chain_heads)} chain head(s)"
        if self.skipped:
            text += f"; left out {len(self.skipped)} digest(s) written after the chain heads were read"
        return text


def digest_trails(keys: Iterable[str]) -> list[str]:
    """Names of the trails whose digests are among `keys`."""
    from opentrail.domain.digest import parse_digest_key

    names = set()
    for key in keys:
        parsed = parse_digest_key(key) if "/CloudTrail-Digest/" in key else None
        if parsed is not None:
            names.add(parsed.trail_name)
    return sorted(names)


def read_chain_heads(dynamodb: Any, table: str, trails: Sequence[str]) -> list[dict[str, Any]]:
    """The chain-head items of `trails` (``pk = DIGESTCHAIN#<trail>``), attributes as plain values."""
    items: list[dict[str, Any]] = []
    for trail in trails:
        pages = dynamodb.get_paginator("query").paginate(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"{CHAIN_PARTITION}{trail}"}},
            ConsistentRead=True,
        )
        for page in pages:
            for raw in page.get("Items", []):
                item = _plain_item(raw)
                item.setdefault("trail", trail)
                items.append(item)
    return items


def write_public_keys(dynamodb: Any, table: str, directory: Path) -> list[dict[str, Any]]:
    """``<fingerprint>.pem`` per registered signing key and ``keys.json`` (fingerprint, validity)."""
    from opentrail.adapters.digests import PublicKeyRegistry
    from opentrail.public_keys import pkcs1_pem

    keys = PublicKeyRegistry(table, client=dynamodb).all()
    if not keys:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for key in keys:
        (directory / f"{key.fingerprint}.pem").write_text(pkcs1_pem(key.der), encoding="ascii")
        index.append(
            {
                "fingerprint": key.fingerprint,
                "validityStart": _iso(key.validity_start),
                "validityEnd": _iso(key.validity_end),
                "validityStartEpoch": key.validity_start,
                "validityEndEpoch": key.validity_end,
                "keyArn": key.key_arn,
            }
        )
    (directory / PUBLIC_KEYS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def export_trail(
    s3_client: Any,
    bucket: str,
    directory: str | Path,
    prefix: str = "",
    *,
    dynamodb: Any = None,
    ledger_table: str | None = None,
    trails: Sequence[str] = (),
) -> TrailExport:
    """`export_bucket`, plus the public keys and chain heads from `ledger_table` (when given),
    so ``opentrail validate-logs --dir`` checks the copy offline (module docstring)."""
    root = Path(directory)
    result = TrailExport()
    keys = list_keys(s3_client, bucket, prefix)
    heads: list[dict[str, Any]] = []
    if ledger_table:
        if dynamodb is None:
            raise ValueError("a DynamoDB client is needed with a ledger table")
        result.trails = sorted(set(trails) | set(digest_trails(keys)))
        heads = read_chain_heads(dynamodb, ledger_table, result.trails)
        keys, result.skipped = _cut_at_heads(keys, heads, prefix)
    result.objects = export_objects(s3_client, bucket, root, keys)
    if ledger_table:
        result.public_keys = write_public_keys(dynamodb, ledger_table, root / PUBLIC_KEYS_DIR)
        result.chain_heads = heads
        (root / CHAIN_HEADS_FILE).write_text(json.dumps(heads, indent=2, default=str) + "\n", encoding="utf-8")
    manifest = {
        "bucket": bucket,
        "prefix": prefix,
        "exportedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "objects": len(result.objects),
        "digests": result.digests,
        "ledgerTable": ledger_table,
        "trails": result.trails,
        "publicKeys": [key["fingerprint"] for key in result.public_keys],
        "chainHeads": len(heads),
        "leftOut": result.skipped,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return result


def _cut_at_heads(keys: list[str], heads: Sequence[dict[str, Any]], prefix: str) -> tuple[list[str], list[str]]:
    """Drop regular digests newer than their chain's head; add head digests the listing missed."""
    from opentrail.domain.digest import parse_digest_key

    newest: dict[tuple[str, str, str], str] = {}
    for head in heads:
        if head.get("kind", "regular") == "regular" and head.get("key"):
            parsed = parse_digest_key(str(head["key"]))
            if parsed is not None:
                newest[(parsed.trail_name, parsed.account_id, parsed.source_region)] = str(head["key"])
    kept, skipped = [], []
    for key in keys:
        parsed = parse_digest_key(key) if "/CloudTrail-Digest/" in key else None
        if parsed is not None and not parsed.backfill:
            head_key = newest.get((parsed.trail_name, parsed.account_id, parsed.source_region))
            if head_key is not None and key > head_key:
                skipped.append(key)
                continue
        kept.append(key)
    listed = set(keys)
    kept.extend(key for key in newest.values() if key.startswith(prefix) and key not in listed)
    return kept, skipped


def _plain_item(raw: dict[str, Any]) -> dict[str, Any]:
    from decimal import Decimal

    from boto3.dynamodb.types import Binary, TypeDeserializer

    deserializer = TypeDeserializer()
    item: dict[str, Any] = {}
    for name, value in raw.items():
        plain = deserializer.deserialize(value)
        if isinstance(plain, Decimal):
            plain = int(plain) if plain == plain.to_integral_value() else float(plain)
        elif isinstance(plain, Binary):
            plain = bytes(plain.value).hex()
        item[name] = plain
    return item


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
