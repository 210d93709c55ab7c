"""Multi-region delivery over moto (docs/trails.md, "Multi-region"): two regions, one home bucket.

us-east-1 is the home region: it owns the log bucket and its KMS key. eu-west-1 has its own
buffer queue + DLQ, ledger and history tables and digest signing key, and writes into the home
bucket with the home key. Each region's batcher and digester run as the Lambda would there: the
real handlers with their production adapters (``AWS_REGION`` / ``AWS_DEFAULT_REGION`` = the
function's region), the settings the stacks give them (``TRAILS`` from `OpenTrailConfig.trails_in`
of one cdk.json plan, ``HOME_REGION`` empty at home and the home region elsewhere), a simulated
clock. The scenario (two deliveries and two digest runs per region) runs once for the module;
each test checks one behaviour of its result.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.config import load_config
from opentrail.adapters.buffer import Buffer
from opentrail.adapters.digests import PublicKeyRegistry
from opentrail.domain.bundle import encode_record, pack
from opentrail.domain.digest import fingerprint
from opentrail.domain.trail import trails_to_json
from opentrail.handlers import batcher, digester
from opentrail.local.context import LocalContext
from opentrail.local.resources import ACCOUNT_ID, create_history_table, create_signing_key, provision
from opentrail.public_keys import list_public_keys, write_pem_files
from opentrail.settings import BatcherSettings, DigesterSettings
from opentrail.validate_logs import Options, run
from tests.integration.test_batcher import record
from tests.integration.test_trail_fanout import TRAILS as FANOUT_TRAILS
from tests.integration.test_trail_fanout import s3_read as fanout_s3_read

pytestmark = [
    pytest.mark.filterwarnings("ignore:No application metrics:UserWarning"),
    pytest.mark.xdist_group("multi_region"),  # one scenario per module: keep its tests on one worker
]

HOME, OTHER = "us-east-1", "eu-west-1"
REGIONS = (HOME, OTHER)
T1 = datetime(2026, 11, 23, 10, 15, 42, tzinfo=UTC)  # first delivery: digest window 10:00-11:00
T2 = datetime(2026, 11, 23, 11, 20, 5, tzinfo=UTC)  # second delivery: window 11:00-12:00
DIGEST_1 = datetime(2026, 11, 23, 11, 10, tzinfo=UTC)  # past the default 300 s delay
DIGEST_2 = datetime(2026, 11, 23, 12, 10, tzinfo=UTC)

# the fan-out test's three trails, plus one recording in the home region only
TRAILS: list[dict[str, Any]] = [
    *FANOUT_TRAILS,
    {"Name": "home-only", "S3KeyPrefix": "home", "IsMultiRegionTrail": False},
]
PREFIXES = {"everything": "", "writes": "sec/", "reports": "data/", "home-only": "home/"}
# (trail, source region) pairs that record: a single-region trail only at home
RECORDING = [(t, r) for t in PREFIXES for r in REGIONS if not (t == "home-only" and r == OTHER)]


def s3_read(key: str, region: str) -> dict[str, Any]:
    return fanout_s3_read(key, account=ACCOUNT_ID, region=region)


def log_folder(trail: str, region: str) -> str:
    return f"{PREFIXES[trail]}AWSLogs/{ACCOUNT_ID}/CloudTrail/{region}/"


def digest_folder(trail: str, region: str) -> str:
    return f"{PREFIXES[trail]}AWSLogs/{ACCOUNT_ID}/CloudTrail-Digest/{region}/"


class Region:
    """One region's deployment: its functions' settings as the stack builds them, and their runs."""

    def __init__(self, name: str, batcher: BatcherSettings, digester: DigesterSettings, key_arn: str) -> None:
        self.name = name
        self.batcher = batcher
        self.digester = digester
        self.signing_key_arn = key_arn

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.name)

    def send(self, records: list[dict[str, Any]]) -> None:
        """What capture does in this region: bundles into this region's buffer."""
        Buffer(self.batcher.buffer_queue_url, client=self.client("sqs")).send(pack([encode_record(r) for r in records]))

    @contextmanager
    def function(self) -> Iterator[LocalContext]:
        """A Lambda of this region: its environment's region, its function ARN."""
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_REGION", self.name)
            env.setenv("AWS_DEFAULT_REGION", self.name)
            yield LocalContext(function_name=f"opentrail-{self.name}", region=self.name)

    def run_batcher(self, at: datetime) -> dict[str, Any]:
        with self.function() as context:
            summary: dict[str, Any] = batcher.handler(
                {"action": "flush"}, context, settings=self.batcher, clock=lambda: at
            )
        assert summary["failedBatches"] == 0, summary
        assert summary["deadLettered"] == 0, summary
        return summary

    def run_digester(self, at: datetime) -> dict[str, Any]:
        with self.function() as context:
            summary: dict[str, Any] = digester.handler(
                {"action": "digest"}, context, settings=self.digester, clock=lambda: at
            )
        assert summary["conflicts"] == 0, summary
        return summary

    def public_keys(self, directory: Path) -> Path:
        """What `opentrail public-keys --out DIR` gets from this region's query API (its key registry)."""
        keys = list_public_keys(PublicKeyRegistry(self.digester.ledger_table, client=self.client("dynamodb")))
        assert len(keys) == 1
        write_pem_files(keys, directory)
        return directory


