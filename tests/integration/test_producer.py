"""opentrail.producer.emit: normalise, pack, send to the buffer (SQS in moto)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from opentrail.domain.bundle import unpack
from opentrail.domain.record import RecordError
from opentrail.producer import emit

NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def record(i: int = 0, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventSource": "billing.example.com",
        "eventName": "CreateInvoice",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "userName": "alice"},
        "requestParameters": {"invoice": i},
    }
    base.update(changes)
    return base


@pytest.fixture
def queue_url(aws: None) -> str:
    """Only the buffer queue (the full `resources` fixture costs ~1 s per test)."""
    return str(boto3.client("sqs").create_queue(QueueName="opentrail-buffer")["QueueUrl"])


def received(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(m["Body"] for m in messages)


def test_emit_packs_many_records_per_message(queue_url: str) -> None:
    ids = emit(
        [record(i) for i in range(1000)],
        queue_url=queue_url,
        clock=clock,
        account_id="123456789012",
        region="eu-west-1",
    )
    assert len(ids) == len(set(ids)) == 1000
    bodies = received(queue_url)
    assert 1 <= len(bodies) <= 3
    records = [r for body in bodies for r in unpack(body).records()]
    assert [r["eventID"] for r in records] == ids
    assert records[0]["recipientAccountId"] == "123456789012"
    assert records[0]["awsRegion"] == "eu-west-1"
    assert records[0]["eventTime"] == "2025-03-14T10:00:00Z"
    assert records[0]["readOnly"] is False


def test_emit_reads_account_region_and_queue_from_the_environment(
    queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCOUNT_ID", "123456789012")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("OPENTRAIL_BUFFER_QUEUE_URL", queue_url)
    [event_id] = emit([record()], clock=clock)
    [stored] = unpack(received(queue_url)[0]).records()
    assert (stored["eventID"], stored["recipientAccountId"], stored["awsRegion"]) == (
        event_id,
        "123456789012",
        "us-west-2",
    )


def test_emit_keeps_values_the_record_carries(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCOUNT_ID", raising=False)
    given = record(eventID="c2f3a8d1-6b4e-4a8f-9d2c-7e5f1a0b3c44", recipientAccountId="111122223333")
    assert emit([given], queue_url=queue_url, clock=clock) == [given["eventID"]]
    [stored] = unpack(received(queue_url)[0]).records()
    assert stored["recipientAccountId"] == "111122223333"


@pytest.mark.parametrize(
    ("bad", "field", "code"),
    [
        (record(eventName=None), "records[2].eventName", "FieldNotFound"),
        (record(eventTime="nonsense"), "records[2].eventTime", "InvalidData"),
        (record(requestParameters={"x": "y" * 110_000}), "records[2].requestParameters", "FieldTooLong"),
        ("not a dict", "records[2]", "InvalidData"),
    ],
)
def test_emit_validates_everything_before_sending(queue_url: str, bad: Any, field: str, code: str) -> None:
    with pytest.raises(RecordError) as raised:
        emit([record(0), record(1), bad, record(3)], queue_url=queue_url, account_id="123456789012")
    assert raised.value.field == field
    assert raised.value.code == code
    assert received(queue_url) == []


def test_emit_requires_an_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCOUNT_ID", raising=False)
    with pytest.raises(RecordError, match=r"records\[0\].recipientAccountId"):
        emit([record()], buffer=object())


def test_emit_nothing_sends_nothing() -> None:
    assert emit([], buffer=object()) == []


def test_emit_requires_a_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENTRAIL_BUFFER_QUEUE_URL", raising=False)
    with pytest.raises(ValueError, match="queue_url"):
        emit([record()], account_id="123456789012")
