"""Offline Insights: run the detectors over existing CloudTrail log files (backtesting).

    opentrail insights --from DIR|s3://bucket/prefix --out DIR [--since T] [--until T]
                       [--sensitivity low|medium|high] [--set KNOB=VALUE ...] [--include-data-events]

Reads OpenTrail's or real CloudTrail's log files — ``{"Records":[...]}`` gzip or plain JSON,
a JSON array of records, or one record per line — in delivery order (the time stamp in
CloudTrail file names; files without one are ordered by their first eventTime), folds the
records into per-minute aggregates on the fly and feeds complete minutes to the same
`InsightsEngine` the live function uses, in simulated time. Memory holds the aggregates of the
minutes still open (``--max-lateness``, default 30 minutes), the baselines and one log file at a
time — never all records. Records older than what was already analysed are counted as late and
skipped.

Insights files are written under ``--out`` in the CloudTrail-Insight layout
(``AWSLogs/<account>/CloudTrail-Insight/<region>/YYYY/MM/DD/<account>_CloudTrail-Insight_<region>_
<YYYYMMDDTHHmmZ>_<unique>.json.gz``, one file per scope and 5-minute delivery slot). Data before
``--since`` builds the baseline only; insights starting before it are not written. Insights
still open at the end of the data are closed there (their End record's insightDuration says so).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from opentrail.domain.insights import Aggregator, InsightsEngine, Scope, Sensitivity
from opentrail.domain.insights.aggregates import is_analysed, record_facts
from opentrail.domain.insights.records import minute_time
from opentrail.domain.log_file import LogFileWriter, log_file_key, unique_string
from opentrail.domain.record import parse_event_time

_STAMP = re.compile(r"_(\d{8}T\d{4}Z)_[A-Za-z0-9]+\.json(?:\.gz)?$")
_SKIPPED_PARTS = ("CloudTrail-Digest", "CloudTrail-Insight")
DELIVERY_MINUTES = 5


@dataclass(frozen=True)
class LogSource:
    """One log file to read: `name` (path or key) and how to get its bytes."""

    name: str
    read: Callable[[], bytes]
    stamp: str | None  # YYYYMMDDTHHmmZ from a CloudTrail file name


@dataclass
class OfflineReport:
    files: int = 0
    records: int = 0
    analysed: int = 0
    skipped: int = 0  # data events (unless included), Insights events, outside --until
    late: int = 0
    invalid: int = 0
    unreadable: list[str] = field(default_factory=list)
    insights: dict[str, int] = field(default_factory=dict)  # insightType -> insights (Start records)
    written: list[str] = field(default_factory=list)  # keys under --out
    first_minute: int | None = None
    last_minute: int | None = None
    seconds: float = 0.0


def _stamp(name: str) -> str | None:
    match = _STAMP.search(name)
    return match.group(1) if match else None


def _wanted(name: str) -> bool:
    if any(part in name for part in _SKIPPED_PARTS) or name.endswith(".metadata.json"):
        return False
    return name.endswith((".json", ".json.gz", ".jsonl", ".ndjson"))


def directory_sources(root: Path) -> list[LogSource]:
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            relative = str(path.relative_to(root))
            if _wanted(relative):
                out.append(LogSource(relative, path.read_bytes, _stamp(name)))
    return out


def s3_sources(url: str, client: Any) -> list[LogSource]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    out = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if _wanted(key):

                def read(key: str = key) -> bytes:
                    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                    return body

                out.append(LogSource(key, read, _stamp(key)))
    return out


def parse_log_file(data: bytes) -> list[dict[str, Any]]:
    """Records of a CloudTrail log file, a JSON array of records, or NDJSON (gzip or not)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig").strip()
    if not text:
        return []
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(body, dict):
        records = body.get("Records")
        if isinstance(records, list):
            return [r for r in records if isinstance(r, dict)]
        return [body]
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)]
    raise ValueError("not a CloudTrail log file")


def _first_time(source: LogSource) -> str:
    try:
        times = [r.get("eventTime") for r in parse_log_file(source.read())]
        valid = [format_minute(parse_event_time(t)) for t in times if isinstance(t, str)]
    except (ValueError, OSError):
        return ""
    return min(valid, default="")


