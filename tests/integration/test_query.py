"""LookupFunction (handlers/query.py): JSON 1.1 dispatch, LookupEvents over a history, NextToken
keys in DynamoDB (moto), and the real boto3 ``cloudtrail`` client over HTTP.

The history here is `MemoryHistory`, an in-memory implementation of the index's interface
(`lookup(query, cursor) -> LookupPage`, newest first, opaque cursor, None = last page).
A tiny HTTP server on 127.0.0.1 plays API Gateway for the boto3 tests.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from opentrail.adapters.history_config import CONFIG_PK, NEXT_TOKEN_KEY_SK, NextTokenKeyStore
from opentrail.client import cloudtrail_client, enable_match_all_attributes
from opentrail.domain import history as index
from opentrail.domain.lookup import LookupPage, LookupQuery
from opentrail.domain.record import format_event_time, parse_event_time
from opentrail.handlers import query
from opentrail.local.context import LocalContext
from opentrail.settings import QuerySettings

TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)
KEY = b"0123456789abcdef0123456789abcdef"
SETTINGS = QuerySettings(history_table="opentrail-history")
ACCOUNT = "123456789012"


class MemoryHistory:
    """The index's interface over a list: filter, newest first, cursor {"after": [eventTime, eventID]}."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.calls: list[tuple[LookupQuery, dict[str, Any] | None]] = []

    def lookup(self, query: LookupQuery, cursor: dict[str, Any] | None) -> LookupPage:
        self.calls.append((query, cursor))
        found = sorted(
            (r for r in self.records if self._selected(r, query)),
            key=lambda r: (r["eventTime"], r["eventID"]),
            reverse=True,
        )
        if cursor is not None:
            after = tuple(cursor["after"])
            found = [r for r in found if (r["eventTime"], r["eventID"]) < after]
        page = found[: query.max_results]
        more = len(found) > query.max_results
        return LookupPage(
            records=page, cursor={"after": [page[-1]["eventTime"], page[-1]["eventID"]]} if more else None
        )

    @staticmethod
    def _selected(record: dict[str, Any], query: LookupQuery) -> bool:
        if record["awsRegion"] != query.region or index.is_insight(record) != query.insight:
            return False
        if not query.start <= parse_event_time(record["eventTime"]) <= query.end:
            return False
        if query.insight:
            details = record["insightDetails"]
            fields = {
                "EventId": record["eventID"],
                "EventName": details["eventName"],
                "EventSource": details["eventSource"],
            }
            return all(fields[key] == value for key, value in query.attributes)
        return all(index.matches(record, key, value) for key, value in query.attributes)


def management_event(
    minute: int, *, name: str = "CreateUser", user: str = "alice", region: str = "us-east-1", read_only: bool = False
) -> dict[str, Any]:
    return {
        "eventVersion": "1.11",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
            "accountId": ACCOUNT,
            "accessKeyId": f"AKIA{user.upper()}",
            "userName": user,
        },
        "eventTime": format_event_time(NOW - timedelta(minutes=minute)),
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": "198.51.100.7",
        "requestParameters": {"userName": f"user-{minute}"},
        "responseElements": None,
        "eventID": str(uuid.UUID(int=minute + (1 << 64) * (region != "us-east-1"))),
        "readOnly": read_only,
        "resources": [{"ARN": f"arn:aws:iam::{ACCOUNT}:user/user-{minute}", "type": "AWS::IAM::User"}],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }


def insight_event(minute: int) -> dict[str, Any]:
    return {
        "eventVersion": "1.07",
        "eventTime": format_event_time(NOW - timedelta(minutes=minute)),
        "awsRegion": "us-east-1",
        "eventID": str(uuid.UUID(int=(2 << 64) + minute)),
        "eventType": "AwsCloudTrailInsight",
        "recipientAccountId": ACCOUNT,
        "sharedEventID": str(uuid.UUID(int=(3 << 64) + minute)),
        "insightDetails": {"state": "Start", "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances"},
        "eventCategory": "Insight",
    }


