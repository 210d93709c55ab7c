"""`opentrail demo` end to end: real handlers over embedded moto, then the exported bucket
is checked file by file against CloudTrail's log file format (spec §1, §2), and the demo's
integrity section: digests in simulated time, the export valid offline, a tampered copy caught."""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opentrail.cli import main
from opentrail.local.demo import INSIGHT_KEY, DemoOptions, DemoReport, run_demo

pytestmark = pytest.mark.slow

EVENTS = 300
KEY = re.compile(
    r"^AWSLogs/(?P<account>\d{12})/CloudTrail/(?P<region>[a-z]{2}-[a-z]+-\d)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=account)_CloudTrail_(?P=region)_(?P<stamp>\d{8}T\d{4}Z)_[A-Za-z0-9]{16}\.json\.gz$"
)
EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EVENT_VERSION = re.compile(r"^\d+\.\d+$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoReport, Path, str]:
    export = tmp_path_factory.mktemp("export")
    out = io.StringIO()
    report = run_demo(DemoOptions(events=EVENTS, hours=1, seed=11, export=export), out=out)
    return report, export, out.getvalue()


@pytest.fixture(scope="module")
def exported(demo: tuple[DemoReport, Path, str]) -> dict[str, list[dict[str, Any]]]:
    """Exported log files by key -> their records (each body checked to be ONE gzip member)."""
    _, export, _ = demo
    files: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(export.rglob("*.json.gz")):
        if "CloudTrail" not in path.relative_to(export).parts:
            continue  # digests (CloudTrail-Digest/) are checked below
        raw = path.read_bytes()
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        body = inflater.decompress(raw)
        assert inflater.eof, f"{path}: truncated gzip"
        assert inflater.unused_data == b"", f"{path}: more than one gzip member"
        document = json.loads(body)
        assert list(document) == ["Records"]
        assert isinstance(document["Records"], list)
        assert document["Records"]
        files[path.relative_to(export).as_posix()] = document["Records"]
    return files


def test_demo_delivers_every_event_exactly_once(demo: tuple[DemoReport, Path, str], exported) -> None:  # type: ignore[no-untyped-def]
    report, _, output = demo
    records = [record for items in exported.values() for record in items]
    assert report.ok, output
    assert len(records) == EVENTS == report.generated
    assert len({r["eventID"] for r in records}) == EVENTS
    assert report.dead_letter_depth == 0
    assert report.buffer_depth == 0
    assert sum(report.sent.values()) == EVENTS
    assert not report.rejected
    assert len(exported) == len(report.files)
    assert report.integrity is not None
    assert report.insights is not None
    assert report.exported == len(report.files) + report.integrity.digests + len(report.insights.files)


def test_demo_records_are_the_generated_events(demo: tuple[DemoReport, Path, str], exported) -> None:  # type: ignore[no-untyped-def]
    report, _, _ = demo
    delivered = sorted(
        (r["requestID"], r["eventName"], r["eventTime"], r["awsRegion"]) for v in exported.values() for r in v
    )
    generated = sorted((e.uid, e.record["eventName"], e.record["eventTime"], e.region) for e in report.workload.events)
    assert delivered == generated


def test_demo_uses_all_capture_paths(demo: tuple[DemoReport, Path, str]) -> None:
    report, _, _ = demo
    assert all(report.sent[path] > 0 for path in ("ingest", "eventbridge", "producer"))
    assert report.batcher_runs >= 12  # every 5 simulated minutes for an hour


def test_demo_keys_follow_cloudtrail_layout_in_simulated_time(demo: tuple[DemoReport, Path, str], exported) -> None:  # type: ignore[no-untyped-def]
    report, _, _ = demo
    regions = set()
    for key, records in exported.items():
        match = KEY.match(key)
        assert match, key
        stamp = match["stamp"]
        assert stamp[:8] == match["y"] + match["m"] + match["d"]
        regions.add(match["region"])
        assert {r["awsRegion"] for r in records} == {match["region"]}
        assert {r["recipientAccountId"] for r in records} == {match["account"]}
        # delivered after (never before) the newest record, within the 5-minute cadence
        newest = max(r["eventTime"] for r in records)
        delivery = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:00Z"
        assert newest < delivery or newest.startswith(delivery[:16])
        assert report.workload.start.strftime("%Y%m%dT") <= stamp
    assert regions == {"us-east-1", "eu-west-1"}


def test_demo_records_carry_cloudtrail_required_fields(exported) -> None:  # type: ignore[no-untyped-def]
    for key, records in exported.items():
        for record in records:
            where = f"{key}: {record.get('eventID')}"
            assert EVENT_VERSION.match(record["eventVersion"]), where
            assert EVENT_TIME.match(record["eventTime"]), where
            assert UUID.match(record["eventID"]), where
            assert re.fullmatch(r"\d{12}", record["recipientAccountId"]), where
            assert record["awsRegion"] in ("us-east-1", "eu-west-1"), where
            assert record["eventCategory"] in ("Management", "Data"), where
            assert isinstance(record["managementEvent"], bool), where
            assert record["managementEvent"] == (record["eventCategory"] == "Management"), where
            assert isinstance(record["readOnly"], bool), where
            assert record["eventType"] == "AwsApiCall", where
            assert record["userIdentity"]["type"], where
            assert record["eventSource"], where
            assert record["eventName"], where
            assert "requestParameters" in record, where
            assert "responseElements" in record, where


def test_demo_export_writes_head_object_metadata(demo: tuple[DemoReport, Path, str], exported) -> None:  # type: ignore[no-untyped-def]
    _, export, _ = demo
    for key in exported:
        path = export / key
        metadata = json.loads((export / (key + ".metadata.json")).read_text())
        assert metadata["ServerSideEncryption"] == "aws:kms"
        assert metadata["SSEKMSKeyId"].startswith("arn:aws:kms:us-east-1:")
        assert metadata["ContentLength"] == path.stat().st_size
        assert metadata["ETag"].startswith('"')
        assert isinstance(metadata["Metadata"], dict)
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", metadata["LastModified"])
        assert gzip.decompress(path.read_bytes())  # the object itself, not the metadata


def test_demo_prints_progress_and_summary(demo: tuple[DemoReport, Path, str]) -> None:
    _, _, output = demo
    assert "08:00-09:00Z  captured" in output
    assert "records            300 (generated 300; unique eventIDs 300; duplicates 0; missing 0)" in output
    assert "dead-letter queue  0" in output
    assert "Sample record (" in output
    assert "OK: every event delivered exactly once" in output


def test_cli_demo_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    # given a small workload through the command line / then exit 0 and the summary printed
    code = main(["demo", "--events", "80", "--hours", "0.5", "--seed", "3", "--quiet"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "PutAuditEvents (ingest)" in output
    assert "records            80 (generated 80;" in output
    assert "OK: every event delivered exactly once" in output
    assert "captured" not in output  # --quiet: no progress lines


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("opentrail ")


def test_cli_export_copies_a_prefix_with_metadata(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    # given a bucket with objects inside and outside the prefix
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="audit-export-test")
    s3.put_object(
        Bucket="audit-export-test",
        Key="AWSLogs/111122223333/CloudTrail/a.json.gz",
        Body=b"one",
        ContentType="application/json",
    )
    s3.put_object(Bucket="audit-export-test", Key="other/b.txt", Body=b"two")
    # when exported through the command line
    code = main(
        [
            "export",
            "--bucket",
            "audit-export-test",
            "--dir",
            str(tmp_path),
            "--prefix",
            "AWSLogs/",
            "--region",
            "us-east-1",
        ]
    )
    # then only the prefix is copied, with head-object metadata next to it
    assert code == 0, capsys.readouterr()
    target = tmp_path / "AWSLogs/111122223333/CloudTrail/a.json.gz"
    assert target.read_bytes() == b"one"
    metadata = json.loads((tmp_path / "AWSLogs/111122223333/CloudTrail/a.json.gz.metadata.json").read_text())
    assert metadata["ContentLength"] == 3
    assert metadata["ContentType"] == "application/json"
    assert not (tmp_path / "other").exists()
    assert "exported 1 objects" in capsys.readouterr().out


TRAIL_ARN = "arn:aws:cloudtrail:us-east-1:123456789012:trail/opentrail"


def test_demo_digests_every_hour_of_every_region_and_validates(demo: tuple[DemoReport, Path, str]) -> None:
    report, _export, output = demo
    integrity = report.integrity
    assert integrity is not None
    # 08:00-09:00 simulated; the final flush delivers at 09:00: windows 08h and 09h, both regions
    assert integrity.chains == ["eu-west-1", "us-east-1"]
    assert integrity.digests == 4
    assert integrity.log_files_listed == len(report.files)
    assert integrity.valid
    assert [v.region for v in integrity.validations] == ["eu-west-1", "us-east-1"]
    for validation in integrity.validations:
        files = sum(1 for f in report.files if f.region == validation.region)
        assert validation.ratios == ["2/2 digest files valid", f"{files}/{files} log files valid"]
        assert validation.problems == "no problems found beyond the AWS CLI's checks"
    assert "Integrity (signed hourly digests, docs/integrity.md)" in output
    assert "in simulated time (09:05Z to 10:05Z): 4 digests (0 empty) in 2 chains (eu-west-1, us-east-1)" in output
    assert f"{len(report.files)} of {len(report.files)} log files listed" in output
    assert "    all valid\n" in output


def test_demo_catches_the_tampered_copy(demo: tuple[DemoReport, Path, str]) -> None:
    report, export, output = demo
    integrity = report.integrity
    assert integrity is not None
    tampered = integrity.tampered
    assert tampered is not None
    assert tampered.rc == 1
    bucket = report.bucket
    modified = f"Log file\ts3://{bucket}/{integrity.modified_log}\tINVALID: hash value doesn't match"
    deleted = f"Digest file\ts3://{bucket}/{integrity.deleted_digest}\tINVALID: not found"
    assert integrity.expected == [modified, deleted]
    assert set(tampered.invalid) >= {modified, deleted}
    assert "_CloudTrail-Digest_us-east-1_opentrail_us-east-1_20260316T090000Z" in integrity.deleted_digest
    assert f"    {modified}\n" in output
    assert f"    {deleted}\n" in output
    assert "detected: exit status 1, 1/2 digest files valid, 1/2 digest files INVALID" in output
    assert "OK: every event delivered exactly once; digests valid, tampering detected." in output
    assert report.ok
    # only a copy was tampered with: the export itself is untouched
    assert (export / integrity.deleted_digest).is_file()


def test_demo_export_validates_offline_with_no_extra_flags(
    demo: tuple[DemoReport, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    report, export, _ = demo
    heads = json.loads((export / "chain-heads.json").read_text())
    assert {(h["region"], h["kind"], h["sequence"]) for h in heads} == {
        ("us-east-1", "regular", 2),
        ("eu-west-1", "regular", 2),
    }
    keys = json.loads((export / "public-keys" / "keys.json").read_text())
    assert [k["fingerprint"] for k in keys] == report.integrity.fingerprints  # type: ignore[union-attr]
    assert (
        (export / "public-keys" / f"{keys[0]['fingerprint']}.pem")
        .read_text()
        .startswith("-----BEGIN RSA PUBLIC KEY-----")
    )
    assert json.loads((export / "export.json").read_text())["bucket"] == report.bucket

    for extra in ([], ["--region", "eu-west-1"]):
        arguments = ["--trail-arn", TRAIL_ARN, "--start-time", "2026-03-16T08:00:00Z", "--dir", str(export)]
        code = main(["validate-logs", *arguments, *extra])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "2/2 digest files valid" in out
        assert "chain head: s3://" in out
        assert "no problems found" in out


TRAILSCRAPER = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "trailscraper"


@pytest.mark.skipif(not TRAILSCRAPER.exists(), reason="run `make install` for the log tools venv (.venv-tools)")
def test_a_third_party_cloudtrail_reader_accepts_the_export(demo: tuple[DemoReport, Path, str]) -> None:
    """trailscraper, which reads CloudTrail log directories, parses every exported record."""
    import subprocess

    report, export, _ = demo
    times = sorted(event.at for event in report.workload.events)
    result = subprocess.run(
        [
            str(TRAILSCRAPER),
            "select",
            "--log-dir",
            str(export),
            "--from",
            (times[0] - timedelta(days=1)).strftime("%Y-%m-%d"),
            "--to",
            (times[-1] + timedelta(days=1)).strftime("%Y-%m-%d"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    selected = json.loads(result.stdout)["Records"]
    assert len(selected) == EVENTS
    assert {record["eventID"] for record in selected} == {
        record["eventID"]
        for path in export.rglob("*.json.gz")
        if "CloudTrail" in path.relative_to(export).parts
        for record in json.loads(gzip.decompress(path.read_bytes()))["Records"]
    }


# -- Insights: the default demo (3 hours, the injected anomalies), integrity skipped -----------

INSIGHT_TOP_LEVEL = {
    "eventVersion",
    "eventTime",
    "awsRegion",
    "eventID",
    "eventType",
    "recipientAccountId",
    "sharedEventID",
    "insightDetails",
    "eventCategory",
}
KINDS = {"ApiCallRateInsight", "ApiErrorRateInsight", "UnusualActivityInsight", "MissingActivityInsight"}


@pytest.fixture(scope="module")
def insights_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoReport, Path, str]:
    export = tmp_path_factory.mktemp("insights-export")
    out = io.StringIO()
    report = run_demo(DemoOptions(export=export, integrity=False), out=out)
    return report, export, out.getvalue()


def test_demo_insights_detect_every_injected_anomaly_with_start_and_end(
    insights_demo: tuple[DemoReport, Path, str],
) -> None:
    report, _, output = insights_demo
    assert report.ok, output
    insights = report.insights
    assert insights is not None
    assert not insights.errors, output
    assert {anomaly.insight_type for anomaly in insights.anomalies} == KINDS
    for anomaly in insights.anomalies:
        found = insights.detected(anomaly)
        assert found is not None, f"{anomaly} not detected:\n{output}"
        start, end = found
        assert end is not None, f"{anomaly}: no End"  # every injected anomaly ends before the demo does
        assert start["sharedEventID"] == end["sharedEventID"]
        assert start["eventTime"] <= end["eventTime"]
        detected_at = datetime.strptime(start["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert detected_at - anomaly.start <= timedelta(minutes=10), anomaly  # within minutes
        explanation = start["insightDetails"]["insightContext"]["explanation"]
        assert anomaly.event_name in explanation
    assert insights.all_detected
    assert insights.starts == insights.ends == len(insights.pairs())
    assert insights.runs >= 36  # every 5 minutes for 3 hours, and the tail


def test_demo_insights_files_follow_the_cloudtrail_insight_layout_and_spec(
    insights_demo: tuple[DemoReport, Path, str],
) -> None:
    report, export, _ = insights_demo
    insights = report.insights
    assert insights is not None
    assert insights.files
    key = re.compile(INSIGHT_KEY)
    exported = sorted(
        p.relative_to(export).as_posix() for p in export.rglob("*.json.gz") if "CloudTrail-Insight" in p.parts
    )
    assert exported == [item.key for item in insights.files]  # the export includes them
    records = []
    for name in exported:
        match = key.match(name)
        assert match, name
        document = json.loads(gzip.decompress((export / name).read_bytes()))
        assert list(document) == ["Records"]
        for record in document["Records"]:
            assert record["awsRegion"] == match["region"]
            assert record["recipientAccountId"] == match["account"]
            records.append(record)
    assert len(records) == len(insights.records)
    for record in records:
        assert set(record) == INSIGHT_TOP_LEVEL, sorted(record)
        assert record["eventType"] == "AwsCloudTrailInsight"
        assert record["eventCategory"] == "Insight"
        assert EVENT_TIME.match(record["eventTime"])
        assert UUID.match(record["eventID"])
        assert UUID.match(record["sharedEventID"])
        details = record["insightDetails"]
        assert details["state"] in ("Start", "End")
        assert details["insightType"] in KINDS
        assert details["eventSource"]
        assert details["eventName"]
        context = details["insightContext"]
        statistics = context["statistics"]
        assert {"baseline", "insight", "insightDuration"} <= set(statistics)
        assert isinstance(statistics["baseline"]["average"], (int, float))
        assert isinstance(statistics["insight"]["average"], (int, float))
        attributes = {a["attribute"] for a in context["attributions"]}
        assert attributes <= {"userIdentityArn", "userAgent", "errorCode"}
        assert "userIdentityArn" in attributes
        if details["insightType"] in ("ApiCallRateInsight", "ApiErrorRateInsight"):  # CloudTrail's types: all three
            assert attributes == {"userIdentityArn", "userAgent", "errorCode"}
        assert all({"insight", "baseline"} <= set(a) for a in context["attributions"])
        assert context["explanation"]
    by_shared: dict[str, list[str]] = {}
    for record in records:
        by_shared.setdefault(record["sharedEventID"], []).append(record["insightDetails"]["state"])
    assert all(sorted(states) == ["End", "Start"] for states in by_shared.values())


def test_demo_insights_are_found_by_lookup_events(insights_demo: tuple[DemoReport, Path, str]) -> None:
    report, _, _ = insights_demo
    insights = report.insights
    assert insights is not None
    assert sorted(insights.looked_up_ids) == sorted(record["eventID"] for record in insights.records)
    assert sum(insights.looked_up.values()) == len(insights.records)


def test_demo_prints_the_insights_section(insights_demo: tuple[DemoReport, Path, str]) -> None:
    report, _, output = insights_demo
    section = output[output.index("\nInsights (docs/insights.md)") :]
    assert "NOT DETECTED" not in section
    assert section.count("[injected]") == len(report.insights.anomalies)  # type: ignore[union-attr]
    assert "/CloudTrail-Insight/" in section
    assert "LookupEvents EventCategory=insight: " in section
    assert "unusual_warmup_minutes 90" in section


def test_demo_without_anomalies_injects_none_and_a_short_demo_says_so(
    demo: tuple[DemoReport, Path, str],
) -> None:
    report, _, output = demo  # the 1-hour demo: too short for the anomalies
    assert report.workload.anomalies == ()
    assert "injected     none" in output


def test_demo_switches_turn_integrity_and_insights_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--events", "50", "--hours", "1", "--quiet", "--no-integrity", "--no-insights"]) == 0

    output = capsys.readouterr().out
    assert "every event delivered exactly once" in output
    assert "Integrity (signed hourly digests" not in output
    assert "Insights (docs/insights.md)" not in output
