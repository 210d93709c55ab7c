"""Log file validation throughput: `opentrail validate-logs` beside `aws cloudtrail validate-logs`.

    .venv/bin/python benchmarks/validate_bench.py                 # 24 h x 12 files x ~2 MB inflated
    .venv/bin/python benchmarks/validate_bench.py --files-per-hour 4 --records 500   # quick

Generates a signed digest chain (24 hourly digests, local RSA key) and its log files, then times:

* hashing only, on local files: the AWS CLI's own `_download_log` (awscli 1.46.3, run in
  .venv-tools, fed local files through a stub S3 client: 2 KiB reads, one file at a time) vs
  OpenTrail's `hash_log_stream` (1 MiB chunks) on a thread pool;
* whole command: `opentrail validate-logs --dir` (directory copy), `opentrail validate-logs` on S3
  (moto server on 127.0.0.1) and `aws cloudtrail validate-logs` on the same moto server. The
  moto server costs the same for both S3 runs; the hashing-only rows compare the code paths.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]

from opentrail.domain.digest import LogFileEntry, sha256_hex  # noqa: E402
from opentrail.domain.log_file import log_file_key, unique_string  # noqa: E402
from opentrail.domain.validation import hash_log_stream  # noqa: E402
from opentrail.validate_logs import Options, run  # noqa: E402
from tests.integration.chain_builder import (  # noqa: E402
    ACCOUNT,
    ARN,
    AWS,
    REGION,
    T0,
    Chain,
    Obj,
    SigningKey,
    run_aws_cli,
)

_CLI_HASH = r"""
import sys, time, json
from awscli.customizations.cloudtrail.validation import CloudTrailValidateLogs
paths = json.loads(sys.stdin.read())
class Body:
    def __init__(self, path): self.f = open(path, "rb")
    def read(self, n): return self.f.read(n)
class Client:
    def get_object(self, Bucket, Key): return {"Body": Body(Key)}
class Provider:
    def get_client(self, bucket): return Client()
command = CloudTrailValidateLogs.__new__(CloudTrailValidateLogs)
command.s3_client_provider = Provider(); command.is_verbose = False
command._valid_logs = command._invalid_logs = 0; command._is_last_status_double_space = True
started = time.perf_counter()
for path, sha in paths:
    command._download_log({"s3Bucket": "b", "s3Object": path, "hashValue": sha})