def records() -> list[dict[str, Any]]:
    found = [
        management_event(
            m, name="CreateUser" if m % 3 else "ListUsers", user="alice" if m % 2 else "bob", read_only=not m % 3
        )
        for m in range(1, 121)
    ]
    found += [management_event(m, region="eu-west-1", name="DeleteBucket") for m in range(1, 6)]
    found += [insight_event(m) for m in (7, 70)]
    return found


def authorization(region: str = "us-east-1", service: str = "cloudtrail") -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250314/{region}/{service}/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=abc"
    )


def call(
    body: dict[str, Any] | str | None,
    *,
    history: Any = None,
    target: str = TARGET,
    headers: dict[str, str] | None = None,
    token_key: bytes | None = KEY,
    settings: QuerySettings = SETTINGS,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    all_headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target, **(headers or {})}
    event = query.api_gateway_event(body=text, headers=all_headers)
    response = query.handler(
        event,
        LocalContext(),
        history=history if history is not None else MemoryHistory(records()),
        settings=settings,
        clock=lambda: NOW,
        token_key=token_key,
    )
    return response["statusCode"], response["headers"], json.loads(response["body"])


# --- handler, called directly -------------------------------------------------------------------


def test_query_lookup_events_returns_newest_first_with_cloudtrail_shape() -> None:
    status, headers, body = call({"MaxResults": 3})
    assert status == 200
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-RequestId"]
    events = body["Events"]
    assert [e["EventTime"] for e in events] == sorted((e["EventTime"] for e in events), reverse=True)
    first = events[0]
    assert set(first) == {
        "EventId", "EventName", "ReadOnly", "AccessKeyId", "EventTime", "EventSource", "Username", "Resources",
        "CloudTrailEvent",
    }  # fmt: skip
    assert first["EventTime"] == (NOW - timedelta(minutes=1)).timestamp()
    assert first["ReadOnly"] in ("true", "false")
    assert first["Resources"] == [{"ResourceType": "AWS::IAM::User", "ResourceName": "user-1"}]
    assert json.loads(first["CloudTrailEvent"])["eventID"] == first["EventId"]
    assert body["NextToken"]


def test_query_region_comes_from_the_signature_scope() -> None:
    _, _, body = call({}, headers={"Authorization": authorization("eu-west-1")})
    assert {json.loads(e["CloudTrailEvent"])["awsRegion"] for e in body["Events"]} == {"eu-west-1"}
    assert len(body["Events"]) == 5
    assert "NextToken" not in body


def test_query_region_without_signature_is_the_functions() -> None:
    history = MemoryHistory(records())
    call({}, history=history)
    assert history.calls[0][0].region == "us-east-1"


def test_query_pages_walk_every_matching_record_once() -> None:
    history = MemoryHistory(records())
    body: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": "Username", "AttributeValue": "alice"}],
        "MaxResults": 7,
    }
    seen: list[str] = []
    while True:
        status, _, reply = call(body, history=history)
        assert status == 200
        seen += [e["EventId"] for e in reply["Events"]]
        if "NextToken" not in reply:
            break
        body = {**body, "NextToken": reply["NextToken"]}
    expected = [r["eventID"] for r in history.records if index.username(r) == "alice" and r["awsRegion"] == "us-east-1"]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen)) == 60


def test_query_token_reused_with_other_attributes_is_rejected() -> None:
    _, _, first = call({"LookupAttributes": [{"AttributeKey": "Username", "AttributeValue": "alice"}]})
    status, headers, body = call(
        {"LookupAttributes": [{"AttributeKey": "Username", "AttributeValue": "bob"}], "NextToken": first["NextToken"]}
    )
    assert status == 400
    assert body["__type"] == "InvalidNextTokenException"
    assert headers["x-amzn-ErrorType"] == "InvalidNextTokenException"


