"""StopLogging / StartLogging around digests, checked by the real `aws cloudtrail validate-logs`
against `opentrail local` (as tests/e2e/test_aws_cli_validate.py): the digester closes the chain
with a final digest at the stop and starts a new chain after StartLogging (spec §3.2). The AWS
CLI reports the restart with its own "No log files were delivered" gap line (spec §3.6, not an
INVALID) and exits 0; `opentrail validate-logs` finds the stop recorded on the chain head.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from opentrail import cli
from opentrail.local.server import LocalOptions, LocalRuntime, request_flush
from opentrail.validate_logs import Options, run
from tests.integration.chain_builder import AWS, run_aws_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AWS.exists(), reason=".venv-tools/bin/aws is not installed (make .venv-tools/.installed)"),
]


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _events(round_: int, now: datetime) -> list[dict[str, str]]:
    return [
        {
            "id": f"{round_}-{index}",
            "eventData": json.dumps(
                {
                    "version": "1.0",
                    "userIdentity": {"type": "CustomUser", "principalId": "user"},
                    "eventSource": "orders.example.com",
                    "eventName": "RefundOrder",
                    "eventTime": _time(now),
                    "UID": f"req-{round_}-{index}",
                    "recipientAccountId": "123456789012",
                }
            ),
        }
        for index in range(3)
    ]


def _digest(runtime: LocalRuntime, until: datetime) -> str:
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", output)
        assert cli.main(["flush", "--digest", "--until", _time(until), "--endpoint-url", runtime.endpoint]) == 0
    return output.getvalue()


def test_aws_cli_accepts_a_stop_and_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    runtime = LocalRuntime(LocalOptions(port=0, aws_port=0, batch_interval=3600.0, quiet=True), out=io.StringIO())
    runtime.start()
    try:
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        data = session.client("cloudtrail-data", endpoint_url=runtime.endpoint)
        cloudtrail = session.client("cloudtrail", endpoint_url=runtime.endpoint)
        now = datetime.now(UTC).replace(microsecond=0)
        hour = now.replace(minute=0, second=0)

        assert data.put_audit_events(channelArn=runtime.channel_arn, auditEvents=_events(0, now))["failed"] == []
        assert request_flush(runtime.endpoint)["records"] == 3
        cloudtrail.stop_logging(Name=runtime.trail_arn)
        closed = _digest(runtime, hour + timedelta(hours=1))
        cloudtrail.start_logging(Name=runtime.trail_arn)
        assert data.put_audit_events(channelArn=runtime.channel_arn, auditEvents=_events(1, now))["failed"] == []
        assert request_flush(runtime.endpoint)["records"] == 3
        reopened = _digest(runtime, hour + timedelta(hours=3))
        digests = [line.strip() for line in (closed + reopened).splitlines() if "/CloudTrail-Digest/" in line]
        assert len(digests) >= 3, closed + reopened  # final, restart, one more hour

        start, end = _time(hour - timedelta(hours=1)), _time(hour + timedelta(hours=3))
        arguments = ["--trail-arn", runtime.trail_arn, "--start-time", start, "--end-time", end]
        arguments += ["--s3-bucket", runtime.log_bucket, "--endpoint-url", runtime.endpoint, "--verbose"]
        aws = run_aws_cli(arguments, s3_url=runtime.aws_endpoint)
        assert aws.rc == 0, aws.out + aws.err
        assert aws.invalid == []
        assert "No log files were delivered by CloudTrail between" in aws.err  # the restart, as CloudTrail
        assert "2/2 log files valid" in aws.out

        out, err = io.StringIO(), io.StringIO()
        options = Options(
            trail_arn=runtime.trail_arn,
            start_time=start,
            end_time=end,
            s3_bucket=runtime.log_bucket,
            endpoint_url=runtime.endpoint,
            verbose=True,
            chain_head_table=runtime.ledger_table,
        )
        assert run(options, out, err) == 0, out.getvalue() + err.getvalue()
        assert "INVALID" not in out.getvalue()
    finally:
        runtime.stop()