def deploy() -> dict[str, Region]:
    """The home region's resources (as `opentrail local` creates them), then the other region's
    own queue, tables and signing key (no bucket, no log key); the settings come from one cdk.json
    plan, as the stacks' (docs/trails.md, "Multi-region")."""
    home = provision(region=HOME, account_id=ACCOUNT_ID)
    config = load_config(
        {
            "trails": TRAILS,
            "regions": list(REGIONS),
            "homeLogBucket": home.log_bucket,
            "homeKmsKeyArn": home.kms_key_arn,
            "homeLedgerTable": home.ledger_table,
        }
    )
    sqs = boto3.client("sqs", region_name=OTHER)
    ddb = boto3.client("dynamodb", region_name=OTHER)
    other_key = create_signing_key(boto3.client("kms", region_name=OTHER), "opentrail-eu")
    other_dlq = sqs.create_queue(QueueName="opentrail-eu-buffer-dlq")["QueueUrl"]
    other_queue = sqs.create_queue(QueueName="opentrail-eu-buffer")["QueueUrl"]
    for table in ("opentrail-eu-ledger", "opentrail-eu-history"):
        create_history_table(ddb, table)  # pk/sk, on demand, TTL: the ledger's shape too

    regions = {}
    for name in REGIONS:
        at_home = name == HOME
        trails = trails_to_json(config.trails_in(name))  # infra.trails.region_trails
        ledger = home.ledger_table if at_home else "opentrail-eu-ledger"
        home_region = "" if at_home else HOME  # infra.trails.home_region_setting
        signing_key = home.signing_key_arn if at_home else other_key
        batcher_settings = BatcherSettings(
            trails=trails,
            buffer_queue_url=home.buffer_queue_url if at_home else other_queue,
            dead_letter_queue_url=home.dead_letter_queue_url if at_home else other_dlq,
            log_bucket=home.log_bucket,  # every region writes into the home bucket ...
            log_kms_key_arn=home.kms_key_arn,  # ... with the home key (SSE-KMS: a key in the bucket's region)
            ledger_table=ledger,
            history_table=home.history_table if at_home else "opentrail-eu-history",
            home_region=home_region,
            home_ledger_table="" if at_home else home.ledger_table,  # infra.trails.home_ledger_setting
            receive_wait_seconds=0,
            # no Insights table: Insights are not this test's subject (docs/insights.md)
        )
        digester_settings = DigesterSettings(
            trails=trails,
            log_bucket=home.log_bucket,
            ledger_table=ledger,
            signing_key_id=signing_key,
            home_region=home_region,
            home_ledger_table="" if at_home else home.ledger_table,
        )
        regions[name] = Region(name, batcher_settings, digester_settings, signing_key)
    return regions