def test_query_token_from_another_key_is_rejected() -> None:
    _, _, first = call({"MaxResults": 5})
    status, _, body = call({"MaxResults": 5, "NextToken": first["NextToken"]}, token_key=b"another-key" * 3)
    assert (status, body["__type"]) == (400, "InvalidNextTokenException")


def test_query_match_all_header_ands_attributes() -> None:
    attributes = [
        {"AttributeKey": "Username", "AttributeValue": "alice"},
        {"AttributeKey": "EventName", "AttributeValue": "ListUsers"},
    ]
    status, _, body = call({"LookupAttributes": attributes})
    assert (status, body["__type"]) == (400, "InvalidLookupAttributesException")
    status, _, body = call({"LookupAttributes": attributes}, headers={"X-OpenTrail-Match-All": "true"})
    assert status == 200
    assert body["Events"]
    assert all(e["Username"] == "alice" and e["EventName"] == "ListUsers" for e in body["Events"])


def test_query_match_all_header_must_be_boolean() -> None:
    status, _, body = call({}, headers={"x-opentrail-match-all": "1"})
    assert (status, body["__type"]) == (400, "InvalidParameterException")


def test_query_insight_category_returns_only_insights() -> None:
    _, _, body = call({"EventCategory": "insight"})
    assert [e["EventName"] for e in body["Events"]] == ["RunInstances", "RunInstances"]
    assert all(json.loads(e["CloudTrailEvent"])["eventCategory"] == "Insight" for e in body["Events"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"LookupAttributes": [{"AttributeKey": "Nope", "AttributeValue": "x"}]}, "InvalidLookupAttributesException"),
        ({"StartTime": 1741950000, "EndTime": 1741940000}, "InvalidTimeRangeException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"MaxResults": 0}, "InvalidMaxResultsException"),
        ({"NextToken": "forged.token"}, "InvalidNextTokenException"),
        ({"EventCategory": "data"}, "InvalidEventCategoryException"),
        ("{not json", "SerializationException"),
        ("[1, 2]", "SerializationException"),
    ],
)
def test_query_invalid_requests_are_json_errors(body: Any, code: str) -> None:
    status, headers, reply = call(body)
    assert status == 400
    assert reply["__type"] == code
    assert reply["message"]
    assert headers["x-amzn-ErrorType"] == code


@pytest.mark.parametrize(
    "target",
    ["", "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.DeleteTrail", "CloudTrail_20131101.LookupEvents"],
)
def test_query_unknown_target_is_unknown_operation(target: str) -> None:
    status, _, body = call({}, target=target)
    assert (status, body["__type"]) == (400, "UnknownOperationException")


def test_query_empty_body_is_an_empty_request() -> None:
    status, _, body = call(None)
    assert status == 200
    assert len(body["Events"]) == 50


def test_query_history_failure_is_internal_failure() -> None:
    class Broken:
        def lookup(self, query: LookupQuery, cursor: Any) -> LookupPage:
            raise RuntimeError("DynamoDB is down")

    status, _, body = call({}, history=Broken())
    assert (status, body["__type"]) == (500, "InternalFailure")


def test_query_operations_registry_adds_an_operation_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(query.OPERATIONS, "ListPublicKeys", lambda call: {"PublicKeyList": [], "region": call.region})
    status, _, body = call({}, target="com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.ListPublicKeys")
    assert (status, body) == (200, {"PublicKeyList": [], "region": "us-east-1"})


def test_query_single_page_does_not_need_the_token_key() -> None:
    # No moto here: reading the key from "missing-table" would fail the request with a 500.
    history = MemoryHistory(records())
    settings = QuerySettings(history_table="missing-table")
    status, _, _ = call(
        {"MaxResults": 50, "EventCategory": "insight"}, history=history, token_key=None, settings=settings
    )
    assert status == 200


