"""Copy a bucket (or a prefix of it) to a local directory in the bucket's key layout.

Each object's bytes land at ``<directory>/<key>``; next to it, ``<key>.metadata.json``
holds the object's properties in the shape ``aws s3api head-object`` prints
(``ContentLength``, ``ETag``, ``ContentType``, ``ServerSideEncryption``, ``SSEKMSKeyId``,
``BucketKeyEnabled``, ``Metadata``, ``LastModified`` as an ISO 8601 string, ...), so that
offline tools (and `aws cloudtrail validate-logs`-style checks) can read both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

METADATA_SUFFIX = ".metadata.json"
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


def export_bucket(s3_client: Any, bucket: str, directory: str | Path, prefix: str = "") -> list[ExportedObject]:
    """Write every object under `prefix` to `directory`/<key> plus its ``.metadata.json``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    exported: list[ExportedObject] = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue  # a "folder" placeholder
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
