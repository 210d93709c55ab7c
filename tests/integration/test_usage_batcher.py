"""The usage counters the batcher writes (docs/usage.md): per trail and category, once per
batch, whatever crash comes between DONE and the marker and however often a batch is resolved."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from test_batcher import LATER, NOW, Harness, record
from test_batcher_crash import CrashingLedger
from test_history_batcher import Crash, CrashingHistory, run

from opentrail.adapters.usage_store import UsageStore
from opentrail.domain.usage import UsageCounts, summarise
from opentrail.local.resources import LocalResources

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

TRAILS = [
    {
        "Name": "main",
        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}],
    },
    {
        "Name": "audit",
        "EventSelectors": [
            {
                "ReadWriteType": "All",
                "IncludeManagementEvents": True,
                "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::reports/"]}],
            }
        ],
    },
]


def s3_record(key: str) -> dict[str, Any]:
    return record(
        eventSource="s3.amazonaws.com",
        eventName="PutObject",
        eventCategory="Data",
        managementEvent=False,
        resources=[
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::reports/{key}"},
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::reports"},
        ],
    )


def workload() -> list[dict[str, Any]]:
    writes = [record() for _ in range(3)]
    reads = [record(read_only=True)]
    data = [s3_record("a.csv"), s3_record("b.csv")]
    return writes + reads + data


# Both trails take the 4 management events; "main" (first) has the first copy; only "audit"
# selects the S3 data events; "main" analyses 3 writes x 2 + 1 read with both Insights types.
EXPECTED = {
    "main": UsageCounts(management_first=4, insights_analysed=7),
    "audit": UsageCounts(management_additional=4, data=2),
}


def usage(harness: Harness) -> dict[str, UsageCounts]:
    store = UsageStore(harness.resources.ledger_table, client=harness.ddb)
    rows = summarise(store.read(date(2026, 11, 22), date(2026, 11, 24)))
    return {row.trail: row.counts for row in rows}


def usage_items(harness: Harness) -> list[dict[str, Any]]:
    return harness.items("USAGE#")


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    return Harness(resources, trails=json.dumps(TRAILS))


def test_batcher_counts_each_trail_and_category(harness: Harness) -> None:
    records = workload()
    harness.send(records[:3], records[3:])
    summary = harness.run()
    assert summary["batches"] == 1
    assert summary["usageItems"] == 2  # one item per trail for the batch
    assert usage(harness) == EXPECTED
    items = usage_items(harness)
    assert {i["pk"] for i in items} == {f"USAGE#{NOW.date().isoformat()}"}
    assert all(i["expiresAt"] > NOW.timestamp() + 399 * 86400 for i in items)


def test_two_batches_add_up(harness: Harness) -> None:
    harness.send(workload())
    harness.run()
    harness.send(workload())
    harness.run(at=LATER)
    doubled = {name: UsageCounts() for name in EXPECTED}
    for name, counts in EXPECTED.items():
        doubled[name].add(counts)
        doubled[name].add(counts)
    assert usage(harness) == doubled
    assert len(usage_items(harness)) == 4


def test_crash_before_the_marker_rerun_counts_once(harness: Harness) -> None:
    harness.send(workload())
    crashing = CrashingHistory(harness.resources.history_table, client=harness.ddb, writes=1000, crash_marker=True)
    with pytest.raises(Crash):
        run(harness, history=crashing)
    before = usage_items(harness)
    assert len(before) == 2  # written in the index step, before the marker
    harness.buffer.release()
    summary = run(harness, at=LATER)
    assert summary["reindexedBatches"] == 1
    assert usage_items(harness) == before  # the same keys and values: overwritten, not added
    assert usage(harness) == EXPECTED


def test_crash_after_done_before_the_index_is_counted_by_the_resolver(harness: Harness) -> None:
    harness.send(workload())
    ledger = CrashingLedger(harness.resources.ledger_table, client=harness.ddb, crash_before_finalize=False)
    with pytest.raises(Crash):
        harness.run(ledger=ledger)
    assert usage_items(harness) == []  # DONE, nothing indexed yet
    harness.buffer.release()
    summary = harness.run(at=LATER)
    assert summary["alreadyDelivered"] == 1
    assert usage(harness) == EXPECTED


def test_crash_before_finalize_then_resolve_counts_once(harness: Harness) -> None:
    harness.send(workload())
    ledger = CrashingLedger(harness.resources.ledger_table, client=harness.ddb, crash_before_finalize=True)
    with pytest.raises(Crash):
        harness.run(ledger=ledger)
    harness.buffer.release()
    summary = harness.run(at=LATER)
    assert summary["resolvedFinalized"] == 1
    assert usage(harness) == EXPECTED
    # A late duplicate of the bundle is already delivered: nothing more is counted.
    harness.buffer.release()
    harness.run(at=LATER)
    assert usage(harness) == EXPECTED
    assert len(usage_items(harness)) == 2
