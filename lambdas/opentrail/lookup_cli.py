"""`opentrail lookup-events`: LookupEvents from the command line, with the AWS CLI's flags.

    opentrail lookup-events --endpoint-url http://127.0.0.1:4599 \\
        --lookup-attributes AttributeKey=EventName,AttributeValue=DeleteBucket \\
        --start-time 2026-03-16T08:00:00Z --end-time 2026-03-16T12:00:00Z --output table
    opentrail lookup-events --stack OpenTrail --region eu-west-1 --max-items 20

Flags as in ``aws cloudtrail lookup-events``: ``--lookup-attributes`` (shorthand
``AttributeKey=K,AttributeValue=V`` or JSON), ``--start-time``/``--end-time`` (ISO 8601 or
epoch seconds; no zone means UTC), ``--event-category insight``, ``--max-results`` (the page
size), ``--max-items``/``--starting-token`` (auto-pagination follows NextToken until
--max-items; the printed NextToken resumes it), ``--no-paginate``/``--next-token`` (one
call), ``--region``, ``--profile``, ``--output json|table``.

OpenTrail's difference: CloudTrail takes one lookup attribute; several here are ANDed (the
client sends OpenTrail's opt-in header ``X-OpenTrail-Match-All: true``).

The JSON output has the shape ``aws cloudtrail lookup-events`` prints
(``{"Events": [...], "NextToken"?}``, 4-space indent); ``EventTime`` is an ISO 8601 string
in UTC (``2026-03-16T08:00:00+00:00``, as AWS CLI v2 and v1 with
``cli_timestamp_format = iso8601`` print it); ``--timestamp-format none`` prints epoch
seconds, as AWS CLI v1 does by default.

Endpoint: ``--endpoint-url`` (or ``OPENTRAIL_ENDPOINT_URL``), else the ``QueryApiUrl``
output of the CloudFormation stack ``--stack``. A loopback endpoint (``opentrail local``)
gets the stock ``cloudtrail`` client (fake credentials when none are configured); any other
endpoint gets `opentrail.client.cloudtrail_client`, which signs for API Gateway
(``execute-api``) with your AWS credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentrail.domain.lookup import LOOKUP_ATTRIBUTE_KEYS

STACK_OUTPUTS = ("QueryApiUrl", "IngestApiUrl")  # the query routes live on the capture API
ENDPOINT_ENV = "OPENTRAIL_ENDPOINT_URL"
_SHORTHAND = re.compile(r"^\s*(\w+)\s*=(.*?),\s*(\w+)\s*=(.*)$", re.DOTALL)
_TABLE_COLUMNS = ("EventTime", "EventName", "Username", "EventSource", "Resources", "EventId")
_TABLE_WIDTH_LIMIT = {"Resources": 48, "Username": 32, "EventSource": 32, "EventName": 36}


class UsageError(ValueError):
    pass


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lookup-events",
        help="look up events in the event history (LookupEvents), with the AWS CLI's flags",
        description=(
            "LookupEvents against OpenTrail's query API (a deployed stack or opentrail local), with the flags of "
            "`aws cloudtrail lookup-events`. Several --lookup-attributes are ANDed (OpenTrail's opt-in; CloudTrail "
            "takes one). JSON output has the AWS CLI's shape; auto-pagination follows NextToken until --max-items."
        ),
    )
    where = parser.add_argument_group("endpoint")
    where.add_argument(
        "--endpoint-url",
        default=os.environ.get(ENDPOINT_ENV),
        help=f"OpenTrail's API (e.g. http://127.0.0.1:4599 for opentrail local; env {ENDPOINT_ENV})",
    )
    where.add_argument("--stack", help="take the endpoint from this CloudFormation stack's QueryApiUrl output")
    where.add_argument("--region", help="region whose events are looked up (default: from the AWS configuration)")
    where.add_argument("--profile", help="AWS profile for credentials")
    query = parser.add_argument_group("query (as aws cloudtrail lookup-events)")
    query.add_argument(
        "--lookup-attributes",
        nargs="+",
        action="extend",
        default=[],
        metavar="ATTRIBUTE",
        help="AttributeKey=K,AttributeValue=V (or JSON); several are ANDed",
    )
    query.add_argument("--start-time", type=parse_time, help="ISO 8601 or epoch seconds (inclusive)")
    query.add_argument("--end-time", type=parse_time, help="ISO 8601 or epoch seconds (inclusive)")
    query.add_argument("--event-category", choices=["insight"], help="insight: only Insights events")
    query.add_argument("--max-results", type=_page_size, help="events per call, 1-50 (the page size)")
    query.add_argument("--max-items", type=_positive, help="stop after this many events; prints a NextToken")
    query.add_argument("--starting-token", help="a NextToken printed by an earlier --max-items run")
    query.add_argument("--no-paginate", action="store_true", help="one call only (prints the API's NextToken)")
    query.add_argument("--next-token", help="the API's NextToken for a single call (implies --no-paginate)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", choices=["json", "table"], default="json")
    out.add_argument(
        "--timestamp-format",
        choices=["iso8601", "none"],
        default="iso8601",
        help="EventTime in JSON: ISO 8601 in UTC (default) or epoch seconds as sent (none)",
    )
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _page_size(text: str) -> int:
    value = _positive(text)
    if value > 50:
        raise argparse.ArgumentTypeError(f"must be at most 50, got {value}")
    return value


def parse_time(text: str) -> datetime:
    """ISO 8601 (``Z`` or an offset; none means UTC) or epoch seconds, like the AWS CLI."""
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    except (OverflowError, OSError) as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a timestamp (use ISO 8601 like 2026-03-16T08:00:00Z, or epoch seconds)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_attributes(values: Sequence[str]) -> list[dict[str, str]]:
    """``AttributeKey=K,AttributeValue=V`` (either order) or JSON (an object or a list of them)."""
    attributes: list[dict[str, str]] = []
    for value in values:
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                document = json.loads(text)
            except ValueError as error:
                raise UsageError(f"--lookup-attributes: not valid JSON: {error}") from None
            items = document if isinstance(document, list) else [document]
            for item in items:
                if not isinstance(item, dict) or set(item) != {"AttributeKey", "AttributeValue"}:
                    raise UsageError(f"--lookup-attributes: expected AttributeKey and AttributeValue, got {item!r}")
                attributes.append(
                    {"AttributeKey": str(item["AttributeKey"]), "AttributeValue": str(item["AttributeValue"])}
                )
            continue
        match = _SHORTHAND.match(text)
        if not match:
            raise UsageError(f"--lookup-attributes: expected AttributeKey=K,AttributeValue=V, got {value!r}")
        pairs = {match.group(1): match.group(2), match.group(3): match.group(4)}
        if set(pairs) != {"AttributeKey", "AttributeValue"}:
            raise UsageError(f"--lookup-attributes: expected AttributeKey=K,AttributeValue=V, got {value!r}")
        attributes.append({"AttributeKey": pairs["AttributeKey"].strip(), "AttributeValue": pairs["AttributeValue"]})
    for attribute in attributes:
        if attribute["AttributeKey"] not in LOOKUP_ATTRIBUTE_KEYS:
            raise UsageError(
                f"--lookup-attributes: unknown AttributeKey {attribute['AttributeKey']!r}; "
                f"one of {', '.join(LOOKUP_ATTRIBUTE_KEYS)}"
            )
    return attributes


def is_local_endpoint(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    from opentrail.local.server import is_loopback

    return is_loopback(host)


def make_client(args: argparse.Namespace, *, match_all: bool) -> Any:
    import boto3

    from opentrail.client import cloudtrail_client, enable_match_all_attributes

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    endpoint = args.endpoint_url
    if not endpoint:
        if not args.stack:
            raise UsageError(f"give --endpoint-url (or {ENDPOINT_ENV}) or --stack")
        endpoint = stack_endpoint(session, args.stack)
    region = args.region or session.region_name
    if is_local_endpoint(endpoint):
        if session.get_credentials() is None:  # opentrail local takes any credentials
            session = boto3.Session(
                aws_access_key_id="opentrail-local",
                aws_secret_access_key="opentrail-local",
                region_name=region or "us-east-1",
            )
        client = session.client("cloudtrail", endpoint_url=endpoint, region_name=region or "us-east-1")
    else:
        if not region:
            raise UsageError("give --region (or configure a default region)")
        client = cloudtrail_client(endpoint, session=session, region_name=region)
    if match_all:
        enable_match_all_attributes(client)
    return client


def stack_endpoint(session: Any, stack: str) -> str:
    description = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {item["OutputKey"]: item["OutputValue"] for item in description.get("Outputs", [])}
    for name in STACK_OUTPUTS:
        if outputs.get(name):
            return str(outputs[name])
    raise UsageError(f"stack {stack}: no {' or '.join(STACK_OUTPUTS)} output")


def lookup(client: Any, args: argparse.Namespace, attributes: list[dict[str, str]]) -> dict[str, Any]:
    """The AWS CLI's result: all pages merged (or one call with --no-paginate)."""
    parameters: dict[str, Any] = {}
    if attributes:
        parameters["LookupAttributes"] = attributes
    if args.start_time is not None:
        parameters["StartTime"] = args.start_time
    if args.end_time is not None:
        parameters["EndTime"] = args.end_time
    if args.event_category:
        parameters["EventCategory"] = args.event_category
    if args.no_paginate or args.next_token:
        if args.max_results:
            parameters["MaxResults"] = args.max_results
        if args.next_token:
            parameters["NextToken"] = args.next_token
        reply = client.lookup_events(**parameters)
        reply.pop("ResponseMetadata", None)
        return dict(reply)
    pagination: dict[str, Any] = {}
    if args.max_results:
        pagination["PageSize"] = args.max_results
    if args.max_items:
        pagination["MaxItems"] = args.max_items
    if args.starting_token:
        pagination["StartingToken"] = args.starting_token
    result = client.get_paginator("lookup_events").paginate(**parameters, PaginationConfig=pagination)
    merged: dict[str, Any] = result.build_full_result()
    merged.pop("ResponseMetadata", None)
    merged.setdefault("Events", [])
    return merged


