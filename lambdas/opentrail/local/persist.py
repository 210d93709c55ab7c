"""Save the local runtime's AWS state to a directory and load it back (`opentrail local --state-dir`).

moto keeps everything in memory and has no snapshot facility that survives a restart
(its request *recorder* replays raw requests, which breaks on random ids such as KMS key
ids and on SQS receives), so OpenTrail saves the data itself, through the AWS APIs:

``<state-dir>/``
    ``state.json``                         what was saved, when, for which account and region
    ``s3/<bucket>/<key>``                  every current object version, in the bucket's key layout,
    ``s3/<bucket>/<key>.metadata.json``    with its properties as `aws s3api head-object` prints them
    ``dynamodb/<table>.schema.json``       key schema, indexes, TTL attribute
    ``dynamodb/<table>.jsonl``             every item, one per line (DynamoDB JSON; binary as base64)
    ``sqs/<queue>.jsonl``                  messages left in the queues (saved on shutdown only)

On start the runtime provisions the stack's resources as usual, then `load_state` creates any
bucket or table that provisioning did not, and puts the objects, items and messages back.

Limits (see docs/local.md): only current object versions are kept (the bucket is versioned,
older versions are not); KMS keys are created afresh on every start (moto cannot import key
material), so SSE-KMS key ids recorded on old objects name a key that no longer exists;
SQS messages are saved only on a clean shutdown, and their receive counts start again.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentrail.local.export import METADATA_SUFFIX, head_object_document, local_path

STATE_FILE = "state.json"
FORMAT_VERSION = 1
_BATCH_WRITE_ITEMS = 25


@dataclass
class SaveSummary:
    objects_written: int = 0
    objects_kept: int = 0
    objects_removed: int = 0
    items: int = 0
    messages: int = 0


@dataclass
class LoadSummary:
    buckets: list[str] = field(default_factory=list)
    objects: int = 0
    tables: list[str] = field(default_factory=list)
    items: int = 0
    messages: int = 0

    def describe(self) -> str:
        return (
            f"{self.objects:,} objects in {len(self.buckets)} buckets, {self.items:,} items in "
            f"{len(self.tables)} tables, {self.messages:,} queued messages"
        )


# -- saving ---------------------------------------------------------------------------------


def save_state(
    directory: Path,
    *,
    s3: Any,
    dynamodb: Any,
    sqs: Any | None = None,
    account_id: str,
    region: str,
) -> SaveSummary:
    """Write S3 objects (incrementally, by ETag), DynamoDB tables and, with `sqs`, every
    queued message (which leaves them in flight: call it only on shutdown) to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = SaveSummary()
    buckets = [bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])]
    for bucket in buckets:
        _save_bucket(s3, bucket, directory / "s3" / bucket, summary)
    _remove_stale_dirs(directory / "s3", keep=set(buckets))
    tables = list(_table_names(dynamodb))
    (directory / "dynamodb").mkdir(exist_ok=True)
    for table in tables:
        summary.items += _save_table(dynamodb, table, directory / "dynamodb")
    for path in (directory / "dynamodb").glob("*.jsonl"):
        if path.stem not in tables:
            path.unlink()
            path.with_name(f"{path.stem}.schema.json").unlink(missing_ok=True)
    if sqs is not None:
        summary.messages = _save_queues(sqs, directory / "sqs")
    _write_atomically(
        directory / STATE_FILE,
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "savedAt": datetime.now(UTC).isoformat(),
                "accountId": account_id,
                "region": region,
                "buckets": buckets,
                "tables": tables,
            },
            indent=2,
        ),
    )
    return summary


