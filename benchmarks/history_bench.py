"""Event history benchmark: write units per event, DynamoDB requests per page, lookups/s.

    PYTHONPATH=. .venv/bin/python -m benchmarks.history_bench [--quick] [--events N] [--json]

1. Write units per event (DynamoDB's rule: 1 per started KB of each item, names included),
   at 10 / 1,000 / 100,000 events per minute, for two realistic mixes:
   * ``team``: `opentrail.local.workload` (a small team's IAM users, CI role sessions,
     Lambda roles and AWS services over 35 operations, 2 regions, errors);
   * ``datasets``: the 310 real CloudTrail records of ../shared/datasets (stratus-red-team),
     rotated with fresh eventIDs (benchmarks.workload).
   The batcher runs every minute: each batch holds the events captured in one minute (a
   1-20 s capture delay, so a batch spans two eventTime minutes), split at 90 bundles of
   ~150 records (13,500 records) as the batcher's MAX_BATCH_MESSAGES would.
2. Against moto: index `--events` events (default 100,000; `--quick` 20,000) of the team
   mix at 1,000 per minute, then time lookups (time only, EventName, Username, EventId,
   ResourceName, AND of two) and count DynamoDB requests per page of 50.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from opentrail.domain.history import IndexBuilder
from opentrail.domain.lookup import LookupQuery
from opentrail.domain.record import CaptureContext, normalize
from opentrail.local import workload as team_workload

BATCH_RECORDS = 90 * 150


def team_records(count: int, per_minute: int, seed: int = 7) -> list[dict[str, Any]]:
    minutes = count / per_minute
    load = team_workload.generate(events=count, hours=minutes / 60, seed=seed)
    records = []
    for event in load.events:
        context = CaptureContext(account_id=load.account_id, region=event.region)
        records.append(normalize(event.producer_record(), context, now=event.at + timedelta(seconds=5)))
    return records


def dataset_records(count: int, per_minute: int) -> list[dict[str, Any]]:
    from benchmarks.workload import Workload

    start = datetime(2026, 3, 16, 8, 0, tzinfo=UTC)
    return Workload(events_per_second=per_minute / 60, start=start).records(count)


def batches(records: list[dict[str, Any]], seed: int = 1) -> Iterator[tuple[str, list[bytes]]]:
    """The records grouped as the batcher would deliver them (one batch per minute, capped)."""
    rng = random.Random(seed)
    by_minute: dict[datetime, list[bytes]] = {}
    for item in records:
        moment = datetime.strptime(item["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        captured = moment + timedelta(seconds=rng.uniform(1, 20))
        by_minute.setdefault(captured.replace(second=0, microsecond=0), []).append(
            json.dumps(item, separators=(",", ":")).encode()
        )
    for minute, lines in sorted(by_minute.items()):
        for start in range(0, len(lines), BATCH_RECORDS):
            yield f"bench-{minute:%Y%m%d%H%M}-{start}", lines[start : start + BATCH_RECORDS]


def write_units(records: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for bid, lines in batches(records):
        builder = IndexBuilder(bid)
        for line in lines:
            builder.add(line)
        builder.finish()
        stats = builder.stats
        for name in ("records", "write_units", "event_id_units", "posting_units", "page_units", "postings", "pages"):
            totals[name] = totals.get(name, 0) + getattr(stats, name)
        totals["bytes"] = totals.get("bytes", 0) + stats.page_bytes + stats.posting_bytes
    n = totals["records"]
    return {
        "events": n,
        "wcu_per_event": round(totals["write_units"] / n, 3),
        "event_id": round(totals["event_id_units"] / n, 3),
        "other_postings": round((totals["posting_units"] - totals["event_id_units"]) / n, 3),
        "pages": round(totals["page_units"] / n, 3),
        "items_per_event": round((totals["postings"] + totals["pages"]) / n, 3),
        "bytes_per_event": round(totals["bytes"] / n, 1),
    }


def bench_write_units(quick: bool) -> list[dict[str, Any]]:
    rows = []
    minutes = {10: 60, 1_000: 5 if quick else 15, 100_000: 0.5 if quick else 2}
    for mix, make in (("team", team_records), ("datasets", dataset_records)):
        for rate, span in minutes.items():
            started = time.perf_counter()
            result = write_units(make(int(rate * span), rate))
            rows.append(
                {"mix": mix, "events_per_minute": rate, **result, "seconds": round(time.perf_counter() - started, 1)}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def patch_moto_query() -> None:
    """moto's Query sorts every item of the table on each call (O(table), ~0.5 s per call at
    10,000 items); DynamoDB reads one partition. Make moto read only the queried partition
    (same results, same order) so lookups/s measures the index, not moto's table sort."""
    from moto.dynamodb.models.table import Table

    original_query, original_all_items = Table.query, Table.all_items

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("index_name"):
            return original_query(self, hash_key, *args, **kwargs)
        self._bench_partition = hash_key
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            del self._bench_partition

    def all_items(self: Any) -> Any:
        partition = getattr(self, "_bench_partition", None)
        if partition is None or not self.range_key_attr:
            return original_all_items(self)
        return sorted(self.items.get(partition, {}).values(), key=lambda item: item.range_key)

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]