@pytest.mark.parametrize(
    ("header", "region"),
    [
        (authorization("ap-southeast-2"), "ap-southeast-2"),
        (authorization("eu-central-1", "execute-api"), "eu-central-1"),
        ("AWS4-HMAC-SHA256 Credential=AK/2025/x/aws4_request", None),
        ("", None),
        (None, None),
    ],
)
def test_query_credential_region(header: str | None, region: str | None) -> None:
    assert query.credential_region(header) == region


# --- NextToken key in the history table (moto) -------------------------------------------------


@pytest.fixture
def history_table(aws: None) -> str:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="opentrail-history",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return "opentrail-history"


def test_query_token_key_is_created_once_and_shared(history_table: str) -> None:
    first = NextTokenKeyStore(history_table, client=boto3.client("dynamodb")).key()
    second = NextTokenKeyStore(history_table, client=boto3.client("dynamodb")).key()
    assert first == second
    assert len(first) == 32
    item = boto3.client("dynamodb").get_item(
        TableName=history_table, Key={"pk": {"S": CONFIG_PK}, "sk": {"S": NEXT_TOKEN_KEY_SK}}
    )["Item"]
    assert item["key"]["B"] == first
    assert "expiresAt" not in item


def test_query_token_key_race_keeps_the_first_writer(history_table: str) -> None:
    client = boto3.client("dynamodb")
    store = NextTokenKeyStore(history_table, client=client)
    winner = b"w" * 32
    real_read = store._read
    reads = iter([None])

    def read_once_empty() -> bytes | None:  # the other container writes between our read and put
        if next(reads, "done") is None:
            client.put_item(
                TableName=history_table,
                Item={"pk": {"S": CONFIG_PK}, "sk": {"S": NEXT_TOKEN_KEY_SK}, "key": {"B": winner}},
            )
            return None
        return real_read()

    store._read = read_once_empty  # type: ignore[method-assign]
    assert store.key() == winner


def test_query_handler_reads_the_key_from_the_table(history_table: str) -> None:
    query._KEYS.clear()
    settings = QuerySettings(history_table=history_table)
    history = MemoryHistory(records())
    _, _, first = call({"MaxResults": 10}, history=history, token_key=None, settings=settings)
    query._KEYS.clear()  # a new container: the key comes from the table again
    status, _, second = call(
        {"MaxResults": 10, "NextToken": first["NextToken"]}, history=history, token_key=None, settings=settings
    )
    assert status == 200
    assert {e["EventId"] for e in first["Events"]}.isdisjoint({e["EventId"] for e in second["Events"]})
    query._KEYS.clear()


# --- the real boto3 cloudtrail client over HTTP ------------------------------------------------------


class FakeApiGateway(BaseHTTPRequestHandler):
    """HTTP -> API Gateway REST proxy event for ``POST /<stage>/`` -> handler -> HTTP."""

    history: MemoryHistory
    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        stage, _, rest = self.path.lstrip("/").partition("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        headers = dict(self.headers.items())
        self.requests.append({"path": self.path, "headers": headers, "body": body})
        event = query.api_gateway_event(body=body, headers=headers, path=f"/{rest}", stage=stage)
        response = query.handler(
            event, LocalContext(), history=self.history, settings=SETTINGS, clock=lambda: NOW, token_key=KEY
        )
        payload = response["body"].encode()
        self.send_response(response["statusCode"])
        for name, value in response["headers"].items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Api", (FakeApiGateway,), {"history": MemoryHistory(records()), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def trail(api: Any, *, stock: bool = True, region: str = "us-east-1") -> Any:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name=region)
    if stock:
        return session.client("cloudtrail", endpoint_url=api.endpoint)
    return cloudtrail_client(api.endpoint, session=session)


@pytest.mark.parametrize("stock", [True, False])
def test_query_boto3_lookup_events(api: Any, stock: bool) -> None:
    reply = trail(api, stock=stock).lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListUsers"}],
        StartTime=NOW - timedelta(minutes=30),
        EndTime=NOW,
        MaxResults=5,
    )
    events = reply["Events"]
    assert len(events) == 5
    assert all(e["EventName"] == "ListUsers" and e["ReadOnly"] == "true" for e in events)
    assert events[0]["EventTime"] == NOW - timedelta(minutes=3)
    assert events[0]["Resources"] == [{"ResourceType": "AWS::IAM::User", "ResourceName": "user-3"}]
    assert reply["NextToken"]
    request = api.requests[-1]
    assert request["path"] == "/v1"  # API Gateway maps /v1 to the root resource "/"
    assert request["headers"]["X-Amz-Target"] == TARGET
    scope = "/cloudtrail/aws4_request" if stock else "/execute-api/aws4_request"
    assert scope in request["headers"]["Authorization"]
    sent = json.loads(request["body"])
    assert isinstance(sent["StartTime"], int | float)


