"""`opentrail demo`: the whole pipeline, in-process, over embedded moto, in simulated time.

Inside ``moto.mock_aws()`` (no network, no AWS account), the demo creates the stack's
resources (`opentrail.local.resources.provision`), generates a workload
(`opentrail.local.workload.generate`) and walks simulated time minute by minute:

* each minute's application events go to the real ingest handler as PutAuditEvents
  requests (API Gateway proxy events, up to 100 events per request);
* AWS API calls (and some application events) go to the real EventBridge capture handler,
  one envelope per invocation, as EventBridge delivers them;
* the orders function's own AWS calls go through `opentrail.producer.emit`;
* every `batch_every_minutes` simulated minutes the real batcher runs with the simulated
  clock, so delivery times and S3 keys follow simulated time.

Then it reads the bucket back and reports what was delivered (and checks that every
generated event was delivered exactly once). Then integrity (docs/integrity.md): the real
digester runs once per simulated hour (with the simulated clock, `DIGEST_DELAY` after each
hour, as its hourly schedule would), the bucket is exported with the public keys and chain
heads (to ``--export DIR``, else a temporary directory), ``opentrail validate-logs --dir``
checks every source region of the export, then a copy of the export is tampered with (one
record removed from a log file, one digest deleted) and validated again, which must fail
with the expected INVALID lines.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from opentrail.domain.trail import ALL_INSIGHTS
from opentrail.local.workload import (
    ANOMALY_MIN_MINUTES,
    DEFAULT_EVENTS,
    DEFAULT_HOURS,
    DEFAULT_SEED,
    PATHS,
    Anomaly,
    Workload,
    WorkloadEvent,
    generate,
)

MAX_EVENTS_PER_REQUEST = 100
MAX_REQUEST_BYTES = 900_000  # PutAuditEvents allows 1 MB; keep a margin
DEFAULT_BATCH_EVERY_MINUTES = 5
# The demo's trail: management events plus Lambda and S3 data events (the workload's Invoke
# calls, the injected intruder's GetObject calls),
# in CloudTrail's PutEventSelectors shape.
DEMO_TRAILS_JSON = json.dumps(
    [
        {
            "Name": "opentrail",
            "EventSelectors": [
                {
                    "ReadWriteType": "All",
                    "IncludeManagementEvents": True,
                    "DataResources": [
                        {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]},
                        {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]},
                    ],
                }
            ],
            "InsightSelectors": [selector.to_dict() for selector in ALL_INSIGHTS],
        }
    ]
)
SAMPLE_EVENT_NAMES = ("RunInstances", "CreateUser", "AttachUserPolicy", "RefundOrder")
TRAIL_NAME = "opentrail"
DIGEST_DELAY = timedelta(minutes=5)  # the deployed default (DIGEST_DELAY_SECONDS 300)
# Insights (docs/insights.md, "Live"; docs/demo.md): the real function every 5 simulated minutes,
# right after the batcher. The deployed defaults wait a day before anything is "never seen" and
# want a day of history before a job counts as regular; the demo has three hours, so it learns
# for 90 minutes and calls a job regular after an hour and 12 runs. Call-rate and error-rate
# insights keep their production rules, cold start included (an API needs an hour of history,
# thresholds doubled in its first week). Minutes are analysed 1 minute after they end
# (the batcher here delivers every 5 minutes with nothing in flight), not 10.
INSIGHTS_EVERY_MINUTES = 5
INSIGHTS_SETTLE_MINUTES = 1
INSIGHTS_TAIL_MINUTES = 15  # after the workload: runs that let the last insights end
DEMO_SENSITIVITY_OVERRIDES: dict[str, int] = {
    "unusual_warmup_minutes": 90,
    "missing_min_history_minutes": 60,
    "missing_min_occurrences": 12,
}
INSIGHT_KEY = (
    r"^AWSLogs/(?P<account>\d{12})/CloudTrail-Insight/(?P<region>[a-z]{2}-[a-z]+-\d)/\d{4}/\d{2}/\d{2}/"
    r"(?P=account)_CloudTrail-Insight_(?P=region)_\d{8}T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$"
)

# Environment for the embedded AWS: fake credentials, one region, no profile or endpoint
# that could send a request anywhere, Powertools quiet (no EMF or INFO logs on stdout).
_DEMO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}
_REMOVED_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@dataclass(frozen=True)
class DemoOptions:
    events: int = DEFAULT_EVENTS
    hours: float = DEFAULT_HOURS
    seed: int = DEFAULT_SEED
    export: Path | None = None
    quiet: bool = False
    batch_every_minutes: int = DEFAULT_BATCH_EVERY_MINUTES
    integrity: bool = True  # digest, validate, tamper with a copy, validate again
    insights: bool = True  # run the Insights function every 5 simulated minutes
    # inject the labelled anomalies (workload.inject_anomalies) when the workload lasts 3 hours or more
    anomalies: bool = True


@dataclass(frozen=True)
class Validation:
    """One `opentrail validate-logs --dir` run of the demo."""

    region: str
    rc: int
    out: str
    err: str

    @property
    def ratios(self) -> list[str]:
        """ "4/4 digest files valid", "36/36 log files valid", ... (the CLI's summary lines)."""
        return [line.strip() for line in self.out.splitlines() if " files valid" in line]

    @property
    def invalid(self) -> list[str]:
        """The INVALID lines: the AWS CLI's (stderr), then OpenTrail's findings (stdout)."""
        lines = [line for line in self.err.splitlines() if "\tINVALID: " in line]
        return lines + [line for line in self.out.splitlines() if "\tINVALID: " in line]

    @property
    def problems(self) -> str:
        for line in self.out.splitlines():
            if line.startswith("no problems found") or "found beyond the AWS CLI's checks" in line:
                return line.split(" (")[0]
        return ""


@dataclass
class IntegrityReport:
    digester_runs: int = 0
    digests: int = 0
    empty_digests: int = 0
    log_files_listed: int = 0
    chains: list[str] = field(default_factory=list)  # source regions
    fingerprints: list[str] = field(default_factory=list)
    first_window: datetime | None = None
    last_window_end: datetime | None = None
    directory: Path | None = None  # the export that was validated
    trail_arn: str = ""
    validations: list[Validation] = field(default_factory=list)
    modified_log: str = ""
    deleted_digest: str = ""
    tampered: Validation | None = None
    expected: list[str] = field(default_factory=list)  # lines the tampered run must print
    elapsed_seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return bool(self.validations) and all(item.rc == 0 for item in self.validations)

    @property
    def detected(self) -> bool:
        return (
            self.tampered is not None
            and self.tampered.rc == 1
            and all(line in self.tampered.invalid for line in self.expected)
        )

    @property
    def ok(self) -> bool:
        return self.valid and self.detected


@dataclass
class InsightsReport:
    """What the Insights function produced in the demo, and which injected anomaly it caught."""

    runs: int = 0
    first_run: datetime | None = None
    last_run: datetime | None = None
    starts: int = 0
    ends: int = 0
    event_bridge_sent: int = 0
    errors: list[str] = field(default_factory=list)
    files: list[DeliveredFile] = field(default_factory=list)  # the CloudTrail-Insight files
    records: list[dict[str, Any]] = field(default_factory=list)  # their records, by eventTime
    looked_up: dict[str, int] = field(default_factory=dict)  # region -> LookupEvents EventCategory=insight
    looked_up_ids: list[str] = field(default_factory=list)  # their eventIDs
    anomalies: tuple[Anomaly, ...] = ()
    elapsed_seconds: float = 0.0

    def pairs(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(Start, End or None) per insight, by start time."""
        ends = {r["sharedEventID"]: r for r in self.records if r["insightDetails"]["state"] == "End"}
        starts = [r for r in self.records if r["insightDetails"]["state"] == "Start"]
        return [(start, ends.get(start["sharedEventID"])) for start in starts]

    def detected(self, anomaly: Anomaly) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The insight (Start, End) that reports `anomaly`, if any."""
        for start, end in self.pairs():
            details = start["insightDetails"]
            at = _parse_time(start["eventTime"])
            if (
                details["insightType"] == anomaly.insight_type
                and details["eventSource"] == anomaly.event_source
                and details["eventName"] == anomaly.event_name
                and start["awsRegion"] == anomaly.region
                and anomaly.start - timedelta(minutes=1) <= at <= anomaly.end + timedelta(minutes=15)
                and _same_principal(details.get("userIdentityArn"), anomaly)
                and (not anomaly.error_code or details.get("errorCode") == anomaly.error_code)
            ):
                return start, end
        return None

    @property
    def all_detected(self) -> bool:
        return all(self.detected(anomaly) is not None for anomaly in self.anomalies)


def _same_principal(arn: str | None, anomaly: Anomaly) -> bool:
    """Insights name principals at role level (``assumed-role/<role>/*``)."""
    if arn is None or not anomaly.principal:
        return True
    return anomaly.principal.startswith(arn.rstrip("*"))


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeliveredFile:
    key: str
    account_id: str
    region: str
    records: int
    bytes: int


@dataclass
class DemoReport:
    workload: Workload
    bucket: str = ""
    sent: Counter[str] = field(default_factory=Counter)  # events per capture path
    calls: Counter[str] = field(default_factory=Counter)  # handler invocations per capture path
    rejected: list[str] = field(default_factory=list)  # capture failures, one line each
    batcher_runs: int = 0
    batcher_totals: Counter[str] = field(default_factory=Counter)
    files: list[DeliveredFile] = field(default_factory=list)
    event_ids: Counter[str] = field(default_factory=Counter)
    sample: dict[str, Any] | None = None
    buffer_depth: int = 0
    dead_letter_depth: int = 0
    exported: int | None = None
    integrity: IntegrityReport | None = None
    insights: InsightsReport | None = None
    elapsed_seconds: float = 0.0

    @property
    def generated(self) -> int:
        return len(self.workload.events)

    @property
    def records(self) -> int:
        return sum(item.records for item in self.files)

    @property
    def compressed_bytes(self) -> int:
        return sum(item.bytes for item in self.files)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.event_ids.values() if count > 1)

    @property
    def ok(self) -> bool:
        """Delivered exactly once and, when checked, the integrity demonstration passed."""
        return self.delivered_ok and (self.integrity is None or self.integrity.ok)

    @property
    def delivered_ok(self) -> bool:
        """Every generated event delivered exactly once, nothing left in the buffer or DLQ."""
        return (
            not self.rejected
            and self.records == self.generated
            and len(self.event_ids) == self.generated
            and self.duplicates == 0
            and self.buffer_depth == 0
            and self.dead_letter_depth == 0
        )


@contextmanager
def demo_environment() -> Iterator[None]:
    """Set the embedded-AWS environment for the duration; restore the caller's afterwards."""
    from opentrail.local.environment import patched_environ

    with patched_environ(_DEMO_ENVIRONMENT, _REMOVED_ENVIRONMENT):
        yield


@contextmanager
def _quiet_powertools() -> Iterator[None]:
    """The handlers' shared Logger may exist already (imported earlier at INFO): quieten it,
    and ignore Powertools' warning about runs that add no metric."""
    from opentrail.handlers._common import logger

    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            yield
    finally:
        logger.setLevel(level)
        _clear_metrics()


def _clear_metrics() -> None:
    """With metrics disabled Powertools keeps adding values and prints them as EMF once
    100 pile up; drop them after every invocation instead (all instances share the store)."""
    from opentrail.handlers._common import metrics

    metrics.clear_metrics()


@contextmanager
def moto_transactions_snapshot_once() -> Iterator[None]:
    """Make moto's DynamoDB TransactWriteItems take one rollback snapshot per table.

    moto 5.2 deep-copies the whole table once per *item* of a transaction, before applying
    any of them; every copy is identical, so keeping the first changes nothing but the cost,
    which otherwise grows with (ledger items x items per transaction) and dominates the demo.
    A no-op when moto's internals are not what this expects.
    """
    try:
        import moto.dynamodb.models as models
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import Table
    except ImportError:  # pragma: no cover - another moto layout
        yield
        return
    real_copy: Any = getattr(models, "copy", None)
    original = getattr(DynamoDBBackend, "transact_write_items", None)
    if real_copy is None or original is None:  # pragma: no cover
        yield
        return

    class _SnapshotOnce:
        cache: dict[int, Any] | None = None

        def deepcopy(self, value: Any, memo: Any = None) -> Any:
            if self.cache is None or not isinstance(value, Table):
                return real_copy.deepcopy(value, memo)
            if id(value) not in self.cache:
                self.cache[id(value)] = real_copy.deepcopy(value, memo)
            return self.cache[id(value)]

        def __getattr__(self, name: str) -> Any:
            return getattr(real_copy, name)

    shim = _SnapshotOnce()

    def transact_write_items(self: Any, transact_items: Any) -> Any:
        shim.cache = {}
        try:
            return original(self, transact_items)
        finally:
            shim.cache = None

    setattr(models, "copy", shim)  # noqa: B010 - moto does not export the name
    setattr(DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010
    try:
        yield
    finally:
        setattr(models, "copy", real_copy)  # noqa: B010
        setattr(DynamoDBBackend, "transact_write_items", original)  # noqa: B010


def run_demo(options: DemoOptions | None = None, *, out: TextIO | None = None) -> DemoReport:
    """Run the demo and print as it goes (to `out`, default stdout); returns the report."""
    options = options or DemoOptions()
    out = out or sys.stdout
    started = time.monotonic()
    anomalies = options.anomalies and options.insights and options.hours * 60 >= ANOMALY_MIN_MINUTES
    workload = generate(options.events, options.hours, options.seed, anomalies=anomalies)
    report = DemoReport(workload=workload)
    with demo_environment():
        from moto import mock_aws

        with mock_aws(), moto_transactions_snapshot_once(), _quiet_powertools():
            pipeline = _Pipeline(workload, options, report, out)
            insights = _Insights(pipeline) if options.insights else None
            integrity = _Integrity(pipeline) if options.integrity else None
            pipeline.insights, pipeline.digester = insights, integrity
            pipeline.run()
            # after the workload: the Insights runs that let the last insights end and the
            # digester's hourly runs still to come, minute by minute in simulated time
            tail_end = pipeline.clock() + timedelta(minutes=INSIGHTS_TAIL_MINUTES if insights else 0)
            if integrity is not None:
                integrity.finish(also=insights.on_minute if insights else None, until=tail_end)
            else:
                pipeline.walk_to(tail_end)
            if insights is not None:
                insights.collect()
            if integrity is not None:
                with tempfile.TemporaryDirectory(prefix="opentrail-demo-") as scratch:
                    integrity.check(Path(scratch))
            elif options.export is not None:
                pipeline.export(options.export)
    report.elapsed_seconds = time.monotonic() - started
    _print_summary(report, options, out)
    return report


class _Pipeline:
    def __init__(self, workload: Workload, options: DemoOptions, report: DemoReport, out: TextIO) -> None:
        import boto3

        from opentrail.adapters.buffer import Buffer
        from opentrail.adapters.ledger import Ledger
        from opentrail.adapters.log_store import LogStore
        from opentrail.local.context import LocalContext
        from opentrail.local.resources import BATCHER_TIMEOUT_SECONDS, provision
        from opentrail.local.simclock import SimulatedClock

        self.workload = workload
        self.options = options
        self.report = report
        self.out = out
        self.resources = provision()
        report.bucket = self.resources.log_bucket
        region = self.resources.region
        self.s3 = boto3.client("s3", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.buffer = Buffer(
            self.resources.buffer_queue_url,
            dead_letter_queue_url=self.resources.dead_letter_queue_url,
            client=self.sqs,
        )
        self.clock = SimulatedClock(workload.start)
        account = self.resources.account_id
        self.ingest_context = LocalContext(function_name="opentrail-ingest", account_id=account, region=region)
        self.eventbridge_context = LocalContext(
            function_name="opentrail-eventbridge", account_id=account, region=region
        )
        self.batcher_timeout = float(BATCHER_TIMEOUT_SECONDS)
        self.ingest_settings = self.resources.ingest_settings().model_copy(update={"log_level": "WARNING"})
        self.eventbridge_settings = self.resources.eventbridge_capture_settings().model_copy(
            update={"log_level": "WARNING"}
        )
        self.batcher_settings = self.resources.batcher_settings(
            # no long poll: moto's queue is in-process and a real-time wait means nothing in simulated time
            log_level="WARNING",
            trails=DEMO_TRAILS_JSON,
            receive_wait_seconds=0,
        )
        self.log_store = LogStore(self.resources.log_bucket, self.resources.kms_key_arn, client=self.s3)
        self.ledger = Ledger(self.resources.ledger_table, client=boto3.client("dynamodb", region_name=region))
        self.digester: _Integrity | None = None  # runs the digester on its hourly schedule
        self.insights: _Insights | None = None  # runs the Insights function every 5 minutes

    # -- the walk through simulated time ------------------------------------------------

    def run(self) -> None:
        workload, options = self.workload, self.options
        minutes = max(1, math.ceil((workload.end - workload.start).total_seconds() / 60))
        per_minute: dict[int, list[WorkloadEvent]] = defaultdict(list)
        for event in workload.events:
            per_minute[int((event.at - workload.start).total_seconds() // 60)].append(event)
        every = max(1, options.batch_every_minutes)
        hour_sent: Counter[str] = Counter()
        hour_files = 0
        if not options.quiet:
            self._print_header(minutes)
        for minute in range(minutes):
            self.clock.advance_to(workload.start + timedelta(minutes=minute + 1))
            events = per_minute.get(minute, [])
            self._capture(events)
            hour_sent.update(event.path for event in events)
            last = minute == minutes - 1
            if (minute + 1) % every == 0 or last:
                hour_files += self._batch("flush" if last else None)
            if self.digester is not None:
                self.digester.on_minute()
            if self.insights is not None:
                self.insights.on_minute()
            if (minute + 1) % 60 == 0 or last:
                if not options.quiet:
                    self._print_progress(minute + 1, hour_sent, hour_files)
                hour_sent, hour_files = Counter(), 0
        for _ in range(5):  # drain anything the last run left (it should leave nothing)
            if self.buffer.depth() == 0:
                break
            self._batch("flush")
        self._collect()

    def walk_to(self, end: datetime) -> None:
        """Move the clock minute by minute to `end`, running the Insights schedule."""
        while self.clock() < end:
            self.clock.advance_to(self.clock() + timedelta(minutes=1))
            if self.insights is not None:
                self.insights.on_minute()

    def _capture(self, events: Sequence[WorkloadEvent]) -> None:
        by_path: dict[str, list[WorkloadEvent]] = defaultdict(list)
        for event in events:
            by_path[event.path].append(event)
        if by_path["ingest"]:
            self._put_audit_events(by_path["ingest"])
        for event in by_path["eventbridge"]:
            self._eventbridge(event)
        if by_path["producer"]:
            self._emit(by_path["producer"])

    def _put_audit_events(self, events: Sequence[WorkloadEvent]) -> None:
        from opentrail.domain.audit_events import checksum_of
        from opentrail.handlers import ingest

        for chunk in _requests(events):
            audit_events = []
            for event in chunk:
                data = json.dumps(event.event_data(), separators=(",", ":"))
                audit_events.append({"id": event.uid, "eventData": data, "eventDataChecksum": checksum_of(data)})
            proxy_event = ingest.api_gateway_event(
                body=json.dumps({"auditEvents": audit_events}),
                channel_arn=self.resources.channel_arn,
                caller_account_id=self.resources.account_id,
                caller_arn=f"arn:aws:iam::{self.resources.account_id}:role/orders-audit-forwarder",
            )
            response = ingest.handler(
                proxy_event, self.ingest_context, buffer=self.buffer, settings=self.ingest_settings, clock=self.clock
            )
            _clear_metrics()
            self.report.calls["ingest"] += 1
            if response.get("statusCode") != 200:
                self.report.rejected.append(f"PutAuditEvents HTTP {response.get('statusCode')}: {response.get('body')}")
                continue
            body = json.loads(response["body"])
            self.report.sent["ingest"] += len(body["successful"])
            for failure in body["failed"]:
                self.report.rejected.append(
                    f"PutAuditEvents {failure['id']}: {failure['errorCode']}: {failure['errorMessage']}"
                )

    def _eventbridge(self, event: WorkloadEvent) -> None:
        from opentrail.handlers import eventbridge_capture

        self.report.calls["eventbridge"] += 1
        try:
            eventbridge_capture.handler(
                event.eventbridge_envelope(),
                self.eventbridge_context,
                buffer=self.buffer,
                settings=self.eventbridge_settings,
                clock=self.clock,
            )
        except Exception as error:
            self.report.rejected.append(f"EventBridge {event.uid}: {type(error).__name__}: {error}")
        else:
            self.report.sent["eventbridge"] += 1
        finally:
            _clear_metrics()

    def _emit(self, events: Sequence[WorkloadEvent]) -> None:
        from opentrail.producer import emit

        by_region: dict[str, list[WorkloadEvent]] = defaultdict(list)
        for event in events:
            by_region[event.region].append(event)
        for region, group in sorted(by_region.items()):
            self.report.calls["producer"] += 1
            try:
                ids = emit(
                    [event.producer_record() for event in group],
                    buffer=self.buffer,
                    clock=self.clock,
                    account_id=self.resources.account_id,
                    region=region,
                )
            except Exception as error:
                self.report.rejected.append(f"producer.emit ({len(group)} records): {type(error).__name__}: {error}")
            else:
                self.report.sent["producer"] += len(ids)

    def _batch(self, action: str | None) -> int:
        """One batcher invocation: a scheduled run, or "flush" on demand."""
        from opentrail.handlers import batcher
        from opentrail.local.context import LocalContext

        context = LocalContext(
            function_name="opentrail-batcher",
            account_id=self.resources.account_id,
            region=self.resources.region,
            timeout_seconds=self.batcher_timeout,
        )
        summary = batcher.handler(
            {"action": action or "scheduled"},
            context,
            buffer=self.buffer,
            log_store=self.log_store,
            ledger=self.ledger,
            settings=self.batcher_settings,
            clock=self.clock,
        )
        _clear_metrics()
        self.report.batcher_runs += 1
        for name in ("batches", "messages", "records", "duplicatesDropped", "deadLettered"):
            self.report.batcher_totals[name] += int(summary.get(name, 0) or 0)
        files = summary.get("files") or []
        self.report.batcher_totals["files"] += len(files)
        return len(files)

    # -- what was delivered ---------------------------------------------------------------

    def _collect(self) -> None:
        report = self.report
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=report.bucket):
            for item in page.get("Contents", []):
                key = item["Key"]
                if not key.endswith(".json.gz") or "/CloudTrail/" not in key:
                    continue
                body = self.s3.get_object(Bucket=report.bucket, Key=key)["Body"].read()
                records = json.loads(gzip.decompress(body))["Records"]
                parts = key.split("/")
                at = parts.index("CloudTrail")
                report.files.append(
                    DeliveredFile(
                        key=key, account_id=parts[at - 1], region=parts[at + 1], records=len(records), bytes=len(body)
                    )
                )
                report.event_ids.update(str(record.get("eventID")) for record in records)
                if report.sample is None or report.sample.get("eventName") not in SAMPLE_EVENT_NAMES:
                    report.sample = _pick_sample(records) or report.sample
        report.files.sort(key=lambda item: item.key)
        report.buffer_depth = self.buffer.depth()
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.resources.dead_letter_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        report.dead_letter_depth = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def export(self, directory: Path) -> None:
        """The bucket, public keys and chain heads, as `opentrail export --ledger-table` writes them."""
        import boto3

        from opentrail.local.export import export_trail

        result = export_trail(
            self.s3,
            self.report.bucket,
            directory,
            dynamodb=boto3.client("dynamodb", region_name=self.resources.region),
            ledger_table=self.resources.ledger_table,
            trails=[TRAIL_NAME],
        )
        self.report.exported = len(result.objects)

    # -- printing -------------------------------------------------------------------------

    def _print_header(self, minutes: int) -> None:
        w = self.workload
        paths = Counter(event.path for event in w.events)
        print(
            f"OpenTrail demo: {len(w.events):,} events over {_duration(minutes)} of simulated time "
            f"({w.start:%Y-%m-%d %H:%M}Z to {w.end:%H:%M}Z, seed {w.seed}), embedded moto, account {w.account_id}",
            file=self.out,
        )
        print(
            f"capture paths: PutAuditEvents {paths['ingest']:,} · EventBridge {paths['eventbridge']:,} · "
            f"producer.emit {paths['producer']:,}; batcher every {self.options.batch_every_minutes} simulated minutes",
            file=self.out,
        )
        print(file=self.out)

    def _print_progress(self, minute: int, sent: Counter[str], files: int) -> None:
        end = self.workload.start + timedelta(minutes=minute)
        begin = max(self.workload.start, end - timedelta(minutes=60 if minute % 60 == 0 else minute % 60))
        depth = self.buffer.depth()
        print(
            f"  {begin:%H:%M}-{end:%H:%M}Z  captured {sum(sent.values()):>5,} "
            f"(ingest {sent['ingest']:,}, eventbridge {sent['eventbridge']:,}, producer {sent['producer']:,})  "
            f"log files {files:>3}  buffer depth {depth}",
            file=self.out,
        )


class _Integrity:
    """The digester on its hourly schedule in simulated time, then the export validated and a
    tampered copy caught."""

    def __init__(self, pipeline: _Pipeline) -> None:
        import boto3

        from opentrail.adapters.digests import ChainHeads, DigestStore, LedgerReader, PublicKeyRegistry
        from opentrail.adapters.signer import KmsSigner

        self.pipeline = pipeline
        self.report = IntegrityReport()
        pipeline.report.integrity = self.report
        resources = pipeline.resources
        self.settings = resources.digester_settings(
            trails=DEMO_TRAILS_JSON, log_level="WARNING", digest_delay_seconds=int(DIGEST_DELAY.total_seconds())
        )
        dynamodb = boto3.client("dynamodb", region_name=resources.region)
        self.heads = ChainHeads(resources.ledger_table, client=dynamodb)
        self.registry = PublicKeyRegistry(resources.ledger_table, client=dynamodb)
        self.adapters: dict[str, Any] = {
            "signer": KmsSigner(self.settings.signing_key_id, client=boto3.client("kms", region_name=resources.region)),
            "store": DigestStore(resources.log_bucket, client=pipeline.s3),
            "heads": self.heads,
            "ledger": LedgerReader(resources.ledger_table, client=dynamodb),
            "registry": self.registry,
        }
        self.report.trail_arn = f"arn:aws:cloudtrail:{resources.region}:{resources.account_id}:trail/{TRAIL_NAME}"

    def on_minute(self) -> None:
        """The hourly schedule: DIGEST_DELAY past each hour (after that minute's batcher run)."""
        from opentrail.domain.chain import floor_hour

        now = self.pipeline.clock()
        first_run = floor_hour(self.pipeline.workload.start) + timedelta(hours=1) + DIGEST_DELAY
        if now >= first_run and now - floor_hour(now) == DIGEST_DELAY:
            self._run()

    def finish(self, *, also: Callable[[], None] | None = None, until: datetime | None = None) -> None:
        """After the last delivery: the clock moves on, minute by minute, through the hourly runs
        still to come, up to the one that digests the last delivery's hour (and to `until`),
        calling `also` every minute (the Insights schedule)."""
        from opentrail.domain.chain import floor_hour

        clock = self.pipeline.clock
        self.report.first_window = floor_hour(self.pipeline.workload.start)
        self.report.last_window_end = floor_hour(clock()) + timedelta(hours=1)
        run_at = floor_hour(clock()) + DIGEST_DELAY
        if run_at <= clock():
            run_at += timedelta(hours=1)
        runs = []
        while run_at <= self.report.last_window_end + DIGEST_DELAY:
            runs.append(run_at)
            run_at += timedelta(hours=1)
        end = max([*runs, until or clock()])
        while clock() < end:
            clock.advance_to(clock() + timedelta(minutes=1))
            if clock() in runs:
                self._run()
            if also is not None:
                also()
        self.report.chains = sorted({head.region for head in self.heads.list(TRAIL_NAME)})
        self.report.fingerprints = [key.fingerprint for key in self.registry.all()]

    def _run(self) -> None:
        from opentrail.handlers import digester
        from opentrail.local.context import LocalContext

        resources = self.pipeline.resources
        context = LocalContext(
            function_name="opentrail-digester",
            account_id=resources.account_id,
            region=resources.region,
            timeout_seconds=900.0,
        )
        summary = digester.handler(
            {"action": "scheduled"}, context, settings=self.settings, clock=self.pipeline.clock, **self.adapters
        )
        _clear_metrics()
        report = self.report
        report.digester_runs += 1
        report.digests += int(summary["digests"])
        report.empty_digests += int(summary["emptyDigests"])
        report.log_files_listed += int(summary["logFiles"]) + int(summary["backfilledFiles"])

    def check(self, scratch: Path) -> None:
        """Export (to --export DIR, else `scratch`), validate each source region, tamper with a copy."""
        started = time.monotonic()
        export = self.pipeline.options.export or scratch / "export"
        self.pipeline.export(export)
        self.report.directory = export
        for region in self.report.chains:
            self.report.validations.append(self._validate(export, region))
        self._tamper(export, scratch / "tampered")
        self.report.elapsed_seconds = time.monotonic() - started

    def _validate(self, directory: Path, region: str) -> Validation:
        import io

        from opentrail.validate_logs import Options, run

        first, end = self.report.first_window, self.report.last_window_end
        if first is None or end is None:
            raise RuntimeError("validate after the digester's last run")
        out, err = io.StringIO(), io.StringIO()
        options = Options(
            trail_arn=self.report.trail_arn,
            start_time=first.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end_time=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            directory=directory,
            region=region,
            workers=4,
        )
        return Validation(region=region, rc=run(options, out, err), out=out.getvalue(), err=err.getvalue())

    def _tamper(self, export: Path, copy: Path) -> None:
        """In a copy (home region): delete the second newest digest (the newest links to it, so
        the AWS CLI's check finds it missing; with a single digest, none) and remove one record
        from a log file a remaining digest lists; validate that region again."""
        from opentrail.domain.digest import parse_digest_key
        from opentrail.validate_logs import METADATA_SUFFIX

        report = self.report
        region = self.pipeline.resources.region
        shutil.copytree(export, copy)
        logs = sorted(copy.glob(f"AWSLogs/*/CloudTrail/{region}/*/*/*/*.json.gz"))
        digests = sorted(copy.glob(f"AWSLogs/*/CloudTrail-Digest/{region}/*/*/*/*.json.gz"))
        digest = digests[-2] if len(digests) >= 2 else None
        deleted = parse_digest_key(digest.relative_to(copy).as_posix()) if digest is not None else None
        window = (deleted.end_time - timedelta(hours=1)).strftime("%Y%m%dT%H") if deleted is not None else "-"
        candidates = [path for path in logs if f"_{window}" not in path.name]  # listed by a digest that stays
        if not digests or not candidates:
            return
        log = next((path for path in candidates if len(_records(path)) > 1), candidates[0])
        document = json.loads(gzip.decompress(log.read_bytes()))
        document["Records"] = document["Records"][1:]  # an event removed after delivery
        log.write_bytes(gzip.compress(json.dumps(document, separators=(",", ":")).encode("utf-8"), mtime=0))
        bucket = self.pipeline.report.bucket
        report.modified_log = log.relative_to(copy).as_posix()
        report.expected = [f"Log file\ts3://{bucket}/{report.modified_log}\tINVALID: hash value doesn't match"]
        if digest is not None:
            digest.unlink()
            digest.with_name(digest.name + METADATA_SUFFIX).unlink()
            report.deleted_digest = digest.relative_to(copy).as_posix()
            report.expected.append(f"Digest file\ts3://{bucket}/{report.deleted_digest}\tINVALID: not found")
        report.tampered = self._validate(copy, region)


class _Insights:
    """The Insights function (docs/insights.md, "Live") every 5 simulated minutes, right after the
    batcher, with the demo's sensitivity; then the delivered Insights read back: the
    CloudTrail-Insight files in the bucket and LookupEvents EventCategory=insight."""

    def __init__(self, pipeline: _Pipeline) -> None:
        import boto3

        self.pipeline = pipeline
        resources = pipeline.resources
        self.settings = resources.insights_settings(
            trails=DEMO_TRAILS_JSON,
            log_level="WARNING",
            sensitivity_overrides=json.dumps(DEMO_SENSITIVITY_OVERRIDES),
            settle_minutes=INSIGHTS_SETTLE_MINUTES,
        )
        self.dynamodb = boto3.client("dynamodb", region_name=resources.region)
        self.events = boto3.client("events", region_name=resources.region)
        self.report = InsightsReport(anomalies=pipeline.workload.anomalies)
        pipeline.report.insights = self.report
        self.tail_end = pipeline.workload.end + timedelta(minutes=INSIGHTS_TAIL_MINUTES)

    def on_minute(self) -> None:
        """Every 5 minutes of simulated time (after that minute's batcher run), up to the tail's end."""
        now = self.pipeline.clock()
        minute = int((now - self.pipeline.workload.start).total_seconds() // 60)
        if minute > 0 and minute % INSIGHTS_EVERY_MINUTES == 0 and now <= self.tail_end:
            self._run()

    def _run(self) -> None:
        from opentrail.handlers.insights import analyse

        started = time.monotonic()
        summary = analyse(
            self.settings,
            clock=self.pipeline.clock,
            dynamodb_client=self.dynamodb,
            s3_client=self.pipeline.s3,
            events_client=self.events,
        )
        report = self.report
        report.runs += 1
        report.first_run = report.first_run or self.pipeline.clock()
        report.last_run = self.pipeline.clock()
        report.starts += int(summary["starts"])
        report.ends += int(summary["ends"])
        report.event_bridge_sent += int(summary["eventBridgeSent"])
        report.errors.extend(str(error) for error in summary["errors"])
        report.elapsed_seconds += time.monotonic() - started

    def collect(self) -> None:
        """The CloudTrail-Insight files in the bucket, and the same records through LookupEvents."""
        s3, bucket = self.pipeline.s3, self.pipeline.report.bucket
        records: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="AWSLogs/"):
            for item in page.get("Contents", []):
                key = item["Key"]
                if "/CloudTrail-Insight/" not in key or not key.endswith(".json.gz"):
                    continue
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                items = json.loads(gzip.decompress(body))["Records"]
                parts = key.split("/")
                at = parts.index("CloudTrail-Insight")
                self.report.files.append(
                    DeliveredFile(
                        key=key, account_id=parts[at - 1], region=parts[at + 1], records=len(items), bytes=len(body)
                    )
                )
                records.extend(items)
        self.report.files.sort(key=lambda item: item.key)
        self.report.records = sorted(records, key=lambda r: (r["eventTime"], r["insightDetails"]["state"] != "End"))
        for region in sorted({r["awsRegion"] for r in records} | {self.pipeline.resources.region}):
            found = self.lookup(region)
            self.report.looked_up[region] = len(found)
            self.report.looked_up_ids.extend(str(event.get("EventId")) for event in found)

    def lookup(self, region: str) -> list[dict[str, Any]]:
        """LookupEvents EventCategory=insight in `region` (as ``aws cloudtrail lookup-events --region``
        signs it) over the simulated day, through the real query handler."""
        from opentrail.adapters.history import EventHistory
        from opentrail.handlers import query
        from opentrail.local.context import LocalContext

        resources = self.pipeline.resources
        settings = resources.query_settings(log_level="WARNING")
        history = EventHistory(settings.history_table, client=self.dynamodb)
        workload = self.pipeline.workload
        request: dict[str, Any] = {
            "EventCategory": "insight",
            "StartTime": (workload.start - timedelta(hours=1)).timestamp(),
            "EndTime": (self.pipeline.clock() + timedelta(hours=1)).timestamp(),
            "MaxResults": 50,
        }
        events: list[dict[str, Any]] = []
        while True:
            reply = query.handler(
                {
                    "httpMethod": "POST",
                    "path": "/",
                    "headers": {
                        "X-Amz-Target": "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
                        "Content-Type": "application/x-amz-json-1.1",
                        "Authorization": (
                            f"AWS4-HMAC-SHA256 Credential=testing/{workload.start:%Y%m%d}/{region}/cloudtrail/"
                            "aws4_request, SignedHeaders=host;x-amz-date, Signature=0"
                        ),
                    },
                    "body": json.dumps(request),
                },
                LocalContext(function_name="opentrail-query", account_id=resources.account_id, region=resources.region),
                history=history,
                settings=settings,
                clock=self.pipeline.clock,
                token_key=b"opentrail-demo-next-token-key-32",
                dynamodb=self.dynamodb,
            )
            _clear_metrics()
            if reply.get("statusCode") != 200:
                self.report.errors.append(f"LookupEvents HTTP {reply.get('statusCode')}: {reply.get('body')}")
                return events
            body = json.loads(reply["body"])
            events.extend(body.get("Events", []))
            if not body.get("NextToken"):
                return events
            request["NextToken"] = body["NextToken"]


def _records(path: Path) -> list[Any]:
    records: list[Any] = json.loads(gzip.decompress(path.read_bytes()))["Records"]
    return records


def _pick_sample(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    for name in SAMPLE_EVENT_NAMES:
        for record in records:
            if record.get("eventName") == name and "errorCode" not in record:
                return record
    return records[0] if records else None


def _requests(events: Sequence[WorkloadEvent]) -> Iterator[list[WorkloadEvent]]:
    """Group events into PutAuditEvents requests (<= 100 events, < 1 MB)."""
    chunk: list[WorkloadEvent] = []
    size = 0
    for event in events:
        length = len(json.dumps(event.event_data())) * 2 + 200  # escaped string inside JSON
        if chunk and (len(chunk) == MAX_EVENTS_PER_REQUEST or size + length > MAX_REQUEST_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += length
    if chunk:
        yield chunk


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


def _print_summary(report: DemoReport, options: DemoOptions, out: TextIO) -> None:
    def p(*args: object) -> None:
        print(*args, file=out)

    generated = report.generated
    p()
    p("Captured")
    for path in PATHS:
        p(f"  {_PATH_NAMES[path]:<28} {report.sent[path]:>6,} events in {report.calls[path]:,} calls")
    p(f"  {'rejected':<28} {len(report.rejected):>6,}")
    for line in report.rejected[:5]:
        p(f"    {line[:200]}")
    t = report.batcher_totals
    p(
        f"  batcher: {report.batcher_runs} runs, {t['messages']:,} messages, {t['records']:,} records, "
        f"{t['duplicatesDropped']:,} duplicates dropped, {t['deadLettered']:,} dead-lettered"
    )
    p()
    p("Delivered")
    records = report.records
    per_record = report.compressed_bytes / records if records else 0.0
    p(f"  log files          {len(report.files):,}")
    p(
        f"  records            {records:,} (generated {generated:,}; unique eventIDs {len(report.event_ids):,}; "
        f"duplicates {report.duplicates:,}; missing {max(0, generated - len(report.event_ids)):,})"
    )
    p(f"  compressed bytes   {report.compressed_bytes:,} ({per_record:.0f} bytes/record)")
    p(f"  buffer depth       {report.buffer_depth}")
    p(f"  dead-letter queue  {report.dead_letter_depth}")
    p()
    groups: dict[tuple[str, str], list[DeliveredFile]] = defaultdict(list)
    for item in report.files:
        groups[(item.account_id, item.region)].append(item)
    p(f"  {'account':<14} {'region':<12} {'files':>6} {'records':>8} {'bytes':>10} {'bytes/record':>13}")
    for (account, region), items in sorted(groups.items()):
        count = sum(i.records for i in items)
        size = sum(i.bytes for i in items)
        p(f"  {account:<14} {region:<12} {len(items):>6,} {count:>8,} {size:>10,} {size / max(count, 1):>13.0f}")
    if not options.quiet and report.files:
        p()
        shown = report.files[:3] + report.files[-2:] if len(report.files) > 5 else report.files
        p(f"Log files in s3://{report.bucket}/ ({len(shown)} of {len(report.files)})")
        p(f"  {'records':>7} {'bytes':>7}  key")
        for item in shown:
            p(f"  {item.records:>7,} {item.bytes:>7,}  {item.key}")
        if report.sample is not None:
            p()
            p(f"Sample record ({report.sample.get('eventSource')} {report.sample.get('eventName')}):")
            for line in json.dumps(report.sample, indent=2, ensure_ascii=False).splitlines():
                p(f"  {line}")
    if report.exported is not None and options.export is not None:
        p()
        p(
            f"Exported {report.exported} objects (each with <key>.metadata.json), the public keys "
            f"(public-keys/) and the chain heads (chain-heads.json) to {options.export}"
        )
    if report.integrity is not None:
        _print_integrity(report, report.integrity, options, p)
    if report.insights is not None:
        _print_insights(report, report.insights, options, p)
    p()
    verdict = "OK: every event delivered exactly once" if report.delivered_ok else "PROBLEM: see the counts above"
    if report.integrity is not None:
        verdict += (
            "; digests valid, tampering detected" if report.integrity.ok else "; PROBLEM: see the integrity section"
        )
    p(f"{verdict}. Finished in {report.elapsed_seconds:.1f} s.")


def _print_integrity(report: DemoReport, integrity: IntegrityReport, options: DemoOptions, p: Any) -> None:
    def hhmm(moment: datetime | None) -> str:
        return f"{moment:%H:%M}Z" if moment is not None else "-"

    first_run = integrity.first_window + timedelta(hours=1) + DIGEST_DELAY if integrity.first_window else None
    last_run = integrity.last_window_end + DIGEST_DELAY if integrity.last_window_end else None
    when = f"{hhmm(first_run)} to {hhmm(last_run)}" if first_run != last_run else f"at {hhmm(last_run)}"
    p()
    p("Integrity (signed hourly digests, docs/integrity.md)")
    p(
        f"  digester     {integrity.digester_runs} hourly run{'s' if integrity.digester_runs != 1 else ''} "
        f"in simulated time ({when}): "
        f"{integrity.digests} digests ({integrity.empty_digests} empty) in {len(integrity.chains)} chains "
        f"({', '.join(integrity.chains)})"
    )
    p(
        f"               {integrity.log_files_listed} of {len(report.files)} log files listed; signed with KMS "
        f"(RSA 2048), key fingerprint {', '.join(integrity.fingerprints)}"
    )
    where = options.export if options.export is not None else "a temporary export"
    p(f"  validated    opentrail validate-logs --dir {where}, {hhmm(integrity.first_window)} to "
      f"{hhmm(integrity.last_window_end)}, per source region:")  # fmt: skip
    for item in integrity.validations:
        state = "valid" if item.rc == 0 else f"INVALID (exit status {item.rc})"
        p(f"    {item.region:<11} {', '.join(item.ratios)}; {item.problems or '-'}: {state}")
        for line in item.invalid[:5]:
            p(f"      {line}")
    p(f"    {'all valid' if integrity.valid else 'NOT all valid'}")
    tampered = integrity.tampered
    if tampered is None:
        p("  tampering    skipped (not enough log files or digests)")
        return
    log, digest = integrity.modified_log.rsplit("/", 1)[-1], integrity.deleted_digest.rsplit("/", 1)[-1]
    p(f"  tampering    with a copy of the export: one record removed from {log},")
    if digest:
        p(f"               digest {digest} deleted; validate-logs --region {tampered.region}:")
    else:
        p(f"               (a single digest: none deleted); validate-logs --region {tampered.region}:")
    shown = tampered.invalid[:8]
    for line in shown:
        p(f"    {line}")
    if len(tampered.invalid) > len(shown):
        p(f"    ... and {len(tampered.invalid) - len(shown)} more INVALID lines")
    outcome = "detected" if integrity.detected else "NOT DETECTED as expected"
    p(f"    {outcome}: exit status {tampered.rc}, {', '.join(tampered.ratios)}; {tampered.problems or '-'}")


def _print_insights(report: DemoReport, insights: InsightsReport, options: DemoOptions, p: Any) -> None:
    def hhmm(moment: datetime | None) -> str:
        return f"{moment:%H:%M}Z" if moment is not None else "-"

    def at(record: dict[str, Any] | None) -> str:
        return record["eventTime"][11:16] + "Z" if record is not None else "(open)"

    overrides = ", ".join(f"{k} {v}" for k, v in DEMO_SENSITIVITY_OVERRIDES.items())
    p()
    p("Insights (docs/insights.md)")
    p(
        f"  function     {insights.runs} runs every {INSIGHTS_EVERY_MINUTES} simulated minutes after the batcher "
        f"({hhmm(insights.first_run)} to {hhmm(insights.last_run)}, {insights.elapsed_seconds:.1f} s): "
        f"{insights.starts} started, {insights.ends} ended, {insights.event_bridge_sent} EventBridge events"
    )
    p(f"  sensitivity  medium (production rules, cold start included) with demo overrides: {overrides}")
    for error in insights.errors[:5]:
        p(f"  ERROR        {error[:200]}")
    if insights.anomalies:
        p("  injected     (workload.inject_anomalies)")
        for anomaly in insights.anomalies:
            found = insights.detected(anomaly)
            if found is None:
                outcome = "NOT DETECTED"
            else:
                start, end = found
                outcome = f"detected: Start {at(start)}, End {at(end)}"
            p(
                f"    {hhmm(anomaly.start)}-{hhmm(anomaly.end)} {anomaly.insight_type:<23} "
                f"{anomaly.event_name:<16} {outcome}"
            )
            p(f"      {anomaly.description}")
    elif options.anomalies:
        p(f"  injected     none (the anomalies need a workload of {ANOMALY_MIN_MINUTES // 60} hours or more)")
    pairs = insights.pairs()
    p(f"  insights     {len(pairs)} (Start -> End, region, insightType, API, explanation):")
    injected = {id(found[0]) for anomaly in insights.anomalies if (found := insights.detected(anomaly))}
    for start, end in pairs:
        details = start["insightDetails"]
        mark = "  [injected]" if id(start) in injected else ""
        code = f" {details['errorCode']}" if details.get("errorCode") else ""
        p(
            f"    {at(start)} -> {at(end)}  {start['awsRegion']:<10} {details['insightType']:<23} "
            f"{details['eventSource']} {details['eventName']}{code}{mark}"
        )
        explanation = (end or start)["insightDetails"]["insightContext"].get("explanation", "")
        p(f"      {explanation}")
    records = sum(item.records for item in insights.files)
    p(
        f"  delivered    {len(insights.files)} CloudTrail-Insight files ({records} records) in s3://{report.bucket}/; "
        "LookupEvents EventCategory=insight: "
        + ", ".join(f"{count} events in {region}" for region, count in insights.looked_up.items())
    )
    if not options.quiet:
        for item in insights.files:
            p(f"    {item.records:>3} {item.key}")


_PATH_NAMES = {
    "ingest": "PutAuditEvents (ingest)",
    "eventbridge": "EventBridge capture",
    "producer": "producer.emit",
}