@dataclass(frozen=True)
class Scenario:
    regions: dict[str, Region]
    sent: dict[str, dict[str, dict[str, Any]]]  # region -> label -> record
    first: dict[str, dict[str, Any]]  # region -> the first batcher run's summary
    objects: dict[str, dict[str, Any]]  # every object of the home bucket: key -> JSON body

    @property
    def bucket(self) -> str:
        return self.regions[HOME].batcher.log_bucket

    def keys_under(self, folder: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(folder))

    def delivered_ids(self, trail: str, region: str) -> list[str]:
        return sorted(
            r["eventID"] for key in self.keys_under(log_folder(trail, region)) for r in self.objects[key]["Records"]
        )


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    """Given two regions, each with a write, a read and two S3 data reads (one under reports/)
    delivered at 10:15 and one more write at 11:20; each region's digester runs at 11:10 and 12:10."""
    from moto import mock_aws

    with mock_aws():
        regions = deploy()
        sent: dict[str, dict[str, dict[str, Any]]] = {}
        for name, region in regions.items():
            sent[name] = {
                "write": record(account=ACCOUNT_ID, region=name),
                "read": record(account=ACCOUNT_ID, region=name, read_only=True),
                "report": s3_read("reports/q1.csv", name),
                "other": s3_read("other/x", name),
            }
            region.send([sent[name][label] for label in ("write", "read", "report", "other")])
        first = {name: region.run_batcher(T1) for name, region in regions.items()}
        for name, region in regions.items():
            region.run_digester(DIGEST_1)
            sent[name]["later"] = record(account=ACCOUNT_ID, region=name, eventTime="2026-11-23T11:01:02Z")
            region.send([sent[name]["later"]])
            region.run_batcher(T2)
            region.run_digester(DIGEST_2)

        s3 = boto3.client("s3", region_name=HOME)
        bucket = regions[HOME].batcher.log_bucket
        keys = [
            o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page["Contents"]
        ]
        objects = {
            key: json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) for key in keys
        }
        yield Scenario(regions, sent, first, objects)


def test_multi_region_log_files_land_in_the_home_bucket_under_their_region(scenario: Scenario) -> None:
    s3 = boto3.client("s3", region_name=HOME)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [scenario.bucket]  # eu-west-1 owns no bucket
    for name in REGIONS:
        files = scenario.first[name]["files"]
        assert files
        assert {f["bucket"] for f in files} == {scenario.bucket}
        assert all(f["key"].startswith(tuple(log_folder(t, name) for t in PREFIXES)) for f in files), files
    for trail, name in RECORDING:
        for key in scenario.keys_under(log_folder(trail, name)):
            assert f"/{ACCOUNT_ID}_CloudTrail_{name}_" in key
            assert {r["awsRegion"] for r in scenario.objects[key]["Records"]} == {name}
            head = s3.head_object(Bucket=scenario.bucket, Key=key)
            assert head["ServerSideEncryption"] == "aws:kms"
            assert head["SSEKMSKeyId"] == scenario.regions[name].batcher.log_kms_key_arn  # the home key


