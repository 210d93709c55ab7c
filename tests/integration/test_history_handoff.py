"""The batcher's index step takes the records planning parsed (no second read of the log
files) and writes exactly the items a rebuild from the files in S3 writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import IO, Any

import pytest
from test_batcher import A1, A2, NOW, Harness, record
from test_history_batcher import history_items, run

import opentrail.delivery as delivery
from opentrail.adapters.usage_store import UsageStore
from opentrail.delivery import Batcher, BatcherConfig, DrainSummary
from opentrail.domain.batch import batch_id
from opentrail.domain.trail import EventSelector, Trail, trails_to_json
from opentrail.handlers.batcher import history_for
from opentrail.local.resources import LocalResources, create_history_table

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many log file bodies the index step read back and parsed."""
    calls: list[int] = []
    parsed = delivery._parsed

    def counting(body: IO[bytes] | bytes) -> Iterator[tuple[bytes, Any]]:
        calls.append(1)
        return parsed(body)

    monkeypatch.setattr(delivery, "_parsed", counting)
    return calls


def _records(n: int) -> list[dict[str, Any]]:
    return [
        record(
            account=A1 if i % 3 else A2,
            region="us-east-1" if i % 4 else "eu-west-1",
            read_only=i % 2 == 0,
            eventTime=(NOW - timedelta(seconds=i * 5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            userIdentity={"type": "IAMUser", "userName": f"user{i % 3}", "accessKeyId": f"AKIA{i % 2}"},
            resources=[{"type": "AWS::IAM::User", "ARN": f"arn:aws:iam::{A1}:user/u{i % 5}"}],
        )
        for i in range(n)
    ]


def _rebuild(harness: Harness, bundles: list[str]) -> DrainSummary:
    """Drop the history table and index the DONE batch again from its log files in S3."""
    resources = harness.resources
    harness.ddb.delete_table(TableName=resources.history_table)
    create_history_table(harness.ddb, resources.history_table, resources.kms_key_arn)
    intent = harness.ledger.get_intent(batch_id(bundles))
    assert intent is not None
    assert intent.state == "DONE"
    batcher = Batcher(
        buffer=harness.buffer,
        log_store=harness.log_store,
        ledger=harness.ledger,
        config=BatcherConfig.from_settings(harness.settings, receive_wait_seconds=0),
        clock=lambda: NOW,
        history=history_for(harness.settings, client=harness.ddb),
        usage=UsageStore(resources.ledger_table, client=harness.ddb),
    )
    summary = DrainSummary()
    batcher._index(intent, None, summary)
    return summary


def test_first_write_uses_the_planned_records_and_equals_a_rebuild_from_s3(
    resources: LocalResources, reads: list[int]
) -> None:
    # given two trails (records in several files) and two bundles with a duplicate record
    trails = [Trail(name="main"), Trail(name="reads", event_selectors=(EventSelector("ReadOnly"),))]
    harness = Harness(resources, trails=trails_to_json(trails))
    records = _records(80)
    bundles = harness.send(records[:50], records[40:])
    # when the batcher delivers them
    summary = run(harness)
    # then the index step read no file back, and indexed every record once
    assert reads == []
    assert summary["indexed"] == 80
    assert summary["duplicatesDropped"] == 10
    first = history_items(harness)
    usage = harness.items("USAGE#")
    assert usage
    # and a rebuild from the files in S3 writes the same items, key for key, value for value
    rebuilt = _rebuild(harness, bundles)
    assert reads  # the rebuild read the files back
    assert rebuilt.indexed == 80
    assert history_items(harness) == first
    assert harness.items("USAGE#") == usage


def test_a_batch_over_the_keep_budget_reads_its_files_back(
    resources: LocalResources, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a budget smaller than the batch's lines
    original = BatcherConfig.from_settings.__func__  # type: ignore[attr-defined]

    def small_budget(cls: type[BatcherConfig], settings: Any, **overrides: Any) -> BatcherConfig:
        return original(cls, settings, **{"keep_records_bytes": 2_000, **overrides})  # type: ignore[no-any-return]

    monkeypatch.setattr(BatcherConfig, "from_settings", classmethod(small_budget))
    harness = Harness(resources)
    records = _records(40)
    bundles = harness.send(records[:20], records[20:])
    # when the batcher delivers them
    summary = run(harness)
    # then the index step parsed the log files, and wrote what a rebuild writes
    assert reads
    assert summary["indexed"] == 40
    first = history_items(harness)
    _rebuild(harness, bundles)
    assert history_items(harness) == first
