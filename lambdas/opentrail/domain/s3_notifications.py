"""S3 EventBridge notifications (source ``aws.s3``) → CloudTrail S3 data event records.

Pure: no boto3, no environment. Called by `opentrail.domain.eventbridge.record_from_envelope`
for envelopes whose source is ``aws.s3`` and whose detail-type is one S3 sends to EventBridge.
The records have the shape of CloudTrail's S3 data events (spec §1.4): ``eventCategory``
``Data``, ``managementEvent`` false, ``eventSource`` ``s3.amazonaws.com``, ``requestParameters``
``{bucketName, key}`` and two resources (the object, then the bucket with its owner's account),
so trail data selectors (``AWS::S3::Object`` by bucket or prefix) select them like CloudTrail's.

What a notification cannot tell (docs/capture.md, "S3 data events"): reads (GetObject,
HeadObject, ListObjects...) are never notified; the requester is an account id or a service
principal, never an IAM ARN or access key; there is no user agent, TLS or VPC endpoint detail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

# detail-type → (eventName, eventType) when the name does not come from detail.reason.
# Service-initiated changes (restore completion, lifecycle, tiering) are AwsServiceEvents.
S3_DETAIL_TYPES: Final[dict[str, tuple[str, str]]] = {
    "Object Created": ("PutObject", "AwsApiCall"),
    "Object Deleted": ("DeleteObject", "AwsApiCall"),
    "Object Restore Initiated": ("RestoreObject", "AwsApiCall"),
    "Object Restore Completed": ("ObjectRestoreCompleted", "AwsServiceEvent"),
    "Object Restore Expired": ("ObjectRestoreExpired", "AwsServiceEvent"),
    "Object Tags Added": ("PutObjectTagging", "AwsApiCall"),
    "Object Tags Deleted": ("DeleteObjectTagging", "AwsApiCall"),
    "Object ACL Updated": ("PutObjectAcl", "AwsApiCall"),
    "Object Storage Class Changed": ("ObjectStorageClassChanged", "AwsServiceEvent"),
    "Object Access Tier Changed": ("ObjectAccessTierChanged", "AwsServiceEvent"),
}
# detail.reason (Object Created / Object Deleted) → (eventName, eventType).
S3_REASONS: Final[dict[str, tuple[str, str]]] = {
    "PutObject": ("PutObject", "AwsApiCall"),
    "POST Object": ("PutObject", "AwsApiCall"),  # a browser POST upload; CloudTrail's name is UNCONFIRMED
    "CopyObject": ("CopyObject", "AwsApiCall"),
    "CompleteMultipartUpload": ("CompleteMultipartUpload", "AwsApiCall"),
    "DeleteObject": ("DeleteObject", "AwsApiCall"),
    "Lifecycle Expiration": ("LifecycleExpiration", "AwsServiceEvent"),
}
S3_SOURCE: Final = "aws.s3"
S3_EVENT_SOURCE: Final = "s3.amazonaws.com"
NOTIFICATION_KEY: Final = "s3Notification"
_ACCOUNT: Final = re.compile(r"^\d{12}$")
# detail fields kept under additionalEventData.s3Notification (all optional).
_OBJECT_FIELDS: Final = ("size", "etag", "version-id", "sequencer")
_DETAIL_FIELDS: Final = (
    "reason",
    "deletion-type",
    "source-storage-class",
    "destination-storage-class",
    "destination-access-tier",
    "restore-expiry-time",
)


class S3NotificationError(ValueError):
    """The notification lacks what a record needs. `field` is a dotted path into the envelope."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def is_s3_notification(source: str, detail_type: str) -> bool:
    return source == S3_SOURCE and detail_type in S3_DETAIL_TYPES


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def requester_identity(requester: str) -> dict[str, Any]:
    """``detail.requester`` is an account id or a service principal (S3's documentation).

    An account id gives ``{type: AWSAccount, principalId, accountId}``: which user or role in
    that account made the call is not in the notification. A service principal gives
    ``{type: AWSService, invokedBy}``. Anything else is kept as an ``Unknown`` principal id.
    """
    if _ACCOUNT.match(requester):
        return {"type": "AWSAccount", "principalId": requester, "accountId": requester}
    if requester.endswith(".amazonaws.com"):
        return {"type": "AWSService", "invokedBy": requester}
    return {"type": "Unknown", "principalId": requester}


