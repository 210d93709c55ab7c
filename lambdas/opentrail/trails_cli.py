"""``opentrail trails`` and ``opentrail trail-status``: DescribeTrails and GetTrailStatus
against OpenTrail's query API (a deployed stack or ``opentrail local``), printed as a table or
as the AWS CLI's JSON (docs/trails.md). Endpoint flags as ``opentrail lookup-events``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from opentrail.lookup_cli import ENDPOINT_ENV, UsageError, make_client


def _endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("endpoint")
    where.add_argument(
        "--endpoint-url",
        default=os.environ.get(ENDPOINT_ENV),
        help=f"OpenTrail's API (e.g. http://127.0.0.1:4599 for opentrail local; env {ENDPOINT_ENV})",
    )
    where.add_argument("--stack", help="take the endpoint from this CloudFormation stack's QueryApiUrl output")
    where.add_argument("--region", help="the region asked (default: from the AWS configuration)")
    where.add_argument("--profile", help="AWS profile for credentials")
    parser.add_argument("--output", choices=["table", "json"], default="table")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trails = subparsers.add_parser(
        "trails",
        help="list the trails (DescribeTrails): prefix, selectors, validation, deliveries",
        description="DescribeTrails against OpenTrail's query API; --output json prints the API's response.",
    )
    _endpoint_arguments(trails)
    trails.add_argument("names", nargs="*", metavar="NAME", help="only these trails (names or ARNs)")
    trails.set_defaults(func=run_trails)
    status = subparsers.add_parser(
        "trail-status",
        help="show each trail's logging state and latest deliveries (GetTrailStatus)",
        description="GetTrailStatus of every trail (or the named ones) against OpenTrail's query API.",
    )
    _endpoint_arguments(status)
    status.add_argument("names", nargs="*", metavar="NAME", help="only these trails (names or ARNs)")
    status.set_defaults(func=run_trail_status)


def _client(args: argparse.Namespace, err: TextIO) -> Any:
    try:
        return make_client(args, match_all=False)
    except UsageError as error:
        print(f"opentrail: {error}", file=err)
        return None


def _describe(client: Any, names: list[str]) -> list[dict[str, Any]]:
    request = {"trailNameList": names} if names else {}
    trails: list[dict[str, Any]] = client.describe_trails(**request)["trailList"]
    return trails


def run_trails(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    client = _client(args, err)
    if client is None:
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        trails = _describe(client, args.names)
        selectors = {t["Name"]: client.get_event_selectors(TrailName=t["TrailARN"]) for t in trails}
        insights = {
            t["Name"]: client.get_insight_selectors(TrailName=t["TrailARN"])["InsightSelectors"]
            for t in trails
            if t.get("HasInsightSelectors")
        }
    except (BotoCoreError, ClientError) as error:
        print(f"opentrail: {error}", file=err)
        return 1
    if args.output == "json":
        print(json.dumps({"trailList": trails}, indent=4), file=out)
        return 0
    rows = [
        (
            t["Name"],
            f"s3://{t['S3BucketName']}/{t['S3KeyPrefix'] + '/' if t.get('S3KeyPrefix') else ''}",
            _selector_summary(selectors[t["Name"]]),
            _insight_summary(insights.get(t["Name"], [])),
            "on" if t.get("LogFileValidationEnabled") else "off",
            "yes" if t.get("IsMultiRegionTrail") else "no",
            _deliveries(t),
            t["TrailARN"],
        )
        for t in trails
    ]
    columns = ("NAME", "DESTINATION", "SELECTORS", "INSIGHTS", "VALIDATION", "MULTI-REGION", "DELIVERIES", "ARN")
    _table(columns, rows, out)
    return 0


def _selector_summary(reply: dict[str, Any]) -> str:
    if reply.get("AdvancedEventSelectors"):
        return f"advanced ({len(reply['AdvancedEventSelectors'])})"
    parts = []
    for selector in reply.get("EventSelectors", []):
        text = selector.get("ReadWriteType", "All")
        if not selector.get("IncludeManagementEvents", True):
            text += " no-mgmt"
        if selector.get("DataResources"):
            text += f" +{sum(len(d['Values']) for d in selector['DataResources'])} data"
        if selector.get("ExcludeManagementEventSources"):
            text += " -" + ",".join(s.split(".")[0] for s in selector["ExcludeManagementEventSources"])
        parts.append(text)
    return "; ".join(parts) or "-"


def _insight_summary(selectors: list[dict[str, Any]]) -> str:
    """``CallRate,ErrorRate`` (types without ``Api``/``Activity``/``Insight``), ``+data`` when
    a selector analyses data events."""
    names = [s["InsightType"].removeprefix("Api").removesuffix("Insight").removesuffix("Activity") for s in selectors]
    data = any("Data" in s.get("EventCategories", []) for s in selectors)
    return (",".join(names) + (" +data" if data else "")) or "-"


def _deliveries(trail: dict[str, Any]) -> str:
    found = ["s3"]
    if trail.get("CloudWatchLogsLogGroupArn"):
        found.append("logs")
    if trail.get("SnsTopicARN"):
        found.append("sns")
    return ",".join(found)


def run_trail_status(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    client = _client(args, err)
    if client is None:
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        names = args.names or [t["Name"] for t in _describe(client, [])]
        statuses = {name: client.get_trail_status(Name=name) for name in names}
    except (BotoCoreError, ClientError) as error:
        print(f"opentrail: {error}", file=err)
        return 1
    for status in statuses.values():
        status.pop("ResponseMetadata", None)
    if args.output == "json":
        print(json.dumps(statuses, indent=4, default=_json_time), file=out)
        return 0
    rows = [
        (
            name,
            "logging" if status.get("IsLogging") else "STOPPED",
            _time(status.get("LatestDeliveryTime")),
            _time(status.get("LatestDigestDeliveryTime")),
            "; ".join(
                f"{key}: {status[key]}"
                for key in (
                    "LatestDeliveryError",
                    "LatestDigestDeliveryError",
                    "LatestCloudWatchLogsDeliveryError",
                    "LatestNotificationError",
                )
                if status.get(key)
            )
            or "-",
        )
        for name, status in statuses.items()
    ]
    _table(("NAME", "STATE", "LATEST DELIVERY", "LATEST DIGEST", "ERRORS"), rows, out)
    return 0


def _json_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(type(value).__name__)


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "-"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