@pytest.mark.parametrize("stock", [True, False])
def test_query_boto3_paginator_walks_all_pages(api: Any, stock: bool) -> None:
    paginator = trail(api, stock=stock).get_paginator("lookup_events")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 9}))
    ids = [e["EventId"] for page in pages for e in page["Events"]]
    expected = [r for r in api.history.records if r["awsRegion"] == "us-east-1" and not index.is_insight(r)]
    assert len(ids) == len(set(ids)) == len(expected) == 120
    assert len(pages) == 14
    times = [e["EventTime"] for page in pages for e in page["Events"]]
    assert times == sorted(times, reverse=True)


def test_query_boto3_paginator_max_items_resumes(api: Any) -> None:
    paginator = trail(api).get_paginator("lookup_events")
    first = paginator.paginate(PaginationConfig={"MaxItems": 25, "PageSize": 10}).build_full_result()
    assert len(first["Events"]) == 25
    rest = paginator.paginate(
        PaginationConfig={"StartingToken": first["NextToken"], "PageSize": 10}
    ).build_full_result()
    assert len(first["Events"]) + len(rest["Events"]) == 120
    assert {e["EventId"] for e in first["Events"]}.isdisjoint({e["EventId"] for e in rest["Events"]})


def test_query_boto3_region_selects_the_events(api: Any) -> None:
    events = trail(api, region="eu-west-1").lookup_events()["Events"]
    assert {e["EventName"] for e in events} == {"DeleteBucket"}


def test_query_boto3_match_all_attributes(api: Any) -> None:
    client = enable_match_all_attributes(trail(api))
    events = client.lookup_events(
        LookupAttributes=[
            {"AttributeKey": "Username", "AttributeValue": "bob"},
            {"AttributeKey": "ReadOnly", "AttributeValue": "true"},
        ]
    )["Events"]
    assert events
    assert all(e["Username"] == "bob" and e["ReadOnly"] == "true" for e in events)
    assert api.requests[-1]["headers"]["X-OpenTrail-Match-All"] == "true"


@pytest.mark.parametrize(
    ("kwargs", "exception"),
    [
        (
            {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "a"}] * 2},
            "InvalidLookupAttributesException",
        ),
        ({"LookupAttributes": [{"AttributeKey": "Bogus", "AttributeValue": "a"}]}, "InvalidLookupAttributesException"),
        ({"StartTime": NOW, "EndTime": NOW - timedelta(hours=1)}, "InvalidTimeRangeException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
        ({"EventCategory": "Insight"}, "InvalidEventCategoryException"),
    ],
)
def test_query_boto3_errors_raise_modelled_exceptions(api: Any, kwargs: dict[str, Any], exception: str) -> None:
    client = trail(api)
    with pytest.raises(getattr(client.exceptions, exception)) as raised:
        client.lookup_events(**kwargs)
    assert raised.value.response["Error"]["Code"] == exception
    assert raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_query_boto3_token_reused_with_other_parameters(api: Any) -> None:
    client = trail(api)
    first = client.lookup_events(MaxResults=5)
    with pytest.raises(client.exceptions.InvalidNextTokenException):
        client.lookup_events(MaxResults=5, NextToken=first["NextToken"], EventCategory="insight")
    # MaxResults is a page size: it may change between pages
    assert client.lookup_events(MaxResults=7, NextToken=first["NextToken"])["Events"]


