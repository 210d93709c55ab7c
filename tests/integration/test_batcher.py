"""The batcher handler over moto: layout, bodies, encryption, ledger, dedupe, poison, budget.

Crash-safety tests are in test_batcher_crash.py and reuse the `Harness` defined here.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from opentrail.adapters.buffer import Buffer, Message
from opentrail.adapters.ledger import Ledger
from opentrail.adapters.log_store import LogStore
from opentrail.domain.batch import batch_id
from opentrail.domain.bundle import encode_record, pack
from opentrail.domain.log_file import unique_string
from opentrail.domain.trail import EventSelector, Trail, trails_to_json
from opentrail.handlers.batcher import handler
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

NOW = datetime(2026, 11, 23, 10, 15, 42, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)  # past any lease of a run at NOW
A1, A2 = "111122223333", "444455556666"


def record(*, account: str = A1, region: str = "us-east-1", read_only: bool = False, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventVersion": "1.11",
        "eventID": str(uuid.uuid4()),
        "eventTime": "2026-11-23T10:01:02Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "GetUser" if read_only else "CreateUser",
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
        "userIdentity": {"type": "IAMUser", "userName": "alice", "accountId": account},
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {"userName": "bob"},
        "responseElements": None,
        "recipientAccountId": account,
        "awsRegion": region,
    }
    item.update(extra)
    return item


class RecordingBuffer(Buffer):
    """The real buffer, remembering receipts so a test can make messages visible again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Message] = []

    def receive(self, **kwargs: Any) -> list[Message]:
        messages = super().receive(**kwargs)
        self.received.extend(messages)
        return messages

    def release(self) -> None:
        """Like the visibility timeout running out for every message received so far."""
        for message in self.received:
            with contextlib.suppress(ClientError):  # deleted meanwhile
                self._sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=0
                )
        self.received.clear()


