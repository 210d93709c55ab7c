"""Test support for log file integrity: a CloudTrail-style digest chain writer (spec §3) with a
local RSA key, an in-memory bucket that can be tampered with and then written to S3 or to a
directory copy (export layout), and a tiny CloudTrail endpoint (ListPublicKeys, DescribeTrails).

Used by tests/integration/test_validate_logs.py, tests/e2e/test_aws_cli_validate.py and
benchmarks/validate_bench.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from opentrail.domain.digest import (
    LogFileEntry,
    PreviousDigest,
    build_digest,
    compress,
    digest_key,
    fingerprint,
    serialize,
    sha256_hex,
    string_to_sign,
)
from opentrail.domain.log_file import log_file_key, unique_string

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / ".venv-tools" / "bin" / "aws"
ACCOUNT = "123456789012"
REGION = "us-east-1"
TRAIL = "audit"
ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{TRAIL}"
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class SigningKey:
    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self.private = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.der = self.private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        self.fingerprint = fingerprint(self.der)

    @property
    def value(self) -> str:
        return base64.b64encode(self.der).decode()

    def pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> str:
        return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()


@dataclass
class Obj:
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Chain:
    """An in-memory bucket holding a digest chain and its log files."""

    bucket: str
    keys: list[SigningKey]
    objects: dict[str, Obj] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)  # regular digest keys, oldest first
    logs: list[str] = field(default_factory=list)
    prefix: str | None = None
    _head: PreviousDigest | None = None
    _counter: int = 0

    # -- writing

    def log_file(self, delivered_at: datetime, records: int = 3, size: int = 0) -> LogFileEntry:
        self._counter += 1
        key = log_file_key(
            account_id=ACCOUNT,
            region=REGION,
            delivered_at=delivered_at,
            unique=unique_string(f"{self.bucket}/{self._counter}"),
            prefix=self.prefix,
        )
        events = []
        for number in range(records):
            at = (delivered_at - timedelta(minutes=1, seconds=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
            events.append(
                {
                    "eventVersion": "1.11",
                    "eventTime": at,
                    "eventSource": "s3.amazonaws.com",
                    "eventName": "GetObject",
                    "awsRegion": REGION,
                    "eventID": f"{self._counter:08d}-{number:06d}",
                    "requestParameters": {"padding": "x" * size} if size else None,
                }
            )
        raw = json.dumps({"Records": events}, separators=(",", ":")).encode()
        self.objects[key] = Obj(gzip.compress(raw, mtime=0))
        self.logs.append(key)
        times = sorted(event["eventTime"] for event in events)
        return LogFileEntry(self.bucket, key, sha256_hex(raw), times[0], times[-1])

    def digest(
        self,
        start: datetime,
        files: Sequence[LogFileEntry] = (),
        *,
        key_index: int = -1,
        link: bool = True,
        backfill: bool = False,
        end: datetime | None = None,
    ) -> str:
        end = end or start + HOUR
        signer = self.keys[key_index]
        key = digest_key(
            account_id=ACCOUNT,
            source_region=REGION,
            trail_name=TRAIL,
            home_region=REGION,
            end_time=end,
            prefix=self.prefix,
            backfill=backfill,
        )
        previous = self._head if link and not backfill else None
        body = build_digest(
            account_id=ACCOUNT,
            start_time=start,
            end_time=end,
            bucket=self.bucket,
            key=key,
            fingerprint=signer.fingerprint,
            log_files=files,
            previous=previous,
        )
        raw = serialize(body)
        signature = signer.sign(string_to_sign(body, raw))
        metadata = {"signature": signature, "signature-algorithm": "SHA256withRSA"}
        if backfill:
            metadata["backfill-generation-timestamp"] = (end + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.objects[key] = Obj(compress(raw), metadata)
        if not backfill:
            self.digests.append(key)
            self._head = PreviousDigest(self.bucket, key, sha256_hex(raw), signature)
        return key

    def hours(self, files_per_hour: Sequence[int], *, start: datetime = T0, records: int = 3, size: int = 0) -> None:
        """One digest per hour from `start`, hour i listing files_per_hour[i] log files delivered in it."""
        for index, count in enumerate(files_per_hour):
            hour = start + index * HOUR
            step = 60 // (count + 1)
            files = [self.log_file(hour + timedelta(minutes=step * (n + 1)), records, size) for n in range(count)]
            self.digest(hour, files)

    # -- reading back, tampering

    def body(self, key: str) -> dict[str, Any]:
        return dict(json.loads(gzip.decompress(self.objects[key].body)))

    def resign(self, key: str, body: dict[str, Any], signer: SigningKey | None = None) -> None:
        """Replace a digest's body and sign it (with `signer`, default the chain's current key)."""
        signer = signer or self.keys[-1]
        raw = serialize(body)
        metadata = dict(self.objects[key].metadata)
        metadata["signature"] = signer.sign(string_to_sign(body, raw))
        self.objects[key] = Obj(compress(raw), metadata)

    def head_item(self, key: str | None = None, sequence: int | None = None) -> dict[str, Any]:
        """The chain-head item (ledger table shape, plain values) naming `key` (default: the newest)."""
        key = key or self.digests[-1]
        body = self.body(key)
        return {
            "pk": f"DIGESTCHAIN#{TRAIL}",
            "sk": f"{ACCOUNT}#{REGION}#regular",
            "sequence": sequence if sequence is not None else self.digests.index(key) + 1,
            "bucket": self.bucket,
            "key": key,
            "startTime": body["digestStartTime"],
            "endTime": body["digestEndTime"],
            "signature": self.objects[key].metadata["signature"],
            "sha256": sha256_hex(gzip.decompress(self.objects[key].body)),
            "fingerprint": body["digestPublicKeyFingerprint"],
            "trailArn": ARN,
            "homeRegion": REGION,
            "kind": "regular",
            "account": ACCOUNT,
            "region": REGION,
        }

    # -- materializing

    def to_s3(self, client: Any) -> None:
        client.create_bucket(Bucket=self.bucket)
        for key, obj in sorted(self.objects.items()):
            client.put_object(Bucket=self.bucket, Key=key, Body=obj.body, Metadata=obj.metadata)

    def to_directory(self, root: Path, *, head: dict[str, Any] | None = None) -> Path:
        """The export layout: <key>, <key>.metadata.json (head-object shape), public-keys/*.pem."""
        for key, obj in self.objects.items():
            path = root.joinpath(*key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(obj.body)
            document = {"ContentLength": len(obj.body), "Metadata": obj.metadata}
            path.with_name(path.name + ".metadata.json").write_text(json.dumps(document, indent=4))
        keys = root / "public-keys"
        keys.mkdir(parents=True, exist_ok=True)
        for signer in self.keys:
            (keys / f"{signer.fingerprint}.pem").write_bytes(signer.pem())
        if head is not None:
            (root / "chain-heads.json").write_text(json.dumps([head], indent=2))
        return root


# -- a CloudTrail endpoint for the AWS CLI: ListPublicKeys and DescribeTrails ------------------


class CloudTrailStub:
    def __init__(self, keys: Sequence[SigningKey], trails: Sequence[dict[str, Any]] = ()) -> None:
        self.keys = list(keys)
        self.trails = list(trails)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                stub.requests.append((target, body))
                if target == "ListPublicKeys":
                    payload: dict[str, Any] = {
                        "PublicKeyList": [
                            {
                                "Value": key.value,
                                "ValidityStartTime": 0,
                                "ValidityEndTime": 4102444800,
                                "Fingerprint": key.fingerprint,
                            }
                            for key in stub.keys
                        ]
                    }
                elif target == "DescribeTrails":
                    payload = {"trailList": stub.trails}
                else:
                    payload = {}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    @property
    def invalid(self) -> list[str]:
        return [line for line in self.err.splitlines() if "\tINVALID: " in line]

    @property
    def findings(self) -> list[str]:
        lines = self.out.split("\nOpenTrail checks:\n", 1)
        return [line for line in lines[1].splitlines() if "\tINVALID: " in line] if len(lines) == 2 else []


def run_aws_cli(arguments: Sequence[str], *, s3_url: str, timeout: float = 120) -> Run:
    """The real `aws cloudtrail validate-logs` (awscli in .venv-tools), fake credentials."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") or name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": s3_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    completed = subprocess.run(
        [str(AWS), "cloudtrail", "validate-logs", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def iter_hours(start: datetime, count: int) -> Iterator[datetime]:
    for index in range(count):
        yield start + index * HOUR