print(json.dumps({"seconds": time.perf_counter() - started, "valid": command._valid_logs}))
"""


def _record(rng: random.Random, at: str) -> dict[str, object]:
    return {
        "eventVersion": "1.11",
        "userIdentity": {"type": "AssumedRole", "principalId": f"AROA{rng.getrandbits(64):016X}:session",
                         "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/app/{rng.getrandbits(32):08x}",
                         "accountId": ACCOUNT, "accessKeyId": f"ASIA{rng.getrandbits(64):016X}"},
        "eventTime": at, "eventSource": "s3.amazonaws.com", "eventName": rng.choice(["GetObject", "PutObject"]),
        "awsRegion": REGION, "sourceIPAddress": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "userAgent": "aws-sdk-java/2.20.1",
        "requestParameters": {"bucketName": "data", "key": f"{rng.getrandbits(96):024x}"},
        "responseElements": None, "requestID": f"{rng.getrandbits(64):016X}", "eventID": f"{rng.getrandbits(128):032x}",
        "readOnly": True, "eventType": "AwsApiCall", "managementEvent": False, "recipientAccountId": ACCOUNT,
    }  # fmt: skip


def build(files_per_hour: int, records: int, hours: int) -> Chain:
    import gzip

    rng = random.Random(7)
    chain = Chain("bench-bucket", [SigningKey()])
    for hour in range(hours):
        start = T0 + timedelta(hours=hour)
        entries = []
        for n in range(files_per_hour):
            delivered = start + timedelta(minutes=(n * 60) // files_per_hour + 1)
            at = delivered.strftime("%Y-%m-%dT%H:%M:%SZ")
            raw = json.dumps({"Records": [_record(rng, at) for _ in range(records)]}, separators=(",", ":")).encode()
            key = log_file_key(
                account_id=ACCOUNT, region=REGION, delivered_at=delivered, unique=unique_string(f"{hour}/{n}")
            )
            chain.objects[key] = Obj(gzip.compress(raw, compresslevel=6, mtime=0))
            chain.logs.append(key)
            entries.append(LogFileEntry(chain.bucket, key, sha256_hex(raw), at, at))
        chain.digest(start, entries)
    return chain


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _slow_server(base: type, delay: float) -> type:
    """A ThreadedMotoServer class whose every request first waits `delay` seconds (threaded:
    concurrent requests wait side by side, as round trips to S3 do)."""
    if not delay:
        return base
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class SlowServer(base):  # type: ignore[misc,valid-type]
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)

            def slow(environ: dict[str, object], start_response: object) -> object:
                time.sleep(delay)
                return app(environ, start_response)

            self._server = make_server(self._ip_address, self._port, slow, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SlowServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--files-per-hour", type=int, default=12)
    parser.add_argument("--records", type=int, default=2500, help="records per log file (~0.8 KB each)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--no-s3", action="store_true", help="skip the moto-server runs")
    parser.add_argument(
        "--s3-latency-ms",
        type=float,
        default=0.0,
        help="delay every moto-server request by this much, as a network round trip to S3 would (e.g. 30)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    chain = build(args.files_per_hour, args.records, args.hours)
    with tempfile.TemporaryDirectory() as tmp:
        root = chain.to_directory(Path(tmp) / "copy")
        listed = [
            (str(root.joinpath(*e["s3Object"].split("/"))), e["hashValue"])
            for d in chain.digests
            for e in chain.body(d)["logFiles"]
        ]
        compressed = sum(os.path.getsize(p) for p, _ in listed)
        inflated = sum(len(__import__("gzip").decompress(chain.objects[k].body)) for k in chain.logs)
        files = len(listed)
        print(f"data: {args.hours} digests, {files} log files, {compressed / 1e6:.1f} MB gzip, "
              f"{inflated / 1e6:.1f} MB inflated (built in {time.perf_counter() - started:.1f} s); "
              f"{os.cpu_count()} CPUs, {args.workers} workers")  # fmt: skip
        rows: list[tuple[str, float]] = []

        # hashing only: the AWS CLI's _download_log vs ours
        if (ROOT / ".venv-tools" / "bin" / "python").exists():
            out = subprocess.run([str(ROOT / ".venv-tools/bin/python"), "-c", _CLI_HASH], input=json.dumps(listed),
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            result = json.loads(out)
            assert result["valid"] == files, result
            rows.append(("hash only: AWS CLI _download_log (2 KiB reads, serial)", result["seconds"]))

        def ours_hash(item: tuple[str, str]) -> str:
            with open(item[0], "rb") as handle:
                return hash_log_stream(iter(lambda: handle.read(1 << 20), b""), item[1]).outcome

        t = time.perf_counter()
        assert all(ours_hash(i) == "valid" for i in listed)
        rows.append(("hash only: OpenTrail hash_log_stream, 1 worker", time.perf_counter() - t))
        t = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            assert all(o == "valid" for o in pool.map(ours_hash, listed))
        rows.append((f"hash only: OpenTrail hash_log_stream, {args.workers} workers", time.perf_counter() - t))

        start, end = "2026-03-01T00:00:00Z", (T0 + timedelta(hours=args.hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        base = Options(trail_arn=ARN, start_time=start, end_time=end, workers=args.workers, s3_bucket=chain.bucket)
        t = time.perf_counter()
        rc = run(Options(**{**base.__dict__, "directory": root}), io.StringIO(), io.StringIO())
        assert rc == 0
        rows.append(("opentrail validate-logs --dir (whole command)", time.perf_counter() - t))

        if not args.no_s3:
            import logging

            import boto3
            from moto.server import ThreadedMotoServer

            from tests.integration.chain_builder import CloudTrailStub

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
            port = _free_port()
            latency = f" (+{args.s3_latency_ms:g} ms a request)" if args.s3_latency_ms else ""
            server = _slow_server(ThreadedMotoServer, args.s3_latency_ms / 1000)(
                ip_address="127.0.0.1", port=port, verbose=False
            )
            server.start()
            url = f"http://127.0.0.1:{port}"
            stub = CloudTrailStub(chain.keys)
            try:
                chain.to_s3(boto3.client("s3", endpoint_url=url, region_name=REGION))
                os.environ["AWS_ENDPOINT_URL_S3"] = url
                t = time.perf_counter()
                rc = run(Options(**{**base.__dict__, "endpoint_url": stub.url}), io.StringIO(), io.StringIO())
                assert rc == 0
                rows.append((f"opentrail validate-logs, S3 on a moto server{latency}", time.perf_counter() - t))
                if AWS.exists():
                    t = time.perf_counter()
                    cli = run_aws_cli(["--trail-arn", ARN, "--start-time", start, "--end-time", end, "--s3-bucket",
                                       chain.bucket, "--endpoint-url", stub.url], s3_url=url, timeout=1800)  # fmt: skip
                    assert cli.rc == 0, cli.err
                    name = f"aws cloudtrail validate-logs, S3 on a moto server{latency}"
                    rows.append((name, time.perf_counter() - t))
            finally:
                stub.stop()
                server.stop()

    print()
    print(f"| {'path':<70} | {'seconds':>8} | {'MB/s gzip':>9} | {'MB/s inflated':>13} | {'files/s':>8} |")
    print(f"|{'-' * 72}|{'-' * 10}|{'-' * 11}|{'-' * 15}|{'-' * 10}|")
    for name, seconds in rows:
        print(f"| {name:<70} | {seconds:>8.2f} | {compressed / 1e6 / seconds:>9.1f} | "
              f"{inflated / 1e6 / seconds:>13.1f} | {files / seconds:>8.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
