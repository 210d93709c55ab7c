"""S3 EventBridge notifications → CloudTrail S3 data event records (docs/capture.md, "S3 data events")."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opentrail.domain.eventbridge import EnvelopeError, application_event_id, record_from_envelope
from opentrail.domain.trail import DataResource, EventSelector

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
NOW = datetime(2021, 11, 12, 0, 5, tzinfo=UTC)


def created(**detail: Any) -> dict[str, Any]:
    """S3's documented "Object Created" example (S3 user guide, EventBridge event message structure)."""
    envelope: dict[str, Any] = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
        "detail": {
            "version": "0",
            "bucket": {"name": "amzn-s3-demo-bucket1"},
            "object": {
                "key": "reports/example-key",
                "size": 5,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
    envelope["detail"].update(detail)
    return envelope


def test_object_created_becomes_a_putobject_data_event() -> None:
    envelope = created()
    record = record_from_envelope(envelope, now=NOW)
    assert record["eventCategory"] == "Data"
    assert record["managementEvent"] is False
    assert record["readOnly"] is False
    assert record["eventType"] == "AwsApiCall"
    assert record["eventSource"] == "s3.amazonaws.com"
    assert record["eventName"] == "PutObject"
    assert record["eventTime"] == "2021-11-12T00:00:00Z"
    assert record["awsRegion"] == "ca-central-1"
    assert record["recipientAccountId"] == "111122223333"
    assert record["requestParameters"] == {"bucketName": "amzn-s3-demo-bucket1", "key": "reports/example-key"}
    assert record["responseElements"] == {"x-amz-version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"}
    assert record["resources"] == [
        {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket1/reports/example-key"},
        {"accountId": "111122223333", "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket1"},
    ]
    assert record["userIdentity"] == {"type": "AWSAccount", "principalId": "123456789012", "accountId": "123456789012"}
    assert record["sourceIPAddress"] == "1.2.3.4"
    assert record["requestID"] == "N4N7GDK58NMKJ12R"
    assert record["eventID"] == application_event_id(envelope["id"])
    notification = record["additionalEventData"]["s3Notification"]
    assert notification == {
        "detailType": "Object Created",
        "reason": "PutObject",
        "size": 5,
        "etag": "b1946ac92492d2347c6235b4d2611184",
        "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        "sequencer": "617f08299329d189",
    }


def test_redelivered_notification_keeps_its_event_id() -> None:
    first = record_from_envelope(created(), now=NOW)
    again = record_from_envelope(copy.deepcopy(created()), now=datetime(2021, 11, 12, 0, 9, tzinfo=UTC))
    assert first == again


@pytest.mark.parametrize(
    ("reason", "name"),
    [
        ("CopyObject", "CopyObject"),
        ("CompleteMultipartUpload", "CompleteMultipartUpload"),
        ("POST Object", "PutObject"),
    ],
)
def test_object_created_reason_names_the_api(reason: str, name: str) -> None:
    assert record_from_envelope(created(reason=reason), now=NOW)["eventName"] == name


def test_versioned_delete_names_the_version_in_the_request() -> None:
    envelope = created(reason="DeleteObject", **{"deletion-type": "Delete Marker Created"})
    envelope["detail-type"] = "Object Deleted"
    record = record_from_envelope(envelope, now=NOW)
    assert record["eventName"] == "DeleteObject"
    assert record["requestParameters"]["versionId"] == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert record["responseElements"] is None
    assert record["additionalEventData"]["s3Notification"]["deletion-type"] == "Delete Marker Created"


def test_lifecycle_expiration_is_a_service_event_by_s3() -> None:
    envelope = created(reason="Lifecycle Expiration", requester="s3.amazonaws.com")
    envelope["detail-type"] = "Object Deleted"
    del envelope["detail"]["source-ip-address"]
    record = record_from_envelope(envelope, now=NOW)
    assert (record["eventName"], record["eventType"]) == ("LifecycleExpiration", "AwsServiceEvent")
    assert record["userIdentity"] == {"type": "AWSService", "invokedBy": "s3.amazonaws.com"}
    assert record["sourceIPAddress"] == "s3.amazonaws.com"
    assert record["eventCategory"] == "Data"
    assert record["managementEvent"] is False


@pytest.mark.parametrize(
    ("detail_type", "name", "event_type"),
    [
        ("Object Restore Initiated", "RestoreObject", "AwsApiCall"),
        ("Object Restore Completed", "ObjectRestoreCompleted", "AwsServiceEvent"),
        ("Object Tags Added", "PutObjectTagging", "AwsApiCall"),
        ("Object ACL Updated", "PutObjectAcl", "AwsApiCall"),
        ("Object Storage Class Changed", "ObjectStorageClassChanged", "AwsServiceEvent"),
    ],
)
def test_other_detail_types(detail_type: str, name: str, event_type: str) -> None:
    envelope = created()
    envelope["detail-type"] = detail_type
    del envelope["detail"]["reason"]
    record = record_from_envelope(envelope, now=NOW)
    assert (record["eventName"], record["eventType"]) == (name, event_type)


def test_service_principal_requester() -> None:
    record = record_from_envelope(created(requester="s3.amazonaws.com"), now=NOW)
    assert record["userIdentity"] == {"type": "AWSService", "invokedBy": "s3.amazonaws.com"}


def test_china_region_uses_the_aws_cn_partition() -> None:
    envelope = created()
    envelope["region"] = "cn-north-1"
    record = record_from_envelope(envelope, now=NOW)
    assert record["resources"][1]["ARN"] == "arn:aws-cn:s3:::amzn-s3-demo-bucket1"


def test_notification_without_a_key_is_refused_naming_the_field() -> None:
    envelope = created()
    del envelope["detail"]["object"]["key"]
    with pytest.raises(EnvelopeError, match=r"^detail\.object\.key: is required"):
        record_from_envelope(envelope, now=NOW)


def test_s3_detail_type_from_another_source_is_refused() -> None:
    envelope = created()
    envelope["source"] = "com.example.fake"
    with pytest.raises(EnvelopeError, match=r"^detail-type: must be"):
        record_from_envelope(envelope, now=NOW)


def test_trail_data_selectors_decide_delivery() -> None:
    record = record_from_envelope(created(), now=NOW)

    def selects(*values: str) -> bool:
        selector = EventSelector(data_resources=(DataResource("AWS::S3::Object", values),))
        return selector.selects(record)

    assert selects("arn:aws:s3")
    assert selects("arn:aws:s3:::amzn-s3-demo-bucket1/")
    assert selects("arn:aws:s3:::amzn-s3-demo-bucket1/reports/")
    assert not selects("arn:aws:s3:::amzn-s3-demo-bucket1/other/")
    assert not selects("arn:aws:s3:::another-bucket/")
    assert not EventSelector().selects(record)  # management events only (the default selector)
    assert not EventSelector(
        read_write_type="ReadOnly", data_resources=(DataResource("AWS::S3::Object", ("arn:aws:s3",)),)
    ).selects(record)


@pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets is not beside the repository")
def test_record_has_the_shape_of_real_s3_data_events() -> None:
    # given real CloudTrail S3 data events (OTRF dataset: GetObject) / then a mapped record has
    # their layout: same resources types in the same order, the same category fields, and a
    # subset of their top-level fields (what a notification cannot tell is absent, not invented)
    path = DATASETS / "otrf-aws-cloud-bank-breach-s3" / "normalized"
    records = json.loads(gzip.decompress(next(path.glob("*.json.gz")).read_bytes()))["Records"]
    real = next(r for r in records if r["eventName"] == "GetObject")
    mapped = record_from_envelope(created(), now=NOW)
    assert [r["type"] for r in mapped["resources"]] == [r["type"] for r in real["resources"]]
    assert set(mapped["resources"][1]) == set(real["resources"][1])
    for name in ("eventSource", "eventCategory", "managementEvent", "eventType"):
        assert mapped[name] == real[name], name
    assert set(mapped["requestParameters"]) <= set(real["requestParameters"]) | {"versionId"}
    assert set(mapped) - {"responseElements"} <= set(real) | {"eventVersion"}
    # and a trail selecting the real record's bucket selects a mapped record of that bucket
    bucket = real["requestParameters"]["bucketName"]
    envelope = created(bucket={"name": bucket})
    selector = EventSelector(data_resources=(DataResource("AWS::S3::Object", (f"arn:aws:s3:::{bucket}/",)),))
    assert selector.selects(real)
    assert selector.selects(record_from_envelope(envelope, now=NOW))


def test_capture_handler_buffers_an_s3_data_event() -> None:
    from opentrail.domain.bundle import unpack
    from opentrail.handlers.eventbridge_capture import handler
    from opentrail.settings import EventBridgeCaptureSettings

    class FakeBuffer:
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def send(self, bodies: Any) -> None:
            self.bodies.extend(bodies)

    class Context:
        function_name = "capture"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:111122223333:function:capture"
        aws_request_id = "req-1"

    buffer = FakeBuffer()
    reply = handler(
        created(),
        Context(),
        buffer=buffer,
        settings=EventBridgeCaptureSettings(buffer_queue_url="https://sqs.example/q"),
        clock=lambda: NOW,
    )
    (body,) = buffer.bodies
    (line,) = unpack(body).lines
    assert json.loads(line)["eventID"] == reply["eventID"]
    assert json.loads(line)["eventName"] == "PutObject"
