"""pytest plugin: the ``recorded_calls`` fixture, so a test can assert "this call was recorded".

Registered through the ``pytest11`` entry point in pyproject.toml (installed packages load it
automatically), or explicitly with ``pytest_plugins = ["opentrail.testing"]`` in a conftest.py.

    def test_upload_is_audited(recorded_calls):
        s3 = recorded_calls.session.client("s3", region_name="us-east-1")
        ...                                   # the code under test, using that session or client
        assert recorded_calls.find("s3.amazonaws.com", "PutObject")

`recorded_calls.record(session_or_client)` records another session or client too; every
record is collected in memory (no buffer, no AWS), the recorder flushing after each call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from opentrail.recorder import Recorder, record_boto3


class RecordedCalls:
    """Records collected by the fixture's recorders, in call order."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.recorders: list[Recorder] = []
        self._session: Any = None

    def _sink(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records.extend(dict(record) for record in records)

    def record(self, session_or_client: Any, **options: Any) -> Recorder:
        recorder = record_boto3(session_or_client, emit=self._sink, max_records=1, **options)
        self.recorders.append(recorder)
        return recorder

    @property
    def session(self) -> Any:
        """A boto3 Session already recorded (created on first use)."""
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
            self.record(self._session)
        return self._session

    def find(self, event_source: str | None = None, event_name: str | None = None) -> list[dict[str, Any]]:
        return [
            record
            for record in self.records
            if (event_source is None or record.get("eventSource") == event_source)
            and (event_name is None or record.get("eventName") == event_name)
        ]

    def names(self) -> list[str]:
        return [f"{record['eventSource']}:{record['eventName']}" for record in self.records]

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.uninstall()
        self.recorders.clear()


@pytest.fixture
def recorded_calls() -> Iterator[RecordedCalls]:
    calls = RecordedCalls()
    try:
        yield calls
    finally:
        calls.close()
