"""Trail operations of the query API (opentrail.trail_api) through the stock boto3 ``cloudtrail``
client over HTTP, with the trail state in a moto ledger table (docs/trails.md)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from opentrail.adapters.trail_state import TrailStateStore
from opentrail.domain.insights import INSIGHT_TYPES
from opentrail.handlers import query
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources
from opentrail.settings import DEFAULT_TRAILS_JSON, QuerySettings

NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)
ACCOUNT = "123456789012"
TRAILS = [
    {"Name": "opentrail"},
    {
        "Name": "security",
        "S3KeyPrefix": "security",
        "EventSelectors": [{"ReadWriteType": "WriteOnly", "ExcludeManagementEventSources": ["kms.amazonaws.com"]}],
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}],
        "Deliveries": {"CloudWatchLogs": "security-trail", "EventBridge": True, "SnsTopic": True},
    },
    {
        "Name": "data",
        "S3KeyPrefix": "data",
        "LogFileValidationEnabled": False,
        "IsMultiRegionTrail": False,
        "AdvancedEventSelectors": [
            {
                "Name": "S3 reads of reports",
                "FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Data"]},
                    {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                    {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::reports/"]},
                ],
            }
        ],
    },
]


class Api(BaseHTTPRequestHandler):
    settings: QuerySettings
    region: str = "us-east-1"
    clock: Any = None
    dynamodb: Any = None  # the trail state's client (None: a default client)

    def do_POST(self) -> None:
        stage, _, rest = self.path.lstrip("/").partition("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        event = query.api_gateway_event(body=body, headers=dict(self.headers.items()), path=f"/{rest}", stage=stage)
        response = query.handler(
            event,
            LocalContext(region=self.region),
            history=object(),
            settings=self.settings,
            clock=type(self).clock or (lambda: NOW),
            token_key=b"k" * 32,
            dynamodb=type(self).dynamodb,
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


def serve(settings: QuerySettings, region: str = "us-east-1", dynamodb: Any = None) -> Iterator[Any]:
    handler = type("TrailApi", (Api,), {"settings": settings, "region": region, "dynamodb": dynamodb})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name=region)
    try:
        yield session.client("cloudtrail", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def query_settings(resources: LocalResources, **overrides: Any) -> QuerySettings:
    values: dict[str, Any] = {
        "history_table": resources.history_table,
        "ledger_table": resources.ledger_table,
        "trails": json.dumps(TRAILS),
        "log_bucket": resources.log_bucket,
        "log_kms_key_arn": resources.kms_key_arn,
    }
    values.update(overrides)
    return QuerySettings(**values)


@pytest.fixture
def cloudtrail(resources: LocalResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield from serve(query_settings(resources))


def test_describe_trails_lists_every_trail_in_cloudtrails_shape(cloudtrail: Any, resources: LocalResources) -> None:
    trails = cloudtrail.describe_trails()["trailList"]

    assert [t["Name"] for t in trails] == ["opentrail", "security", "data"]
    default, security, data = trails
    assert default == {
        "Name": "opentrail",
        "S3BucketName": resources.log_bucket,
        "IncludeGlobalServiceEvents": True,
        "IsMultiRegionTrail": True,
        "HomeRegion": "us-east-1",
        "TrailARN": f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/opentrail",
        "LogFileValidationEnabled": True,
        "KmsKeyId": resources.kms_key_arn,
        "HasCustomEventSelectors": False,
        "HasInsightSelectors": False,
        "IsOrganizationTrail": False,
    }
    assert security["S3KeyPrefix"] == "security"
    assert security["SnsTopicARN"] == f"arn:aws:sns:us-east-1:{ACCOUNT}:opentrail-security"
    assert security["CloudWatchLogsLogGroupArn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:security-trail:*"
    assert security["HasCustomEventSelectors"]
    assert security["HasInsightSelectors"]
    assert not data["LogFileValidationEnabled"]
    assert not data["IsMultiRegionTrail"]


def test_describe_trails_by_name_and_arn(cloudtrail: Any) -> None:
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/data"
    found = cloudtrail.describe_trails(trailNameList=["security", arn, "unknown"])["trailList"]

    assert [t["Name"] for t in found] == ["security", "data"]


def test_get_trail_and_errors(cloudtrail: Any) -> None:
    assert cloudtrail.get_trail(Name="security")["Trail"]["Name"] == "security"
    arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/security"
    assert cloudtrail.get_trail(Name=arn)["Trail"]["TrailARN"] == arn
    with pytest.raises(cloudtrail.exceptions.TrailNotFoundException):
        cloudtrail.get_trail(Name="nope-trail")
    with pytest.raises(cloudtrail.exceptions.TrailNotFoundException):
        cloudtrail.get_trail(Name="arn:aws:cloudtrail:eu-west-1:123456789012:trail/security")
    with pytest.raises(cloudtrail.exceptions.InvalidTrailNameException):
        cloudtrail.get_trail(Name="a b")
    with pytest.raises(cloudtrail.exceptions.CloudTrailARNInvalidException):
        cloudtrail.get_trail(Name="arn:aws:s3:::bucket")


def test_get_event_selectors_basic_and_advanced(cloudtrail: Any) -> None:
    basic = cloudtrail.get_event_selectors(TrailName="security")
    advanced = cloudtrail.get_event_selectors(TrailName="data")

    assert basic["TrailARN"].endswith(":trail/security")
    assert basic["EventSelectors"] == [
        {
            "ReadWriteType": "WriteOnly",
            "IncludeManagementEvents": True,
            "DataResources": [],
            "ExcludeManagementEventSources": ["kms.amazonaws.com"],
        }
    ]
    assert "AdvancedEventSelectors" not in basic
    assert advanced["AdvancedEventSelectors"] == TRAILS[2]["AdvancedEventSelectors"]
    assert "EventSelectors" not in advanced


def test_get_insight_selectors(cloudtrail: Any) -> None:
    assert cloudtrail.get_insight_selectors(TrailName="security")["InsightSelectors"] == [
        {"InsightType": "ApiCallRateInsight"}
    ]
    with pytest.raises(cloudtrail.exceptions.InsightNotEnabledException):
        cloudtrail.get_insight_selectors(TrailName="opentrail")


def test_default_trail_reports_every_insight_type_through_boto3(resources: LocalResources, monkeypatch: Any) -> None:
    # OpenTrail's own types (UnusualActivityInsight, MissingActivityInsight) parse with the
    # stock client: botocore does not check enum values in responses
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for client in serve(query_settings(resources, trails=DEFAULT_TRAILS_JSON)):
        reply = client.get_insight_selectors(TrailName="opentrail")
        assert [s["InsightType"] for s in reply["InsightSelectors"]] == list(INSIGHT_TYPES)
        assert client.describe_trails()["trailList"][0]["HasInsightSelectors"] is True


def test_start_stop_logging_and_status(cloudtrail: Any, resources: LocalResources) -> None:
    assert cloudtrail.get_trail_status(Name="security")["IsLogging"] is True

    cloudtrail.stop_logging(Name="security")
    stopped = cloudtrail.get_trail_status(Name="security")
    store = TrailStateStore(resources.ledger_table, client=boto3.client("dynamodb", region_name="us-east-1"))

    assert stopped["IsLogging"] is False
    assert stopped["StopLoggingTime"] == NOW
    assert stopped["TimeLoggingStopped"] == "2025-03-14T10:00:00Z"
    assert store.stopped() == {"security"}
    assert cloudtrail.get_trail_status(Name="opentrail")["IsLogging"] is True

    cloudtrail.start_logging(Name=f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/security")
    assert cloudtrail.get_trail_status(Name="security")["IsLogging"] is True
    assert store.stopped() == frozenset()
    with pytest.raises(cloudtrail.exceptions.TrailNotFoundException):
        cloudtrail.stop_logging(Name="missing")


def test_status_records_deliveries_and_errors(cloudtrail: Any, resources: LocalResources) -> None:
    store = TrailStateStore(resources.ledger_table, client=boto3.client("dynamodb", region_name="us-east-1"))
    store.record("opentrail", "delivery", NOW)
    store.record("opentrail", "digest", NOW + timedelta(minutes=5))
    store.record("opentrail", "cloudWatchLogs", NOW, error="AccessDeniedException: logs:PutLogEvents")

    status = cloudtrail.get_trail_status(Name="opentrail")

    assert status["LatestDeliveryTime"] == NOW
    assert status["LatestDigestDeliveryTime"] == NOW + timedelta(minutes=5)
    assert status["LatestCloudWatchLogsDeliveryError"] == "AccessDeniedException: logs:PutLogEvents"
    assert "LatestDeliveryError" not in status
    store.record("opentrail", "cloudWatchLogs", NOW + timedelta(minutes=1))
    again = cloudtrail.get_trail_status(Name="opentrail")
    assert "LatestCloudWatchLogsDeliveryError" not in again
    assert again["LatestCloudWatchLogsDeliveryTime"] == NOW + timedelta(minutes=1)


def test_non_home_region_reports_the_home_region(resources: LocalResources, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for client in serve(query_settings(resources, home_region="us-east-1"), region="eu-west-1"):
        trails = client.describe_trails()["trailList"]
        assert {t["HomeRegion"] for t in trails} == {"us-east-1"}
        assert client.describe_trails(includeShadowTrails=False)["trailList"] == []
        with pytest.raises(client.exceptions.TrailNotFoundException):
            client.get_trail(Name=f"arn:aws:cloudtrail:eu-west-1:{ACCOUNT}:trail/opentrail")
