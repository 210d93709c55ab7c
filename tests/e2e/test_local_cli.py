"""`opentrail local` as a user runs it: the command in a subprocess, stopped with Ctrl-C
(SIGINT), and the real AWS CLI (``.venv-tools/bin/aws``, awscli 1.46.3) against it."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail.local.server import LocalOptions, LocalRuntime

ROOT = Path(__file__).resolve().parents[2]
AWS_CLI = ROOT / ".venv-tools" / "bin" / "aws"
ACCOUNT = "123456789012"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def _event_data(uid: str, name: str = "ApproveDeployment") -> str:
    return json.dumps(
        {
            "version": "1.0",
            "userIdentity": {"type": "CustomUser", "principalId": "alice"},
            "eventSource": "deploy.example.com",
            "eventName": name,
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "UID": uid,
            "recipientAccountId": ACCOUNT,
        }
    )


def _read_until(process: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} in the output:\n{''.join(lines)}")


@pytest.mark.slow
def test_local_cli_serves_until_ctrl_c_then_stops_cleanly(tmp_path: Path) -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opentrail.cli",
            "local",
            "--port",
            "0",
            "--aws-port",
            "0",
            "--batch-interval",
            "3600",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
        cwd=ROOT,
    )
    try:
        banner = "".join(_read_until(process, r"^Ctrl-C", timeout=60))
        startup = time.monotonic() - started
        api = re.search(r"OpenTrail API\s+(http://127\.0\.0\.1:\d+)", banner)
        aws = re.search(r"AWS services\s+(http://127\.0\.0\.1:\d+)", banner)
        channel = re.search(r"channel ARN\s+(\S+)", banner)
        assert api, banner
        assert aws, banner
        assert channel, banner
        assert "No SigV4 check" in banner
        assert startup < 30

        session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
        reply = session.client("cloudtrail-data", endpoint_url=api.group(1)).put_audit_events(
            channelArn=channel.group(1), auditEvents=[{"id": "1", "eventData": _event_data("cli-1")}]
        )
        assert reply["failed"] == []
        flushed = subprocess.run(
            [sys.executable, "-m", "opentrail.cli", "flush", "--endpoint-url", api.group(1)],
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert flushed.returncode == 0, flushed.stderr
        assert flushed.stdout.startswith("flushed: 1 records")

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "stopped" in rest
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for url in (api.group(1), aws.group(1)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))  # the port is free again
    assert (tmp_path / "state" / "state.json").is_file()


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRuntime]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    local = LocalRuntime(LocalOptions(port=0, aws_port=0, batch_interval=3600, quiet=True), out=io.StringIO())
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _aws(*args: str) -> Any:
    result = subprocess.run(
        [str(AWS_CLI), *args, "--region", "us-east-1", "--output", "json"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.mark.slow
@pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is installed by `make install` in .venv-tools")
def test_local_cli_works_with_the_real_aws_cli(runtime: LocalRuntime, tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"id": "a", "eventData": _event_data("aws-cli-1", "RollbackDeployment")}]))
    put = _aws(
        "cloudtrail-data",
        "put-audit-events",
        "--endpoint-url",
        runtime.endpoint,
        "--channel-arn",
        runtime.channel_arn,
        "--audit-events",
        f"file://{events}",
    )
    assert put["failed"] == []
    [stored] = put["successful"]
    runtime.flush()

    found = _aws(
        "cloudtrail",
        "lookup-events",
        "--endpoint-url",
        runtime.endpoint,
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=RollbackDeployment",
    )
    [event] = found["Events"]
    assert event["EventId"] == stored["eventID"]
    assert json.loads(event["CloudTrailEvent"])["requestID"] == "aws-cli-1"

    listing = subprocess.run(
        [
            str(AWS_CLI),
            "s3",
            "ls",
            f"s3://{runtime.log_bucket}/",
            "--recursive",
            "--endpoint-url",
            runtime.aws_endpoint,
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/" in listing.stdout


TRAILSCRAPER = ROOT / ".venv-tools" / "bin" / "trailscraper"


@pytest.mark.slow
@pytest.mark.skipif(not TRAILSCRAPER.exists(), reason="trailscraper is installed by `make install` in .venv-tools")
def test_local_cli_log_tools_read_the_bucket_with_aws_endpoint_url_s3(runtime: LocalRuntime, tmp_path: Path) -> None:
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    session.client("cloudtrail-data", endpoint_url=runtime.endpoint).put_audit_events(
        channelArn=runtime.channel_arn, auditEvents=[{"id": "1", "eventData": _event_data("scraper-1")}]
    )
    runtime.flush()
    logs = tmp_path / "logs"
    result = subprocess.run(
        [
            str(TRAILSCRAPER),
            "download",
            "--bucket",
            runtime.log_bucket,
            "--account-id",
            ACCOUNT,
            "--region",
            "us-east-1",
            "--log-dir",
            str(logs),
            "--from",
            "-1days",
            "--to",
            "now",
        ],
        capture_output=True,
        text=True,
        # trailscraper turns --from/--to into day folders in the local time zone; the folders
        # are UTC days (west of UTC, the local date lags the UTC date every evening)
        env=_clean_env(AWS_ENDPOINT_URL_S3=runtime.aws_endpoint, TZ="UTC"),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    downloaded = list(logs.rglob("*.json.gz"))
    assert len(downloaded) == 1
    assert downloaded[0].name.startswith(f"{ACCOUNT}_CloudTrail_us-east-1_")
