"""A realistic record generator for benchmarks.

Templates are the 310 real (anonymised) CloudTrail management events in
`/work/shared/datasets/stratus-red-team-detonation-logs` (or `$OPENTRAIL_BENCH_DATASET`),
rotated round-robin with fresh eventID, requestID and eventTime, and moved into one
account and region (a deployment captures one account's activity), so compression is
measured on what a real trail carries rather than on identical copies.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
DATASET_DIR = Path(os.environ.get("OPENTRAIL_BENCH_DATASET", "/work/shared/datasets/stratus-red-team-detonation-logs"))
_FALLBACK = {
    "eventVersion": "1.10",
    "userIdentity": {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLEPRINCIPAL1",
        "arn": "arn:aws:iam::123456789012:user/alice",
        "accountId": "123456789012",
        "accessKeyId": "AKIAEXAMPLEKEY000001",
        "userName": "alice",
    },
    "eventSource": "s3.amazonaws.com",
    "eventName": "ListBuckets",
    "awsRegion": "us-east-1",
    "sourceIPAddress": "203.0.113.10",
    "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023 prompt/off command/s3.ls",
    "requestParameters": {"Host": "s3.us-east-1.amazonaws.com"},
    "responseElements": None,
    "readOnly": True,
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "123456789012",
    "eventCategory": "Management",
    "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
}


def load_templates(directory: Path = DATASET_DIR) -> list[dict[str, Any]]:
    """The dataset's records moved into ACCOUNT_ID / REGION (one synthetic record if absent)."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = json.loads(path.read_text())
        items = data.get("Records", []) if isinstance(data, dict) else data
        for record in items:
            old_account = record.get("recipientAccountId", "")
            old_region = record.get("awsRegion", "")
            text = json.dumps(record)
            if old_account:
                text = text.replace(old_account, ACCOUNT_ID)
            if old_region:
                text = text.replace(old_region, REGION)
            records.append(json.loads(text))
    records.sort(key=lambda r: (r.get("eventTime", ""), r.get("eventID", "")))
    return records or [_FALLBACK]


class Workload:
    """Endless stream of fresh CloudTrail records; deterministic for a given seed."""

    def __init__(self, *, seed: int = 7, start: datetime | None = None, events_per_second: float = 200.0) -> None:
        self.templates = load_templates()
        self._random = random.Random(seed)
        self._moment = start or datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
        self._step = timedelta(seconds=1 / events_per_second)
        self._index = 0

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def records(self, count: int) -> list[dict[str, Any]]:
        return [next(self) for _ in range(count)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        template = self.templates[self._index % len(self.templates)]
        self._index += 1
        self._moment += self._step
        record = copy.deepcopy(template)
        record["eventID"] = self._uuid()
        record["eventTime"] = self._moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if "requestID" in record:
            record["requestID"] = self._uuid()
        return record

    def audit_events(self, count: int) -> list[dict[str, str]]:
        """PutAuditEvents entries (spec §6 eventData schema) built from the same records."""
        entries = []
        for _ in range(count):
            record = next(self)
            identity = record.get("userIdentity") or {}
            data: dict[str, Any] = {
                "version": "1.0",
                "userIdentity": {
                    "type": identity.get("type", "IAMUser"),
                    "principalId": identity.get("principalId", "unknown"),
                    "details": {k: v for k, v in identity.items() if k not in ("type", "principalId")},
                },
                "userAgent": record.get("userAgent", "app/1.0"),
                # PutAuditEvents refuses AWS event sources (InvalidEventSource).
                "eventSource": record["eventSource"].replace(".amazonaws.com", ".example.com"),
                "eventName": record["eventName"],
                "eventTime": record["eventTime"],
                "UID": record.get("requestID") or record["eventID"],
                "requestParameters": record.get("requestParameters"),
                "responseElements": record.get("responseElements"),
                "sourceIPAddress": _ip(record.get("sourceIPAddress")),
                "recipientAccountId": ACCOUNT_ID,
            }
            if record.get("errorCode"):
                data["errorCode"] = record["errorCode"][:256]
                data["errorMessage"] = (record.get("errorMessage") or record["errorCode"])[:256]
            if record.get("additionalEventData"):
                data["additionalEventData"] = record["additionalEventData"]
            data = {k: v for k, v in data.items() if v is not None}
            entries.append({"id": str(self._index), "eventData": json.dumps(data, separators=(",", ":"))})
        return entries


def _ip(value: Any) -> str | None:
    """A valid IP for PutAuditEvents (the dataset's anonymiser writes some like ``08.1.250.216``)."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        digest = hashlib.sha256(value.encode()).digest()
        return f"198.51.{digest[0]}.{digest[1]}"
