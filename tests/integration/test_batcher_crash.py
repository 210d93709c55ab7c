"""Crash safety: kill the batcher at each step, rerun, and count every eventID exactly once.

A crash is an exception the protocol does not catch, raised by a wrapped adapter. "Rerun"
makes the crashed run's messages visible again (as the visibility timeout would) and runs
the batcher an hour later, past the crashed run's lease.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_batcher import A1, A2, LATER, NOW, Harness, RecordingBuffer, assert_exactly_once, record

from opentrail.adapters.buffer import Message
from opentrail.adapters.ledger import Ledger
from opentrail.adapters.log_store import LogStore
from opentrail.delivery import Batcher, BatcherConfig, DrainSummary
from opentrail.domain.batch import Intent
from opentrail.local.resources import LocalResources

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    return Harness(resources)


class Crash(Exception):
    """The Lambda dies here (timeout, out of memory, host failure)."""


class CrashingLogStore(LogStore):
    def __init__(self, *args: Any, crash_before_put: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_before_put = crash_before_put
        self.puts = 0

    def put_new(self, key: str, body: Any, length: int) -> bool:
        if self.puts == self.crash_before_put:
            raise Crash(f"before PutObject #{self.puts}")
        self.puts += 1
        return super().put_new(key, body, length)


class CrashingLedger(Ledger):
    def __init__(self, *args: Any, crash_before_finalize: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_before_finalize = crash_before_finalize

    def finalize(self, intent: Intent, *, ttl_days: int) -> Any:
        if self.crash_before_finalize:
            raise Crash("before finalize")
        state = super().finalize(intent, ttl_days=ttl_days)
        raise Crash(f"after finalize ({state})")


class CrashingBuffer(RecordingBuffer):
    def delete(self, messages: Any) -> None:
        raise Crash("before DeleteMessageBatch")


def two_account_batch(harness: Harness) -> list[dict[str, Any]]:
    records = [record(account=A1), record(account=A1), record(account=A2), record(account=A2)]
    harness.send(records[:2], records[2:])
    return records


def crash_then_rerun(harness: Harness, records: list[dict[str, Any]], **crashing: Any) -> dict[str, Any]:
    with pytest.raises(Crash):
        harness.run(**crashing)
    harness.buffer.release()
    summary = harness.run(at=LATER)
    assert_exactly_once(harness, records)
    assert harness.queue_depth() == 0
    return summary


def test_crash_after_intent_before_any_put_aborts_and_redelivers(harness: Harness) -> None:
    records = two_account_batch(harness)
    store = CrashingLogStore(harness.resources.log_bucket, harness.resources.kms_key_arn, crash_before_put=0)
    summary = crash_then_rerun(harness, records, log_store=store)
    assert summary["resolvedAborted"] == 1
    assert summary["batches"] == 1
    (intent,) = harness.items("BATCH#")
    assert (intent["state"], intent["attempt"]) == ("DONE", 1)
    assert len(harness.items("LEDGER#")) == 2


def test_crash_between_two_puts_removes_the_partial_batch(harness: Harness) -> None:
    records = two_account_batch(harness)
    store = CrashingLogStore(harness.resources.log_bucket, harness.resources.kms_key_arn, crash_before_put=1)
    with pytest.raises(Crash):
        harness.run(log_store=store)
    (orphan,) = harness.object_keys()
    harness.buffer.release()
    summary = harness.run(at=LATER)
    assert summary["resolvedAborted"] == 1
    assert_exactly_once(harness, records)
    assert orphan not in harness.object_keys()
    versions = harness.s3.list_object_versions(Bucket=harness.resources.log_bucket, Prefix=orphan)
    assert not versions.get("Versions"), "an aborted file left a version"
    assert not versions.get("DeleteMarkers")
    ledger_keys = sorted(i["key"] for i in harness.items("LEDGER#"))
    assert ledger_keys == harness.object_keys()


def test_crash_after_all_puts_before_finalize_completes_the_batch(harness: Harness) -> None:
    records = two_account_batch(harness)
    ledger = CrashingLedger(harness.resources.ledger_table, crash_before_finalize=True)
    with pytest.raises(Crash):
        harness.run(ledger=ledger)
    keys = harness.object_keys()
    assert len(keys) == 2
    harness.buffer.release()
    summary = harness.run(at=LATER)
    assert summary["resolvedFinalized"] == 1
    assert summary["alreadyDelivered"] == 2
    assert summary["files"] == []
    assert harness.object_keys() == keys, "the retry wrote new files"
    assert_exactly_once(harness, records)
    assert sorted(i["key"] for i in harness.items("LEDGER#")) == keys
    # the ledger entries keep the original delivery time, so keys and ledger agree
    assert all(i["deliveryTime"] == "2026-11-23T10:15:42Z" for i in harness.items("LEDGER#"))
    # ... and say when they entered the ledger: late, so the digester can cover them (backfill)
    assert all(i["recordedAt"] == LATER.strftime("%Y-%m-%dT%H:%M:%SZ") for i in harness.items("LEDGER#"))
    assert harness.queue_depth() == 0


def test_crash_after_finalize_before_delete_only_deletes(harness: Harness) -> None:
    records = two_account_batch(harness)
    ledger = CrashingLedger(harness.resources.ledger_table, crash_before_finalize=False)
    summary = crash_then_rerun(harness, records, ledger=ledger)
    assert summary["alreadyDelivered"] == 2
    assert summary["files"] == []
    assert len(harness.object_keys()) == 2


def test_crash_in_sqs_delete_only_deletes_on_retry(harness: Harness) -> None:
    records = two_account_batch(harness)
    crashing = CrashingBuffer(harness.resources.buffer_queue_url, client=harness.sqs)
    with pytest.raises(Crash):
        harness.run(buffer=crashing)
    keys = harness.object_keys()
    crashing.release()
    summary = harness.run(at=LATER)
    assert summary["alreadyDelivered"] == 2
    assert harness.object_keys() == keys
    assert_exactly_once(harness, records)
    assert harness.queue_depth() == 0


def test_a_rerun_inside_the_owner_lease_leaves_the_batch_alone(harness: Harness) -> None:
    records = two_account_batch(harness)
    store = CrashingLogStore(harness.resources.log_bucket, harness.resources.kms_key_arn, crash_before_put=1)
    with pytest.raises(Crash):
        harness.run(log_store=store)
    harness.buffer.release()
    early = harness.run(at=NOW)  # the owner might still be running: do not touch its batch
    assert early["deferred"] == 2
    assert early["resolvedAborted"] == 0
    assert len(harness.object_keys()) == 1
    harness.buffer.release()
    harness.run(at=LATER)
    assert_exactly_once(harness, records)


def _pending_intent(harness: Harness, *, files_written: int) -> tuple[list[dict[str, Any]], Intent]:
    """A batch that crashed with `files_written` of its 2 files in S3 (PENDING intent)."""
    records = two_account_batch(harness)
    resources = harness.resources
    crashing: dict[str, Any] = (
        {"ledger": CrashingLedger(resources.ledger_table, crash_before_finalize=True)}
        if files_written == 2
        else {
            "log_store": CrashingLogStore(resources.log_bucket, resources.kms_key_arn, crash_before_put=files_written)
        }
    )
    with pytest.raises(Crash):
        harness.run(**crashing)
    assert len(harness.object_keys()) == files_written
    (item,) = harness.items("BATCH#")
    intent = harness.ledger.get_intent(str(item["pk"]).removeprefix("BATCH#"))
    assert intent is not None
    assert intent.state == "PENDING"
    return records, intent


def _resolver(harness: Harness, log_store: LogStore | None = None) -> Batcher:
    config = BatcherConfig.from_settings(harness.settings, receive_wait_seconds=0)
    return Batcher(
        buffer=harness.buffer,
        log_store=log_store or harness.log_store,
        ledger=harness.ledger,
        config=config,
        clock=lambda: LATER,
    )


@pytest.mark.parametrize("files_written", [1, 2], ids=["partial", "complete"])
def test_two_resolvers_racing_over_one_crashed_batch_agree(harness: Harness, files_written: int) -> None:
    # given a crashed batch, and two runs that both read its intent as PENDING
    records, stale = _pending_intent(harness, files_written=files_written)
    first, second = _resolver(harness), _resolver(harness)
    summary_1, summary_2 = DrainSummary(), DrainSummary()
    # when both resolve it from their stale view
    outcome_1 = first._resolve_intent(stale, summary_1)
    outcome_2 = second._resolve_intent(stale, summary_2)
    # then they agree, and a rerun delivers every record exactly once
    assert outcome_1 == outcome_2
    harness.buffer.release()
    harness.run(at=LATER)
    assert_exactly_once(harness, records)


def test_a_finalizer_and_an_aborter_racing_agree_on_done(harness: Harness) -> None:
    # given a crashed batch whose files were all written
    records, stale = _pending_intent(harness, files_written=2)
    keys = harness.object_keys()

    class BlindStore(LogStore):
        def exists(self, key: str) -> bool:
            return False  # this resolver's HEAD raced and saw nothing

    blind = BlindStore(harness.resources.log_bucket, harness.resources.kms_key_arn)
    finalizer, aborter = _resolver(harness), _resolver(harness, log_store=blind)
    summary = DrainSummary()
    # when one finalizes and then the other tries to abort from its stale view
    assert finalizer._resolve_intent(stale, summary).value == "delivered"
    assert aborter._resolve_intent(stale, summary).value == "delivered"
    # then the files stay and nothing is delivered twice
    assert harness.object_keys() == keys
    harness.buffer.release()
    harness.run(at=LATER)
    assert_exactly_once(harness, records)


def test_an_owner_aborted_while_running_undoes_its_files(resources: LocalResources) -> None:
    # given a run whose lease another run judges expired half-way through its writes
    harness = Harness(resources)
    records = two_account_batch(harness)

    class InterruptedStore(LogStore):
        puts = 0

        def put_new(self, key: str, body: Any, length: int) -> bool:
            written = super().put_new(key, body, length)
            self.puts += 1
            if self.puts == 1:
                harness.buffer.release()
                other = harness.run(at=LATER)  # aborts this batch and delivers it itself
                assert other["resolvedAborted"] == 1
            return written

    store = InterruptedStore(resources.log_bucket, resources.kms_key_arn)
    summary = harness.run(log_store=store)
    # then the owner sees ABORTED at finalize, removes its files and keeps the messages
    assert summary["abortedByOthers"] == 1
    assert summary["batches"] == 0
    assert_exactly_once(harness, records)
    assert harness.queue_depth() == 0


def test_redelivered_messages_after_a_crash_are_received_again(harness: Harness) -> None:
    # the release helper works like the visibility timeout (guards the tests above)
    harness.send([record()])
    received: list[Message] = harness.buffer.receive(max_messages=10)
    assert len(received) == 1
    harness.buffer.release()
    assert len(harness.buffer.receive(max_messages=10)) == 1


def test_under_object_lock_an_aborted_partial_file_stays_unlisted_and_nothing_is_lost(harness: Harness) -> None:
    """WORM mode: the partial file of a crashed batch cannot be deleted; the batcher keeps
    going, the records are delivered again in the retried batch, and the locked file is in
    no ledger item (so no digest lists it and validate-logs reports it as unlisted)."""
    bucket = harness.resources.log_bucket
    harness.s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    records = two_account_batch(harness)
    store = CrashingLogStore(bucket, harness.resources.kms_key_arn, crash_before_put=1)
    with pytest.raises(Crash):
        harness.run(log_store=store)
    (orphan,) = harness.object_keys()
    harness.buffer.release()

    summary = harness.run(at=LATER)

    assert summary["resolvedAborted"] == 1
    assert summary["batches"] == 1
    assert orphan in harness.object_keys()
    ledger_keys = sorted(i["key"] for i in harness.items("LEDGER#"))
    assert orphan not in ledger_keys
    assert sorted([*ledger_keys, orphan]) == harness.object_keys()
    assert harness.queue_depth() == 0
    delivered = [r["eventID"] for key in ledger_keys for r in harness.records(key)]
    assert sorted(delivered) == sorted(r["eventID"] for r in records)