def s3_data_event(envelope: Mapping[str, Any], detail: Mapping[str, Any], *, event_id: str) -> dict[str, Any]:
    """The (not yet normalised) CloudTrail record for one S3 notification envelope."""
    detail_type = str(envelope.get("detail-type"))
    account = str(envelope.get("account"))
    region = str(envelope.get("region"))
    bucket = detail.get("bucket")
    bucket_name = bucket.get("name") if isinstance(bucket, Mapping) else None
    if not isinstance(bucket_name, str) or not bucket_name:
        raise S3NotificationError("detail.bucket.name", "is required and must be a non-empty string")
    obj = detail.get("object")
    key = obj.get("key") if isinstance(obj, Mapping) else None
    if not isinstance(key, str) or not key:
        raise S3NotificationError("detail.object.key", "is required and must be a non-empty string")
    time = envelope.get("time")
    if not isinstance(time, str) or not time:
        raise S3NotificationError("time", "is required and must be a non-empty string")

    reason = detail.get("reason")
    event_name, event_type = (
        S3_REASONS[reason] if isinstance(reason, str) and reason in S3_REASONS else S3_DETAIL_TYPES[detail_type]
    )
    requester = detail.get("requester")
    if event_type == "AwsServiceEvent" or not isinstance(requester, str) or not requester:
        identity: dict[str, Any] = {"type": "AWSService", "invokedBy": S3_EVENT_SOURCE}
    else:
        identity = requester_identity(requester)
    source_ip = detail.get("source-ip-address")
    if not isinstance(source_ip, str) or not source_ip:
        source_ip = S3_EVENT_SOURCE if identity["type"] == "AWSService" else "AWS Internal"

    partition = partition_of(region)
    notification: dict[str, Any] = {"detailType": detail_type}
    for name in _DETAIL_FIELDS:
        if detail.get(name) is not None:
            notification[name] = detail[name]
    if isinstance(obj, Mapping):
        for name in _OBJECT_FIELDS:
            if obj.get(name) is not None:
                notification[name] = obj[name]
    request_parameters: dict[str, Any] = {"bucketName": bucket_name, "key": key}
    version_id = obj.get("version-id") if isinstance(obj, Mapping) else None
    response_elements = None
    if isinstance(version_id, str) and version_id:
        if event_name.startswith("Delete"):
            request_parameters["versionId"] = version_id
        elif detail_type == "Object Created":
            response_elements = {"x-amz-version-id": version_id}

    record: dict[str, Any] = {
        "eventVersion": "1.11",
        "userIdentity": identity,
        "eventTime": time,
        "eventSource": S3_EVENT_SOURCE,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "requestParameters": request_parameters,
        "responseElements": response_elements,
        "additionalEventData": {
            NOTIFICATION_KEY: notification,
            "opentrailIngestion": {"eventBridgeEventId": str(envelope.get("id")), "source": S3_SOURCE},
        },
        "eventID": event_id,
        "readOnly": False,
        "resources": [
            {"type": "AWS::S3::Object", "ARN": f"arn:{partition}:s3:::{bucket_name}/{key}"},
            {"accountId": account, "type": "AWS::S3::Bucket", "ARN": f"arn:{partition}:s3:::{bucket_name}"},
        ],
        "eventType": event_type,
        "managementEvent": False,
        "recipientAccountId": account,
        "eventCategory": "Data",
    }
    request_id = detail.get("request-id")
    if isinstance(request_id, str) and request_id:
        record["requestID"] = request_id
    return record
