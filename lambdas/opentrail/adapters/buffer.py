"""The SQS buffer between capture and the batcher."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.chunks import bounded_chunks

_MAX_BATCH_ENTRIES = 10
_MAX_BATCH_BYTES = 262_144


class BufferError(RuntimeError):
    """The buffer refused a send; nothing in `failed_bodies` was stored."""

    def __init__(self, message: str, failed_bodies: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed_bodies = list(failed_bodies)


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class Buffer:
    """Send bundles, receive and delete messages, move poison messages to the DLQ."""

    def __init__(self, queue_url: str, *, dead_letter_queue_url: str | None = None, client: Any = None) -> None:
        self.queue_url = queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self._sqs = client or boto3.client("sqs")

    def send(self, bodies: Iterable[str]) -> None:
        """Store every body durably or raise BufferError listing the ones not stored.

        Bodies go out in SendMessageBatch calls of up to 10 entries and 256 KiB.
        """
        failed: list[str] = []
        last_error = ""
        for group in _batches(list(bodies)):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(group)]
            try:
                response = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except ClientError as error:
                failed.extend(group)
                last_error = str(error)
                continue
            for failure in response.get("Failed", []):
                failed.append(group[int(failure["Id"])])
                last_error = failure.get("Message", failure.get("Code", "unknown"))
        if failed:
            raise BufferError(f"{len(failed)} message(s) not stored: {last_error}", failed)

    def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[Message]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        response = self._sqs.receive_message(**kwargs)
        return [
            Message(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[Message]) -> None:
        """Delete in batches of 10; a message that fails to delete is simply redelivered later."""
        for start in range(0, len(messages), _MAX_BATCH_ENTRIES):
            group = messages[start : start + _MAX_BATCH_ENTRIES]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(group)],
            )

    def dead_letter(self, message: Message, reason: str) -> None:
        """Move a message that can never succeed to the DLQ now (then delete it here)."""
        if not self.dead_letter_queue_url:
            raise BufferError("no dead-letter queue configured")
        self._sqs.send_message(
            QueueUrl=self.dead_letter_queue_url,
            MessageBody=message.body,
            MessageAttributes={"opentrail-error": {"DataType": "String", "StringValue": reason[:1000]}},
        )
        self.delete([message])

    def depth(self) -> int:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _batches(bodies: list[str]) -> list[list[str]]:
    return bounded_chunks(
        bodies, lambda body: len(body.encode("utf-8")), max_items=_MAX_BATCH_ENTRIES, max_bytes=_MAX_BATCH_BYTES
    )