def bench_lookups(events: int, lookups: int, *, patch_moto: bool = True) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    if patch_moto:
        patch_moto_query()

    from opentrail.adapters.history import EventHistory
    from opentrail.local.resources import create_history_table

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_history_table(client, "bench-history")
        history = EventHistory("bench-history", client=client)
        records = team_records(events, 1_000)
        started = time.perf_counter()
        units = 0
        for bid, lines in batches(records):
            units += history.index_lines(bid, lines).write_units
        index_seconds = time.perf_counter() - started
        items = history.items_written
        first = datetime.strptime(records[0]["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        last = datetime.strptime(records[-1]["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        rng = random.Random(3)

        def attributes(kind: str) -> tuple[tuple[str, str], ...]:
            item = rng.choice(records)
            identity = item["userIdentity"]
            if kind == "time":
                return ()
            if kind == "EventName":
                return (("EventName", item["eventName"]),)
            if kind == "Username":
                name = identity.get("userName") or identity.get("arn", "/").rsplit("/", 1)[1] or "x"
                return (("Username", name),)
            if kind == "EventId":
                while item.get("eventCategory") == "Data":  # data events are not indexed (default)
                    item = rng.choice(records)
                return (("EventId", item["eventID"]),)
            if kind == "ResourceName":
                with_resources = [r for r in records[:5000] if r.get("resources")]
                target = rng.choice(with_resources)["resources"][0]["ARN"]
                return (("ResourceName", target),)
            return (("EventSource", item["eventSource"]), ("ReadOnly", "false"))

        report: dict[str, Any] = {
            "indexed_events": len(records),
            "items": items,
            "index_seconds": round(index_seconds, 1),
            "wcu_per_event": round(units / len(records), 3),
            "kinds": {},
        }
        for kind in ("time", "EventName", "Username", "EventId", "ResourceName", "AND(EventSource,ReadOnly)"):
            per_page: list[int] = []
            results: list[int] = []
            started = time.perf_counter()
            count = 0
            for _ in range(lookups):
                span = timedelta(minutes=rng.choice((5, 60, 24 * 60)))
                end = first + (last - first) * rng.random() + span / 2
                wanted = attributes(kind)
                if kind == "EventId":  # the default window: everything retained
                    end, span = last + timedelta(minutes=1), last - first + timedelta(minutes=2)
                query = LookupQuery(region="us-east-1", start=end - span, end=end, attributes=wanted)
                cursor = None
                for _page in range(3):  # up to the first three pages of each lookup
                    before = history.requests["Query"] + history.requests["BatchGetItem"]
                    page = history.lookup(query, cursor)
                    count += 1
                    per_page.append(history.requests["Query"] + history.requests["BatchGetItem"] - before)
                    results.append(len(page.records))
                    cursor = page.cursor
                    if cursor is None:
                        break
            seconds = time.perf_counter() - started
            full = [n for n, r in zip(per_page, results, strict=True) if r == 50]
            report["kinds"][kind] = {
                "pages": count,
                "pages_per_second": round(count / seconds, 1),
                "requests_per_page_mean": round(statistics.mean(per_page), 2),
                "requests_per_page_max": max(per_page),
                "full_pages": len(full),
                "requests_per_full_page_max": max(full) if full else None,
                "records_per_page_mean": round(statistics.mean(results), 1),
            }
            print(kind, json.dumps(report["kinds"][kind]), flush=True)
        return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--events", type=int, default=None, help="events indexed into moto (default 100000)")
    parser.add_argument("--lookups", type=int, default=None, help="lookups per kind (default 40)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--unpatched-moto", action="store_true", help="keep moto's whole-table sort in Query (slow past ~10k items)"
    )
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.quick else 100_000)
    lookups = args.lookups or (15 if args.quick else 40)
    result = {
        "write_units": bench_write_units(args.quick),
        "lookups": bench_lookups(events, lookups, patch_moto=not args.unpatched_moto),
    }
    print(json.dumps(result["lookups"], indent=1))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()