def test_multi_region_each_region_uses_its_own_buffer_ledger_and_history(scenario: Scenario) -> None:
    for name, region in scenario.regions.items():
        sqs, ddb = region.client("sqs"), region.client("dynamodb")
        depth = sqs.get_queue_attributes(QueueUrl=region.batcher.buffer_queue_url, AttributeNames=["All"])["Attributes"]
        assert (depth["ApproximateNumberOfMessages"], depth["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
        ledger = ddb.scan(TableName=region.batcher.ledger_table)["Items"]
        regions_in_ledger = {i["sk"]["S"].split("#")[1] for i in ledger if i["pk"]["S"].startswith("LEDGER#")}
        assert regions_in_ledger == {name}
        pages = [i["d"]["B"] for i in ddb.scan(TableName=region.batcher.history_table)["Items"] if "d" in i]
        indexed = [json.loads(line) for page in pages for line in zlib.decompress(page).splitlines()]
        assert indexed
        assert {r["awsRegion"] for r in indexed} == {name}


def test_multi_region_trails_with_different_selectors_get_exactly_their_events(scenario: Scenario) -> None:
    for name in REGIONS:
        events = scenario.sent[name]
        ids = {label: record["eventID"] for label, record in events.items()}
        assert scenario.delivered_ids("everything", name) == sorted([ids["write"], ids["read"], ids["later"]])
        assert scenario.delivered_ids("writes", name) == sorted([ids["write"], ids["later"]])
        assert scenario.delivered_ids("reports", name) == [ids["report"]]
        assert scenario.first[name]["unselected"] == 1  # other/x: no trail selects it


def test_multi_region_single_region_trail_gets_home_region_events_only(scenario: Scenario) -> None:
    ids = {label: record["eventID"] for label, record in scenario.sent[HOME].items()}
    assert scenario.delivered_ids("home-only", HOME) == sorted([ids["write"], ids["read"], ids["later"]])
    under_home = set(scenario.keys_under(f"home/AWSLogs/{ACCOUNT_ID}/"))
    home_folders = (log_folder("home-only", HOME), digest_folder("home-only", HOME))
    assert under_home  # files and digests, all from the home region: no eu-west-1 file nor digest
    assert {key for key in under_home if not key.startswith(home_folders)} == set()
    assert "home-only" not in scenario.first[OTHER]["activeTrails"]


def test_multi_region_each_region_has_its_own_signed_digest_chain(scenario: Scenario) -> None:
    for trail, name in RECORDING:
        region = scenario.regions[name]
        digests = scenario.keys_under(digest_folder(trail, name))
        assert len(digests) == 2, (trail, name, digests)
        assert all(f"/{ACCOUNT_ID}_CloudTrail-Digest_{name}_{trail}_{HOME}_" in key for key in digests)
        older, newer = (scenario.objects[key] for key in digests)
        expected = _pkcs1(region.client("kms").get_public_key(KeyId=region.signing_key_arn)["PublicKey"])
        for body in (older, newer):
            assert body["digestPublicKeyFingerprint"] == fingerprint(expected)  # this region's key
            assert body["digestS3Bucket"] == scenario.bucket
        assert older["previousDigestS3Object"] is None
        assert newer["previousDigestS3Object"] == digests[0]  # linked within the region
        listed = {f["s3Object"] for body in (older, newer) for f in body["logFiles"]}
        assert listed == set(scenario.keys_under(log_folder(trail, name)))


def test_multi_region_validate_logs_validates_both_regions(scenario: Scenario, tmp_path: Path) -> None:
    for name, region in scenario.regions.items():
        keys = region.public_keys(tmp_path / name)
        for trail in [t for t, r in RECORDING if r == name]:
            options = Options(
                trail_arn=f"arn:aws:cloudtrail:{HOME}:{ACCOUNT_ID}:trail/{trail}",  # the home region's ARN
                start_time="2026-11-23T10:00:00Z",
                end_time="2026-11-23T13:00:00Z",
                s3_bucket=scenario.bucket,
                s3_prefix=PREFIXES[trail].rstrip("/") or None,
                region=name,  # the source region whose digests are walked
                public_keys=keys,
                workers=2,
                verbose=True,
                chain_head_table=region.digester.ledger_table,
            )
            out, err = io.StringIO(), io.StringIO()
            rc = run(options, out, err)
            text = out.getvalue() + err.getvalue()
            assert rc == 0, text
            assert "INVALID" not in text, text
            assert "2/2 digest files valid" in text, text
            for key in scenario.keys_under(log_folder(trail, name)):
                assert f"Log file\ts3://{scenario.bucket}/{key}\tvalid" in text, (key, text)
            assert f"/CloudTrail/{OTHER if name == HOME else HOME}/" not in text
            assert f"chain head: s3://{scenario.bucket}/{scenario.keys_under(digest_folder(trail, name))[-1]}" in text
            assert "no problems found" in text, text


def _pkcs1(spki_der: bytes) -> bytes:
    """KMS GetPublicKey gives a SubjectPublicKeyInfo; digest fingerprints are of the PKCS#1 DER."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_der_public_key(spki_der)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
