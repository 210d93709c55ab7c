"""Offline Insights over real CloudTrail logs (../shared/datasets).

The OTRF "cloud bank breach" window (2020-09-14 00:44-01:13 UTC, documented in docs/insights.md):
an IAM user browses EC2 in the console for 16 minutes, then, from 01:00, stolen instance-role
credentials are used from outside AWS to ListBuckets, ListObjects and GetObject. With a
15-minute warm-up (the data holds only 29 minutes), offline Insights reports the first
ListBuckets of the account as unusual activity, attributed to the instance role's session and
the attacker's laptop CLI; with data events included, ListObjects and GetObject too.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opentrail.domain.insights import Sensitivity
from opentrail.domain.record import CaptureContext, normalize
from opentrail.insights_offline import parse_log_file, run_offline, sources_for

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
OTRF = DATASETS / "otrf-aws-cloud-bank-breach-s3" / "normalized"
STRATUS = DATASETS / "stratus-red-team-detonation-logs"
STOLEN_ROLE = "arn:aws:sts::123456789123:assumed-role/MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0/i-0317f6c6b66ae9c40"
KEY_PATTERN = "AWSLogs/123456789123/CloudTrail-Insight/us-east-1/2020/09/14/123456789123_CloudTrail-Insight_us-east-1_"

pytestmark = pytest.mark.skipif(not OTRF.is_dir(), reason="../shared/datasets not present")


def written_records(out: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(out.rglob("*.json.gz")):
        assert str(path.relative_to(out)).startswith(KEY_PATTERN)
        records += json.loads(gzip.decompress(path.read_bytes()))["Records"]
    return records


def test_breach_window_reports_the_stolen_role_listing_buckets_as_unusual(tmp_path: Path) -> None:
    report = run_offline(
        sources_for(str(OTRF)),
        tmp_path,
        sensitivity=Sensitivity(unusual_warmup_minutes=15),
        progress=None,
    )

    records = written_records(tmp_path)
    assert report.analysed == 94  # 103 records, 9 of them S3 data events (ListObjects, GetObject)
    assert report.insights == {"UnusualActivityInsight": 1}
    start, end = sorted(records, key=lambda r: r["insightDetails"]["state"], reverse=True)
    details = start["insightDetails"]
    assert (details["state"], details["eventSource"], details["eventName"]) == ("Start", "s3.amazonaws.com",
                                                                                "ListBuckets")  # fmt: skip
    assert start["eventTime"] == "2020-09-14T01:00:00Z"
    assert end["sharedEventID"] == start["sharedEventID"]
    attributions = {a["attribute"]: a for a in details["insightContext"]["attributions"]}
    assert attributions["userIdentityArn"]["insight"][0]["value"] == STOLEN_ROLE
    assert attributions["userAgent"]["insight"][0]["value"].startswith("[aws-cli/1.18.136 Python/3.8.5 Darwin")
    assert "never called in the 16 min baseline" in details["insightContext"]["explanation"]
    for record in records:  # capture accepts what offline Insights writes, unchanged
        assert normalize(record, CaptureContext("123456789123", "us-east-1"), now=datetime.now(UTC)) == record


def test_breach_window_with_data_events_also_reports_listobjects_and_getobject(tmp_path: Path) -> None:
    report = run_offline(
        sources_for(str(OTRF)),
        tmp_path,
        sensitivity=Sensitivity(unusual_warmup_minutes=15),
        include_data_events=True,
        progress=None,
    )

    starts = [r for r in written_records(tmp_path) if r["insightDetails"]["state"] == "Start"]
    assert report.insights == {"UnusualActivityInsight": 3}
    assert sorted((r["insightDetails"]["eventName"], r["eventTime"]) for r in starts) == [
        ("GetObject", "2020-09-14T01:02:00Z"),
        ("ListBuckets", "2020-09-14T01:00:00Z"),
        ("ListObjects", "2020-09-14T01:00:00Z"),
    ]


def test_default_sensitivity_reports_nothing_on_29_minutes_of_history(tmp_path: Path) -> None:
    report = run_offline(sources_for(str(OTRF)), tmp_path, progress=None)

    assert report.insights == {}
    assert report.written == []


def test_plain_json_arrays_spanning_months_are_read_in_time_order(tmp_path: Path) -> None:
    report = run_offline(sources_for(str(STRATUS)), tmp_path, progress=None)

    total = sum(len(parse_log_file(p.read_bytes())) for p in STRATUS.glob("*.json"))
    assert report.records == total
    assert report.late == 0
    assert report.unreadable == []


def test_command_line_writes_insights_files_and_prints_a_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opentrail.cli", "insights", "--from", str(OTRF), "--out", str(tmp_path),
         "--set", "unusual_warmup_minutes=15"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip

    assert "insights: 1 UnusualActivityInsight" in result.stdout
    assert "insights: 1/1 files" in result.stderr
    assert len(written_records(tmp_path)) == 2


def test_s3_source_reads_log_files_under_a_prefix(tmp_path: Path) -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="trail-logs")
        for path in OTRF.glob("*.json.gz"):
            key = f"org/AWSLogs/123456789123/CloudTrail/us-east-1/2020/09/14/{path.name}"
            client.put_object(Bucket="trail-logs", Key=key, Body=path.read_bytes())
        client.put_object(Bucket="trail-logs", Key="org/AWSLogs/123456789123/CloudTrail-Digest/x.json.gz", Body=b"")

        sources = sources_for("s3://trail-logs/org/AWSLogs/", s3_client=client)
        report = run_offline(sources, tmp_path, sensitivity=Sensitivity(unusual_warmup_minutes=15), progress=None)

    assert [s.stamp for s in sources] == ["20200914T0115Z"]
    assert report.insights == {"UnusualActivityInsight": 1}
