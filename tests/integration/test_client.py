"""The real boto3 ``cloudtrail-data`` client against the ingest handler, and the signing helper.

A tiny HTTP server on 127.0.0.1 plays API Gateway: it turns each HTTP request into a REST
proxy event (stage prefix stripped, query string decoded, IAM caller from the SigV4 access
key) and the handler's proxy response back into HTTP. botocore then parses the replies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from opentrail.client import cloudtrail_client, cloudtrail_data_client
from opentrail.domain.bundle import unpack
from opentrail.handlers import ingest
from opentrail.local.context import LocalContext
from opentrail.settings import IngestSettings

CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/opentrail"
OWNER = "123456789012"
# SigV4 access key -> the account API Gateway's IAM auth would report.
ACCOUNTS = {"AKIAOWNER": OWNER, "AKIASTRANGER": "210987654321"}
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)


class MemoryBuffer:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, bodies: list[str]) -> None:
        self.bodies.extend(bodies)


class FakeApiGateway(BaseHTTPRequestHandler):
    buffer: MemoryBuffer
    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        stage, _, rest = url.path.lstrip("/").partition("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        query = dict(parse_qsl(url.query))
        authorization = self.headers.get("Authorization", "")
        access_key = authorization.partition("Credential=")[2].partition("/")[0]
        self.requests.append({"path": url.path, "query": query, "authorization": authorization})
        event = ingest.api_gateway_event(
            body=body,
            channel_arn=query.get("channelArn"),
            external_id=query.get("externalId"),
            caller_account_id=ACCOUNTS.get(access_key),
            caller_arn=f"arn:aws:iam::{ACCOUNTS.get(access_key)}:user/tester",
            method=self.command,
            path=f"/{rest}",
            stage=stage,
        )
        response = ingest.handler(
            event,
            LocalContext(),
            buffer=self.buffer,
            settings=IngestSettings(buffer_queue_url="unused", channel_arns=CHANNEL),
            clock=lambda: NOW,
        )
        payload = response["body"].encode()
        self.send_response(response["statusCode"])
        for name, values in response.get("multiValueHeaders", {}).items():
            for value in values:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeApiGateway]]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Api", (FakeApiGateway,), {"buffer": MemoryBuffer(), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}/prod"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client(api: Any, access_key: str = "AKIAOWNER", *, stock: bool = False) -> Any:
    session = boto3.Session(aws_access_key_id=access_key, aws_secret_access_key="secret", region_name="us-east-1")
    if stock:
        return session.client("cloudtrail-data", endpoint_url=api.endpoint)
    return cloudtrail_data_client(api.endpoint, session=session)


def event_data(uid: str = "u-1", **changes: Any) -> str:
    data = {
        "version": "1.0",
        "userIdentity": {"type": "CustomUser", "principalId": "alice"},
        "eventSource": "app.example.com",
        "eventName": "DeleteWidget",
        "eventTime": "2025-03-14T09:59:00Z",
        "UID": uid,
        "recipientAccountId": OWNER,
        **changes,
    }
    return json.dumps(data)


@pytest.mark.parametrize("stock", [True, False])
def test_client_put_audit_events_parses_successful_and_failed(api: Any, stock: bool) -> None:
    reply = client(api, stock=stock).put_audit_events(
        channelArn=CHANNEL,
        externalId="tenant-42",
        auditEvents=[
            {"id": "ok", "eventData": event_data()},
            {"id": "foreign", "eventData": event_data(recipientAccountId="210987654321")},
        ],
    )
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert reply["ResponseMetadata"]["RequestId"]
    [stored] = [r for body in api.buffer.bodies for r in unpack(body).records()]
    assert reply["successful"] == [{"id": "ok", "eventID": stored["eventID"]}]
    assert reply["failed"] == [
        {
            "id": "foreign",
            "errorCode": "InvalidRecipient",
            "errorMessage": f"eventData.recipientAccountId: must be the channel owner's account {OWNER}",
        }
    ]
    assert stored["additionalEventData"]["opentrailIngestion"]["externalId"] == "tenant-42"
    assert api.requests[-1]["path"] == "/prod/PutAuditEvents"
    assert api.requests[-1]["query"] == {"channelArn": CHANNEL, "externalId": "tenant-42"}
    scope = "/execute-api/aws4_request" if not stock else "/cloudtrail-data/aws4_request"
    assert scope in api.requests[-1]["authorization"]


@pytest.mark.parametrize(
    ("access_key", "channel", "events", "exception"),
    [
        ("AKIAOWNER", "arn:aws:cloudtrail:us-east-1:123456789012:channel/missing", None, "ChannelNotFound"),
        ("AKIAOWNER", "arn:aws:sqs:us-east-1:123456789012:queue", None, "InvalidChannelARN"),
        ("AKIASTRANGER", CHANNEL, None, "ChannelInsufficientPermission"),
        ("AKIAOWNER", CHANNEL, [{"id": "1", "eventData": "{}"}] * 2, "DuplicatedAuditEventId"),
    ],
)
def test_client_request_errors_raise_modelled_exceptions(
    api: Any, access_key: str, channel: str, events: list[dict[str, str]] | None, exception: str
) -> None:
    trail_data = client(api, access_key)
    error_class = getattr(trail_data.exceptions, exception)
    with pytest.raises(error_class) as raised:
        trail_data.put_audit_events(channelArn=channel, auditEvents=events or [{"id": "1", "eventData": event_data()}])
    assert raised.value.response["Error"]["Code"] == exception
    assert raised.value.response["Error"]["Message"]
    assert api.buffer.bodies == []


def test_client_unmodelled_validation_error_is_a_client_error(api: Any) -> None:
    trail_data = client(api)
    with pytest.raises(ClientError) as raised:
        trail_data.put_audit_events(
            channelArn=CHANNEL, auditEvents=[{"id": str(i), "eventData": event_data(str(i))} for i in range(101)]
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "1 to 100" in raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_client_signs_for_execute_api_and_keeps_the_stage_path() -> None:
    captured: list[Any] = []

    def fake_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        response = AWSResponse(request.url, 200, {"Content-Type": "application/json"}, None)
        response._content = b'{"successful": [{"id": "1", "eventID": "e-1"}], "failed": []}'
        return response

    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1")
    trail_data = cloudtrail_data_client("https://abc123.execute-api.eu-west-1.amazonaws.com/prod", session=session)
    trail_data.meta.events.register("before-send", fake_send)
    reply = trail_data.put_audit_events(channelArn=CHANNEL, auditEvents=[{"id": "1", "eventData": "{}"}])

    assert reply["successful"] == [{"id": "1", "eventID": "e-1"}]
    [request] = captured
    authorization = request.headers["Authorization"].decode()
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert request.url == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/PutAuditEvents"
        "?channelArn=arn%3Aaws%3Acloudtrail%3Aus-east-1%3A123456789012%3Achannel%2Fopentrail"
    )


def test_client_region_name_sets_the_signing_region() -> None:
    captured: list[Any] = []

    def fake_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        response = AWSResponse(request.url, 200, {}, None)
        response._content = b'{"successful": [], "failed": []}'
        return response

    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    trail_data = cloudtrail_data_client("https://api.example.com/v1", session=session, region_name="ap-southeast-2")
    trail_data.meta.events.register("before-send", fake_send)
    trail_data.put_audit_events(channelArn=CHANNEL, auditEvents=[{"id": "1", "eventData": "{}"}])
    assert "/ap-southeast-2/execute-api/aws4_request" in captured[0].headers["Authorization"].decode()
    assert captured[0].url.startswith("https://api.example.com/v1/PutAuditEvents?")


def test_client_other_clients_keep_their_signing_name() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    cloudtrail_data_client("https://api.example.com/prod", session=session)
    captured: list[Any] = []

    def fake_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        response = AWSResponse(request.url, 200, {}, None)
        response._content = b'{"successful": [], "failed": []}'
        return response

    stock = session.client("cloudtrail-data", endpoint_url="https://api.example.com/prod")
    stock.meta.events.register("before-send", fake_send)
    stock.put_audit_events(channelArn=CHANNEL, auditEvents=[{"id": "1", "eventData": "{}"}])
    assert "/cloudtrail-data/aws4_request" in captured[0].headers["Authorization"].decode()


# --- cloudtrail_client (LookupEvents and the rest of CloudTrail's JSON 1.1 API) ------------------


def _capture(client: Any, body: bytes = b'{"Events": []}') -> list[Any]:
    captured: list[Any] = []

    def fake_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        response = AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, None)
        response._content = body
        return response

    client.meta.events.register("before-send", fake_send)
    return captured


def test_client_cloudtrail_signs_for_execute_api_and_keeps_the_stage_path() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1")
    trail = cloudtrail_client("https://abc123.execute-api.eu-west-1.amazonaws.com/v1", session=session)
    captured = _capture(trail)
    reply = trail.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}])

    assert reply["Events"] == []
    [request] = captured
    authorization = request.headers["Authorization"].decode()
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "x-amz-target" in authorization.partition("SignedHeaders=")[2]
    assert request.url == "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"
    assert request.headers["X-Amz-Target"] == b"com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
    assert request.headers["Content-Type"] == b"application/x-amz-json-1.1"
    assert json.loads(request.body) == {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}]
    }
    assert "X-OpenTrail-Match-All" not in request.headers


def test_client_cloudtrail_region_name_sets_the_signing_region() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    trail = cloudtrail_client("https://api.example.com/v1", session=session, region_name="ap-southeast-2")
    captured = _capture(trail)
    trail.lookup_events()
    assert "/ap-southeast-2/execute-api/aws4_request" in captured[0].headers["Authorization"].decode()


def test_client_cloudtrail_match_all_attributes_sends_the_signed_header() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    trail = cloudtrail_client("https://api.example.com/v1", session=session, match_all_attributes=True)
    captured = _capture(trail)
    trail.lookup_events(
        LookupAttributes=[
            {"AttributeKey": "EventName", "AttributeValue": "CreateUser"},
            {"AttributeKey": "Username", "AttributeValue": "alice"},
        ]
    )
    request = captured[0]
    assert request.headers["X-OpenTrail-Match-All"] == b"true"
    assert "x-opentrail-match-all" in request.headers["Authorization"].decode()


def test_client_cloudtrail_helpers_leave_other_clients_alone() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    cloudtrail_client("https://api.example.com/v1", session=session, match_all_attributes=True)
    stock = session.client("cloudtrail", endpoint_url="https://api.example.com/v1")
    captured = _capture(stock)
    stock.lookup_events()
    assert "/cloudtrail/aws4_request" in captured[0].headers["Authorization"].decode()
    assert "X-OpenTrail-Match-All" not in captured[0].headers
    data = session.client("cloudtrail-data", endpoint_url="https://api.example.com/v1")
    captured = _capture(data, b'{"successful": [], "failed": []}')
    data.put_audit_events(channelArn=CHANNEL, auditEvents=[{"id": "1", "eventData": "{}"}])
    assert "/cloudtrail-data/aws4_request" in captured[0].headers["Authorization"].decode()


def test_client_stock_cloudtrail_with_a_model_override_signs_for_execute_api(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/lookup.md: the AWS CLI / any botocore client against the deployed API, via AWS_DATA_PATH
    import gzip
    from pathlib import Path

    import botocore

    source = Path(botocore.__file__).parent / "data" / "cloudtrail" / "2013-11-01" / "service-2.json.gz"
    model = json.loads(gzip.decompress(source.read_bytes()))
    model["metadata"]["signingName"] = "execute-api"
    target = tmp_path / "cloudtrail" / "2013-11-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))

    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1")
    stock = session.client("cloudtrail", endpoint_url="https://abc123.execute-api.eu-west-1.amazonaws.com/v1")
    captured = _capture(stock)
    stock.lookup_events()
    assert "/eu-west-1/execute-api/aws4_request" in captured[0].headers["Authorization"].decode()
