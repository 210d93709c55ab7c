"""Where `opentrail.audited` and `opentrail.recorder` send the records they build.

A *sink* is any callable taking a list of (partial) CloudTrail records. `BufferSink` is the
default: `opentrail.producer.emit` into the buffer queue (``OPENTRAIL_BUFFER_QUEUE_URL``)
through an SQS client with short timeouts and one retry, so a slow or unreachable queue
costs a bounded time (about 2 x `timeout`), never a hung handler.

While a sink sends, `recording_suppressed()` is true: the SDK call recorder ignores the
SQS calls it makes, so OpenTrail never records its own emits (no recursion).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

Sink = Callable[[Sequence[Mapping[str, Any]]], Any]

_SUPPRESSED: contextvars.ContextVar[bool] = contextvars.ContextVar("opentrail_recording_suppressed", default=False)


def recording_suppressed() -> bool:
    return _SUPPRESSED.get()


@contextmanager
def suppress_recording() -> Iterator[None]:
    """Within this block the SDK call recorder records nothing (OpenTrail's own calls)."""
    token = _SUPPRESSED.set(True)
    try:
        yield
    finally:
        _SUPPRESSED.reset(token)


class BufferSink:
    """`producer.emit` to the buffer queue, bounded: connect/read `timeout` seconds, 2 attempts."""

    def __init__(
        self,
        queue_url: str | None = None,
        *,
        timeout: float = 1.0,
        account_id: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.queue_url = queue_url
        self.timeout = timeout
        self.account_id = account_id
        self.region = region
        self._client = client
        self._buffer: Any = None

    def _get_buffer(self) -> Any:
        if self._buffer is None:
            from opentrail.adapters.buffer import Buffer
            from opentrail.producer import QUEUE_URL_ENV

            url = self.queue_url or os.environ.get(QUEUE_URL_ENV)
            if not url:
                raise ValueError(f"queue_url: pass queue_url= or set {QUEUE_URL_ENV}")
            client = self._client
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                )
                client = boto3.session.Session().client("sqs", config=config)
            self._buffer = Buffer(url, client=client)
        return self._buffer

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        from opentrail.producer import emit

        with suppress_recording():
            return emit(records, buffer=self._get_buffer(), account_id=self.account_id, region=self.region)
