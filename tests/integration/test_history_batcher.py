"""The batcher writes the event history index after DONE, and a crash between DONE and the
"indexed" marker is repaired by the next run from the log files in S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_batcher import A1, A2, LATER, NOW, Harness, assert_exactly_once, record
from test_batcher_crash import Crash, CrashingLedger

from opentrail.adapters.history import EventHistory
from opentrail.domain.batch import batch_id
from opentrail.domain.lookup import LookupQuery
from opentrail.domain.trail import EventSelector, Trail, trails_to_json
from opentrail.handlers.batcher import handler, history_for
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


class CrashingHistory(EventHistory):
    """Dies after `writes` BatchWriteItem requests (0: before the first)."""

    def __init__(self, *args: Any, writes: int, crash_marker: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes_left = writes
        self.crash_marker = crash_marker

    def write(self, items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), 25):
            if self.writes_left == 0:
                raise Crash("during the index writes")
            self.writes_left -= 1
            super().write(items[start : start + 25])

    def mark_indexed(self, batch_id: str, *, expires_at: int) -> None:
        if self.crash_marker:
            raise Crash("before the indexed marker")
        super().mark_indexed(batch_id, expires_at=expires_at)


def run(harness: Harness, *, at: datetime = NOW, **adapters: Any) -> dict[str, Any]:
    return handler(
        {"action": "flush"},
        LocalContext(function_name="opentrail-batcher"),
        buffer=harness.buffer,
        log_store=harness.log_store,
        ledger=adapters.pop("ledger", harness.ledger),
        history=adapters.pop("history", None) or history_for(harness.settings, client=harness.ddb),
        settings=harness.settings,
        clock=lambda: at,
    )


def lookup_ids(harness: Harness, *attributes: tuple[str, str], region: str = "us-east-1") -> list[str]:
    history = history_for(harness.settings, client=harness.ddb)
    query = LookupQuery(
        region=region,
        start=datetime(2026, 11, 22, tzinfo=UTC),
        end=datetime(2026, 11, 24, tzinfo=UTC),
        attributes=tuple(attributes),
        max_results=7,
    )
    ids: list[str] = []
    cursor = None
    while True:
        page = history.lookup(query, cursor)
        ids.extend(r["eventID"] for r in page.records)
        cursor = page.cursor
        if cursor is None:
            return ids


def history_items(harness: Harness) -> list[dict[str, Any]]:
    items = harness.ddb.scan(TableName=harness.resources.history_table)["Items"]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def sample(n: int) -> list[dict[str, Any]]:
    return [
        record(account=A1 if i % 2 else A2, eventTime=(NOW - timedelta(seconds=i * 7)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        for i in range(n)
    ]


def test_batcher_indexes_every_delivered_record_once(resources: LocalResources) -> None:
    # given two trails selecting the same records (each record is in two log files)
    trails = [Trail(name="main"), Trail(name="copy", event_selectors=(EventSelector("All"),))]
    harness = Harness(resources, trails=trails_to_json(trails))
    records = sample(30)
    harness.send(records[:15], records[15:])
    summary = run(harness)
    assert summary["indexed"] == 30
    assert summary["reindexedBatches"] == 0
    ids = lookup_ids(harness)
    assert sorted(ids) == sorted(r["eventID"] for r in records)
    assert lookup_ids(harness, ("Username", "alice"), ("ReadOnly", "false")) == ids


def test_batcher_rebuilds_the_index_after_a_crash_between_done_and_the_marker(resources: LocalResources) -> None:
    clean = Harness(resources)
    records = sample(60)
    bundles = clean.send(records[:30], records[30:])
    run(clean)
    expected_items = history_items(clean)
    expected_ids = lookup_ids(clean)
    clean.ddb.delete_table(TableName=resources.history_table)
    from opentrail.local.resources import create_history_table

    create_history_table(clean.ddb, resources.history_table, resources.kms_key_arn)
    assert lookup_ids(clean) == []

    # a second harness on the same bundles: the batch is DONE, its messages come back
    harness = Harness(resources)
    harness.ddb.delete_item(
        TableName=resources.ledger_table, Key={"pk": {"S": f"BATCH#{batch_id(bundles)}"}, "sk": {"S": "BATCH"}}
    )
    for bundle in bundles:
        harness.ddb.delete_item(
            TableName=resources.ledger_table, Key={"pk": {"S": f"BUNDLE#{bundle}"}, "sk": {"S": "BUNDLE"}}
        )
    for key in harness.object_keys():
        harness.log_store.remove(key)
    harness._ids = iter(bundles)
    harness.send(records[:30], records[30:])

    crashing = CrashingHistory(resources.history_table, client=harness.ddb, writes=2)
    with pytest.raises(Crash):
        run(harness, history=crashing)
    (intent,) = harness.items("BATCH#")
    assert intent["state"] == "DONE"
    assert len(history_items(harness)) < len(expected_items)  # a partial index, no marker

    harness.buffer.release()
    summary = run(harness, at=LATER)
    assert summary["reindexedBatches"] == 1
    assert summary["alreadyDelivered"] == 2
    assert harness.queue_depth() == 0
    assert_exactly_once(harness, records)
    assert lookup_ids(harness) == expected_ids
    assert history_items(harness) == expected_items  # the same keys and values as a clean run


def test_batcher_crash_after_index_before_marker_rewrites_the_same_items(resources: LocalResources) -> None:
    harness = Harness(resources)
    records = sample(20)
    harness.send(records)
    crashing = CrashingHistory(resources.history_table, client=harness.ddb, writes=1000, crash_marker=True)
    with pytest.raises(Crash):
        run(harness, history=crashing)
    before = history_items(harness)
    harness.buffer.release()
    summary = run(harness, at=LATER)
    assert summary["reindexedBatches"] == 1
    after = history_items(harness)
    assert [i for i in after if not i["pk"]["S"].startswith("B#")] == before
    assert sorted(lookup_ids(harness)) == sorted(r["eventID"] for r in records)


def test_batcher_resolver_that_finalizes_a_crashed_batch_indexes_it(resources: LocalResources) -> None:
    harness = Harness(resources)
    records = sample(12)
    harness.send(records[:6], records[6:])
    with pytest.raises(Crash):
        run(harness, ledger=CrashingLedger(resources.ledger_table, client=harness.ddb, crash_before_finalize=True))
    assert lookup_ids(harness) == []
    harness.buffer.release()
    summary = run(harness, at=LATER)
    assert summary["resolvedFinalized"] == 1
    assert summary["reindexedBatches"] == 1
    assert_exactly_once(harness, records)
    assert sorted(lookup_ids(harness)) == sorted(r["eventID"] for r in records)
