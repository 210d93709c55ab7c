"""EventBridge delivery of Insights events (PutEvents on one bus), best effort.

CloudTrail sends Insights events to EventBridge with detail-type ``AWS Insight via CloudTrail``
and source ``aws.cloudtrail`` (spec §7.8). EventBridge reserves sources starting with ``aws.``
for AWS services, so OpenTrail uses source ``opentrail`` with CloudTrail's detail-type and the
Insights record, unchanged, as ``detail``: a rule written for CloudTrail's events matches after
changing its ``source`` only. Envelope fields ``id``/``version``/``account`` are set by EventBridge.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from opentrail.domain.record import parse_event_time

SOURCE: Final = "opentrail"
INSIGHT_DETAIL_TYPE: Final = "AWS Insight via CloudTrail"
_PUT_MAX: Final = 10  # entries per PutEvents request
_MAX_ENTRY_BYTES: Final = 256 * 1024
_ATTEMPTS: Final = 3


def insight_entry(record: Mapping[str, Any], bus: str) -> dict[str, Any]:
    """The PutEvents entry of one Insights record."""
    return {
        "Source": SOURCE,
        "DetailType": INSIGHT_DETAIL_TYPE,
        "Detail": json.dumps(record, separators=(",", ":")),
        "Time": parse_event_time(record.get("eventTime")),
        "Resources": [],
        "EventBusName": bus,
    }


@dataclass
class PutResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class InsightEvents:
    """Sends Insights records to `bus`; failed entries are retried, then reported, never raised."""

    def __init__(self, bus: str, *, client: Any = None, backoff_seconds: float = 0.2) -> None:
        self.bus = bus
        self._events = client or boto3.client("events")
        self.backoff_seconds = backoff_seconds
        self.requests: Counter[str] = Counter()

    def put(self, records: Sequence[Mapping[str, Any]]) -> PutResult:
        result = PutResult()
        entries = []
        for record in records:
            entry = insight_entry(record, self.bus)
            if len(entry["Detail"].encode()) > _MAX_ENTRY_BYTES:
                result.failed += 1  # as CloudTrail: events over 256 KB are not sent (spec §7.7)
                result.errors.append(f"{record.get('eventID')}: larger than 256 KB")
                continue
            entries.append(entry)
        for start in range(0, len(entries), _PUT_MAX):
            todo = entries[start : start + _PUT_MAX]
            for attempt in range(_ATTEMPTS):
                try:
                    self.requests["PutEvents"] += 1
                    response = self._events.put_events(Entries=todo)
                except (ClientError, BotoCoreError) as error:
                    failed = todo
                    reason = str(error)
                else:
                    answers = response.get("Entries", [])
                    failed = [e for e, a in zip(todo, answers, strict=False) if a.get("ErrorCode")]
                    failed += todo[len(answers) :]
                    reason = next(
                        (f"{a['ErrorCode']}: {a.get('ErrorMessage', '')}" for a in answers if a.get("ErrorCode")), ""
                    )
                result.sent += len(todo) - len(failed)
                todo = failed
                if not todo:
                    break
                if attempt + 1 < _ATTEMPTS:
                    time.sleep(self.backoff_seconds * 2**attempt)
            if todo:
                result.failed += len(todo)
                result.errors.append(reason)
        return result