def _save_bucket(s3: Any, bucket: str, root: Path, summary: SaveSummary) -> None:
    root.mkdir(parents=True, exist_ok=True)
    seen: set[Path] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue
            target = local_path(root, key)
            metadata_path = target.with_name(target.name + METADATA_SUFFIX)
            seen.update((target, metadata_path))
            if target.exists() and _saved_etag(metadata_path) == item.get("ETag"):
                summary.objects_kept += 1
                continue
            response = s3.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, body)
            _write_atomically(metadata_path, json.dumps(head_object_document(response), indent=4) + "\n")
            summary.objects_written += 1
    for path in sorted(root.rglob("*"), reverse=True):  # files that are no longer in the bucket
        if path.is_file() and path not in seen:
            path.unlink()
            if not path.name.endswith(METADATA_SUFFIX):
                summary.objects_removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _saved_etag(metadata_path: Path) -> str | None:
    try:
        return str(json.loads(metadata_path.read_text(encoding="utf-8")).get("ETag"))
    except (OSError, ValueError):
        return None


def _remove_stale_dirs(root: Path, *, keep: set[str]) -> None:
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


def _table_names(dynamodb: Any) -> Iterator[str]:
    for page in dynamodb.get_paginator("list_tables").paginate():
        yield from page.get("TableNames", [])


def _save_table(dynamodb: Any, table: str, root: Path) -> int:
    description = dynamodb.describe_table(TableName=table)["Table"]
    schema: dict[str, Any] = {
        "TableName": table,
        "KeySchema": description["KeySchema"],
        "AttributeDefinitions": description["AttributeDefinitions"],
    }
    for name in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        indexes = [
            {"IndexName": index["IndexName"], "KeySchema": index["KeySchema"], "Projection": index["Projection"]}
            for index in description.get(name, [])
        ]
        if indexes:
            schema[name] = indexes
    ttl = dynamodb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName"):
        schema["TimeToLiveAttribute"] = ttl["AttributeName"]
    _write_atomically(root / f"{table}.schema.json", json.dumps(schema, indent=2) + "\n")
    count = 0
    lines: list[str] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page.get("Items", []):
            lines.append(json.dumps(_encode_item(item), separators=(",", ":"), sort_keys=True))
            count += 1
    _write_atomically(root / f"{table}.jsonl", "".join(f"{line}\n" for line in lines))
    return count


def _save_queues(sqs: Any, root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.jsonl"):
        old.unlink()
    total = 0
    for url in sqs.list_queues().get("QueueUrls", []):
        name = url.rstrip("/").rsplit("/", 1)[-1]
        lines: list[str] = []
        while True:  # each receive hides what it returns: the loop ends when all are in flight
            reply = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=3600,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
            )
            messages = reply.get("Messages", [])
            if not messages:
                break
            for message in messages:
                attributes = {
                    attr_name: {key: value for key, value in attr.items() if key in ("DataType", "StringValue")}
                    for attr_name, attr in message.get("MessageAttributes", {}).items()
                    if "StringValue" in attr
                }
                lines.append(json.dumps({"Body": message["Body"], "MessageAttributes": attributes}))
        if lines:
            _write_atomically(root / f"{name}.jsonl", "".join(f"{line}\n" for line in lines))
            total += len(lines)
    return total


# -- loading --------------------------------------------------------------------------------


