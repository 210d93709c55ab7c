"""``opentrail usage``: the usage meter's counts with CloudTrail's list price beside OpenTrail's
estimated AWS cost for the same volume (docs/usage.md).

    opentrail usage --since 2026-03-01 [--until 2026-03-31] --stack OpenTrail --region eu-west-1
    opentrail usage --since 2026-03-01 --endpoint-url http://127.0.0.1:4598   # opentrail local

Reads the counter items the batcher writes to the ledger table (``--ledger-table``, else the
stack's ``LedgerTableName`` output, else ``opentrail-ledger``, the local name); days are UTC
delivery days, both ends included (``--until`` defaults to today).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from typing import Any, TextIO

from opentrail.adapters.usage_store import UsageStore, UsageStoreError
from opentrail.domain.usage import (
    CATEGORIES,
    CATEGORY_LABELS,
    CLOUDTRAIL_PRICE,
    PRICES,
    REQUESTS_PER_100K,
    UsageCounts,
    UsageRow,
    cloudtrail_price,
    opentrail_cost,
    opentrail_cost_per_100k,
    summarise,
)

LOCAL_LEDGER_TABLE = "opentrail-ledger"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from error


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "usage",
        help="events delivered per trail and category, with CloudTrail's price beside OpenTrail's cost",
        description=(
            "Counts of events delivered per trail (management first copy / additional copies, data "
            "events, Insights events analysed) from the batcher's usage counters, with CloudTrail's "
            "list price for the same volume and OpenTrail's estimated AWS cost."
        ),
    )
    parser.add_argument("--since", type=_day, required=True, help="first delivery day (UTC, YYYY-MM-DD)")
    parser.add_argument("--until", type=_day, help="last delivery day, included (default: today, UTC)")
    parser.add_argument("--endpoint-url", help="DynamoDB endpoint (e.g. opentrail local's AWS port)")
    parser.add_argument("--stack", help="take the ledger table from this CloudFormation stack's LedgerTableName")
    parser.add_argument("--ledger-table", help=f"the ledger table (default: the stack's, or {LOCAL_LEDGER_TABLE})")
    parser.add_argument("--region", help="the region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS profile for credentials")
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.set_defaults(func=run)


def _table_name(session: Any, args: argparse.Namespace) -> str:
    if args.ledger_table:
        return str(args.ledger_table)
    if args.stack:
        stack = session.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if not outputs.get("LedgerTableName"):
            raise UsageError(f"stack {args.stack}: no LedgerTableName output")
        return str(outputs["LedgerTableName"])
    return LOCAL_LEDGER_TABLE


class UsageError(Exception):
    pass


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None, client: Any = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    until = args.until or datetime.now(UTC).date()
    if until < args.since:
        print("opentrail: --until is before --since", file=err)
        return 2
    try:
        import boto3

        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        table = _table_name(session, args)
        if client is None:
            region = args.region or session.region_name or "us-east-1"
            client = session.client("dynamodb", endpoint_url=args.endpoint_url, region_name=region)
        rows = summarise(UsageStore(table, client=client).read(args.since, until))
    except (UsageError, UsageStoreError) as error:
        print(f"opentrail: {error}", file=err)
        return 1
    if args.output == "json":
        json.dump(as_json(rows, args.since, until), out, indent=2)
        out.write("\n")
    else:
        render(rows, args.since, until, out)
    return 0


def as_json(rows: list[UsageRow], since: date, until: date) -> dict[str, Any]:
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "trails": [
            {
                "trail": row.trail,
                "firstDay": row.first_day,
                "lastDay": row.last_day,
                "counts": row.counts.to_dict(),
                "cloudTrailPriceUsd": {k: round(v, 6) for k, v in cloudtrail_price(row.counts).items()},
                "cloudTrailTotalUsd": round(row.cloudtrail, 6),
                "openTrailEstimatedUsd": round(row.opentrail, 6),
            }
            for row in rows
        ],
        "prices": {
            "cloudTrailPer100k": dict(CLOUDTRAIL_PRICE),
            "awsListPrices": {key: text for key, (_, text) in PRICES.items()},
            "openTrailRequestsPer100k": {name: amount for name, (_, amount) in REQUESTS_PER_100K.items()},
            "openTrailCostPer100k": round(sum(opentrail_cost_per_100k().values()), 6),
        },
    }


def _money(value: float) -> str:
    return f"${value:,.6f}"


def render(rows: list[UsageRow], since: date, until: date, out: TextIO) -> None:
    print(f"Usage from {since.isoformat()} to {until.isoformat()} (UTC delivery days)", file=out)
    if not rows:
        print("  no events delivered in this range", file=out)
    header = f"{'trail':<24} {'days':<23} {'category':<31} {'events':>12} {'CloudTrail':>12} {'OpenTrail':>12}"
    total = UsageCounts()
    if rows:
        print(header, file=out)
        print("-" * len(header), file=out)
    per_100k = sum(opentrail_cost_per_100k().values())
    for row in rows:
        days = f"{row.first_day}..{row.last_day}"
        values = row.counts.to_dict()
        prices = cloudtrail_price(row.counts)
        for category in CATEGORIES:
            # Insights analysis adds no delivery: OpenTrail's cost of it is in the aggregates' writes.
            ours = "n/a" if category == CATEGORIES[-1] else _money(values[category] / 100_000 * per_100k)
            print(
                f"{row.trail:<24} {days:<23} {CATEGORY_LABELS[category]:<31} {values[category]:>12,} "
                f"{_money(prices[category]):>12} {ours:>12}",
                file=out,
            )
        print(
            f"{row.trail:<24} {days:<23} {'total':<31} {row.counts.delivered:>12,} "
            f"{_money(row.cloudtrail):>12} {_money(row.opentrail):>12}",
            file=out,
        )
        total.add(row.counts)
    if len(rows) > 1:
        print(
            f"{'ALL TRAILS':<24} {'':<23} {'total':<31} {total.delivered:>12,} "
            f"{_money(sum(cloudtrail_price(total).values())):>12} {_money(opentrail_cost(total.delivered)):>12}",
            file=out,
        )
    print("\nCloudTrail list prices (us-east-1, per 100,000 events; spec §8):", file=out)
    for name, price in CLOUDTRAIL_PRICE.items():
        print(f"  {name:<40} ${price:.2f}", file=out)
    print(
        f"\nOpenTrail's estimated AWS cost: ${per_100k:.4f} per 100,000 events delivered "
        "(request counts measured by benchmarks/run.py, docs/benchmarks.md):",
        file=out,
    )
    for name, value in opentrail_cost_per_100k().items():
        print(f"  {name:<40} {REQUESTS_PER_100K[name][1]:>10,.2f}  ${value:.6f}", file=out)
    print("AWS list prices used:", file=out)
    for _, text in PRICES.values():
        print(f"  - {text}", file=out)
