"""`opentrail lookup-events`: flag parsing, output shapes, and which client it builds (no network:
botocore's ``before-send`` hook answers instead of a server)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from opentrail import cli
from opentrail.lookup_cli import (
    UsageError,
    make_client,
    parse_attributes,
    parse_time,
    stack_endpoint,
    to_json,
    to_table,
)


def args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["lookup-events", *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AttributeKey=EventName,AttributeValue=DeleteBucket", ("EventName", "DeleteBucket")),
        ("AttributeValue=alice,AttributeKey=Username", ("Username", "alice")),
        ("AttributeKey=ResourceName,AttributeValue=a,b=c", ("ResourceName", "a,b=c")),
        ('{"AttributeKey": "EventId", "AttributeValue": "e-1"}', ("EventId", "e-1")),
    ],
)
def test_lookup_cli_parses_shorthand_and_json_attributes(text: str, expected: tuple[str, str]) -> None:
    [attribute] = parse_attributes([text])
    assert (attribute["AttributeKey"], attribute["AttributeValue"]) == expected


@pytest.mark.parametrize(
    "text", ["EventName=x", "AttributeKey=Nope,AttributeValue=x", "[{]", '[{"AttributeKey": "EventName"}]']
)
def test_lookup_cli_rejects_bad_attributes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_attributes([text])


def test_lookup_cli_several_attribute_flags_accumulate() -> None:
    parsed = args(
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=A",
        "--lookup-attributes",
        "AttributeKey=Username,AttributeValue=B",
    )
    assert len(parse_attributes(parsed.lookup_attributes)) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-16T08:00:00Z", datetime(2026, 3, 16, 8, tzinfo=UTC)),
        ("2026-03-16T10:00:00+02:00", datetime(2026, 3, 16, 8, tzinfo=UTC)),
        ("2026-03-16T08:00:00", datetime(2026, 3, 16, 8, tzinfo=UTC)),  # no zone: UTC, like botocore
        ("2026-03-16", datetime(2026, 3, 16, tzinfo=UTC)),
        ("1773648000", datetime(2026, 3, 16, 8, tzinfo=UTC)),
        ("1773648000.5", datetime(2026, 3, 16, 8, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_lookup_cli_parses_times_like_the_aws_cli(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_lookup_cli_rejects_bad_times_and_page_sizes() -> None:
    with pytest.raises(SystemExit):
        args("--start-time", "yesterday")
    with pytest.raises(SystemExit):
        args("--max-results", "51")


class Recorder:
    """Answers every request with an empty page and keeps what was sent."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        raw = type("Raw", (), {"stream": lambda self, **_: iter([b'{"Events": []}'])})()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, raw)


def test_lookup_cli_signs_for_api_gateway_on_a_deployed_endpoint() -> None:
    parsed = args(
        "--endpoint-url",
        "https://abc123.execute-api.eu-west-1.amazonaws.com/v1",
        "--region",
        "eu-west-1",
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=A",
        "AttributeKey=Username,AttributeValue=B",
    )
    client = make_client(parsed, match_all=True)
    recorder = Recorder()
    client.meta.events.register("before-send.cloudtrail", recorder)
    client.lookup_events(LookupAttributes=parse_attributes(parsed.lookup_attributes))
    [request] = recorder.requests
    assert request.url == "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"
    assert "/eu-west-1/execute-api/aws4_request" in request.headers["Authorization"].decode()
    assert request.headers["X-OpenTrail-Match-All"] in ("true", b"true")


def test_lookup_cli_uses_the_stock_client_on_a_loopback_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    client = make_client(args("--endpoint-url", "http://127.0.0.1:4599"), match_all=False)
    recorder = Recorder()
    client.meta.events.register("before-send.cloudtrail", recorder)
    client.lookup_events()
    [request] = recorder.requests
    assert "/us-east-1/cloudtrail/aws4_request" in request.headers["Authorization"].decode()  # fake credentials
    assert "X-OpenTrail-Match-All" not in request.headers


def test_lookup_cli_takes_the_endpoint_from_the_stack_outputs() -> None:
    class Session:
        def client(self, service: str) -> Any:
            assert service == "cloudformation"
            outputs = [{"OutputKey": "QueryApiUrl", "OutputValue": "https://q.example/v1"}]
            return type("CFN", (), {"describe_stacks": lambda self, **_: {"Stacks": [{"Outputs": outputs}]}})()

    assert stack_endpoint(Session(), "OpenTrail") == "https://q.example/v1"


def test_lookup_cli_needs_an_endpoint_or_a_stack() -> None:
    with pytest.raises(UsageError, match="--endpoint-url"):
        make_client(args(), match_all=False)


EVENT = {
    "EventId": "0b5a-1",
    "EventName": "DeleteBucket",
    "ReadOnly": "false",
    "Username": "alice",
    "EventTime": datetime(2026, 3, 16, 10, 0, tzinfo=timezone(timedelta(hours=2))),
    "EventSource": "s3.amazonaws.com",
    "Resources": [{"ResourceType": "AWS::S3::Bucket", "ResourceName": "logs"}],
    "CloudTrailEvent": "{}",
}


def test_lookup_cli_json_has_the_aws_cli_shape() -> None:
    printed = to_json({"Events": [EVENT], "NextToken": "t"})
    assert printed.startswith('{\n    "Events": [')
    document = json.loads(printed)
    assert document["NextToken"] == "t"
    assert document["Events"][0]["EventTime"] == "2026-03-16T08:00:00+00:00"
    assert json.loads(to_json({"Events": [EVENT]}, timestamp_format="none"))["Events"][0]["EventTime"] == 1773648000.0


def test_lookup_cli_table_is_readable() -> None:
    table = to_table({"Events": [EVENT], "NextToken": "t"}).splitlines()
    assert table[0].split() == ["EventTime", "EventName", "Username", "EventSource", "Resources", "EventId"]
    assert table[2].split() == [
        "2026-03-16",
        "08:00:00Z",
        "DeleteBucket",
        "alice",
        "s3.amazonaws.com",
        "AWS::S3::Bucket:logs",
        "0b5a-1",
    ]
    assert table[-1] == "1 event; more with --starting-token t"
