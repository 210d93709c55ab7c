"""Insights evaluation: a labelled workload generator and a scorer.

    .venv/bin/python benchmarks/insights_eval.py                 # full: 3 shapes x 3 seeds x 35 days
    .venv/bin/python benchmarks/insights_eval.py --quick         # 1 shape x 1 seed x 16 days (seconds)
    .venv/bin/python benchmarks/insights_eval.py --seeds 1 2 --shapes office --days 21 --json out.json

The generator writes per-minute aggregates (`ApiMinute`) directly — the same objects the
batcher keeps — for weeks of traffic of one account and region:

* humans (console, CLI, SDK) with a daily rhythm in office hours and quiet weekends, a busier
  Monday morning (a benign weekly peak), reads far more often than writes;
* services (a Lambda function's role, an ECS task role) around the clock with a mild rhythm;
* a CI role deploying in bursts on weekdays (routine write bursts);
* regular jobs (every 1-15 minutes, around the clock) — the candidates for missing activity;
* a read-only audit role that never writes; rare administrative APIs used every few days;
* background errors (AccessDenied, throttling, UnauthorizedOperation) at a steady share;
* a monthly reporting batch: a read storm of 20x for 90 minutes (benign; first on day 2);

and injects, on about half of the days after the first week, labelled anomalies of each kind
with varied sizes, durations and times of day: write-rate spikes (3-15x the usual level, 5-120
min), error bursts (2-25 errors/min of one code, 5-90 min), unusual activity (an API never
called, a read-only principal or a brand-new principal writing) and missing activity (a job
stops for 1-10 hours).

Shapes: ``office`` (human-heavy), ``service`` (24/7 services dominate, flatter rhythm),
``sparse`` (a small account: a fifth of the volume). The scorer matches Insights (Start records)
to labels of the same kind and API/principal and reports precision, recall, F1, detection delay
(minutes from the anomaly's start — for missing activity, from the first missed run — to the
Start) per kind, and false alarms per clean day (days after the first week with no anomaly).
The first week (cold start) is scored separately: its alarms are reported, not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "lambdas") not in sys.path:
    sys.path.insert(0, str(ROOT / "lambdas"))

from opentrail.domain.insights import (  # noqa: E402
    CALL_RATE,
    ERROR_RATE,
    MISSING,
    UNUSUAL,
    ApiKey,
    ApiMinute,
    InsightsEngine,
    Sensitivity,
)
from opentrail.domain.insights.aggregates import principal_key  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
START_MINUTE = int(START.timestamp()) // 60
DAY = 1440
KINDS = (CALL_RATE, ERROR_RATE, UNUSUAL, MISSING)
SHAPES = ("office", "service", "sparse")
WARMUP_DAYS = 7

CLI = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22 prompt/off command/{}"
BOTO = "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.10 lang/python#3.12.3"
CONSOLE = "console.amazonaws.com"


def arn_user(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def arn_role(role: str, session: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"


# --------------------------------------------------------------------------------------------
# Traffic model


@dataclass(frozen=True)
class Api:
    source: str
    name: str
    write: bool

    @property
    def key(self) -> ApiKey:
        return (self.source, self.name)


A = {
    "DescribeInstances": Api("ec2.amazonaws.com", "DescribeInstances", False),
    "DescribeSecurityGroups": Api("ec2.amazonaws.com", "DescribeSecurityGroups", False),
    "DescribeVolumes": Api("ec2.amazonaws.com", "DescribeVolumes", False),
    "RunInstances": Api("ec2.amazonaws.com", "RunInstances", True),
    "TerminateInstances": Api("ec2.amazonaws.com", "TerminateInstances", True),
    "CreateTags": Api("ec2.amazonaws.com", "CreateTags", True),
    "CreateSnapshot": Api("ec2.amazonaws.com", "CreateSnapshot", True),
    "ListBuckets": Api("s3.amazonaws.com", "ListBuckets", False),
    "GetBucketPolicy": Api("s3.amazonaws.com", "GetBucketPolicy", False),
    "ListUsers": Api("iam.amazonaws.com", "ListUsers", False),
    "GetRole": Api("iam.amazonaws.com", "GetRole", False),
    "CreateUser": Api("iam.amazonaws.com", "CreateUser", True),
    "AttachRolePolicy": Api("iam.amazonaws.com", "AttachRolePolicy", True),
    "AssumeRole": Api("sts.amazonaws.com", "AssumeRole", True),
    "GetCallerIdentity": Api("sts.amazonaws.com", "GetCallerIdentity", False),
    "ListFunctions": Api("lambda.amazonaws.com", "ListFunctions20150331", False),
    "UpdateFunctionCode": Api("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", True),
    "DescribeStacks": Api("cloudformation.amazonaws.com", "DescribeStacks", False),
    "UpdateStack": Api("cloudformation.amazonaws.com", "UpdateStack", True),
    "PutMetricData": Api("monitoring.amazonaws.com", "PutMetricData", True),
    "GetMetricData": Api("monitoring.amazonaws.com", "GetMetricData", False),
    "CreateLogStream": Api("logs.amazonaws.com", "CreateLogStream", True),
    "DescribeLogGroups": Api("logs.amazonaws.com", "DescribeLogGroups", False),
    "PutParameter": Api("ssm.amazonaws.com", "PutParameter", True),
    "GetParameter": Api("ssm.amazonaws.com", "GetParameter", False),
    "Decrypt": Api("kms.amazonaws.com", "Decrypt", False),
    "UpdateItem": Api("dynamodb.amazonaws.com", "UpdateTable", True),
}
READ_ONLY_ROLES = ["ReadOnlyAudit", "SecurityScanner", "DashboardReader", "CostExplorer", "ConfigRecorder"]
# APIs this account never calls: unusual-activity injections pick from these.
NEVER_CALLED = [
    Api("iam.amazonaws.com", "CreateAccessKey", True),
    Api("iam.amazonaws.com", "ListAccessKeys", False),
    Api("iam.amazonaws.com", "CreateLoginProfile", True),
    Api("ec2.amazonaws.com", "GetPasswordData", False),
    Api("ec2.amazonaws.com", "ModifyInstanceAttribute", True),
    Api("cloudtrail.amazonaws.com", "StopLogging", True),
    Api("cloudtrail.amazonaws.com", "DeleteTrail", True),
    Api("secretsmanager.amazonaws.com", "ListSecrets", False),
    Api("secretsmanager.amazonaws.com", "GetSecretValue", False),
    Api("ec2.amazonaws.com", "DescribeRegions", False),
    Api("organizations.amazonaws.com", "LeaveOrganization", True),
    Api("s3.amazonaws.com", "PutBucketPolicy", True),
]


@dataclass
class Source:
    """One principal calling one API with some rhythm."""

    api: Api
    principal: str  # userIdentity.arn
    agent: str
    rate: float  # calls per minute at the peak of the rhythm (human/service), or per run (job)
    rhythm: str  # "office" | "service" | "flat" | "job" | "ci" | "rare"
    errors: tuple[tuple[str, float], ...] = ()  # (errorCode, share of calls)
    cadence: int = 0  # job: minutes between runs
    phase: int = 0
    session_role: str = ""  # role name when the arn is a rotating session (CI)


def office_level(minute: int) -> float:
    """0..1: office hours Monday-Friday 07-19 UTC (raised cosine), quiet nights and weekends."""
    hour = (minute % DAY) / 60
    weekday = ((minute // DAY) + 3) % 7  # epoch was Thursday; 0 = Monday
    level = 0.05 + 0.95 * math.sin(math.pi * (hour - 7) / 12) ** 2 if 7 <= hour <= 19 else 0.05
    if weekday >= 5:
        level *= 0.15
    if weekday == 0 and 7 <= hour < 11:
        level *= 2.0  # busier Monday morning (benign, weekly)
    return level


def service_level(minute: int) -> float:
    hour = (minute % DAY) / 60
    weekday = ((minute // DAY) + 3) % 7
    level = 0.55 + 0.45 * math.sin(math.pi * max(0.0, hour - 6) / 18) ** 2 if hour >= 6 else 0.55
    return level * (0.8 if weekday >= 5 else 1.0)


def build_sources(shape: str, rng: random.Random) -> list[Source]:
    scale = {"office": 1.0, "service": 0.6, "sparse": 0.2}[shape]
    service_scale = {"office": 0.4, "service": 1.5, "sparse": 0.2}[shape]
    alice, bob, carol = arn_user("alice"), arn_user("bob"), arn_user("carol")
    auditor = arn_role("ReadOnlyAudit", "auditor")
    readers = [arn_role(role, "session") for role in READ_ONLY_ROLES[1:]]
    fn = arn_role("orders-api-role", "orders-api")
    task = arn_role("ecs-task-role", "a1b2c3d4e5f6")
    denied = (("AccessDenied", 0.03),)
    unauthorized = (("Client.UnauthorizedOperation", 0.08),)
    sources: list[Source] = []

    def human(api: str, who: str, agent: str, rate: float, errors: tuple[tuple[str, float], ...] = ()) -> None:
        jitter = rng.uniform(0.7, 1.3)
        sources.append(Source(A[api], who, agent, rate * scale * jitter, "office", errors))

    for who, agent in ((alice, CONSOLE), (bob, BOTO), (carol, CLI.format("ec2")), (auditor, BOTO)):
        human("DescribeInstances", who, agent, 1.2)
        human("DescribeSecurityGroups", who, agent, 0.4)
        human("ListBuckets", who, agent, 0.5, denied if who == bob else ())
        human("GetRole", who, agent, 0.2)
        human("DescribeStacks", who, agent, 0.3)
        human("GetMetricData", who, agent, 0.4)
    for reader in readers:  # dashboards and scanners: read-only roles
        sources.append(Source(A["DescribeInstances"], reader, BOTO, 0.3 * service_scale, "service"))
        sources.append(Source(A["ListBuckets"], reader, BOTO, 0.1 * service_scale, "service"))
    human("DescribeVolumes", auditor, BOTO, 0.8)
    human("ListUsers", auditor, BOTO, 0.3)
    human("GetBucketPolicy", auditor, BOTO, 0.3, (("NoSuchBucketPolicy", 0.2),))
    human("DescribeLogGroups", carol, CLI.format("logs"), 0.3)
    human("GetCallerIdentity", bob, BOTO, 0.3)
    human("ListFunctions", carol, CONSOLE, 0.2)
    # human writes: much rarer than reads
    human("RunInstances", alice, CONSOLE, 0.06)
    human("TerminateInstances", alice, CONSOLE, 0.04)
    human("CreateTags", alice, CONSOLE, 0.12)
    human("RunInstances", bob, BOTO, 0.05, unauthorized)
    human("CreateTags", carol, CLI.format("ec2"), 0.1)
    human("PutParameter", bob, BOTO, 0.05, denied)
    human("AssumeRole", carol, CLI.format("sts"), 0.15)
    # services, around the clock
    for api, rate, errors in (
        ("GetParameter", 3.0, ()),
        ("Decrypt", 4.0, (("ThrottlingException", 0.005),)),
        ("AssumeRole", 0.8, ()),
        ("UpdateItem", 0.3, ()),
        ("CreateLogStream", 0.6, ()),
    ):
        sources.append(Source(A[api], fn, BOTO, rate * service_scale, "service", errors))
    sources.append(Source(A["DescribeInstances"], task, BOTO, 1.0 * service_scale, "service"))
    sources.append(Source(A["PutMetricData"], task, BOTO, 1.5 * service_scale, "service"))
    # regular jobs, around the clock (cadence in minutes, calls per run)
    jobs = [
        ("PutMetricData", "metrics-agent", 1, 2.0),
        ("CreateSnapshot", "backup-job", 15, 3.0),
        ("PutParameter", "config-sync", 5, 1.0),
        ("DescribeInstances", "health-check", 2, 1.0),
        ("CreateLogStream", "log-shipper", 10, 2.0),
        ("GetCallerIdentity", "token-refresher", 5, 1.0),
    ]
    for api, role, cadence, per_run in jobs:
        sources.append(
            Source(
                A[api],
                arn_role(f"{role}-role", role),
                BOTO,
                per_run,
                "job",
                cadence=cadence,
                phase=rng.randrange(cadence),
            )
        )
    # the CI role deploys in bursts on weekdays (session name changes per deployment)
    for api, per_deploy in (("UpdateFunctionCode", 6.0), ("UpdateStack", 2.0), ("CreateTags", 12.0)):
        sources.append(
            Source(A[api], "", CLI.format("deploy"), per_deploy * max(scale, 0.5), "ci", session_role="ci-deploy")
        )
    sources.append(Source(A["DescribeStacks"], "", CLI.format("deploy"), 25.0, "ci", session_role="ci-deploy"))
    # rare administrative writes (a few a week)
    sources.append(Source(A["CreateUser"], alice, CONSOLE, 1 / 600, "office"))
    sources.append(Source(A["AttachRolePolicy"], alice, CONSOLE, 1 / 500, "office"))
    return sources


# --------------------------------------------------------------------------------------------
# Anomalies


@dataclass
class Label:
    kind: str
    api: ApiKey | None  # None: any API (a principal writing)
    detail: str  # error code / principal key (writer, missing) / ""
    start: int  # minute
    end: int  # minute (inclusive)
    size: str  # a human description of the size


@dataclass
class Injection:
    label: Label
    extra: list[tuple[Api, str, str, float, str | None]] = field(default_factory=list)  # api, arn, agent, rate, code
    stop: Source | None = None


def plan(
    shape: str, days: int, seed: int, sources: list[Source], rng: random.Random, dense: bool = False
) -> tuple[list[Injection], list[int]]:
    """Anomalies on about half of the days after the warm-up week (`dense`: every kind on every
    day, for small test runs); returns (injections, days with any)."""
    injections: list[Injection] = []
    scored_days = list(range(WARMUP_DAYS, days - 1))
    anomaly_days = scored_days if dense else sorted(rng.sample(scored_days, k=max(1, len(scored_days) // 2)))
    kinds = [CALL_RATE, ERROR_RATE, UNUSUAL, MISSING]
    jobs = [s for s in sources if s.rhythm == "job"]
    writers = [s for s in sources if s.api.write and s.rhythm in ("office", "service", "ci")]
    all_apis = sorted({s.api for s in sources}, key=lambda a: a.key)
    used: set[Any] = set()
    for index, day in enumerate(anomaly_days):
        todo = [kinds[(index + k) % 4] for k in range(4 if dense else rng.choice((1, 2, 2, 3)))]
        used_hours: list[float] = []
        for kind in todo:
            hour = rng.uniform(0, 23.5)
            while any(abs(hour - h) < (2.0 if dense else 2.5) for h in used_hours):
                hour = rng.uniform(0, 23.5)
            used_hours.append(hour)
            start = START_MINUTE + day * DAY + int(hour * 60)
            injections.append(_injection(kind, start, shape, rng, jobs, writers, all_apis, sources, used))
    return injections, anomaly_days


def _usual_rate(sources: list[Source], api: Api, minute: int, writes_only: bool) -> float:
    total = 0.0
    for s in sources:
        if s.api != api or (writes_only and not s.api.write):
            continue
        if s.rhythm == "office":
            total += s.rate * office_level(minute)
        elif s.rhythm == "service":
            total += s.rate * service_level(minute)
        elif s.rhythm == "job":
            total += s.rate / s.cadence
        elif s.rhythm == "ci":
            total += s.rate / 5  # a deployment: its calls over ~5 minutes
    return total


def _injection(
    kind: str,
    start: int,
    shape: str,
    rng: random.Random,
    jobs: list[Source],
    writers: list[Source],
    all_apis: list[Api],
    sources: list[Source],
    used: set[Any],
) -> Injection:
    if kind == CALL_RATE:
        src = rng.choice(writers)
        arn = src.principal or arn_role("ci-deploy", f"gha-{rng.randrange(10**6)}")
        factor = math.exp(rng.uniform(math.log(3), math.log(15)))
        base = max(_usual_rate(sources, src.api, start, True), 0.5)
        rate = factor * base
        duration = int(math.exp(rng.uniform(math.log(5), math.log(120))))
        label = Label(CALL_RATE, src.api.key, "", start, start + duration - 1, f"x{factor:.1f} ({rate:.1f}/min)")
        return Injection(label, [(src.api, arn, src.agent, rate, None)])
    if kind == ERROR_RATE:
        api = rng.choice([a for a in all_apis if a.name not in ("CreateUser", "AttachRolePolicy")])
        code = rng.choice(("AccessDenied", "ThrottlingException", "ValidationException", "InvalidClientTokenId"))
        who = rng.choice([s for s in sources if s.principal and s.api == api] or [s for s in sources if s.principal])
        rate = math.exp(rng.uniform(math.log(2), math.log(25)))
        duration = int(math.exp(rng.uniform(math.log(5), math.log(90))))
        label = Label(ERROR_RATE, api.key, code, start, start + duration - 1, f"{rate:.1f} errors/min")
        return Injection(label, [(api, who.principal, who.agent, rate, code)])
    if kind == UNUSUAL:
        duration = int(math.exp(rng.uniform(0, math.log(30))))
        calls = rng.randint(1, 20)
        rate = calls / duration
        # Once an unusual insight ends, what it reported is learnt ("seen"): each injection uses
        # an API or a read-only principal not used by an earlier one.
        variant = rng.choice(("api", "api", "reader-writes", "new-writer"))
        unused_apis = [a for a in NEVER_CALLED if a not in used]
        unused_readers = [r for r in READ_ONLY_ROLES if r not in used]
        if (variant == "api" and not unused_apis) or (variant == "reader-writes" and not unused_readers):
            variant = "new-writer"
        if variant == "api":
            api = rng.choice(unused_apis)
            used.add(api)
            # a write API is called by a principal that writes already: one anomaly, one insight
            who = rng.choice([s for s in (writers if api.write else sources) if s.principal])
            label = Label(UNUSUAL, api.key, "", start, start + duration - 1, f"new API, {calls} calls")
            return Injection(label, [(api, who.principal, who.agent, rate, None)])
        if variant == "reader-writes":
            role = rng.choice(unused_readers)
            used.add(role)
            arn = arn_role(role, "session")
        else:
            arn = arn_user(f"svc-{rng.randrange(10**6)}")
        api = rng.choice([a for a in all_apis if a.write])
        label = Label(UNUSUAL, None, principal_key(arn), start, start + duration - 1, f"{variant}, {calls} writes")
        return Injection(label, [(api, arn, CLI.format("x"), rate, None)])
    job = rng.choice(jobs)
    duration = int(math.exp(rng.uniform(math.log(max(60, 6 * job.cadence)), math.log(600))))
    first_missed = _next_run(job, start)
    label = Label(
        MISSING, job.api.key, principal_key(job.principal), first_missed, first_missed + duration - 1, f"{duration} min"
    )
    return Injection(label, stop=job)


def _next_run(job: Source, minute: int) -> int:
    offset = (minute - job.phase) % job.cadence
    return minute if offset == 0 else minute + job.cadence - offset


# --------------------------------------------------------------------------------------------
# Generation


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _add(minute_apis: dict[ApiKey, ApiMinute], api: Api, arn: str, agent: str, calls: int, errors: list[str]) -> None:
    aggregate = minute_apis.get(api.key)
    if aggregate is None:
        aggregate = minute_apis[api.key] = ApiMinute()
    key = principal_key(arn)
    for i in range(calls):
        code = errors[i] if i < len(errors) else None
        aggregate.add(write=api.write, error_code=code, principal=arn, user_agent=agent, principal_key=key)


def generate(
    shape: str, days: int, seed: int, dense: bool = False
) -> tuple[Iterator[tuple[int, dict[ApiKey, ApiMinute]]], list[Label], list[int]]:
    rng = random.Random(f"{shape}/{seed}")
    sources = build_sources(shape, rng)
    injections, anomaly_days = plan(shape, days, seed, sources, rng, dense)
    labels = [i.label for i in injections]

    def minutes() -> Iterator[tuple[int, dict[ApiKey, ApiMinute]]]:
        traffic = random.Random(f"traffic/{shape}/{seed}")
        deploys: list[tuple[int, int, str]] = []  # (start, end, session)
        batch_days = {2 + 28 * k for k in range(days // 28 + 1)}
        for minute in range(START_MINUTE, START_MINUTE + days * DAY):
            day = (minute - START_MINUTE) // DAY
            office = office_level(minute)
            service = service_level(minute)
            out: dict[ApiKey, ApiMinute] = {}
            # deployments: on weekdays in office hours, ~6 a day
            weekday = ((minute // DAY) + 3) % 7
            if weekday < 5 and office > 0.3 and traffic.random() < 6 / 600:
                deploys.append((minute, minute + traffic.randint(3, 6), f"gha-{traffic.randrange(10**6)}"))
            deploys = [d for d in deploys if d[1] >= minute]
            batch = day in batch_days and 120 <= minute % DAY < 210
            for s in sources:
                stopped = any(
                    i.stop is s and i.label.start <= minute <= i.label.end for i in injections if i.stop is not None
                )
                if stopped:
                    continue
                if s.rhythm == "job":
                    if (minute - s.phase) % s.cadence == 0:
                        calls = max(1, poisson(traffic, s.rate))
                        _add(out, s.api, s.principal, s.agent, calls, [])
                    continue
                if s.rhythm == "ci":
                    for start, end, session in deploys:
                        lam = s.rate / (end - start + 1)
                        calls = poisson(traffic, lam)
                        if calls:
                            _add(out, s.api, arn_role(s.session_role, session), s.agent, calls, [])
                    continue
                level = office if s.rhythm == "office" else service
                lam = s.rate * level
                if batch and not s.api.write and s.rhythm == "office":
                    lam *= 20  # the monthly reporting batch: a read storm
                calls = poisson(traffic, lam)
                if not calls:
                    continue
                errors = []
                for code, share in s.errors:
                    errors += [code] * sum(1 for _ in range(calls) if traffic.random() < share)
                _add(out, s.api, s.principal, s.agent, calls, errors[:calls])
            for injection in injections:
                label = injection.label
                if not (label.start <= minute <= label.end):
                    continue
                for api, arn, agent, rate, code in injection.extra:
                    calls = poisson(traffic, rate)
                    if label.kind == UNUSUAL and minute == label.start:
                        calls = max(calls, 1)
                    if calls:
                        _add(out, api, arn, agent, calls, [code] * calls if code else [])
            yield minute, out

    return minutes(), labels, anomaly_days


# --------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Prediction:
    kind: str
    api: ApiKey
    detail: str
    start: int
    end: int | None = None


@dataclass
class KindScore:
    anomalies: int = 0
    detected: int = 0
    predictions: int = 0
    true_positives: int = 0
    neutral: int = 0
    false_positives: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def precision(self) -> float:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass
class RunResult:
    shape: str
    seed: int
    days: int
    kinds: dict[str, KindScore]
    clean_days: int
    clean_day_alarms: int
    false_alarms: int
    cold_start_alarms: int
    minutes: int
    seconds: float
    insights: int
    missed: list[str]
    false: list[str]
    state_bytes: int = 0  # engine.to_dict() as compact JSON at the end of the run
    largest_api_bytes: int = 0
    apis: int = 0

    @property
    def alarms_per_clean_day(self) -> float:
        return self.clean_day_alarms / self.clean_days if self.clean_days else 0.0


GRACE = 10  # minutes after an anomaly's end within which a Start still counts


def _matches(pred: Prediction, label: Label) -> bool:
    if pred.kind != label.kind:
        return False
    if label.api is None:
        if pred.detail != label.detail:
            return False
    elif pred.api != label.api or (label.detail and pred.detail != label.detail):
        return False
    return label.start - 2 <= pred.start <= label.end + GRACE


def _related(pred: Prediction, label: Label) -> bool:
    """Another kind's anomaly explains this prediction (same API or principal, same time)."""
    if not (label.start - 2 <= pred.start <= label.end + 30):
        return False
    return label.api == pred.api or (label.api is None and pred.detail == label.detail) or label.api is None