class Harness:
    def __init__(self, resources: LocalResources, **overrides: Any) -> None:
        self.resources = resources
        self.sqs = boto3.client("sqs", region_name=resources.region)
        self.s3 = boto3.client("s3", region_name=resources.region)
        self.ddb = boto3.client("dynamodb", region_name=resources.region)
        self.settings = resources.batcher_settings(**{"receive_wait_seconds": 0, **overrides})
        self.buffer = RecordingBuffer(
            resources.buffer_queue_url, dead_letter_queue_url=resources.dead_letter_queue_url, client=self.sqs
        )
        self.log_store = LogStore(resources.log_bucket, resources.kms_key_arn, client=self.s3)
        self.now = NOW  # the simulated time of the current run (stamps the ledger's recordedAt)
        self.ledger = Ledger(resources.ledger_table, client=self.ddb, clock=lambda: self.now)
        self._ids = (f"bundle-{n:04d}" for n in itertools.count())

    def send(self, *bundles: Iterable[dict[str, Any]]) -> list[str]:
        """One message per bundle; returns the bundle ids."""
        ids = []
        for records in bundles:
            bodies = pack([encode_record(r) for r in records], make_id=lambda: next(self._ids))
            assert len(bodies) == 1
            ids.append(json.loads(bodies[0])["bundleId"])
            self.buffer.send(bodies)
        return ids

    def send_body(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.resources.buffer_queue_url, MessageBody=body)

    def run(
        self,
        *,
        at: datetime = NOW,
        context: LocalContext | None = None,
        buffer: Buffer | None = None,
        log_store: LogStore | None = None,
        ledger: Ledger | None = None,
        event: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        clock: Callable[[], datetime] = lambda: at  # noqa: E731
        self.now = at
        return handler(
            {"action": "flush"} if event is None else event,
            context or LocalContext(function_name="opentrail-batcher"),
            buffer=buffer or self.buffer,
            log_store=log_store or self.log_store,
            ledger=ledger or self.ledger,
            settings=self.settings,
            clock=clock,
        )

    # -- what was delivered -------------------------------------------------------------

    def object_keys(self) -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.resources.log_bucket)
        return sorted(item["Key"] for item in response.get("Contents", []))

    def body(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.resources.log_bucket, Key=key)["Body"].read())

    def records(self, key: str) -> list[dict[str, Any]]:
        raw = gzip.decompress(self.body(key))
        records: list[dict[str, Any]] = json.loads(raw)["Records"]
        return records

    def event_counts(self) -> Counter[str]:
        return Counter(r["eventID"] for key in self.object_keys() for r in self.records(key))

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.resources.buffer_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def dead_letters(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.resources.dead_letter_queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        return list(response.get("Messages", []))

    def items(self, prefix: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        des = TypeDeserializer()
        items = self.ddb.scan(TableName=self.resources.ledger_table)["Items"]
        loaded = [{k: des.deserialize(v) for k, v in item.items()} for item in items]
        return sorted((i for i in loaded if str(i["pk"]).startswith(prefix)), key=lambda i: (i["pk"], i["sk"]))


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    return Harness(resources)


def assert_exactly_once(harness: Harness, records: Iterable[dict[str, Any]]) -> None:
    counts = harness.event_counts()
    assert set(counts) == {r["eventID"] for r in records}
    assert set(counts.values()) == {1}, "some record was delivered more than once"


# -- layout and contents ------------------------------------------------------------------


def test_batcher_groups_by_account_region_and_trail_prefix(resources: LocalResources) -> None:
    # given a catch-all trail and a read-only trail with a key prefix
    trails = [
        Trail(name="main"),
        Trail(name="reads", s3_key_prefix="org/reads", event_selectors=(EventSelector("ReadOnly"),)),
    ]
    harness = Harness(resources, trails=trails_to_json(trails))
    records = [
        record(account=A1, region="us-east-1", read_only=True),
        record(account=A1, region="eu-west-1"),
        record(account=A2, region="us-east-1"),
    ]
    ids = harness.send(records[:2], records[2:])
    # when the batcher runs
    summary = harness.run()
    # then the keys follow CloudTrail's layout exactly, one file per trail/account/region
    bid = batch_id(ids)

    def key(prefix: str, trail: str, account: str, region: str) -> str:
        unique = unique_string(f"{bid}/{trail}/{account}/{region}/0")
        return (
            f"{prefix}AWSLogs/{account}/CloudTrail/{region}/2026/11/23/"
            f"{account}_CloudTrail_{region}_20261123T1015Z_{unique}.json.gz"
        )

    assert harness.object_keys() == sorted(
        [
            key("", "main", A1, "eu-west-1"),
            key("", "main", A1, "us-east-1"),
            key("", "main", A2, "us-east-1"),
            key("org/reads/", "reads", A1, "us-east-1"),
        ]
    )
    assert harness.records(key("org/reads/", "reads", A1, "us-east-1")) == [records[0]]
    assert summary["batches"] == 1
    assert summary["messages"] == 2
    assert summary["records"] == 3
    assert sorted(f["key"] for f in summary["files"]) == harness.object_keys()
    assert harness.queue_depth() == 0


def test_batcher_body_is_one_gzip_member_with_every_field(harness: Harness) -> None:
    records = [record(additionalEventData={"x": [1, 2, {"y": "ü"}]}, resources=[{"ARN": "arn:x", "type": "T"}])]
    records += [record() for _ in range(4)]
    harness.send(records)
    harness.run()
    (key,) = harness.object_keys()
    body = harness.body(key)
    decompressor = gzip.zlib.decompressobj(16 + gzip.zlib.MAX_WBITS)  # type: ignore[attr-defined]
    raw = decompressor.decompress(body)
    assert decompressor.eof
    assert decompressor.unused_data == b"", "more than one gzip member"
    assert json.loads(raw) == {"Records": records}


def test_batcher_writes_with_sse_kms_and_plain_gzip_bytes(harness: Harness) -> None:
    harness.send([record()])
    harness.run()
    (key,) = harness.object_keys()
    head = harness.s3.head_object(Bucket=harness.resources.log_bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == harness.resources.kms_key_arn
    assert head["BucketKeyEnabled"] is True
    assert head["ContentType"] == "application/json"
    assert "ContentEncoding" not in head
    assert harness.body(key)[:2] == b"\x1f\x8b"


def test_batcher_writes_the_delivery_ledger(resources: LocalResources) -> None:
    harness = Harness(resources, ledger_ttl_days=30)
    records = [record(), record(eventTime="2026-11-23T09:00:00Z"), record(eventTime="2026-11-23T10:05:00Z")]
    ids = harness.send(records)
    harness.run()
    (key,) = harness.object_keys()
    (item,) = harness.items("LEDGER#")
    raw = gzip.decompress(harness.body(key))
    assert item == {
        "pk": "LEDGER#opentrail#2026112310",
        "sk": f"{A1}#us-east-1#2026-11-23T10:15:42Z#{key}",
        "bucket": resources.log_bucket,
        "key": key,
        "account": A1,
        "region": "us-east-1",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "recordCount": 3,
        "oldestEventTime": "2026-11-23T09:00:00Z",
        "newestEventTime": "2026-11-23T10:05:00Z",
        "compressedBytes": len(harness.body(key)),
        "deliveryTime": "2026-11-23T10:15:42Z",
        "recordedAt": "2026-11-23T10:15:42Z",
        "batchId": batch_id(ids),
        "expiresAt": int(NOW.timestamp()) + 30 * 86_400,
    }
    (intent,) = harness.items("BATCH#")
    assert intent["state"] == "DONE"
    assert intent["bundleIds"] == ids
    assert [c["batchId"] for c in harness.items("BUNDLE#")] == [batch_id(ids)]
    # every item expires, except the trails' state and status (docs/trails.md)
    expiring = [i for i in harness.items("") if i["pk"] != "TRAILSTATE"]
    assert all(int(i["expiresAt"]) > int(NOW.timestamp()) for i in expiring)
    (status,) = harness.items("TRAILSTATE")
    assert status["sk"] == "opentrail"
    assert "latestDeliveryTime" in status


def test_batcher_splits_files_at_max_file_bytes(resources: LocalResources) -> None:
    harness = Harness(resources, max_file_bytes=1024)
    records = [record() for _ in range(120)]
    harness.send(records[:60], records[60:])
    summary = harness.run()
    keys = harness.object_keys()
    assert len(keys) > 5
    sizes = [harness.s3.head_object(Bucket=resources.log_bucket, Key=k)["ContentLength"] for k in keys]
    assert max(sizes) <= 1024
    assert len(summary["files"]) == len(keys)
    assert_exactly_once(harness, records)
    assert len(harness.items("LEDGER#")) == len(keys)


# -- dedupe -------------------------------------------------------------------------------


def test_batcher_dedupes_event_ids_within_a_batch(harness: Harness) -> None:
    same = record()
    harness.send([same, record()], [dict(same), record()])
    summary = harness.run()
    assert summary["duplicatesDropped"] == 1
    assert summary["records"] == 3
    assert sum(harness.event_counts().values()) == 3


def test_batcher_delivers_a_bundle_sent_twice_once(harness: Harness) -> None:
    records = [record() for _ in range(3)]
    (body,) = pack([encode_record(r) for r in records], make_id=lambda: "bundle-twice")
    harness.send_body(body)
    harness.send_body(body)
    summary = harness.run()
    assert summary["duplicateBundles"] == 1
    assert summary["messages"] == 2
    assert_exactly_once(harness, records)
    assert harness.queue_depth() == 0


def test_batcher_recognises_a_bundle_delivered_by_an_earlier_run(harness: Harness) -> None:
    records = [record() for _ in range(3)]
    (body,) = pack([encode_record(r) for r in records], make_id=lambda: "bundle-late-copy")
    harness.send_body(body)
    harness.run()
    keys = harness.object_keys()
    harness.send_body(body)  # a producer's retried send arrives after delivery
    summary = harness.run(at=LATER)
    assert summary["alreadyDelivered"] == 1
    assert summary["files"] == []
    assert harness.object_keys() == keys
    assert harness.queue_depth() == 0


# -- poison, budget, empty ----------------------------------------------------------------


def test_batcher_dead_letters_poison_and_delivers_the_rest(harness: Harness) -> None:
    good = [record() for _ in range(3)]
    harness.send(good[:2])
    harness.send_body("this is not a bundle")
    harness.send([record(), {"eventID": "no-time"}])  # a bundle with one bad record
    harness.send(good[2:])
    summary = harness.run()
    assert summary["deadLettered"] == 2
    assert_exactly_once(harness, good)
    assert harness.queue_depth() == 0
    reasons = sorted(m["MessageAttributes"]["opentrail-error"]["StringValue"] for m in harness.dead_letters())
    assert reasons[0].startswith("bundle: body: is not JSON")
    assert reasons[1].startswith("record: record 2: eventTime")


def test_batcher_starts_no_batch_without_time_left(resources: LocalResources) -> None:
    harness = Harness(resources, time_budget_margin_seconds=30)
    harness.send([record()])
    summary = harness.run(context=LocalContext(timeout_seconds=20))
    assert summary["stoppedBy"] == "time"
    assert summary["batches"] == 0
    assert harness.object_keys() == []
    assert harness.queue_depth() == 1


def test_batcher_on_an_empty_queue_does_nothing(harness: Harness) -> None:
    summary = harness.run(event={"version": "0", "source": "aws.events", "detail-type": "Scheduled Event"})
    assert summary["batches"] == 0
    assert summary["files"] == []
    assert summary["stoppedBy"] == "drained"
    assert harness.object_keys() == []


def test_batcher_rejects_an_unknown_action(harness: Harness) -> None:
    with pytest.raises(ValueError, match="action"):
        harness.run(event={"action": "explode"})


def test_batcher_drains_several_batches_in_one_run(resources: LocalResources) -> None:
    harness = Harness(resources, max_batch_messages=4)
    records = [record(account=A1 if n % 2 else A2) for n in range(22)]
    harness.send(*[records[n : n + 2] for n in range(0, 22, 2)])
    summary = harness.run()
    assert summary["batches"] == 3
    assert summary["messages"] == 11
    assert_exactly_once(harness, records)
    assert harness.queue_depth() == 0


def test_batcher_deletes_messages_no_trail_selects(resources: LocalResources) -> None:
    trails = [Trail(name="reads", event_selectors=(EventSelector("ReadOnly"),))]
    harness = Harness(resources, trails=trails_to_json(trails))
    harness.send([record(read_only=False)])
    summary = harness.run()
    assert summary["unselected"] == 1
    assert harness.object_keys() == []
    assert harness.queue_depth() == 0