def _event_time(value: Any, timestamp_format: str) -> Any:
    if not isinstance(value, datetime):
        return value
    if timestamp_format == "none":
        return value.timestamp()
    return value.astimezone(UTC).isoformat()


def to_json(result: dict[str, Any], *, timestamp_format: str = "iso8601") -> str:
    document: dict[str, Any] = {
        "Events": [
            {name: _event_time(value, timestamp_format) if name == "EventTime" else value for name, value in e.items()}
            for e in result.get("Events", [])
        ]
    }
    if result.get("NextToken"):
        document["NextToken"] = result["NextToken"]
    return json.dumps(document, indent=4, ensure_ascii=False)


def to_table(result: dict[str, Any]) -> str:
    rows: list[dict[str, str]] = []
    for event in result.get("Events", []):
        when = event.get("EventTime")
        resources = "; ".join(
            f"{r.get('ResourceType', '')}:{r.get('ResourceName', '')}".strip(":") for r in event.get("Resources") or []
        )
        rows.append(
            {
                "EventTime": when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                if isinstance(when, datetime)
                else str(when or ""),
                "EventName": str(event.get("EventName", "")),
                "Username": str(event.get("Username", "")),
                "EventSource": str(event.get("EventSource", "")),
                "Resources": resources,
                "EventId": str(event.get("EventId", "")),
            }
        )
    for row in rows:
        for column, limit in _TABLE_WIDTH_LIMIT.items():
            if len(row[column]) > limit:
                row[column] = row[column][: limit - 1] + "…"
    widths = {column: max([len(column), *(len(row[column]) for row in rows)]) for column in _TABLE_COLUMNS}
    lines = ["  ".join(column.ljust(widths[column]) for column in _TABLE_COLUMNS).rstrip()]
    lines.append("  ".join("-" * widths[column] for column in _TABLE_COLUMNS))
    lines.extend("  ".join(row[column].ljust(widths[column]) for column in _TABLE_COLUMNS).rstrip() for row in rows)
    footer = f"{len(rows)} event{'s' if len(rows) != 1 else ''}"
    if result.get("NextToken"):
        footer += f"; more with --starting-token {result['NextToken']}"
    lines.extend(["", footer])
    return "\n".join(lines)


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    out = out or sys.stdout
    try:
        attributes = parse_attributes(args.lookup_attributes)
        client = make_client(args, match_all=len(attributes) > 1)
        result = lookup(client, args, attributes)
    except UsageError as error:
        print(f"opentrail lookup-events: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        detail = error.response.get("Error", {})
        print(f"opentrail lookup-events: {detail.get('Code')}: {detail.get('Message')}", file=sys.stderr)
        return 254
    except BotoCoreError as error:
        print(f"opentrail lookup-events: {error}", file=sys.stderr)
        return 255
    if args.output == "table":
        print(to_table(result), file=out)
    else:
        print(to_json(result, timestamp_format=args.timestamp_format), file=out)
    return 0