def score(predictions: list[Prediction], labels: list[Label], days: int, anomaly_days: list[int]) -> dict[str, Any]:
    kinds = {kind: KindScore() for kind in KINDS}
    scored_from = START_MINUTE + WARMUP_DAYS * DAY
    for label in labels:
        kinds[label.kind].anomalies += 1
    detected: set[int] = set()
    false_alarms: list[Prediction] = []
    cold = 0
    for pred in predictions:
        if pred.start < scored_from:
            cold += 1
            continue
        score_ = kinds[pred.kind]
        score_.predictions += 1
        hits = [i for i, label in enumerate(labels) if _matches(pred, label)]
        if hits:
            score_.true_positives += 1
            for i in hits:
                if i not in detected:  # predictions come in time order: the first one sets the delay
                    detected.add(i)
                    kinds[labels[i].kind].detected += 1
                    kinds[labels[i].kind].delays.append(max(0, pred.start - labels[i].start))
        elif any(_related(pred, label) for label in labels):
            score_.neutral += 1
        else:
            score_.false_positives += 1
            false_alarms.append(pred)
    busy_days = set()
    for label in labels:
        for day in range((label.start - START_MINUTE) // DAY, (label.end + 30 - START_MINUTE) // DAY + 1):
            busy_days.add(day)
    clean = [d for d in range(WARMUP_DAYS, days) if d not in busy_days]
    clean_alarms = sum(1 for p in false_alarms if (p.start - START_MINUTE) // DAY in clean)
    missed = [
        f"{label.kind} {label.api} {label.detail} {_when(label.start)} {label.size}, {label.end - label.start + 1} min"
        for i, label in enumerate(labels)
        if i not in detected
    ]
    return {
        "kinds": kinds,
        "clean_days": len(clean),
        "clean_day_alarms": clean_alarms,
        "false_alarms": len(false_alarms),
        "cold_start_alarms": cold,
        "missed": missed,
        "false": [f"{p.kind} {p.api} {p.detail} {_when(p.start)}" for p in false_alarms],
    }


def _when(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%a %d %H:%M")


def run(shape: str, seed: int, days: int, sensitivity: Sensitivity | None = None, dense: bool = False) -> RunResult:
    began = time.perf_counter()
    minutes, labels, anomaly_days = generate(shape, days, seed, dense)
    engine = InsightsEngine((ACCOUNT, REGION), sensitivity or Sensitivity())
    predictions: dict[str, Prediction] = {}
    count = 0
    records = []
    for minute, apis in minutes:
        records += engine.process_minute(minute, apis)
        count += 1
    state = engine.to_dict()
    state_bytes = len(json.dumps(state, separators=(",", ":")))
    api_bytes = max((len(json.dumps(v, separators=(",", ":"))) for v in state["apis"].values()), default=0)
    records += engine.close()
    for record in records:
        details = record["insightDetails"]
        sid = record["sharedEventID"]
        minute = int(datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).timestamp()) // 60
        if details["state"] == "Start":
            detail = details.get("errorCode") or details.get("userIdentityArn") or ""
            predictions[sid] = Prediction(
                details["insightType"], (details["eventSource"], details["eventName"]), detail, minute
            )
        elif sid in predictions:
            predictions[sid].end = minute
    result = score(sorted(predictions.values(), key=lambda p: p.start), labels, days, anomaly_days)
    return RunResult(
        shape=shape,
        seed=seed,
        days=days,
        minutes=count,
        seconds=time.perf_counter() - began,
        insights=len(predictions),
        state_bytes=state_bytes,
        largest_api_bytes=api_bytes,
        apis=len(state["apis"]),
        **result,
    )


def _run_args(args: tuple[str, int, int, dict[str, Any]]) -> RunResult:
    shape, seed, days, knobs = args
    return run(shape, seed, days, Sensitivity().with_overrides(knobs) if knobs else None)


def summarise(results: list[RunResult]) -> dict[str, Any]:
    total = {kind: KindScore() for kind in KINDS}
    for result in results:
        for kind, s in result.kinds.items():
            t = total[kind]
            t.anomalies += s.anomalies
            t.detected += s.detected
            t.predictions += s.predictions
            t.true_positives += s.true_positives
            t.neutral += s.neutral
            t.false_positives += s.false_positives
            t.delays += s.delays
    clean_days = sum(r.clean_days for r in results)
    return {
        "kinds": {
            kind: {
                "anomalies": s.anomalies,
                "detected": s.detected,
                "precision": round(s.precision, 3),
                "recall": round(s.recall, 3),
                "f1": round(s.f1, 3),
                "median_delay_min": s.median_delay,
                "false_positives": s.false_positives,
                "neutral": s.neutral,
            }
            for kind, s in total.items()
        },
        "alarms_per_clean_day": round(sum(r.clean_day_alarms for r in results) / clean_days, 3) if clean_days else 0,
        "clean_days": clean_days,
        "cold_start_alarms_per_run": round(sum(r.cold_start_alarms for r in results) / len(results), 1),
        "minutes_processed": sum(r.minutes for r in results),
        "seconds": round(sum(r.seconds for r in results), 1),
    }


def report(results: list[RunResult], out: Any = sys.stdout) -> None:
    print(
        f"{'shape':8} {'seed':>4} {'kind':24} {'anom':>4} {'det':>4} {'FP':>3} {'P':>5} {'R':>5} {'F1':>5} "
        f"{'delay':>6}",
        file=out,
    )
    for r in results:
        for kind, s in r.kinds.items():
            delay = f"{s.median_delay:.0f}" if s.median_delay is not None else "-"
            print(
                f"{r.shape:8} {r.seed:>4} {kind:24} {s.anomalies:>4} {s.detected:>4} {s.false_positives:>3} "
                f"{s.precision:5.2f} {s.recall:5.2f} {s.f1:5.2f} {delay:>6}",
                file=out,
            )
        print(
            f"{r.shape:8} {r.seed:>4} clean days {r.clean_days}, alarms on them {r.clean_day_alarms} "
            f"({r.alarms_per_clean_day:.2f}/day), cold-start alarms (days 1-7) {r.cold_start_alarms}, "
            f"{r.minutes:,} minutes in {r.seconds:.1f} s; state {r.state_bytes:,} B for {r.apis} APIs "
            f"(largest API {r.largest_api_bytes:,} B)",
            file=out,
        )
    summary = summarise(results)
    print("\noverall:", file=out)
    for kind, s in summary["kinds"].items():
        print(
            f"  {kind:24} P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}  "
            f"median delay {s['median_delay_min']} min  ({s['detected']}/{s['anomalies']} detected, "
            f"{s['false_positives']} false, {s['neutral']} neutral)",
            file=out,
        )
    print(
        f"  alarms per clean day {summary['alarms_per_clean_day']} over {summary['clean_days']} clean days; "
        f"cold-start alarms per run {summary['cold_start_alarms_per_run']}",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one shape, one seed, 16 days")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="sensitivity knob")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--verbose", action="store_true", help="list missed anomalies and false alarms")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.seeds, args.days = ["office"], [1], 16
    knobs = dict(item.split("=", 1) for item in args.set)
    tasks = [(shape, seed, args.days, knobs) for shape in args.shapes for seed in args.seeds]
    began = time.perf_counter()
    if args.jobs > 1 and len(tasks) > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            results = pool.map(_run_args, tasks)
    else:
        results = [_run_args(task) for task in tasks]
    report(results)
    if args.verbose:
        for r in results:
            for line in r.missed:
                print(f"  missed {r.shape}/{r.seed}: {line}")
            for line in r.false:
                print(f"  false  {r.shape}/{r.seed}: {line}")
    print(f"wall time {time.perf_counter() - began:.1f} s")
    if args.json:
        payload = {
            "summary": summarise(results),
            "runs": [
                {
                    **{k: v for k, v in asdict(r).items() if k != "kinds"},
                    "kinds": {k: asdict(s) for k, s in r.kinds.items()},
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
