"""The real AWS CLI (awscli 1.46.3 in .venv-tools) against `opentrail local` with two trails:
`aws cloudtrail validate-logs` WITHOUT --s3-bucket finds the bucket and prefix through
DescribeTrails, as against CloudTrail; `aws cloudtrail describe-trails`/`get-trail-status`, and
`opentrail trails`/`opentrail trail-status` print them (docs/trails.md)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from opentrail import cli
from opentrail.local.server import LocalOptions, LocalRuntime, request_flush
from tests.integration.chain_builder import AWS, REGION, Run, run_aws_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AWS.exists(), reason=".venv-tools/bin/aws is not installed (make .venv-tools/.installed)"),
]
TRAILS = [
    {
        "Name": "opentrail",
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}],
    },
    {"Name": "audit", "S3KeyPrefix": "audit/prod", "EventSelectors": [{}]},
]
EVENTS = 12


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def local() -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            patch.delenv(name, raising=False)
        options = LocalOptions(port=0, aws_port=0, batch_interval=3600.0, quiet=True, trails=json.dumps(TRAILS))
        runtime = LocalRuntime(options, out=io.StringIO())
        runtime.start()
        try:
            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
            data = session.client("cloudtrail-data", endpoint_url=runtime.endpoint)
            now = datetime.now(UTC).replace(microsecond=0)
            events = [
                {
                    "id": str(index),
                    "eventData": json.dumps(
                        {
                            "version": "1.0",
                            "userIdentity": {"type": "CustomUser", "principalId": "user-1"},
                            "eventSource": "orders.example.com",
                            "eventName": "GetOrder",
                            "eventTime": _time(now - timedelta(seconds=index)),
                            "UID": f"req-{index}",
                            "recipientAccountId": "123456789012",
                        }
                    ),
                }
                for index in range(EVENTS)
            ]
            assert data.put_audit_events(channelArn=runtime.channel_arn, auditEvents=events)["failed"] == []
            assert request_flush(runtime.endpoint)["records"] == EVENTS
            hour = now.replace(minute=0, second=0)  # before the delivery: `start` covers the file
            # `until` from the clock after the delivery, not from `now`: if the hour turned before
            # the flush, the file is in the next hour and `hour + 1 h` would leave it undigested
            until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            runtime.digest(until=until)
            yield {
                "runtime": runtime,
                "api": runtime.endpoint,
                "s3": runtime.aws_endpoint,
                "bucket": runtime.log_bucket,
                "start": _time(hour - timedelta(hours=1)),
                "end": _time(until + timedelta(minutes=1)),
                "client": session.client("cloudtrail", endpoint_url=runtime.endpoint),
            }
        finally:
            runtime.stop()


def _arn(name: str) -> str:
    return f"arn:aws:cloudtrail:{REGION}:123456789012:trail/{name}"


def _aws(*arguments: str, s3_url: str) -> Run:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
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
    done = subprocess.run(
        [str(AWS), "cloudtrail", *arguments], capture_output=True, text=True, env=environment, timeout=120, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(("trail", "prefix"), [("audit", "audit/prod/"), ("opentrail", "")])
def test_validate_logs_without_s3_bucket_finds_the_trail_by_describe_trails(
    local: dict[str, Any], trail: str, prefix: str
) -> None:
    d = local
    arguments = ["--trail-arn", _arn(trail), "--start-time", d["start"], "--end-time", d["end"]]
    result = run_aws_cli([*arguments, "--endpoint-url", d["api"], "--verbose"], s3_url=d["s3"])

    assert result.rc == 0, result.out + result.err
    digests = [line.split("\t")[1] for line in result.out.splitlines() if line.startswith("Digest file\t")]
    logs = [line.split("\t")[1] for line in result.out.splitlines() if line.startswith("Log file\t")]
    assert digests
    assert all(key.startswith(f"s3://{d['bucket']}/{prefix}AWSLogs/") for key in digests + logs)
    assert len(logs) == 1
    assert "1/1 log files valid" in result.out


def test_validate_logs_of_an_unknown_trail_fails_like_cloudtrail(local: dict[str, Any]) -> None:
    d = local
    arguments = ["--trail-arn", _arn("nope"), "--start-time", d["start"], "--endpoint-url", d["api"]]
    result = run_aws_cli(arguments, s3_url=d["s3"])

    assert result.rc == 255
    assert f"A trail could not be found for {_arn('nope')}" in result.err


def test_aws_cli_describe_trails_and_trail_status(local: dict[str, Any]) -> None:
    d = local
    described = _aws("describe-trails", "--endpoint-url", d["api"], s3_url=d["s3"])
    status = _aws("get-trail-status", "--name", "audit", "--endpoint-url", d["api"], s3_url=d["s3"])

    assert described.rc == 0, described.err
    trails = json.loads(described.out)["trailList"]
    assert [(t["Name"], t.get("S3KeyPrefix")) for t in trails] == [("opentrail", None), ("audit", "audit/prod")]
    assert status.rc == 0, status.err
    reply = json.loads(status.out)
    assert reply["IsLogging"] is True
    assert "LatestDeliveryTime" in reply
    assert "LatestDigestDeliveryTime" in reply


def test_opentrail_trails_and_trail_status_commands(local: dict[str, Any]) -> None:
    d = local
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        assert cli.main(["trails", "--endpoint-url", d["api"]]) == 0
        d["client"].stop_logging(Name="audit")
        try:
            assert cli.main(["trail-status", "--endpoint-url", d["api"]]) == 0
        finally:
            d["client"].start_logging(Name="audit")
    printed = out.getvalue()

    assert f"s3://{d['bucket']}/audit/prod/" in printed
    assert _arn("audit") in printed
    assert printed.splitlines()[0].split()[3] == "INSIGHTS"
    (described,) = [line for line in printed.splitlines() if line.startswith("opentrail ") and "s3://" in line]
    assert described.split()[3] == "CallRate,ErrorRate"  # GetInsightSelectors of the trail that has them
    lines = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("audit", "opentrail"))}
    assert "STOPPED" in lines["audit"]
    assert "logging" in lines["opentrail"]