def format_minute(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%MZ")


def ordered(sources: Sequence[LogSource]) -> list[LogSource]:
    """Delivery order: by the stamp in the file name, else by the file's first eventTime."""
    keyed = [(source.stamp or _first_time(source), source.name, source) for source in sources]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [source for _, _, source in keyed]


class InsightsWriter:
    """Writes Insights records under `out` in the CloudTrail-Insight layout."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pending: dict[tuple[Scope, int], list[dict[str, Any]]] = {}
        self.written: list[str] = []

    def add(self, scope: Scope, slot: int, records: list[dict[str, Any]]) -> None:
        if records:
            self.pending.setdefault((scope, slot), []).extend(records)

    def flush(self, before_slot: int | None = None) -> None:
        for scope, slot in sorted(self.pending):
            if before_slot is not None and slot >= before_slot:
                continue
            records = sorted(self.pending.pop((scope, slot)), key=lambda r: (r["eventTime"], r["eventID"]))
            account, region = scope
            delivered = minute_time(slot)
            writer = LogFileWriter()
            for record in records:
                writer.add(json.dumps(record, separators=(",", ":")).encode(), record["eventTime"])
            log_file = writer.finish()
            key = log_file_key(
                account_id=account,
                region=region,
                delivered_at=delivered,
                unique=unique_string("|".join(r["eventID"] for r in records)),
                folder="CloudTrail-Insight",
            )
            path = self.out / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(log_file.body.read())
            self.written.append(key)


def run_offline(
    sources: Sequence[LogSource],
    out: Path,
    *,
    sensitivity: Sensitivity | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_data_events: bool = False,
    max_lateness_minutes: int = 30,
    progress: IO[str] | None = sys.stderr,
) -> OfflineReport:
    began = time.perf_counter()
    report = OfflineReport()
    categories = frozenset({"Management", "Data"} if include_data_events else {"Management"})
    aggregator = Aggregator(categories=categories)
    engines: dict[Scope, InsightsEngine] = {}
    writer = InsightsWriter(out)
    since_minute = int(since.timestamp()) // 60 if since else None
    until_minute = int(until.timestamp()) // 60 if until else None
    dropped: set[str] = set()
    high_water: int | None = None
    processed: dict[Scope, int] = {}
    last_progress = 0.0
    files = ordered(sources)

    def emit(scope: Scope, minute: int, records: list[dict[str, Any]]) -> None:
        kept = []
        for record in records:
            details = record["insightDetails"]
            if details["state"] == "Start":
                if since_minute is not None and minute < since_minute:
                    dropped.add(record["sharedEventID"])
                    continue
                report.insights[details["insightType"]] = report.insights.get(details["insightType"], 0) + 1
            elif record["sharedEventID"] in dropped:
                continue
            kept.append(record)
        slot = (minute // DELIVERY_MINUTES + 1) * DELIVERY_MINUTES
        writer.add(scope, slot, kept)

    def feed(before: int | None) -> None:
        for scope, minute, apis in aggregator.drain(before):
            engine = engines.get(scope)
            if engine is None:
                engine = engines[scope] = InsightsEngine(scope, sensitivity)
            emit(scope, minute, engine.process_minute(minute, apis))
            processed[scope] = minute
            report.first_minute = minute if report.first_minute is None else min(report.first_minute, minute)
            report.last_minute = max(report.last_minute or minute, minute)
        if before is not None:
            writer.flush(before - max_lateness_minutes)

    for index, source in enumerate(files, 1):
        try:
            records = parse_log_file(source.read())
        except (ValueError, OSError, UnicodeDecodeError) as error:
            report.unreadable.append(f"{source.name}: {error}")
            continue
        report.files += 1
        for record in records:
            report.records += 1
            if not is_analysed(record, categories):
                report.skipped += 1
                continue
            try:
                facts = record_facts(record)
            except (KeyError, ValueError):
                report.invalid += 1
                continue
            if until_minute is not None and facts.minute >= until_minute:
                report.skipped += 1
                continue
            if facts.minute <= processed.get(facts.scope, -1):
                report.late += 1
                continue
            aggregator.add_facts(facts)
            report.analysed += 1
            high_water = facts.minute if high_water is None else max(high_water, facts.minute)
        if high_water is not None:
            feed(high_water - max_lateness_minutes)
        now = time.perf_counter()
        if progress is not None and (now - last_progress > 2 or index == len(files)):
            last_progress = now
            at = minute_time(high_water).strftime("%Y-%m-%dT%H:%MZ") if high_water is not None else "-"
            print(
                f"insights: {index}/{len(files)} files, {report.records:,} records, data up to {at}, "
                f"{sum(report.insights.values())} insights",
                file=progress,
                flush=True,
            )
    feed(None)
    for scope, engine in sorted(engines.items()):
        if engine.last_minute is not None:
            emit(scope, engine.last_minute, engine.close())
    writer.flush()
    report.written = writer.written
    report.seconds = time.perf_counter() - began
    if progress is not None:
        print(f"insights: done, {sum(report.insights.values())} insights", file=progress, flush=True)
    return report


def parse_time(text: str) -> datetime:
    """``2026-03-01``, ``2026-03-01T10:00``, ``2026-03-01T10:00:00Z`` (UTC)."""
    value = text.strip().replace("Z", "")
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"not a UTC time like 2026-03-01T10:00Z: {text!r}")


def sources_for(location: str, *, s3_client: Any = None) -> list[LogSource]:
    if location.startswith("s3://"):
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return s3_sources(location, s3_client)
    root = Path(location)
    if root.is_file():
        return [LogSource(root.name, root.read_bytes, _stamp(root.name))]
    if not root.is_dir():
        raise ValueError(f"{location}: no such directory")
    return directory_sources(root)


def summary(report: OfflineReport, out: Path) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.insights.items())) or "none"
    span = ""
    if report.first_minute is not None and report.last_minute is not None:
        first = minute_time(report.first_minute).strftime("%Y-%m-%dT%H:%MZ")
        last = minute_time(report.last_minute).strftime("%Y-%m-%dT%H:%MZ")
        span = f" from {first} to {last}"
    return (
        f"analysed {report.analysed:,} management events of {report.records:,} records in {report.files} files{span} "
        f"({report.skipped:,} skipped, {report.late:,} late, {report.invalid:,} invalid, "
        f"{len(report.unreadable)} unreadable files) in {report.seconds:.1f} s\n"
        f"insights: {kinds}; {len(report.written)} Insights files written under {out}"
    )


# -- command line -------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    from opentrail.domain.insights.detectors import PRESETS

    parser = subparsers.add_parser(
        "insights",
        help="run Insights over existing CloudTrail log files and write Insights files (backtest)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--from", dest="source", required=True, metavar="DIR|s3://bucket/prefix")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write Insights files")
    parser.add_argument("--since", type=parse_time, help="report insights from this UTC time (earlier data: baseline)")
    parser.add_argument("--until", type=parse_time, help="ignore events at or after this UTC time")
    parser.add_argument("--sensitivity", choices=PRESETS, default="medium", help="preset (default medium)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE", help="one sensitivity knob (docs/insights.md)"
    )
    parser.add_argument("--include-data-events", action="store_true", help="analyse data events too")
    parser.add_argument("--max-lateness", type=int, default=30, metavar="MINUTES",
                        help="how late a record may arrive after newer ones (default 30)")  # fmt: skip
    parser.add_argument("--endpoint-url", help="S3 endpoint for s3:// sources")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run_command)


def run_command(args: Any) -> int:
    try:
        knobs = dict(item.split("=", 1) for item in args.set)
        sensitivity = Sensitivity.preset(args.sensitivity).with_overrides(knobs)
        client = None
        if args.source.startswith("s3://"):
            import boto3

            client = boto3.client("s3", endpoint_url=args.endpoint_url)
        sources = sources_for(args.source, s3_client=client)
    except ValueError as error:
        print(f"opentrail insights: {error}", file=sys.stderr)
        return 2
    report = run_offline(
        sources,
        args.out,
        sensitivity=sensitivity,
        since=args.since,
        until=args.until,
        include_data_events=args.include_data_events,
        max_lateness_minutes=args.max_lateness,
        progress=None if args.quiet else sys.stderr,
    )
    print(summary(report, args.out))
    for problem in report.unreadable:
        print(f"unreadable: {problem}", file=sys.stderr)
    return 0
