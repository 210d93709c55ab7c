"""`opentrail validate-logs` against tampered digest chains, beside the real `aws cloudtrail validate-logs`.

Every case builds a real chain (local RSA key, spec §3 formats), tampers with it, writes it
to a moto server (S3 + DynamoDB chain head) and to a directory copy, then checks:

* our output with ``--no-opentrail-checks`` is byte for byte the AWS CLI's (stdout, stderr, rc)
  when the AWS CLI is installed in .venv-tools;
* S3 mode and directory mode print the same;
* the INVALID lines and the OpenTrail findings are the expected ones.
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail.domain.digest import digest_key
from opentrail.validate_logs import Options, run
from tests.integration.chain_builder import (
    ACCOUNT,
    ARN,
    AWS,
    HOUR,
    REGION,
    T0,
    TRAIL,
    Chain,
    CloudTrailStub,
    Obj,
    Run,
    SigningKey,
    run_aws_cli,
)

pytestmark = pytest.mark.xdist_group("validate_logs")
HAS_CLI = AWS.exists()
START, END = "2026-03-01T00:00:00Z", "2026-03-01T06:00:00Z"
HOURS = [2, 0, 3, 1, 2, 2]  # log files per hour; digest i covers [T0 + i h, T0 + (i+1) h)
TABLE = "opentrail-ledger"
_names = count()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto servers in one process share moto's state: start from a clean one
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION)
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield url
    server.stop()


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def second_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def chain(signer: SigningKey) -> Chain:
    built = Chain(f"trail-bucket-{next(_names)}", [signer])
    built.hours(HOURS)
    return built


class Harness:
    def __init__(self, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.tmp_path = tmp_path
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", url)
        self.s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        self.ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION)

    def publish(self, chain: Chain, head: dict[str, Any] | None) -> tuple[Path, str]:
        chain.to_s3(self.s3)
        # One chain head per bucket: the trail name is shared, so the test's head replaces the previous one.
        self.ddb.delete_item(
            TableName=TABLE, Key={"pk": {"S": f"DIGESTCHAIN#{TRAIL}"}, "sk": {"S": f"{ACCOUNT}#{REGION}#regular"}}
        )
        if head is not None:
            from boto3.dynamodb.types import TypeSerializer

            serializer = TypeSerializer()
            self.ddb.put_item(TableName=TABLE, Item={k: serializer.serialize(v) for k, v in head.items()})
        directory = chain.to_directory(self.tmp_path / chain.bucket, head=head)
        return directory, chain.bucket

    def check(
        self,
        chain: Chain,
        *,
        head: dict[str, Any] | None = None,
        start: str = START,
        end: str = END,
        keys: list[SigningKey] | None = None,
        verbose: bool = False,
    ) -> Run:
        """Run ours (S3 and directory) and the AWS CLI; assert they agree; return our S3-mode run."""
        directory, bucket = self.publish(chain, head)
        stub = CloudTrailStub(keys if keys is not None else chain.keys)
        try:
            base = Options(
                trail_arn=ARN,
                start_time=start,
                end_time=end,
                s3_bucket=bucket,
                endpoint_url=stub.url,
                verbose=verbose,
                workers=4,
                chain_head_table=TABLE,
            )
            ours = _run(base)
            in_directory = _run(replace(base, directory=directory, endpoint_url=None, chain_head_table=None))
            if keys is not None and not keys:
                (directory / "public-keys").rename(directory / "no-keys")
                in_directory = _run(replace(base, directory=directory, endpoint_url=None, chain_head_table=None))
            assert _without_head_line(in_directory) == _without_head_line(ours)
            if HAS_CLI:
                compatible = _run(replace(base, opentrail_checks=False))
                arguments = ["--trail-arn", ARN, "--start-time", start, "--end-time", end, "--s3-bucket", bucket]
                arguments += ["--endpoint-url", stub.url] + (["--verbose"] if verbose else [])
                cli = run_aws_cli(arguments, s3_url=self.url)
                assert (compatible.rc, compatible.out, compatible.err) == (cli.rc, cli.out, cli.err)
        finally:
            stub.stop()
        return ours


def _run(options: Options) -> Run:
    out, err = io.StringIO(), io.StringIO()
    rc = run(options, out, err)
    return Run(rc, out.getvalue(), err.getvalue())


def _without_head_line(result: Run) -> Run:
    out = "\n".join(line for line in result.out.splitlines() if not line.startswith("chain head:"))
    return Run(result.rc, out, result.err)


@pytest.fixture
def harness(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    return Harness(moto_url, tmp_path, monkeypatch)


def _uri(chain: Chain, key: str) -> str:
    return f"s3://{chain.bucket}/{key}"


def _gz(data: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(data).encode(), mtime=0)


# -- untouched --------------------------------------------------------------------------------


def test_untouched_chain_is_valid_everywhere(harness: Harness, chain: Chain) -> None:
    result = harness.check(chain, head=chain.head_item(), verbose=True)

    assert result.rc == 0
    assert result.invalid == []
    assert result.findings == []
    assert "6/6 digest files valid" in result.out
    assert "10/10 log files valid" in result.out
    assert f"Digest file\t{_uri(chain, chain.digests[-1])}\tvalid" in result.out
    assert "no problems found" in result.out


def test_no_digests_in_range(harness: Harness, chain: Chain) -> None:
    result = harness.check(chain, start="2026-02-01T00:00:00Z", end="2026-02-01T05:00:00Z")

    assert result.rc == 0
    assert "No digests found\n" in result.out


def test_no_public_keys_aborts_with_255(harness: Harness, chain: Chain) -> None:
    result = harness.check(chain, keys=[])

    assert result.rc == 255
    assert result.err == "\nNo public keys found between 2026-03-01T00:00:00Z and 2026-03-01T08:00:00Z\n"


# -- log files ----------------------------------------------------------------------------------


def test_modified_log(harness: Harness, chain: Chain) -> None:
    key = chain.logs[3]
    chain.objects[key] = Obj(_gz({"Records": []}))

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [f"Log file\t{_uri(chain, key)}\tINVALID: hash value doesn't match"]
    assert "9/10 log files valid, 1/10 log files INVALID" in result.out
    assert result.findings == []


def test_deleted_log(harness: Harness, chain: Chain) -> None:
    key = chain.logs[0]
    del chain.objects[key]

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [f"Log file\t{_uri(chain, key)}\tINVALID: not found"]


def test_appended_bytes_after_the_gzip_member(harness: Harness, chain: Chain) -> None:
    key = chain.logs[5]
    chain.objects[key] = Obj(chain.objects[key].body + _gz({"Records": [{"eventName": "Injected"}]}))

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [f"Log file\t{_uri(chain, key)}\tINVALID: unexpected data after end of compressed stream"]


def test_inserted_unlisted_log_is_caught_only_by_opentrail(harness: Harness, chain: Chain) -> None:
    entry = chain.log_file(T0 + 2 * HOUR + timedelta(minutes=50))  # hour 2, listed in no digest

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == []  # the AWS CLI sees nothing wrong (asserted equal above)
    assert "10/10 log files valid" in result.out
    assert result.findings == [f"Log file\t{_uri(chain, entry.key)}\tINVALID: not listed in any digest"]


# -- digests ------------------------------------------------------------------------------------


def test_modified_digest(harness: Harness, chain: Chain) -> None:
    key = chain.digests[2]
    body = chain.body(key)
    body["logFiles"] = body["logFiles"][1:]
    chain.objects[key] = Obj(_gz(body), chain.objects[key].metadata)

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [f"Digest file\t{_uri(chain, key)}\tINVALID: signature verification failed"]
    assert "5/6 digest files valid, 1/6 digest files INVALID" in result.out
    assert result.findings == []


def test_deleted_digest(harness: Harness, chain: Chain) -> None:
    key = chain.digests[2]
    del chain.objects[key]

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [f"Digest file\t{_uri(chain, key)}\tINVALID: not found"]
    assert result.findings == []


def test_two_consecutive_deleted_digests(harness: Harness, chain: Chain) -> None:
    first, second = chain.digests[2], chain.digests[3]
    del chain.objects[first], chain.objects[second]

    result = harness.check(chain)

    # The AWS CLI reports only the digest the newer one links to.
    assert result.invalid == [f"Digest file\t{_uri(chain, second)}\tINVALID: not found"]
    assert result.rc == 1
    assert result.findings == [
        f"Digest file\t{_uri(chain, first)}\tINVALID: not found (no digest covers 2026-03-01T02:00:00Z to "
        "2026-03-01T03:00:00Z)",
        f"Hour\t2026-03-01T02:00:00Z to 2026-03-01T03:00:00Z\tINVALID: 3 log files delivered under "
        f"s3://{chain.bucket}/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/ but no digest covers the hour",
    ]


def test_deleted_newest_digest_needs_the_chain_head(harness: Harness, chain: Chain) -> None:
    head = chain.head_item()
    newest = chain.digests[-1]
    del chain.objects[newest]

    result = harness.check(chain, head=head)

    assert result.invalid == []  # the AWS CLI cannot tell
    assert result.rc == 1
    assert result.findings == [
        f"Digest file\t{_uri(chain, newest)}\tINVALID: not found (the chain head names "
        f"{_uri(chain, newest)} (sequence 6) as the newest digest)"
    ]


def test_two_deleted_newest_digests(harness: Harness, chain: Chain) -> None:
    head = chain.head_item()
    for key in chain.digests[-2:]:
        del chain.objects[key]

    result = harness.check(chain, head=head)

    assert result.rc == 1
    assert [line.split("\t")[1] for line in result.findings] == [_uri(chain, key) for key in chain.digests[-2:]]


def test_digest_resigned_with_another_key(harness: Harness, chain: Chain, second_key: SigningKey) -> None:
    key = chain.digests[3]
    body = chain.body(key)
    body["logFiles"] = []
    body["digestPublicKeyFingerprint"] = second_key.fingerprint
    chain.resign(key, body, second_key)

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [
        f"Digest file\t{_uri(chain, key)}\tINVALID: public key not found in region {REGION} for fingerprint "
        f"{second_key.fingerprint}"
    ]


def test_digest_resigned_keeping_the_fingerprint(harness: Harness, chain: Chain, second_key: SigningKey) -> None:
    key = chain.digests[3]
    body = chain.body(key)
    body["logFiles"] = []
    chain.resign(key, body, second_key)

    result = harness.check(chain)

    assert result.invalid == [f"Digest file\t{_uri(chain, key)}\tINVALID: signature verification failed"]


def test_resigned_digest_with_the_real_key_breaks_the_links(harness: Harness, chain: Chain) -> None:
    """A digest rewritten and validly signed (a stolen key, a digester bug): the AWS CLI accepts it."""
    key, newer = chain.digests[3], chain.digests[4]
    body = chain.body(key)
    dropped = body["logFiles"][0]["s3Object"]
    body["logFiles"] = []
    chain.resign(key, body)

    result = harness.check(chain)

    assert result.invalid == []
    assert result.rc == 1
    assert result.findings == [
        f"Digest file\t{_uri(chain, newer)}\tINVALID: previousDigestHashValue doesn't match {_uri(chain, key)}",
        f"Digest file\t{_uri(chain, newer)}\tINVALID: previousDigestSignature doesn't match the signature of "
        f"{_uri(chain, key)}",
        f"Log file\t{_uri(chain, dropped)}\tINVALID: not listed in any digest",
    ]


def test_restarted_chain(harness: Harness, signer: SigningKey) -> None:
    chain = Chain(f"trail-bucket-{next(_names)}", [signer])
    chain.hours(HOURS[:3])
    chain._head = None  # a new chain starts at hour 3 (null previous fields), nothing recorded
    chain.hours(HOURS[3:], start=T0 + 3 * HOUR)

    result = harness.check(chain)

    # The AWS CLI prints a gap line (not counted as invalid) and exits 0.
    assert result.err == (
        "No log files were delivered by CloudTrail between 2026-03-01T03:00:00Z and 2026-03-01T03:00:00Z\n\n"
    )
    assert result.rc == 1
    assert result.findings == [
        f"Digest file\t{_uri(chain, chain.digests[3])}\tINVALID: chain restarted (null previousDigest fields) "
        f"without a recorded stop; the older digest {_uri(chain, chain.digests[2])} ends at 2026-03-01T03:00:00Z"
    ]


def test_moved_digest(harness: Harness, chain: Chain) -> None:
    key = chain.digests[3]  # ends 04:00; moved to a key stamped 03:30
    moved = digest_key(
        account_id=ACCOUNT,
        source_region=REGION,
        trail_name=TRAIL,
        home_region=REGION,
        end_time=T0 + 3 * HOUR + timedelta(minutes=30),
    )
    chain.objects[moved] = chain.objects.pop(key)

    result = harness.check(chain)

    assert result.rc == 1
    assert result.invalid == [
        f"Digest file\t{_uri(chain, key)}\tINVALID: not found",
        f"Digest file\t{_uri(chain, moved)}\tINVALID: has been moved from its original location",
    ]


def test_extra_digest_copy_that_no_digest_links_to(harness: Harness, chain: Chain) -> None:
    copy = digest_key(
        account_id=ACCOUNT,
        source_region=REGION,
        trail_name=TRAIL,
        home_region=REGION,
        end_time=T0 + 4 * HOUR + timedelta(minutes=30),
    )
    chain.objects[copy] = chain.objects[chain.digests[3]]

    result = harness.check(chain)

    assert result.invalid == []  # the AWS CLI never looks at it
    assert result.findings == [
        f"Digest file\t{_uri(chain, copy)}\tINVALID: not linked from the chain (no digest names it as its previous)"
    ]


# -- rotation, empty hours, late files, boundaries ----------------------------------------------------


def test_key_rotation(harness: Harness, signer: SigningKey, second_key: SigningKey) -> None:
    chain = Chain(f"trail-bucket-{next(_names)}", [signer])
    chain.hours(HOURS[:3])
    chain.keys.append(second_key)  # the KMS key rotated: new fingerprint, old digests still verify
    chain.hours(HOURS[3:], start=T0 + 3 * HOUR)

    result = harness.check(chain, head=chain.head_item())

    assert result.rc == 0
    assert chain.body(chain.digests[0])["digestPublicKeyFingerprint"] == signer.fingerprint
    assert chain.body(chain.digests[-1])["digestPublicKeyFingerprint"] == second_key.fingerprint


def test_empty_hours(harness: Harness, signer: SigningKey) -> None:
    chain = Chain(f"trail-bucket-{next(_names)}", [signer])
    chain.hours([0, 0, 0, 0, 0, 0])

    result = harness.check(chain, head=chain.head_item(), verbose=True)

    assert result.rc == 0
    assert "6/6 digest files valid" in result.out
    assert "log files valid" not in result.out


def test_late_file_in_a_backfill_digest(harness: Harness, signer: SigningKey) -> None:
    chain = Chain(f"trail-bucket-{next(_names)}", [signer])
    chain.hours(HOURS[:2])
    late = chain.log_file(T0 + HOUR + timedelta(minutes=59))  # delivered in hour 1, after its digest
    chain.hours(HOURS[2:], start=T0 + 2 * HOUR)
    backfill = chain.digest(T0 + HOUR, [late], backfill=True)

    result = harness.check(chain, verbose=True)

    assert result.rc == 0
    assert f"(backfill) Digest file\t{_uri(chain, backfill)}\tvalid" in result.out
    assert "1/1 backfill digest files valid" in result.out
    assert result.findings == []


def test_late_file_in_the_next_digest(harness: Harness, signer: SigningKey) -> None:
    chain = Chain(f"trail-bucket-{next(_names)}", [signer])
    chain.hours(HOURS[:2])
    late = chain.log_file(T0 + HOUR + timedelta(minutes=59))
    chain.digest(T0 + 2 * HOUR, [late, chain.log_file(T0 + 2 * HOUR + timedelta(minutes=10))])

    result = harness.check(chain, end="2026-03-01T03:00:00Z")

    assert result.rc == 0
    assert result.findings == []


def test_unlisted_file_at_the_end_of_the_newest_hour_may_still_be_digested(harness: Harness, chain: Chain) -> None:
    chain.log_file(T0 + 5 * HOUR + timedelta(minutes=58))  # the next digest (after the range) may list it

    result = harness.check(chain)

    assert result.rc == 0
    assert result.findings == []


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-03-01T02:00:00Z", "2026-03-01T04:00:00Z"),  # start and end on digest boundaries
        ("2026-03-01T02:30:00Z", "2026-03-01T03:59:59Z"),  # inside windows
        ("20260301T01:00:00Z", "2026-03-01T01:00:00Z"),  # one instant, CLI-accepted basic format
    ],
)
def test_hour_boundaries(harness: Harness, chain: Chain, start: str, end: str) -> None:
    result = harness.check(chain, start=start, end=end, verbose=True)

    assert result.rc == 0
    assert result.findings == []


def test_invalid_arguments_abort_with_255(harness: Harness) -> None:
    bad_arn = _run(Options(trail_arn="arn:aws:s3:::bucket", start_time=START))
    reversed_range = _run(Options(trail_arn=ARN, start_time=END, end_time=START))

    assert (bad_arn.rc, bad_arn.err) == (255, "\nInvalid trail ARN provided: arn:aws:s3:::bucket\n")
    assert reversed_range.rc == 255
    assert reversed_range.err == "\nInvalid time range specified: start-time must occur before end-time\n"