def test_query_boto3_unknown_operation_is_a_client_error(api: Any) -> None:
    with pytest.raises(ClientError) as raised:
        trail(api).list_event_data_stores()
    assert raised.value.response["Error"]["Code"] == "UnknownOperationException"


# --- with the real index (opentrail.adapters.history) on moto ------------------------------------------


@pytest.fixture
def indexed(aws: None) -> tuple[Any, list[dict[str, Any]]]:
    from opentrail.adapters.history import EventHistory
    from opentrail.local.resources import create_history_table

    client = boto3.client("dynamodb", region_name="us-east-1")
    create_history_table(client, "opentrail-history")
    history = EventHistory("opentrail-history", client=client)
    stored = records()
    history.index_lines("batch-1", [json.dumps(r, separators=(",", ":")).encode() for r in stored])
    return history, stored


def walk(body: dict[str, Any], history: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    pages = 0
    while True:
        status, _, reply = call(body, history=history, **{"token_key": None, **kwargs})
        assert status == 200, reply
        pages += 1
        events += reply["Events"]
        if "NextToken" not in reply:
            return events, pages
        body = {**body, "NextToken": reply["NextToken"]}


def test_query_real_index_pages_through_everything_newest_first(indexed: tuple[Any, list[dict[str, Any]]]) -> None:
    history, stored = indexed
    query._KEYS.clear()
    events, pages = walk({"MaxResults": 11}, history)
    query._KEYS.clear()
    expected = {r["eventID"] for r in stored if r["awsRegion"] == "us-east-1" and not index.is_insight(r)}
    assert [e["EventId"] for e in events if e["EventId"] in expected] == [e["EventId"] for e in events]
    assert {e["EventId"] for e in events} == expected
    assert len(events) == 120
    assert pages == 11
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    ("key", "value", "count"),
    [
        ("EventName", "ListUsers", 40),
        ("Username", "bob", 60),
        ("ReadOnly", "false", 80),
        ("AccessKeyId", "AKIAALICE", 60),
        ("ResourceType", "AWS::IAM::User", 120),
        ("ResourceName", "user-42", 1),
        ("EventSource", "iam.amazonaws.com", 120),
        ("EventId", str(uuid.UUID(int=17)), 1),
    ],
)
def test_query_real_index_each_attribute(
    indexed: tuple[Any, list[dict[str, Any]]], key: str, value: str, count: int
) -> None:
    history, _ = indexed
    query._KEYS.clear()
    events, _ = walk({"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}], "MaxResults": 50}, history)
    query._KEYS.clear()
    assert len(events) == count
    assert len({e["EventId"] for e in events}) == count


def test_query_real_index_insights_and_and(indexed: tuple[Any, list[dict[str, Any]]]) -> None:
    history, _ = indexed
    events, _ = walk({"EventCategory": "insight"}, history, token_key=KEY)
    assert [e["EventName"] for e in events] == ["RunInstances"] * 2
    attributes = [
        {"AttributeKey": "Username", "AttributeValue": "alice"},
        {"AttributeKey": "EventName", "AttributeValue": "ListUsers"},
    ]
    events, _ = walk({"LookupAttributes": attributes, "OpenTrailMatchAllAttributes": True}, history, token_key=KEY)
    assert len(events) == 20
    assert all(e["Username"] == "alice" and e["EventName"] == "ListUsers" for e in events)


def test_query_real_index_time_bounds_are_inclusive(indexed: tuple[Any, list[dict[str, Any]]]) -> None:
    history, _ = indexed
    start, end = NOW - timedelta(minutes=20), NOW - timedelta(minutes=10)
    events, _ = walk({"StartTime": start.timestamp(), "EndTime": end.timestamp()}, history, token_key=KEY)
    assert [e["EventTime"] for e in events] == [(NOW - timedelta(minutes=m)).timestamp() for m in range(10, 21)]
