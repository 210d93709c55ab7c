"""The real `aws cloudtrail validate-logs` (awscli 1.46.3 in .venv-tools) accepts what `opentrail local`
writes, and catches tampering.

`opentrail local` (`LocalRuntime`, the production handlers over moto in server mode on 127.0.0.1):
events go in through the stock boto3 ``cloudtrail-data`` client, `opentrail flush --digest --until T`
delivers them and runs the digester (real RSA signatures from moto's KMS) for the windows up to T
(the current hour, with files, then empty hours: a chain of several digests without waiting for
the clock). The AWS CLI then reads the digests and log files from the local S3
(``AWS_ENDPOINT_URL_S3``) and the public keys from the local query API's ListPublicKeys
(``--endpoint-url``), as it would from AWS. Then a log object is modified and a digest deleted
through boto3: INVALID lines and rc 1, from the AWS CLI and from `opentrail validate-logs` alike.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from opentrail import cli
from opentrail.local.server import LocalOptions, LocalRuntime, request_flush
from opentrail.validate_logs import Options, run
from tests.integration.chain_builder import AWS, Run, run_aws_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AWS.exists(), reason=".venv-tools/bin/aws is not installed (make .venv-tools/.installed)"),
]
ROUNDS, EVENTS_PER_ROUND, EMPTY_HOURS = 3, 20, 2


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def local() -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            patch.delenv(name, raising=False)
        runtime = LocalRuntime(LocalOptions(port=0, aws_port=0, batch_interval=3600.0, quiet=True), out=io.StringIO())
        runtime.start()
        try:
            yield _deliver_and_digest(runtime)
        finally:
            runtime.stop()


def _deliver_and_digest(runtime: LocalRuntime) -> dict[str, Any]:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    data = session.client("cloudtrail-data", endpoint_url=runtime.endpoint)
    now = datetime.now(UTC).replace(microsecond=0)
    for round_ in range(ROUNDS):
        events = [
            {
                "id": f"{round_}-{index}",
                "eventData": json.dumps(
                    {
                        "version": "1.0",
                        "userIdentity": {"type": "CustomUser", "principalId": f"user-{index % 4}"},
                        "eventSource": "orders.example.com",
                        "eventName": "RefundOrder" if index % 5 == 0 else "GetOrder",
                        "eventTime": _time(now - timedelta(seconds=index)),
                        "UID": f"req-{round_}-{index}",
                        "recipientAccountId": "123456789012",
                    }
                ),
            }
            for index in range(EVENTS_PER_ROUND)
        ]
        assert data.put_audit_events(channelArn=runtime.channel_arn, auditEvents=events)["failed"] == []
        assert request_flush(runtime.endpoint)["records"] == EVENTS_PER_ROUND  # one log file per round
    hour = now.replace(minute=0, second=0)  # before the first delivery: `start` covers every file
    # `until` from the clock after the last delivery, not from `now`: if the hour turned before
    # the first flush, every file is in the next hour and `hour + 1 h + EMPTY_HOURS` would close
    # one window too few; from here, the last file's hour + EMPTY_HOURS empty ones are closed
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1 + EMPTY_HOURS)
    output = io.StringIO()
    # `opentrail flush --digest --until T` (POST /_opentrail/digest): flush, then digest up to T
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", output)
        assert cli.main(["flush", "--digest", "--until", _time(until), "--endpoint-url", runtime.endpoint]) == 0
    printed = output.getvalue()
    digests = [line.strip() for line in printed.splitlines() if "/CloudTrail-Digest/" in line]
    assert len(digests) >= 1 + EMPTY_HOURS, printed  # one more if the hour turned during the test
    return {
        "runtime": runtime,
        "api": runtime.endpoint,
        "s3": runtime.aws_endpoint,
        "bucket": runtime.log_bucket,
        "arn": runtime.trail_arn,
        "table": runtime.ledger_table,
        "start": _time(hour - timedelta(hours=1)),
        "end": _time(until),
        "digests": digests,
        "printed": printed,
    }


def _aws(d: dict[str, Any]) -> Run:
    arguments = [
        "--trail-arn",
        d["arn"],
        "--start-time",
        d["start"],
        "--end-time",
        d["end"],
        "--s3-bucket",
        d["bucket"],
    ]
    return run_aws_cli([*arguments, "--endpoint-url", d["api"], "--verbose"], s3_url=d["s3"])


def _ours(d: dict[str, Any]) -> Run:
    # in-process: `opentrail local` set AWS_ENDPOINT_URL (S3, DynamoDB) to its moto server
    out, err = io.StringIO(), io.StringIO()
    options = Options(
        trail_arn=d["arn"],
        start_time=d["start"],
        end_time=d["end"],
        s3_bucket=d["bucket"],
        endpoint_url=d["api"],
        verbose=True,
        chain_head_table=d["table"],
    )
    rc = run(options, out, err)
    return Run(rc, out.getvalue(), err.getvalue())


def test_aws_cli_accepts_opentrail_local_output_then_catches_tampering(local: dict[str, Any]) -> None:
    d = local
    assert "flushed: 0 records" in d["printed"]
    assert f"digested (windows closed until {d['end']}):" in d["printed"]
    untouched = _aws(d)

    assert untouched.rc == 0, untouched.out + untouched.err
    digests = [line.split("\t")[1] for line in untouched.out.splitlines() if line.startswith("Digest file\t")]
    logs = [line.split("\t")[1] for line in untouched.out.splitlines() if line.startswith("Log file\t")]
    assert sorted(digests) == sorted(f"s3://{d['bucket']}/{key}" for key in d["digests"])
    assert all(line.endswith("\tvalid") for line in untouched.out.splitlines() if line.startswith(("Digest", "Log")))
    assert len(logs) == ROUNDS
    assert f"{len(digests)}/{len(digests)} digest files valid" in untouched.out
    assert f"{ROUNDS}/{ROUNDS} log files valid" in untouched.out
    assert untouched.invalid == []
    ours = _ours(d)
    assert ours.rc == 0, ours.out + ours.err
    assert "no problems found" in ours.out
    assert f"chain head: s3://{d['bucket']}/{d['digests'][-1]}, sequence {len(digests)}" in ours.out

    # tamper through the local S3: a log file rewritten, a digest in the middle of the chain deleted
    s3 = boto3.client("s3", endpoint_url=d["s3"], region_name="us-east-1")
    bucket = d["bucket"]
    modified_log = logs[0].removeprefix(f"s3://{bucket}/")
    deleted_digest = d["digests"][-2]  # the newest digest links to it
    body = json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=modified_log)["Body"].read()))
    body["Records"] = body["Records"][1:]  # an event removed
    s3.put_object(Bucket=bucket, Key=modified_log, Body=gzip.compress(json.dumps(body).encode()))
    s3.delete_object(Bucket=bucket, Key=deleted_digest)

    tampered = _aws(d)
    ours_tampered = _ours(d)

    assert tampered.rc == 1, tampered.out + tampered.err
    assert set(tampered.invalid) >= {
        f"Log file\ts3://{bucket}/{modified_log}\tINVALID: hash value doesn't match",
        f"Digest file\ts3://{bucket}/{deleted_digest}\tINVALID: not found",
    }
    assert f"{ROUNDS - 1}/{ROUNDS} log files valid, 1/{ROUNDS} log files INVALID" in tampered.out
    assert ours_tampered.rc == 1
    assert ours_tampered.invalid == tampered.invalid
