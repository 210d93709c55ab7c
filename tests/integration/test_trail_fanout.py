"""Several trails with different selectors each receive exactly their events under their own
prefix; a trail stopped with StopLogging receives nothing until StartLogging; the batcher
records LatestDeliveryTime per trail (docs/trails.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3

from opentrail.adapters.trail_state import TrailStateStore
from opentrail.local.resources import LocalResources
from tests.integration.test_batcher import NOW, Harness, record

TRAILS = [
    {"Name": "everything"},
    {"Name": "writes", "S3KeyPrefix": "sec", "EventSelectors": [{"ReadWriteType": "WriteOnly"}]},
    {
        "Name": "reports",
        "S3KeyPrefix": "data",
        "AdvancedEventSelectors": [
            {
                "FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Data"]},
                    {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                    {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::reports/"]},
                ]
            }
        ],
    },
]


def s3_read(key: str, **fields: Any) -> dict[str, Any]:
    return record(
        **fields,
        read_only=True,
        eventSource="s3.amazonaws.com",
        eventName="GetObject",
        eventCategory="Data",
        managementEvent=False,
        resources=[{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{key}"}],
    )


def delivered(harness: Harness, prefix: str) -> list[str]:
    ids = []
    for key in harness.object_keys():
        if key.startswith(f"{prefix}AWSLogs/"):
            ids.extend(r["eventID"] for r in harness.records(key))
    return sorted(ids)


def test_each_trail_gets_exactly_its_events_and_stopped_trails_get_none(resources: LocalResources) -> None:
    harness = Harness(resources, trails=json.dumps(TRAILS))
    write, read, report, other = record(), record(read_only=True), s3_read("reports/q1.csv"), s3_read("other/x")
    harness.send([write, read, report, other])
    summary = harness.run()

    assert delivered(harness, "") == sorted([write["eventID"], read["eventID"]])
    assert delivered(harness, "sec/") == [write["eventID"]]
    assert delivered(harness, "data/") == [report["eventID"]]
    assert summary["unselected"] == 1  # other/x: no trail selects it
    state = TrailStateStore(resources.ledger_table, client=boto3.client("dynamodb", region_name="us-east-1"))
    assert set(state.all()) == {"everything", "writes", "reports"}
    assert all(float(s.attributes["latestDeliveryTime"]) == NOW.timestamp() for s in state.all().values())

    # StopLogging "writes": its events are not recorded while stopped
    state.set_logging("writes", False, NOW)
    stopped_write = record()
    harness.send([stopped_write])
    stopped = harness.run(at=NOW + timedelta(minutes=5))
    assert stopped["stoppedTrails"] == ["writes"]
    assert delivered(harness, "sec/") == [write["eventID"]]
    assert stopped_write["eventID"] in delivered(harness, "")

    # StartLogging: recorded again
    state.set_logging("writes", True, NOW + timedelta(minutes=6))
    again = record()
    harness.send([again])
    harness.run(at=NOW + timedelta(minutes=10))
    assert delivered(harness, "sec/") == sorted([write["eventID"], again["eventID"]])
    status = state.get("writes").to_response()
    assert status["IsLogging"] is True
    assert status["LatestDeliveryTime"] == (NOW + timedelta(minutes=10)).timestamp()
    assert status["StopLoggingTime"] == NOW.timestamp()
