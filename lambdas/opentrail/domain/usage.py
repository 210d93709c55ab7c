"""The usage meter: what each trail delivered, and what that volume costs (docs/usage.md).

Counting (per trail and delivery day, one `UsageCounts` per batch):

* management events: the *first copy* of a record is the copy of the first trail (in the
  trails' configured order) whose files carry it; every other trail's copy of the same record
  is an *additional copy*. A record belongs to one region, so this is CloudTrail's rule
  "first copy per region free" (spec §8).
* data events: every copy (first or not), as CloudTrail bills them.
* Insights events analysed: per trail with Insights selectors, the events its Insights types
  analyse — ApiCallRateInsight analyses write events, ApiErrorRateInsight every event, so a
  write is counted twice when both types are on and a read once (spec §8). Management events
  unless the selector's EventCategories names Data too (CloudTrail's data-event Insights).

Prices: CloudTrail's list prices (spec §8) for the counted volume, and OpenTrail's estimated
AWS cost for the same volume from the request model measured by `benchmarks/run.py` (AWS
requests per 100,000 events, docs/benchmarks.md) times the AWS list prices in `PRICES`, the
price table the benchmark uses too. Pure code: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentrail.domain.record import infer_read_only

PER: Final = 100_000  # CloudTrail prices per 100,000 events
USAGE_TTL_DAYS: Final = 400  # counter items' lifetime

# -- price tables (us-east-1 list prices, USD) ------------------------------------------------

# AWS list prices per unit, with the text printed beside them (also benchmarks/run.py's table).
PRICES: Final[dict[str, tuple[float, str]]] = {
    "sqs_request": (0.40 / 1e6, "SQS standard: $0.40 per million requests (64 KiB chunk = 1 request)"),
    "s3_put": (0.005 / 1e3, "S3 Standard PUT/COPY/POST/LIST: $0.005 per 1,000 requests"),
    "s3_storage_gb_month": (0.023, "S3 Standard storage: $0.023 per GB-month (first 50 TB; one month)"),
    "kms_request": (0.03 / 1e4, "KMS: $0.03 per 10,000 requests"),
    "ddb_wru": (0.625 / 1e6, "DynamoDB on-demand: $0.625 per million write request units (Nov 2024 price cut)"),
    "ddb_rru": (0.125 / 1e6, "DynamoDB on-demand: $0.125 per million read request units"),
    "lambda_request": (0.20 / 1e6, "Lambda: $0.20 per million requests"),
    "lambda_gb_s": (0.0000166667, "Lambda x86: $0.0000166667 per GB-second"),
    "apigw_request": (3.50 / 1e6, "API Gateway REST: $3.50 per million requests (first 333M)"),
    "xray_trace": (5.00 / 1e6, "X-Ray: $5.00 per million traces recorded (not in the brief's list; tracing is on)"),
    "logs_gb": (0.50, "CloudWatch Logs: $0.50 per GB ingested (not in the brief's list)"),
}

# CloudTrail list prices per 100,000 events (spec §8).
CLOUDTRAIL_PRICE: Final[dict[str, float]] = {
    "first copy of management events": 0.0,
    "additional copy of management events": 2.00,
    "data events": 0.10,
    "Insights events analysed": 0.35,
}

# OpenTrail's AWS usage per 100,000 events delivered: the benchmark's measured request counts
# (docs/benchmarks.md, "4 requests/ingest": PutAuditEvents of 100 events through API Gateway,
# a batcher run a minute at 100 events/s), and the units each is billed in (keys of PRICES).
REQUESTS_PER_100K: Final[dict[str, tuple[str, float]]] = {
    "SQS requests (billed 64 KiB units)": ("sqs_request", 1439.0),
    "S3 PUT": ("s3_put", 17.0),
    "S3 storage, 1 month (GB)": ("s3_storage_gb_month", 0.01296),
    "KMS requests": ("kms_request", 10.3),
    "DynamoDB write units": ("ddb_wru", 2167.0),
    "DynamoDB read units": ("ddb_rru", 0.0),
    "Lambda requests": ("lambda_request", 1017.0),
    "Lambda GB-seconds": ("lambda_gb_s", 29.3),
    "API Gateway REST requests": ("apigw_request", 1000.0),
}

MANAGEMENT_FIRST: Final = "managementFirstCopy"
MANAGEMENT_ADDITIONAL: Final = "managementAdditionalCopies"
DATA: Final = "dataEvents"
INSIGHTS: Final = "insightsAnalysed"
CATEGORIES: Final = (MANAGEMENT_FIRST, MANAGEMENT_ADDITIONAL, DATA, INSIGHTS)
CATEGORY_LABELS: Final[dict[str, str]] = {
    MANAGEMENT_FIRST: "management, first copy",
    MANAGEMENT_ADDITIONAL: "management, additional copies",
    DATA: "data events",
    INSIGHTS: "Insights events analysed",
}
_CATEGORY_PRICE: Final[dict[str, str]] = {
    MANAGEMENT_FIRST: "first copy of management events",
    MANAGEMENT_ADDITIONAL: "additional copy of management events",
    DATA: "data events",
    INSIGHTS: "Insights events analysed",
}


@dataclass
class UsageCounts:
    """Events of one trail, per category."""

    management_first: int = 0
    management_additional: int = 0
    data: int = 0
    insights_analysed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            MANAGEMENT_FIRST: self.management_first,
            MANAGEMENT_ADDITIONAL: self.management_additional,
            DATA: self.data,
            INSIGHTS: self.insights_analysed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageCounts:
        return cls(
            management_first=int(data.get(MANAGEMENT_FIRST, 0)),
            management_additional=int(data.get(MANAGEMENT_ADDITIONAL, 0)),
            data=int(data.get(DATA, 0)),
            insights_analysed=int(data.get(INSIGHTS, 0)),
        )

    def add(self, other: UsageCounts) -> None:
        self.management_first += other.management_first
        self.management_additional += other.management_additional
        self.data += other.data
        self.insights_analysed += other.insights_analysed

    @property
    def delivered(self) -> int:
        """Events delivered (every copy; Insights analysis is not a delivery)."""
        return self.management_first + self.management_additional + self.data

    def __bool__(self) -> bool:
        return any(self.to_dict().values())


@dataclass(frozen=True)
class TrailMeter:
    """What the meter needs of a trail: its name and Insights configuration."""

    name: str
    insight_types: frozenset[str] = frozenset()
    insight_categories: frozenset[str] = frozenset({"Management"})


def meters_of(trails: Iterable[Any]) -> list[TrailMeter]:
    """`TrailMeter`s of `opentrail.domain.trail.Trail`s, in their configured order."""
    return [
        TrailMeter(trail.name, trail.insight_types, trail.insight_categories or frozenset({"Management"}))
        for trail in trails
    ]


def insights_analysed(*, write: bool, insight_types: Iterable[str]) -> int:
    """How many times Insights analyses one event: once per type that looks at it."""
    types = set(insight_types)
    return (1 if write and "ApiCallRateInsight" in types else 0) + (1 if "ApiErrorRateInsight" in types else 0)


def is_write(record: Mapping[str, Any]) -> bool:
    read_only = record.get("readOnly")
    if isinstance(read_only, bool):
        return not read_only
    if isinstance(read_only, str) and read_only in ("true", "false"):
        return read_only == "false"
    return not infer_read_only(str(record.get("eventName", "")))


class UsageCounter:
    """Counts one batch: feed each record of each trail's files (`add`), then `counts()`.

    A record (eventID) seen in several trails' files is counted once per trail; the first copy
    goes to the earliest trail in `trails` order. Holds one small entry per distinct eventID:
    ``[category, write, trail, ...]``; records with equal entries are counted together.
    """

    def __init__(self, trails: Sequence[TrailMeter]) -> None:
        self._order = {meter.name: i for i, meter in enumerate(trails)}
        self._meters = {meter.name: meter for meter in trails}
        self._seen: dict[str, list[Any]] = {}
        self._anonymous = 0

    def add(self, trail: str, record: Mapping[str, Any]) -> None:
        event_id = record.get("eventID")
        if not isinstance(event_id, str):
            event_id = f"#anonymous-{self._anonymous}"
            self._anonymous += 1
        seen = self._seen.get(event_id)
        if seen is None:
            self._seen[event_id] = [str(record.get("eventCategory") or "Management"), is_write(record), trail]
        elif trail not in seen[2:]:
            seen.append(trail)

    def counts(self) -> dict[str, UsageCounts]:
        """Per trail (only trails with some count)."""
        result: dict[str, UsageCounts] = {}
        last = len(self._order)
        alike = Counter(tuple(seen) for seen in self._seen.values())
        for (category, write, *trails), records in alike.items():
            ordered = sorted(trails, key=lambda name: (self._order.get(name, last), name))
            for index, name in enumerate(ordered):
                counts = result.setdefault(name, UsageCounts())
                if category == "Management":
                    if index == 0:
                        counts.management_first += records
                    else:
                        counts.management_additional += records
                elif category == "Data":
                    counts.data += records
                meter = self._meters.get(name)
                if meter is not None and meter.insight_types and category in meter.insight_categories:
                    counts.insights_analysed += records * insights_analysed(
                        write=write, insight_types=meter.insight_types
                    )
        return {name: counts for name, counts in result.items() if counts}


# -- prices -----------------------------------------------------------------------------------


def cloudtrail_price(counts: UsageCounts) -> dict[str, float]:
    """CloudTrail's list price (USD) of each category's volume."""
    values = counts.to_dict()
    return {category: values[category] / PER * CLOUDTRAIL_PRICE[_CATEGORY_PRICE[category]] for category in CATEGORIES}


def opentrail_cost_per_100k() -> dict[str, float]:
    """OpenTrail's estimated AWS cost (USD) per 100,000 events delivered, per line."""
    return {name: amount * PRICES[unit][0] for name, (unit, amount) in REQUESTS_PER_100K.items()}


def opentrail_cost(events: int) -> float:
    """OpenTrail's estimated AWS cost (USD) of delivering `events` events (every copy counts:
    each trail's file is written and indexed)."""
    return events / PER * sum(opentrail_cost_per_100k().values())


@dataclass(frozen=True)
class UsageRow:
    trail: str
    first_day: str
    last_day: str
    counts: UsageCounts

    @property
    def cloudtrail(self) -> float:
        return sum(cloudtrail_price(self.counts).values())

    @property
    def opentrail(self) -> float:
        return opentrail_cost(self.counts.delivered)


def summarise(items: Iterable[tuple[str, str, UsageCounts]]) -> list[UsageRow]:
    """(trail, day YYYY-MM-DD, counts) items → one row per trail, days summed, by trail name."""
    totals: dict[str, UsageCounts] = {}
    days: dict[str, list[str]] = {}
    for trail, day, counts in items:
        totals.setdefault(trail, UsageCounts()).add(counts)
        days.setdefault(trail, []).append(day)
    return [UsageRow(name, min(days[name]), max(days[name]), totals[name]) for name in sorted(totals)]
