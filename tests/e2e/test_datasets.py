"""Every real CloudTrail record in ../shared/datasets goes through capture and comes out of S3
with all its fields intact (eventTime already canonical in these files)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail.adapters.buffer import Buffer
from opentrail.handlers import batcher
from opentrail.local.context import LocalContext
from opentrail.producer import emit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALL_EVENTS_TRAIL = json.dumps(
    [
        {
            "Name": "everything",
            "EventSelectors": [{"DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}]}],
        }
    ]
)
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def dataset_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted((DATASETS / "stratus-red-team-detonation-logs").glob("*.json")):
        records.extend(json.loads(path.read_text()))
    for path in sorted((DATASETS / "otrf-aws-cloud-bank-breach-s3" / "normalized").glob("*.json.gz")):
        records.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return records


def delivered_records(bucket: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    s3 = boto3.client("s3")
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for record in json.loads(gzip.decompress(body))["Records"]:
                found.setdefault(record["eventID"], []).append((item["Key"], record))
    return found


@pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets is not beside the repository")
def test_every_dataset_record_survives_capture_and_delivery(resources: Any) -> None:
    originals = dataset_records()
    assert len(originals) == 413

    buffer = Buffer(resources.buffer_queue_url, dead_letter_queue_url=resources.dead_letter_queue_url)
    event_ids = emit(originals, buffer=buffer, clock=lambda: NOW, account_id=resources.account_id, region="us-east-1")
    assert event_ids == [record["eventID"] for record in originals]

    summary = batcher.handler(
        {"action": "flush"},
        LocalContext(timeout_seconds=300),
        buffer=buffer,
        # the default trail plus all S3 data events (the OTRF breach has GetObject/ListObjects)
        settings=resources.batcher_settings(receive_wait_seconds=0, trails=ALL_EVENTS_TRAIL),
        clock=lambda: NOW,
    )
    assert summary["records"] == len(originals)

    delivered = delivered_records(resources.log_bucket)
    assert len(delivered) == len(originals)
    for original in originals:
        copies = delivered[original["eventID"]]
        assert len(copies) == 1, f"{original['eventID']} delivered {len(copies)} times"
        key, record = copies[0]
        for field, value in original.items():
            assert record[field] == value, f"{original['eventID']}: {field} changed"
        account, region = original["recipientAccountId"], original["awsRegion"]
        assert key.startswith(f"AWSLogs/{account}/CloudTrail/{region}/2026/11/23/{account}_CloudTrail_{region}_")
