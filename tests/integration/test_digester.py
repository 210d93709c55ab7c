"""The digester over moto: digests per spec §3 signed by moto KMS (real RSA for RAW +
PKCS1 v1.5 SHA-256), verified with `cryptography`; chains, catch-up, races, late files
(backfill digests), hour boundaries, key rotation, chain heads (docs/integrity.md).

Ledger items are written through the batcher's own adapter (`Ledger.put_entries`), with a
simulated clock for ``recordedAt``; the digester is called directly with a simulated clock.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from opentrail.adapters.digests import ChainHeads, DigestStore, LedgerReader, PublicKeyRegistry
from opentrail.adapters.ledger import Ledger
from opentrail.adapters.signer import KmsSigner
from opentrail.domain.batch import DeliveredFile, Intent
from opentrail.domain.chain import ChainHead
from opentrail.domain.digest import fingerprint, string_to_sign, verify_signature
from opentrail.domain.log_file import log_file_key
from opentrail.handlers import digester
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources, create_signing_key

A1, A2 = "111111111111", "222222222222"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
FIELDS = {
    "awsAccountId", "digestStartTime", "digestEndTime", "digestS3Bucket", "digestS3Object",
    "digestPublicKeyFingerprint", "digestSignatureAlgorithm", "newestEventTime", "oldestEventTime",
    "previousDigestS3Bucket", "previousDigestS3Object", "previousDigestHashValue",
    "previousDigestHashAlgorithm", "previousDigestSignature", "logFiles",
}  # fmt: skip


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


class Harness:
    def __init__(self, resources: LocalResources, **overrides: Any) -> None:
        self.resources = resources
        self.s3 = boto3.client("s3", region_name=resources.region)
        self.ddb = boto3.client("dynamodb", region_name=resources.region)
        self.kms = boto3.client("kms", region_name=resources.region)
        self.settings = resources.digester_settings(**overrides)
        self.signer = KmsSigner(self.settings.signing_key_id, client=self.kms)
        self.heads = ChainHeads(resources.ledger_table, client=self.ddb)
        self.registry = PublicKeyRegistry(resources.ledger_table, client=self.ddb)
        self.now = T0
        self.ledger = Ledger(resources.ledger_table, client=self.ddb, clock=lambda: self.now)
        self._n = 0

    def deliver(
        self,
        delivered_at: datetime,
        *,
        account: str = A1,
        region: str = "us-east-1",
        recorded_at: datetime | None = None,
    ) -> str:
        """A ledger item for a log file delivered at `delivered_at` (recorded then, or later)."""
        self._n += 1
        key = log_file_key(
            account_id=account, region=region, delivered_at=delivered_at, unique=f"{self._n:016d}", prefix=None
        )
        body = f'{{"Records":[{{"n":{self._n}}}]}}'.encode()
        file = DeliveredFile(
            bucket=self.resources.log_bucket,
            key=key,
            sha256=hashlib.sha256(body).hexdigest(),
            record_count=1,
            oldest_event_time=(delivered_at - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            newest_event_time=(delivered_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            trail="opentrail",
            account=account,
            region=region,
            compressed_bytes=len(body),
        )
        intent = Intent(f"batch-{self._n}", 0, "DONE", (file,), (), delivered_at, delivered_at, 0)
        self.now = recorded_at or delivered_at
        self.ledger.put_entries(intent.ledger_entries(ttl_days=30))
        return key

    def run(
        self,
        now: datetime,
        *,
        signer: KmsSigner | None = None,
        heads: Any = None,
        trail_state: Any = None,
        **overrides: Any,
    ) -> Any:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return digester.handler(
            {"action": "digest"},
            LocalContext(function_name="opentrail-digester"),
            settings=settings,
            clock=lambda: now,
            signer=signer or self.signer,
            store=DigestStore(self.resources.log_bucket, client=self.s3),
            heads=heads or self.heads,
            ledger=LedgerReader(self.resources.ledger_table, client=self.ddb),
            registry=self.registry,
            trail_state=trail_state,
        )

    def digest_keys(self) -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.resources.log_bucket, Prefix="AWSLogs/")
        return sorted(o["Key"] for o in response.get("Contents", []) if "/CloudTrail-Digest/" in o["Key"])

    def read(self, key: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        response = self.s3.get_object(Bucket=self.resources.log_bucket, Key=key)
        raw = gzip.decompress(response["Body"].read())
        return json.loads(raw), raw, response

    def public_der(self, signer: KmsSigner | None = None) -> bytes:
        return (signer or self.signer).public_key().der

    def verify(self, key: str, signer: KmsSigner | None = None) -> dict[str, Any]:
        body, raw, response = self.read(key)
        signature = response["Metadata"]["signature"]
        assert verify_signature(self.public_der(signer), string_to_sign(body, raw), signature), key
        return body

    def ledger_items(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.resources.ledger_table)["Items"]
        return [i for i in items if i["pk"]["S"].startswith("LEDGER#")]


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    return Harness(resources)


def regular_key(end: datetime, account: str = A1, region: str = "us-east-1", backfill: bool = False) -> str:
    stamp = end.strftime("%Y%m%dT%H%M%SZ")
    suffix = "_backfill" if backfill else ""
    return (
        f"AWSLogs/{account}/CloudTrail-Digest/{region}/{end:%Y/%m/%d}/"
        f"{account}_CloudTrail-Digest_{region}_opentrail_us-east-1_{stamp}{suffix}.json.gz"
    )


# -- one digest --------------------------------------------------------------------------


def test_digester_writes_a_signed_digest_with_every_field(harness: Harness) -> None:
    first = harness.deliver(at(minutes=5))
    boundary_in = harness.deliver(at(minutes=59, seconds=59))
    boundary_out = harness.deliver(at(hours=1))  # 11:00:00 belongs to the next window

    summary = harness.run(at(hours=1, minutes=5))

    key = regular_key(at(hours=1))
    assert harness.digest_keys() == [key]
    assert summary["digests"] == 1
    assert summary["logFiles"] == 2
    body, raw, response = harness.read(key)
    assert set(body) == FIELDS
    assert body["awsAccountId"] == A1
    assert (body["digestStartTime"], body["digestEndTime"]) == ("2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z")
    assert (body["digestS3Bucket"], body["digestS3Object"]) == (harness.resources.log_bucket, key)
    assert body["digestPublicKeyFingerprint"] == fingerprint(harness.public_der())
    assert body["digestSignatureAlgorithm"] == "SHA256withRSA"
    assert [f["s3Object"] for f in body["logFiles"]] == sorted([first, boundary_in])
    assert boundary_out not in {f["s3Object"] for f in body["logFiles"]}
    entry = next(f for f in body["logFiles"] if f["s3Object"] == first)
    assert entry == {
        "s3Bucket": harness.resources.log_bucket,
        "s3Object": first,
        "hashValue": entry["hashValue"],
        "hashAlgorithm": "SHA-256",
        "newestEventTime": "2026-11-23T10:04:00Z",
        "oldestEventTime": "2026-11-23T10:02:00Z",
    }
    assert entry["hashValue"] == entry["hashValue"].lower()
    assert len(entry["hashValue"]) == 64
    assert (body["oldestEventTime"], body["newestEventTime"]) == ("2026-11-23T10:02:00Z", "2026-11-23T10:58:59Z")
    # the first digest of a chain: every previous field null
    assert all(body[name] is None for name in FIELDS if name.startswith("previousDigest"))
    # object properties: metadata, SSE-S3, one gzip member of exactly the signed bytes
    metadata = response["Metadata"]
    assert metadata["signature-algorithm"] == "SHA256withRSA"
    assert len(metadata["signature"]) == 512
    assert metadata["signature"] == metadata["signature"].lower()
    assert response["ServerSideEncryption"] == "AES256"
    assert "backfill-generation-timestamp" not in metadata
    assert verify_signature(harness.public_der(), string_to_sign(body, raw), metadata["signature"])
    # the chain head outside the bucket
    head = harness.heads.get("opentrail", A1, "us-east-1")
    assert head == ChainHead(
        trail="opentrail",
        account=A1,
        region="us-east-1",
        kind="regular",
        sequence=1,
        bucket=harness.resources.log_bucket,
        key=key,
        start_time=at(),
        end_time=at(hours=1),
        signature=metadata["signature"],
        sha256=hashlib.sha256(raw).hexdigest(),
        fingerprint=body["digestPublicKeyFingerprint"],
        written_at=at(hours=1, minutes=5),
    )
    # the listed ledger items say which digest lists them
    marks = {i["key"]["S"]: i.get("digestKey", {}).get("S") for i in harness.ledger_items()}
    assert marks == {first: key, boundary_in: key, boundary_out: None}


def test_digester_waits_for_the_delay_after_the_hour(harness: Harness) -> None:
    harness.deliver(at(minutes=5))
    assert harness.run(at(hours=1, minutes=4))["digests"] == 0  # 11:04 < 11:00 + 5 min: window 9-10 only
    assert harness.digest_keys() == []  # no chain and no files in 9-10: nothing to digest


# -- chains ------------------------------------------------------------------------------


def test_digester_chains_hours_including_an_empty_hour(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.deliver(at(hours=2, minutes=10))
    for hour in (1, 2, 3):
        harness.run(at(hours=hour, minutes=5))

    keys = [regular_key(at(hours=h)) for h in (1, 2, 3)]
    assert harness.digest_keys() == keys
    bodies = [harness.verify(k) for k in keys]
    assert [len(b["logFiles"]) for b in bodies] == [1, 0, 1]
    empty = bodies[1]
    assert (empty["newestEventTime"], empty["oldestEventTime"]) == (None, None)
    for previous_key, body in zip(keys, bodies[1:], strict=False):
        _, raw, response = harness.read(previous_key)
        assert body["previousDigestS3Bucket"] == harness.resources.log_bucket
        assert body["previousDigestS3Object"] == previous_key
        assert body["previousDigestHashValue"] == hashlib.sha256(raw).hexdigest()
        assert body["previousDigestHashAlgorithm"] == "SHA-256"
        assert body["previousDigestSignature"] == response["Metadata"]["signature"]
    assert [b["digestStartTime"] for b in bodies[1:]] == [b["digestEndTime"] for b in bodies[:-1]]
    head = harness.heads.get("opentrail", A1, "us-east-1")
    assert head is not None
    assert (head.sequence, head.key) == (3, keys[-1])


def test_digester_catches_up_every_missed_hour(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    harness.deliver(at(hours=3, minutes=30))

    summary = harness.run(at(hours=5, minutes=7))  # the 12:05, 13:05, 14:05 runs were missed

    assert summary["digests"] == 4
    assert harness.digest_keys() == [regular_key(at(hours=h)) for h in range(1, 6)]
    bodies = [harness.verify(k) for k in harness.digest_keys()]
    assert [len(b["logFiles"]) for b in bodies] == [1, 0, 0, 1, 0]
    assert all(b["previousDigestS3Object"] == a["digestS3Object"] for a, b in itertools.pairwise(bodies))


def test_digester_catch_up_is_bounded_per_run_and_never_skips(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    summary = harness.run(at(hours=6, minutes=5), max_windows_per_run=2)
    assert (summary["digests"], summary["windowsBehind"]) == (2, 3)
    harness.run(at(hours=6, minutes=6), max_windows_per_run=2)
    harness.run(at(hours=6, minutes=7), max_windows_per_run=2)
    assert harness.digest_keys() == [regular_key(at(hours=h)) for h in range(1, 7)]


def test_digester_keeps_one_chain_per_account_and_region(harness: Harness) -> None:
    harness.deliver(at(minutes=10), account=A1, region="us-east-1")
    harness.deliver(at(minutes=20), account=A2, region="eu-west-1")
    harness.run(at(hours=1, minutes=5))
    harness.deliver(at(hours=1, minutes=20), account=A2, region="us-east-1")  # a new source
    harness.run(at(hours=2, minutes=5))

    assert harness.digest_keys() == sorted(
        [
            regular_key(at(hours=1), A1),
            regular_key(at(hours=2), A1),
            regular_key(at(hours=1), A2, "eu-west-1"),
            regular_key(at(hours=2), A2, "eu-west-1"),
            regular_key(at(hours=2), A2, "us-east-1"),
        ]
    )
    new_chain = harness.verify(regular_key(at(hours=2), A2, "us-east-1"))
    assert new_chain["previousDigestS3Object"] is None
    assert new_chain["awsAccountId"] == A2
    assert len(harness.heads.list("opentrail")) == 3


def test_digester_writes_under_the_trail_prefix(resources: LocalResources) -> None:
    trails = json.dumps([{"Name": "audit", "S3KeyPrefix": "team/logs"}])
    harness = Harness(resources, trails=trails)
    harness.run(at(hours=1, minutes=5))  # no chain, no files: nothing
    assert harness.digest_keys() == []
    # a ledger item of trail "audit"
    file = DeliveredFile(resources.log_bucket, "team/logs/AWSLogs/x.json.gz", "a" * 64, 1, "t", "t", "audit", A1,
                         "us-east-1", 1)  # fmt: skip
    harness.ledger.put_entries(Intent("b", 0, "DONE", (file,), (), at(minutes=1), at(), 0).ledger_entries(ttl_days=1))
    harness.run(at(hours=1, minutes=6))
    listing = harness.s3.list_objects_v2(Bucket=resources.log_bucket, Prefix="team/logs/AWSLogs/")
    (key,) = [o["Key"] for o in listing["Contents"]]
    assert key == (
        f"team/logs/AWSLogs/{A1}/CloudTrail-Digest/us-east-1/2026/11/23/"
        f"{A1}_CloudTrail-Digest_us-east-1_audit_us-east-1_20261123T110000Z.json.gz"
    )
    assert harness.verify(key)["digestS3Object"] == key


def test_digester_skips_trails_without_log_file_validation_and_names_the_home_region(
    resources: LocalResources,
) -> None:
    trails = json.dumps([{"Name": "audit"}, {"Name": "ops", "LogFileValidationEnabled": False}])
    harness = Harness(resources, trails=trails, home_region="eu-west-1")
    for trail in ("audit", "ops"):
        file = DeliveredFile(resources.log_bucket, f"{trail}/AWSLogs/x.json.gz", "a" * 64, 1, "t", "t", trail, A1,
                             "us-east-1", 1)  # fmt: skip
        entries = Intent(f"b-{trail}", 0, "DONE", (file,), (), at(minutes=1), at(), 0).ledger_entries(ttl_days=1)
        harness.ledger.put_entries(entries)
    harness.run(at(hours=1, minutes=6))
    (key,) = harness.digest_keys()
    # source region us-east-1 (the function's), home region eu-west-1 (the setting): a non-home region's digester
    assert key.endswith(f"{A1}_CloudTrail-Digest_us-east-1_audit_eu-west-1_20261123T110000Z.json.gz")
    assert harness.heads.list("ops") == []


# -- concurrency -------------------------------------------------------------------------


class StaleHeads(ChainHeads):
    """A digester that read the chain heads before another one advanced them."""

    def __init__(self, real: ChainHeads, snapshot: list[ChainHead]) -> None:
        super().__init__(real.table, client=real._ddb)
        self.snapshot = snapshot

    def list(self, trail: str) -> list[ChainHead]:
        return list(self.snapshot)


def test_digester_twice_in_the_same_hour_writes_once(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    again = harness.run(at(hours=1, minutes=6))
    assert again["digests"] == 0
    assert harness.digest_keys() == [regular_key(at(hours=1))]


def test_racing_digesters_do_not_fork_the_chain(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    before = harness.heads.list("opentrail")
    harness.deliver(at(hours=1, minutes=10))
    harness.run(at(hours=2, minutes=5))  # digester A writes 11-12
    late = harness.deliver(at(hours=1, minutes=20), recorded_at=at(hours=2, minutes=5, seconds=30))

    # digester B read the heads before A advanced them: it builds 11-12 again (now with the
    # late file), finds A's digest at the key, adopts it, and leaves the chain as A left it.
    racing = harness.run(at(hours=2, minutes=6), heads=StaleHeads(harness.heads, before))

    assert racing["digests"] == 0
    assert racing["adopted"] == 1
    assert racing["conflicts"] == 0
    regular = [k for k in harness.digest_keys() if not k.endswith("_backfill.json.gz")]
    assert regular == [regular_key(at(hours=1)), regular_key(at(hours=2))]
    head = harness.heads.get("opentrail", A1, "us-east-1")
    assert head is not None
    assert (head.sequence, head.key) == (2, regular_key(at(hours=2)))
    # the late file, listed by no digest, gets a backfill digest
    assert racing["backfillDigests"] == 1
    backfill = harness.verify(regular_key(at(hours=2), backfill=True))
    assert [f["s3Object"] for f in backfill["logFiles"]] == [late]


def test_a_crashed_digester_is_completed_by_the_next_run(harness: Harness) -> None:
    harness.deliver(at(minutes=10))

    class CrashingHeads(ChainHeads):
        def advance(self, head: ChainHead, **kwargs: Any) -> bool:
            raise RuntimeError("crash after PutObject, before the chain head moved")

    with pytest.raises(RuntimeError, match="crash"):
        harness.run(at(hours=1, minutes=5), heads=CrashingHeads(harness.resources.ledger_table, client=harness.ddb))
    assert harness.digest_keys() == [regular_key(at(hours=1))]
    assert harness.heads.get("opentrail", A1, "us-east-1") is None

    summary = harness.run(at(hours=2, minutes=5))

    assert summary["adopted"] == 1
    assert summary["digests"] == 1  # 11-12
    assert harness.digest_keys() == [regular_key(at(hours=1)), regular_key(at(hours=2))]
    second = harness.verify(regular_key(at(hours=2)))
    assert second["previousDigestS3Object"] == regular_key(at(hours=1))
    assert summary["backfillDigests"] == 0


# -- late files ----------------------------------------------------------------------------


def test_late_ledger_items_get_backfill_digests(harness: Harness) -> None:
    on_time = harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    # a crashed batch delivered at 10:30, finalized by a resolver at 12:30
    late = harness.deliver(at(minutes=30), recorded_at=at(hours=2, minutes=30))

    summary = harness.run(at(hours=3, minutes=5))

    assert (summary["digests"], summary["backfillDigests"], summary["backfilledFiles"]) == (2, 1, 1)
    regular = [harness.verify(regular_key(at(hours=h))) for h in (1, 2, 3)]
    assert [f["s3Object"] for f in regular[0]["logFiles"]] == [on_time]
    assert all(late not in {f["s3Object"] for f in body["logFiles"]} for body in regular)
    backfill_key = regular_key(at(hours=1), backfill=True)
    assert backfill_key.endswith("_20261123T110000Z_backfill.json.gz")
    body, _, response = harness.read(backfill_key)
    harness.verify(backfill_key)
    assert (body["digestStartTime"], body["digestEndTime"]) == ("2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z")
    assert [f["s3Object"] for f in body["logFiles"]] == [late]
    assert body["previousDigestS3Object"] is None  # the backfill chain's first digest
    assert response["Metadata"]["backfill-generation-timestamp"] == "2026-11-23T13:05:00Z"

    # later still: a second late file for the same hour -> a second backfill, chained
    later = harness.deliver(at(minutes=40), recorded_at=at(hours=3, minutes=30))
    harness.run(at(hours=4, minutes=5))
    second_key = regular_key(at(hours=1, seconds=1), backfill=True)
    second = harness.verify(second_key)
    assert [f["s3Object"] for f in second["logFiles"]] == [later]
    assert second["previousDigestS3Object"] == backfill_key
    assert harness.run(at(hours=4, minutes=6))["backfillDigests"] == 0
    head = harness.heads.get("opentrail", A1, "us-east-1", "backfill")
    assert head is not None
    assert (head.sequence, head.key) == (2, second_key)


def test_late_items_beyond_the_lookback_are_not_backfilled(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    harness.deliver(at(minutes=30), recorded_at=at(hours=5))
    summary = harness.run(at(hours=5, minutes=5), backfill_lookback_hours=2)
    assert summary["backfillDigests"] == 0


# -- keys ----------------------------------------------------------------------------------


def test_key_rotation_gives_a_new_fingerprint_and_old_digests_still_verify(harness: Harness) -> None:
    harness.deliver(at(minutes=10))
    harness.run(at(hours=1, minutes=5))
    new_key = create_signing_key(harness.kms, "rotated", alias=False)
    new_signer = KmsSigner(new_key, client=harness.kms)

    harness.run(at(hours=2, minutes=5), signer=new_signer)

    old_body = harness.verify(regular_key(at(hours=1)))
    new_body = harness.verify(regular_key(at(hours=2)), signer=new_signer)
    assert old_body["digestPublicKeyFingerprint"] != new_body["digestPublicKeyFingerprint"]
    assert new_body["previousDigestS3Object"] == regular_key(at(hours=1))  # the chain goes on
    keys = {k.fingerprint: k for k in harness.registry.all()}
    old, new = keys[old_body["digestPublicKeyFingerprint"]], keys[new_body["digestPublicKeyFingerprint"]]
    assert (old.validity_start, old.validity_end) == (int(at().timestamp()), int(at(hours=1, minutes=5).timestamp()))
    assert (new.validity_start, new.validity_end) == (
        int(at(hours=1).timestamp()),
        int(at(hours=2, minutes=5).timestamp()),
    )
    assert fingerprint(old.der) == old.fingerprint
    assert verify_signature(old.der, *_signed(harness, regular_key(at(hours=1))))
    # each later signature extends the key's validity
    harness.run(at(hours=3, minutes=5), signer=new_signer)
    extended = {k.fingerprint: k for k in harness.registry.all()}[new.fingerprint]
    assert extended.validity_end == int(at(hours=3, minutes=5).timestamp())


def _signed(harness: Harness, key: str) -> tuple[bytes, str]:
    body, raw, response = harness.read(key)
    return string_to_sign(body, raw), response["Metadata"]["signature"]


def test_signer_uses_the_alias_and_reads_a_pkcs1_key(harness: Harness) -> None:
    signer = KmsSigner("alias/opentrail-digest-signing", client=harness.kms)
    public = signer.public_key()
    assert public.der.startswith(bytes.fromhex("3082010a0282010100"))
    assert public.key_arn.split("/")[-1] == harness.resources.signing_key_arn.split("/")[-1]
    assert verify_signature(public.der, b"abc", signer.sign(b"abc"))


def test_digester_rejects_an_unknown_action(harness: Harness) -> None:
    with pytest.raises(ValueError, match="action"):
        digester.handler({"action": "explode"}, LocalContext(), settings=harness.settings)


# -- StopLogging / StartLogging (spec §3.2: a final digest at the stop, a new chain at the start)


def _stored_log(harness: Harness, delivered_at: datetime) -> str:
    """A ledger item and its log object (validate-logs reads it back)."""
    key = harness.deliver(delivered_at)
    body = f'{{"Records":[{{"n":{harness._n}}}]}}'.encode()
    harness.s3.put_object(Bucket=harness.resources.log_bucket, Key=key, Body=gzip.compress(body))
    return key


def _listed(body: dict[str, Any]) -> list[str]:
    return [entry["s3Object"] for entry in body["logFiles"]]


def _validate_options(harness: Harness, tmp_path: Any, *, end_time: str) -> Any:
    """`opentrail validate-logs` of the trail from 09:00, with the digester's public key and
    the chain heads (their recorded stops)."""
    from opentrail.validate_logs import Options

    keys = tmp_path / "keys"
    keys.mkdir()
    pem = base64.encodebytes(harness.public_der()).decode()
    (keys / "key.pem").write_text(f"-----BEGIN RSA PUBLIC KEY-----\n{pem}-----END RSA PUBLIC KEY-----\n")
    return Options(
        trail_arn=f"arn:aws:cloudtrail:us-east-1:{A1}:trail/opentrail",
        start_time="2026-11-23T09:00:00Z",
        end_time=end_time,
        s3_bucket=harness.resources.log_bucket,
        region="us-east-1",
        public_keys=keys,
        workers=1,
        chain_head_table=harness.resources.ledger_table,
    )


def test_stop_logging_closes_the_chain_and_start_logging_starts_a_new_one(harness: Harness, tmp_path: Any) -> None:
    from opentrail.adapters.trail_state import TrailStateStore
    from opentrail.validate_logs import run

    state = TrailStateStore(harness.resources.ledger_table, client=harness.ddb)

    def digest(now: datetime) -> Any:
        return digester.handler(
            {"action": "digest"},
            LocalContext(function_name="opentrail-digester"),
            settings=harness.settings,
            clock=lambda: now,
            signer=harness.signer,
            store=DigestStore(harness.resources.log_bucket, client=harness.s3),
            heads=harness.heads,
            ledger=LedgerReader(harness.resources.ledger_table, client=harness.ddb),
            registry=harness.registry,
            trail_state=state,
        )

    first = _stored_log(harness, at(0, 10))
    assert digest(at(1, 20))["written"] == [regular_key(at(1))]
    before_stop = _stored_log(harness, at(1, 5))
    state.set_logging("opentrail", False, at(1, 30, 0.25))  # StopLogging at 11:30:00.250
    assert digest(at(1, 32))["written"] == []  # not before the delay: late batches may still come

    final_key = regular_key(at(1, 30, 1))  # the stop, rounded up to the second
    assert digest(at(2, 20))["written"] == [final_key]
    final = harness.verify(final_key)
    assert (final["digestStartTime"], final["digestEndTime"]) == ("2026-11-23T11:00:00Z", "2026-11-23T11:30:01Z")
    assert _listed(final) == [before_stop]
    assert final["previousDigestS3Object"] == regular_key(at(1))
    head = harness.heads.get("opentrail", A1, "us-east-1")
    assert head is not None
    assert head.key == final_key
    assert head.stops == (at(1, 30, 1),)
    stored = harness.ddb.get_item(TableName=harness.resources.ledger_table, Key={
        "pk": {"S": "DIGESTCHAIN#opentrail"}, "sk": {"S": f"{A1}#us-east-1#regular"}})["Item"]  # fmt: skip
    assert stored["stops"] == {"L": [{"S": "2026-11-23T11:30:01Z"}]}

    # stopped: no digests for the hours while stopped
    assert digest(at(3, 20))["written"] == []
    assert digest(at(4, 20))["written"] == []

    state.set_logging("opentrail", True, at(4, 40))  # StartLogging at 14:40
    after_start = _stored_log(harness, at(4, 50))
    assert digest(at(5, 20))["written"] == [regular_key(at(5))]
    restarted = harness.verify(regular_key(at(5)))
    assert restarted["digestStartTime"] == "2026-11-23T14:40:00Z"
    assert _listed(restarted) == [after_start]
    assert all(restarted[name] is None for name in restarted if name.startswith("previousDigest"))
    assert digest(at(6, 20))["written"] == [regular_key(at(6))]
    assert harness.verify(regular_key(at(6)))["previousDigestS3Object"] == regular_key(at(5))
    assert harness.heads.get("opentrail", A1, "us-east-1").stops == (at(1, 30, 1),)  # type: ignore[union-attr]
    assert first in _listed(harness.verify(regular_key(at(1))))

    # validate-logs (ours, with the chain head): the stop is recorded, so the new chain is no finding
    options = _validate_options(harness, tmp_path, end_time="2026-11-23T16:00:00Z")
    out, err = io.StringIO(), io.StringIO()
    rc = run(options, out, err)
    assert rc == 0, out.getvalue() + err.getvalue()
    assert "INVALID" not in out.getvalue() + err.getvalue()
    assert "No log files were delivered by CloudTrail between" in err.getvalue()  # the CLI's own gap line

    # the same digests without the recorded stop: a restart without a recorded stop is reported
    harness.ddb.update_item(TableName=harness.resources.ledger_table, Key={
        "pk": {"S": "DIGESTCHAIN#opentrail"}, "sk": {"S": f"{A1}#us-east-1#regular"}},
        UpdateExpression="REMOVE stops")  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    assert run(options, out, err) == 1
    assert "chain restarted (null previousDigest fields) without a recorded stop" in out.getvalue()


def test_stop_and_start_between_two_runs_still_close_the_chain(harness: Harness) -> None:
    from opentrail.adapters.trail_state import TrailStateStore

    state = TrailStateStore(harness.resources.ledger_table, client=harness.ddb)
    harness.deliver(at(0, 10))
    harness.run(at(1, 20))
    late = harness.deliver(at(1, 10))
    state.set_logging("opentrail", False, at(1, 15))
    state.set_logging("opentrail", True, at(2, 30))
    after = harness.deliver(at(2, 40))
    summary = digester.handler(
        {"action": "digest"},
        LocalContext(function_name="opentrail-digester"),
        settings=harness.settings,
        clock=lambda: at(3, 20),
        signer=harness.signer,
        store=DigestStore(harness.resources.log_bucket, client=harness.s3),
        heads=harness.heads,
        ledger=LedgerReader(harness.resources.ledger_table, client=harness.ddb),
        registry=harness.registry,
        trail_state=state,
    )
    # the final digest up to the stop, then the new chain from the start; no digest for hour 12
    assert summary["written"] == [regular_key(at(1, 15)), regular_key(at(3))]
    assert _listed(harness.verify(regular_key(at(1, 15)))) == [late]
    restarted = harness.verify(regular_key(at(3)))
    assert restarted["previousDigestS3Object"] is None
    assert _listed(restarted) == [after]
    assert restarted["digestStartTime"] == "2026-11-23T12:30:00Z"


def test_whole_stop_start_cycles_between_two_runs_leave_no_file_undigested(harness: Harness, tmp_path: Any) -> None:
    from opentrail.adapters import trail_state as trail_state_module
    from opentrail.adapters.trail_state import TrailStateStore
    from opentrail.validate_logs import run

    state = TrailStateStore(harness.resources.ledger_table, client=harness.ddb)

    def digest(now: datetime) -> Any:
        return harness.run(now, trail_state=state)

    # given a chain closed by a stop at 11:15
    _stored_log(harness, at(0, 10))
    assert digest(at(1, 20))["written"] == [regular_key(at(1))]
    _stored_log(harness, at(1, 5))
    state.set_logging("opentrail", False, at(1, 15))
    assert digest(at(2, 20))["written"] == [regular_key(at(1, 15))]

    # when, before the next run, logging starts (12:30), a file arrives, logging stops (12:50)
    # and starts again (13:10) before one more file
    state.set_logging("opentrail", True, at(2, 30))
    between = _stored_log(harness, at(2, 40))
    state.set_logging("opentrail", False, at(2, 50))
    state.set_logging("opentrail", True, at(3, 10))
    after = _stored_log(harness, at(3, 30))
    written = digest(at(4, 20))["written"]

    # then the file of the whole cycle has its chain (12:30-12:50), and a new one starts at 13:10
    assert written == [regular_key(at(2, 50)), regular_key(at(4))]
    cycle = harness.verify(regular_key(at(2, 50)))
    assert (cycle["digestStartTime"], cycle["digestEndTime"]) == ("2026-11-23T12:30:00Z", "2026-11-23T12:50:00Z")
    assert cycle["previousDigestS3Object"] is None
    assert _listed(cycle) == [between]
    restarted = harness.verify(regular_key(at(4)))
    assert restarted["digestStartTime"] == "2026-11-23T13:10:00Z"
    assert restarted["previousDigestS3Object"] is None
    assert _listed(restarted) == [after]
    head = harness.heads.get("opentrail", A1, "us-east-1")
    assert head is not None
    assert head.stops == (at(1, 15), at(2, 50))
    assert digest(at(5, 20))["written"] == [regular_key(at(5))]  # and the chain goes on

    # validate-logs (ours): every file listed, both restarts after a recorded stop
    options = _validate_options(harness, tmp_path, end_time="2026-11-23T15:00:00Z")
    out, err = io.StringIO(), io.StringIO()
    assert run(options, out, err) == 0, out.getvalue() + err.getvalue()
    assert "4/4 log files valid" in out.getvalue()

    # the call lists keep the newest MAX_LOGGING_CALLS of each
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trail_state_module, "MAX_LOGGING_CALLS", 3)
        state.set_logging("opentrail", False, at(5, 30))
    stops = state.get("opentrail").attributes["stopLoggingTimes"]
    assert [float(value) for value in stops] == [at(m // 60, m % 60).timestamp() for m in (75, 170, 330)]