def has_state(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file()


def load_state(directory: Path, *, s3: Any, dynamodb: Any, sqs: Any, region: str) -> LoadSummary:
    """Put a saved state back into (freshly provisioned) moto; creates missing buckets and tables."""
    summary = LoadSummary()
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{directory / STATE_FILE}: unknown state format {state.get('format')!r}")
    existing_buckets = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in state.get("buckets", []):
        root = directory / "s3" / bucket
        if bucket not in existing_buckets:
            if region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        summary.buckets.append(bucket)
        if root.is_dir():
            summary.objects += _load_bucket(s3, bucket, root)
    existing_tables = set(_table_names(dynamodb))
    for table in state.get("tables", []):
        schema_path = directory / "dynamodb" / f"{table}.schema.json"
        if table not in existing_tables and schema_path.is_file():
            _create_table(dynamodb, json.loads(schema_path.read_text(encoding="utf-8")))
        summary.tables.append(table)
        summary.items += _load_table(dynamodb, table, directory / "dynamodb" / f"{table}.jsonl")
    summary.messages = _load_queues(sqs, directory / "sqs")
    return summary


def _load_bucket(s3: Any, bucket: str, root: Path) -> int:
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.endswith(METADATA_SUFFIX):
            continue
        key = path.relative_to(root).as_posix()
        head: dict[str, Any] = {}
        metadata_path = path.with_name(path.name + METADATA_SUFFIX)
        if metadata_path.is_file():
            head = json.loads(metadata_path.read_text(encoding="utf-8"))
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": path.read_bytes()}
        for name in ("ContentType", "ContentEncoding", "CacheControl", "ContentDisposition", "ContentLanguage"):
            if head.get(name):
                arguments[name] = head[name]
        if head.get("Metadata"):
            arguments["Metadata"] = head["Metadata"]
        s3.put_object(**arguments)
        count += 1
    return count


def _create_table(dynamodb: Any, schema: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "TableName": schema["TableName"],
        "KeySchema": schema["KeySchema"],
        "AttributeDefinitions": schema["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    for name in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if schema.get(name):
            arguments[name] = schema[name]
    dynamodb.create_table(**arguments)
    if schema.get("TimeToLiveAttribute"):
        dynamodb.update_time_to_live(
            TableName=schema["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": schema["TimeToLiveAttribute"]},
        )


def _load_table(dynamodb: Any, table: str, path: Path) -> int:
    if not path.is_file():
        return 0
    count = 0
    batch: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            batch.append({"PutRequest": {"Item": _decode_item(json.loads(line))}})
            if len(batch) == _BATCH_WRITE_ITEMS:
                count += _batch_write(dynamodb, table, batch)
                batch = []
    if batch:
        count += _batch_write(dynamodb, table, batch)
    return count


def _batch_write(dynamodb: Any, table: str, requests: list[dict[str, Any]]) -> int:
    pending = {table: requests}
    for _ in range(10):
        reply = dynamodb.batch_write_item(RequestItems=pending)
        pending = reply.get("UnprocessedItems") or {}
        if not pending:
            return len(requests)
    raise RuntimeError(f"DynamoDB table {table}: items left unprocessed while loading the saved state")


def _load_queues(sqs: Any, root: Path) -> int:
    if not root.is_dir():
        return 0
    urls = {url.rstrip("/").rsplit("/", 1)[-1]: url for url in sqs.list_queues().get("QueueUrls", [])}
    total = 0
    for path in sorted(root.glob("*.jsonl")):
        url = urls.get(path.stem)
        if url is None:
            continue
        entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for start in range(0, len(entries), 10):
            chunk = entries[start : start + 10]
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(index), "MessageBody": entry["Body"], "MessageAttributes": entry["MessageAttributes"]}
                    if entry.get("MessageAttributes")
                    else {"Id": str(index), "MessageBody": entry["Body"]}
                    for index, entry in enumerate(chunk)
                ],
            )
        total += len(entries)
    return total


# -- DynamoDB JSON with binary values -------------------------------------------------------


def _encode_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _encode_value(value) for name, value in item.items()}


def _encode_value(value: dict[str, Any]) -> dict[str, Any]:
    [(kind, inner)] = value.items()
    if kind == "B":
        return {"B": base64.b64encode(bytes(inner)).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(bytes(part)).decode("ascii") for part in inner]}
    if kind == "M":
        return {"M": _encode_item(inner)}
    if kind == "L":
        return {"L": [_encode_value(part) for part in inner]}
    return value


def _decode_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _decode_value(value) for name, value in item.items()}


def _decode_value(value: dict[str, Any]) -> dict[str, Any]:
    [(kind, inner)] = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(part) for part in inner]}
    if kind == "M":
        return {"M": _decode_item(inner)}
    if kind == "L":
        return {"L": [_decode_value(part) for part in inner]}
    return value


def _write_atomically(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        temporary.write_text(data, encoding="utf-8")
    else:
        temporary.write_bytes(data)
    os.replace(temporary, path)
