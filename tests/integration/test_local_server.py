"""`opentrail local` (LocalRuntime) driven over HTTP on 127.0.0.1 with the stock boto3 clients.

Each test starts its own runtime on ephemeral ports (moto server mode + OpenTrail's API)
and stops it; the batcher timer is off (an hour) unless the test is about the timer.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail import cli
from opentrail.local.server import LocalOptions, LocalRuntime

ACCOUNT = "123456789012"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LocalRuntime]]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    started: list[LocalRuntime] = []

    def _start(**options: Any) -> LocalRuntime:
        values: dict[str, Any] = {"port": 0, "aws_port": 0, "batch_interval": 3600.0, "quiet": True}
        values.update(options)
        runtime = LocalRuntime(LocalOptions(**values), out=io.StringIO())
        runtime.start()
        started.append(runtime)
        return runtime

    try:
        yield _start
    finally:
        for runtime in started:
            runtime.stop()


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="anything", aws_secret_access_key="anything", region_name="us-east-1")


def event_data(index: int, name: str = "DeleteWidget", source: str = "widgets.example.com") -> str:
    return json.dumps(
        {
            "version": "1.0",
            "userIdentity": {"type": "CustomUser", "principalId": f"user-{index % 3}"},
            "eventSource": source,
            "eventName": name,
            "eventTime": (NOW - timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "UID": f"req-{index}",
            "recipientAccountId": ACCOUNT,
        }
    )


def put(runtime: LocalRuntime, items: list[tuple[int, str]]) -> dict[str, str]:
    """PutAuditEvents with the stock client; returns id -> eventID."""
    client = session().client("cloudtrail-data", endpoint_url=runtime.endpoint)
    reply = client.put_audit_events(
        channelArn=runtime.channel_arn,
        auditEvents=[{"id": f"e{index}", "eventData": event_data(index, name)} for index, name in items],
    )
    assert reply["failed"] == []
    return {item["id"]: item["eventID"] for item in reply["successful"]}


def clear_of_the_hour_end(margin: float = 30.0) -> None:
    """Sleep past the next hour boundary if it is less than `margin` seconds away.

    For steps whose outcome depends on the delivery hour (UTC, the ledger's partition, the
    digest window) staying the one `close_hour` closed: a file delivered after the hour
    turned is in a window that is still open, not a late file of the closed one."""
    now = datetime.now(UTC)
    left = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - now).total_seconds()
    if left < margin:
        time.sleep(left + 0.5)


def lookup_all(runtime: LocalRuntime, **parameters: Any) -> list[dict[str, Any]]:
    client = session().client("cloudtrail", endpoint_url=runtime.endpoint)
    pages = client.get_paginator("lookup_events").paginate(**parameters)
    return [event for page in pages for event in page["Events"]]


def test_local_server_stock_clients_put_flush_and_lookup(start: Callable[..., LocalRuntime]) -> None:
    runtime = start()
    names = ["CreateWidget" if index % 4 == 0 else "DeleteWidget" for index in range(30)]
    ids = put(runtime, list(enumerate(names)))

    summary = runtime.flush()
    assert summary["records"] == 30
    assert summary["failedBatches"] == 0

    cloudtrail = session().client("cloudtrail", endpoint_url=runtime.endpoint)
    by_id = cloudtrail.lookup_events(LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": ids["e7"]}])
    [event] = by_id["Events"]
    assert event["EventName"] == "DeleteWidget"
    assert json.loads(event["CloudTrailEvent"])["requestID"] == "req-7"

    created = lookup_all(
        runtime,
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateWidget"}],
        PaginationConfig={"PageSize": 3},
    )
    assert {e["EventId"] for e in created} == {ids[f"e{i}"] for i in range(0, 30, 4)}
    everything = lookup_all(runtime, PaginationConfig={"PageSize": 7})  # 5 pages
    assert [e["EventId"] for e in everything] == [ids[f"e{i}"] for i in range(30)]  # newest first


def test_local_server_lookup_events_cli_prints_what_the_client_finds(
    start: Callable[..., LocalRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = start()
    ids = put(runtime, [(index, "DeleteWidget" if index % 2 else "ReadWidget") for index in range(12)])
    runtime.flush()
    expected = lookup_all(runtime, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "DeleteWidget"}])

    assert (
        cli.main(
            [
                "lookup-events",
                "--endpoint-url",
                runtime.endpoint,
                "--output",
                "json",
                "--max-results",
                "4",
                "--lookup-attributes",
                "AttributeKey=EventName,AttributeValue=DeleteWidget",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"Events"}
    assert [e["EventId"] for e in printed["Events"]] == [e["EventId"] for e in expected]
    first, want = printed["Events"][0], expected[0]
    assert first["EventTime"] == want["EventTime"].astimezone(UTC).isoformat()  # "2026-...T...+00:00"
    assert {k: v for k, v in first.items() if k != "EventTime"} == {k: v for k, v in want.items() if k != "EventTime"}

    # --max-items stops early and prints a NextToken that resumes where it stopped
    assert (
        cli.main(["lookup-events", "--endpoint-url", runtime.endpoint, "--max-items", "4", "--max-results", "3"]) == 0
    )
    head = json.loads(capsys.readouterr().out)
    assert len(head["Events"]) == 4
    assert cli.main(["lookup-events", "--endpoint-url", runtime.endpoint, "--starting-token", head["NextToken"]]) == 0
    rest = json.loads(capsys.readouterr().out)
    assert [e["EventId"] for e in head["Events"] + rest["Events"]] == [ids[f"e{i}"] for i in range(12)]

    # several attributes are ANDed (OpenTrail's opt-in header)
    assert (
        cli.main(
            [
                "lookup-events",
                "--endpoint-url",
                runtime.endpoint,
                "--output",
                "table",
                "--lookup-attributes",
                "AttributeKey=EventName,AttributeValue=ReadWidget",
                f"AttributeKey=EventId,AttributeValue={ids['e4']}",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "ReadWidget" in table
    assert ids["e4"] in table
    assert "1 event" in table


def test_local_server_errors_are_the_modelled_exceptions(start: Callable[..., LocalRuntime]) -> None:
    runtime = start()
    data = session().client("cloudtrail-data", endpoint_url=runtime.endpoint)
    with pytest.raises(data.exceptions.ChannelNotFound):
        data.put_audit_events(
            channelArn=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:channel/other",
            auditEvents=[{"id": "1", "eventData": "{}"}],
        )
    cloudtrail = session().client("cloudtrail", endpoint_url=runtime.endpoint)
    with pytest.raises(cloudtrail.exceptions.InvalidLookupAttributesException):
        cloudtrail.lookup_events(
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "A"},
                {"AttributeKey": "EventSource", "AttributeValue": "B"},
            ]
        )


def test_local_server_log_bucket_is_listed_through_the_aws_endpoint(start: Callable[..., LocalRuntime]) -> None:
    runtime = start()
    put(runtime, [(index, "DeleteWidget") for index in range(5)])
    runtime.flush()

    s3 = session().client("s3", endpoint_url=runtime.aws_endpoint)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=runtime.log_bucket)["Contents"]]
    [key] = [key for key in keys if "/CloudTrail/" in key]
    assert key.startswith(f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/")
    assert key.endswith(".json.gz")
    body = s3.get_object(Bucket=runtime.log_bucket, Key=key)["Body"].read()
    assert len(json.loads(__import__("gzip").decompress(body))["Records"]) == 5
    tables = session().client("dynamodb", endpoint_url=runtime.aws_endpoint).list_tables()["TableNames"]
    assert {"opentrail-ledger", "opentrail-history"} <= set(tables)


def test_local_server_timer_delivers_without_a_flush(start: Callable[..., LocalRuntime]) -> None:
    runtime = start(batch_interval=0.2)
    ids = put(runtime, [(0, "DeleteWidget")])
    deadline = time.monotonic() + 15
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = lookup_all(runtime, LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": ids["e0"]}])
    # the run that indexed the event counts itself when it returns, which may be after the lookup
    while runtime.batcher_runs < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["EventId"] for e in found] == [ids["e0"]]
    assert runtime.batcher_runs >= 1


def test_local_server_flush_command_prints_the_batcher_summary(
    start: Callable[..., LocalRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = start()
    put(runtime, [(index, "DeleteWidget") for index in range(3)])
    assert cli.main(["flush", "--endpoint-url", runtime.endpoint]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flushed: 3 records in 1 log file(s)")
    assert f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/" in out


def test_local_server_state_dir_keeps_events_and_log_files_across_restarts(
    start: Callable[..., LocalRuntime], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = start(state_dir=state)
    ids = put(first, [(index, "DeleteWidget") for index in range(4)])
    first.stop()  # the final flush delivers the 4 events, then the state is saved
    assert (state / "state.json").is_file()
    s3_before = sorted(p.relative_to(state).as_posix() for p in (state / "s3").rglob("*.json.gz"))
    assert len(s3_before) == 1

    second = start(state_dir=state)
    found = lookup_all(second, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "DeleteWidget"}])
    assert {e["EventId"] for e in found} == set(ids.values())
    s3 = session().client("s3", endpoint_url=second.aws_endpoint)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=second.log_bucket)["Contents"]]
    assert [f"s3/{second.log_bucket}/{key}" for key in keys if key.endswith(".json.gz")] == s3_before
    # re-sent events are recognised as delivered (the ledger was kept too): no duplicates
    put(second, [(index, "DeleteWidget") for index in range(4)])
    second.flush()
    again = lookup_all(second, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "DeleteWidget"}])
    assert sorted(e["EventId"] for e in again) == sorted(ids.values())


def test_local_server_stop_joins_threads_frees_ports_and_restores_the_environment(
    start: Callable[..., LocalRuntime],
) -> None:
    before = dict(os.environ)
    runtime = start(batch_interval=0.1)
    ports = [int(url.rsplit(":", 1)[1]) for url in (runtime.endpoint, runtime.aws_endpoint)]
    assert os.environ["AWS_ENDPOINT_URL"] == runtime.aws_endpoint
    assert {thread.name for thread in runtime.threads} == {
        "opentrail-local-aws",
        "opentrail-local-api",
        "opentrail-local-batcher",
    }

    runtime.stop()
    runtime.stop()  # idempotent

    assert runtime.threads == []
    assert not [t for t in threading.enumerate() if t.name.startswith("opentrail-local")]
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # free again
    assert dict(os.environ) == before


def test_local_server_refuses_non_loopback_hosts() -> None:
    from opentrail.local.server import LocalRuntimeError

    with pytest.raises(LocalRuntimeError, match="loopback"):
        LocalRuntime(LocalOptions(host="0.0.0.0", port=0, aws_port=0)).start()


def test_local_server_digests_on_demand_list_public_keys_and_backfills_late_files(
    start: Callable[..., LocalRuntime],
) -> None:
    import gzip

    runtime = start()
    # close_hour closes the hour of the server's clock at the call; the first batch must be
    # delivered in it, and the late one too (in the next hour it would not be late): keep the
    # whole test (a few seconds) inside one hour
    clear_of_the_hour_end()
    put(runtime, [(index, "DeleteWidget") for index in range(3)])

    result = runtime.digest(close_hour=True)  # flush, then digest the current hour before it ends

    assert result["flush"]["records"] == 3
    summary = result["digest"]
    assert (summary["digests"], summary["logFiles"], summary["conflicts"]) == (1, 1, 0)
    [key] = summary["written"]
    assert key.startswith(f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/")
    assert key.endswith(f"_opentrail_us-east-1_{result['until'].replace('-', '').replace(':', '')}.json.gz")
    s3 = session().client("s3", endpoint_url=runtime.aws_endpoint)
    digest = json.loads(gzip.decompress(s3.get_object(Bucket=runtime.log_bucket, Key=key)["Body"].read()))
    # ListPublicKeys on the local query API (what `aws cloudtrail validate-logs --endpoint-url` calls)
    keys = session().client("cloudtrail", endpoint_url=runtime.endpoint).list_public_keys()["PublicKeyList"]
    assert [k["Fingerprint"] for k in keys] == [digest["digestPublicKeyFingerprint"]]
    assert isinstance(keys[0]["Value"], bytes)

    # a file delivered later into the closed hour goes into a backfill digest at the next run
    put(runtime, [(10, "DeleteWidget")])
    later = runtime.digest()
    assert later["digest"]["digests"] == 0
    assert (later["digest"]["backfillDigests"], later["digest"]["backfilledFiles"]) == (1, 1)
    assert later["digest"]["written"][0].endswith("_backfill.json.gz")
    assert runtime.status()["digesterRuns"] >= 2


def test_local_server_digest_endpoint_and_flush_digest_command(
    start: Callable[..., LocalRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = start()
    put(runtime, [(index, "DeleteWidget") for index in range(2)])
    # from the clock, not NOW: the batch is delivered (and digested) in the current hour, which
    # may already be past NOW's hour; +2 h 5 min keeps two windows closed across an hour boundary
    until = (datetime.now(UTC) + timedelta(hours=2, minutes=5)).strftime("%Y-%m-%dT%H:00:00Z")
    assert cli.main(["flush", "--digest", "--until", until, "--endpoint-url", runtime.endpoint]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flushed: 2 records in 1 log file(s)")
    assert "digested (windows closed until " in out
    assert out.count("/CloudTrail-Digest/") >= 2  # the current hour, then empty hours up to --until
    # too far ahead: refused with a ValidationException (HTTP 400), nothing digested
    assert cli.main(["flush", "--digest", "--until", "2999-01-01T00:00:00Z", "--endpoint-url", runtime.endpoint]) == 1
    assert "HTTP 400" in capsys.readouterr().err
    assert cli.main(["flush", "--close-hour", "--endpoint-url", runtime.endpoint]) == 2


def test_local_server_export_with_keys_and_chain_heads_validates_offline(
    start: Callable[..., LocalRuntime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = start()
    put(runtime, [(index, "DeleteWidget") for index in range(4)])
    # from the clock, not NOW (module import, maybe an hour or more ago): the batch is delivered
    # in this hour or, if it turns meanwhile, the next; both are before `until`
    now = datetime.now(UTC)
    result = runtime.digest(until=now + timedelta(hours=2))
    digests = result["digest"]["written"]
    export = tmp_path / "copy"

    arguments = ["--bucket", runtime.log_bucket, "--dir", str(export), "--endpoint-url", runtime.aws_endpoint]
    assert cli.main(["export", *arguments, "--ledger-table", runtime.ledger_table]) == 0
    printed = capsys.readouterr().out
    assert f"{len(digests)} digests), 1 public key(s), 1 chain head(s)" in printed
    [head] = json.loads((export / "chain-heads.json").read_text())
    assert (head["key"], head["sequence"], head["kind"]) == (digests[-1], len(digests), "regular")
    [pem] = (export / "public-keys").glob("*.pem")
    assert pem.read_text().startswith("-----BEGIN RSA PUBLIC KEY-----")
    assert json.loads((export / "export.json").read_text())["bucket"] == runtime.log_bucket

    validate = ["validate-logs", "--trail-arn", runtime.trail_arn, "--dir", str(export)]
    times = ["--start-time", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:00:00Z"), "--end-time", result["until"]]
    assert cli.main([*validate, *times]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"{len(digests)}/{len(digests)} digest files valid" in out
    assert "1/1 log files valid" in out
    assert f"chain head: s3://{runtime.log_bucket}/{digests[-1]}, sequence {len(digests)}" in out
    assert "no problems found" in out

    # the newest digest deleted from the copy: only the exported chain head tells
    newest = export / digests[-1]
    newest.unlink()
    newest.with_name(newest.name + ".metadata.json").unlink()
    assert cli.main([*validate, *times]) == 1
    assert "the chain head names" in capsys.readouterr().out


def test_local_server_insights_endpoint_and_flush_insights_command(
    start: Callable[..., LocalRuntime], capsys: pytest.CaptureFixture[str]
) -> None:
    # given a widgets service reading every minute for 35 minutes, then a never-seen API, and
    # an Insights sensitivity that calls things "never seen" after 10 minutes of learning
    runtime = start(insights_overrides='{"unusual_warmup_minutes": 10}')
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    client = session().client("cloudtrail-data", endpoint_url=runtime.endpoint)
    events = []
    for index, minutes_ago in enumerate([*range(45, 9, -1), 6]):
        data = json.loads(event_data(index, "GetWidget" if minutes_ago > 6 else "PurgeWidgets"))
        data["eventTime"] = (now - timedelta(minutes=minutes_ago, seconds=-10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        data["UID"] = f"insights-{index}"
        events.append({"id": f"i{index}", "eventData": json.dumps(data)})
    for chunk in (events[:30], events[30:]):
        assert not client.put_audit_events(channelArn=runtime.channel_arn, auditEvents=chunk)["failed"]

    # when POST /_opentrail/insights (flush, then one Insights run)
    result = runtime.insights()
    assert result["flush"]["records"] == len(events)
    summary = result["insights"]
    assert summary["errors"] == []
    assert summary["starts"] >= 1, summary  # the API (and its caller's first write, as the writer is new)
    [delivered] = summary["files"]
    assert "/CloudTrail-Insight/us-east-1/" in delivered["key"]
    assert runtime.status()["insightsRuns"] == 1

    # then the Insights file is in the bucket (CloudTrail-Insight layout) and LookupEvents finds it
    s3 = session().client("s3", endpoint_url=runtime.aws_endpoint)
    body = s3.get_object(Bucket=runtime.log_bucket, Key=delivered["key"])["Body"].read()
    records = json.loads(gzip.decompress(body))["Records"]
    assert len(records) == summary["starts"] + summary["ends"]
    [record] = [r for r in records if "never called" in r["insightDetails"]["insightContext"]["explanation"]]
    assert record["eventType"] == "AwsCloudTrailInsight"
    assert record["insightDetails"]["state"] == "Start"
    assert record["insightDetails"]["insightType"] == "UnusualActivityInsight"
    assert record["insightDetails"]["eventName"] == "PurgeWidgets"
    found = lookup_all(runtime, EventCategory="insight")
    assert sorted(json.loads(e["CloudTrailEvent"])["eventID"] for e in found) == sorted(r["eventID"] for r in records)

    # and `opentrail flush --insights` runs it again over HTTP (nothing new: no second Start)
    assert cli.main(["flush", "--insights", "--endpoint-url", runtime.endpoint]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flushed: ")
    assert "insights: analysed to " in out
    assert runtime.insights_runs == 2
    assert len(lookup_all(runtime, EventCategory="insight")) == len(records)


def test_local_server_insights_can_be_switched_off(start: Callable[..., LocalRuntime]) -> None:
    runtime = start(insights=False, batch_interval=0.2)
    put(runtime, [(1, "DeleteWidget")])
    deadline = time.monotonic() + 20
    while runtime.batcher_runs < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runtime.batcher_runs >= 2
    assert runtime.insights_runs == 0
    assert runtime.status()["insights"] is False
