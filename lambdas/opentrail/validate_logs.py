"""``opentrail validate-logs``: ``aws cloudtrail validate-logs``, to the letter, plus OpenTrail's checks.

Sources: S3 (boto3's normal resolution, so ``AWS_ENDPOINT_URL_S3`` reaches a local S3) or a
directory copy of a bucket (``<key>`` + ``<key>.metadata.json`` + PEM public keys). Public keys
come from ListPublicKeys (``--endpoint-url`` = the CloudTrail-compatible API) or from PEM files.

Log files are fetched, gunzipped and hashed in a thread pool (zlib and hashlib release the GIL),
streamed in 1 MiB chunks with a bounded number in flight, and reported in the AWS CLI's order.
The traversal itself (and every message) is `opentrail.domain.validation`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any, TextIO

from opentrail.domain.digest import fingerprint as key_fingerprint
from opentrail.domain.digest import pkcs1_der
from opentrail.domain.validation import (
    CHUNK_BYTES,
    ChainHead,
    ChainRecord,
    DigestProblem,
    DigestTraverser,
    Finding,
    LogCheck,
    NoPublicKeysError,
    ObjectNotFound,
    StoredObject,
    TrailTarget,
    ValidDigest,
    display,
    hash_log_stream,
    log_keys_in_range,
    opentrail_findings,
    parse_date,
)

METADATA_SUFFIX = ".metadata.json"
CHAIN_HEADS_FILE = "chain-heads.json"
CHAIN_PARTITION = "DIGESTCHAIN#"  # chain-head items: pk DIGESTCHAIN#<trail>, sk <account>#<region>#<kind>
PUBLIC_KEYS_DIR = "public-keys"
DEFAULT_WORKERS = min(16, (os.cpu_count() or 2) * 4)
_ARN = re.compile(r"arn:.+:cloudtrail:.+:\d{12}:trail/.+")
_PEM = re.compile(r"-----BEGIN (RSA )?PUBLIC KEY-----(.+?)-----END (?:RSA )?PUBLIC KEY-----", re.S)


class Abort(Exception):
    """Ends the command with rc 255 after printing the message (the AWS CLI's write_exception)."""


@dataclass
class Options:
    trail_arn: str
    start_time: str
    end_time: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str | None = None
    account_id: str | None = None
    verbose: bool = False
    region: str | None = None
    endpoint_url: str | None = None
    directory: Path | None = None
    public_keys: Path | None = None
    workers: int = DEFAULT_WORKERS
    progress: bool = False
    chain_head_table: str | None = None
    opentrail_checks: bool = True


# -- stores ---------------------------------------------------------------------------------


class S3Store:
    """S3 through boto3 (one client per bucket region, as the CLI's S3ClientProvider)."""

    def __init__(self, session: Any, location_region: str | None, pool_size: int) -> None:
        self._session = session
        self._location_region = location_region
        self._pool_size = pool_size
        self._clients: dict[str | None, Any] = {}
        self._regions: dict[str, str] = {}
        self._lock = Lock()

    def _client(self, region: str | None) -> Any:
        with self._lock:
            if region not in self._clients:
                from botocore.config import Config

                config = Config(max_pool_connections=self._pool_size, retries={"max_attempts": 5, "mode": "standard"})
                self._clients[region] = self._session.client("s3", region_name=region, config=config)
            return self._clients[region]

    def client_for(self, bucket: str) -> Any:
        if bucket not in self._regions:
            location = self._client(self._location_region).get_bucket_location(Bucket=bucket)
            self._regions[bucket] = location.get("LocationConstraint") or "us-east-1"
        return self._client(self._regions[bucket])

    def list_keys(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        paginator = self.client_for(bucket).get_paginator("list_objects_v2")
        arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            arguments["StartAfter"] = start_after
        for page in paginator.paginate(**arguments):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _get(self, bucket: str, key: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            return self.client_for(bucket).get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise ObjectNotFound(key) from None
            raise

    def get_object(self, bucket: str, key: str) -> StoredObject:
        response = self._get(bucket, key)
        return StoredObject(response["Body"].read(), dict(response.get("Metadata") or {}))

    def chunks(self, bucket: str, key: str) -> Iterator[bytes]:
        body = self._get(bucket, key)["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()


class DirectoryStore:
    """A directory copy of one bucket: ``<dir>/<key>`` with ``<key>.metadata.json`` beside it."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = root
        self.bucket = bucket

    def _path(self, bucket: str, key: str) -> Path:
        if bucket != self.bucket or not key or key.startswith("/") or ".." in key.split("/"):
            raise ObjectNotFound(key)
        return self.root.joinpath(*key.split("/"))

    def list_keys(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        if bucket != self.bucket:
            return
        parent = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*parent.split("/")) if parent else self.root
        if not base.is_dir():
            return
        keys = []
        for directory, _, files in os.walk(base):
            relative = os.path.relpath(directory, self.root).replace(os.sep, "/")
            for name in files:
                if name.endswith(METADATA_SUFFIX):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix) and key > start_after:
                    keys.append(key)
        keys.sort(key=lambda item: item.encode("utf-8"))
        yield from keys

    def get_object(self, bucket: str, key: str) -> StoredObject:
        path = self._path(bucket, key)
        try:
            body = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return StoredObject(body, self._metadata(path))

    @staticmethod
    def _metadata(path: Path) -> dict[str, str]:
        try:
            document = json.loads(path.with_name(path.name + METADATA_SUFFIX).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        metadata = document.get("Metadata") if isinstance(document, dict) else None
        return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}

    def chunks(self, bucket: str, key: str) -> Iterator[bytes]:
        path = self._path(bucket, key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


class PrefetchingStore:
    """Fetches the next older listed digests while the current one is validated (S3 latency)."""

    def __init__(self, store: S3Store, pool: ThreadPoolExecutor, depth: int = 6) -> None:
        self._store = store
        self._pool = pool
        self._depth = depth
        self._listed: dict[str, list[str]] = {}
        self._futures: dict[tuple[str, str], Future[StoredObject]] = {}

    def list_keys(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[str]:
        listed: list[str] = []
        self._listed[bucket] = listed
        for key in self._store.list_keys(bucket, prefix, start_after):
            listed.append(key)
            yield key

    def get_object(self, bucket: str, key: str) -> StoredObject:
        future = self._futures.pop((bucket, key), None)
        listed = self._listed.get(bucket, [])
        try:
            position = listed.index(key)
        except ValueError:
            position = -1
        for older in listed[max(0, position - self._depth) : max(position, 0)]:
            if (bucket, older) not in self._futures:
                self._futures[(bucket, older)] = self._pool.submit(self._store.get_object, bucket, older)
        if future is not None:
            return future.result()
        return self._store.get_object(bucket, key)


# -- public keys ---------------------------------------------------------------------------


class CloudTrailKeys:
    def __init__(self, client: Any) -> None:
        self._client = client

    def get_public_keys(self, start: datetime, end: datetime) -> dict[str, str]:
        response = self._client.list_public_keys(StartTime=start, EndTime=end)
        keys = {}
        for item in response.get("PublicKeyList", []):
            value = item.get("Value", b"")
            # boto3 decodes the blob; the CLI keeps the wire's base64 text. Use the text.
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)
            keys[str(item["Fingerprint"])] = text
        return keys


class PemKeys:
    """``*.pem`` files (PUBLIC KEY or RSA PUBLIC KEY); fingerprint = MD5 of the PKCS#1 DER."""

    def __init__(self, directory: Path) -> None:
        self.keys: dict[str, str] = {}
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.pem")):
            for match in _PEM.finditer(path.read_text(encoding="utf-8", errors="replace")):
                try:
                    der = pkcs1_der(base64.b64decode("".join(match.group(2).split())))
                except ValueError:
                    continue
                self.keys[key_fingerprint(der)] = base64.b64encode(der).decode()

    def get_public_keys(self, start: datetime, end: datetime) -> dict[str, str]:
        return dict(self.keys)


# -- chain heads ---------------------------------------------------------------------------


def chain_head_from_item(item: Mapping[str, Any]) -> ChainHead | None:
    """A chain-head item (DynamoDB attributes already plain, or the exported JSON) -> ChainHead."""

    def pick(*names: str) -> Any:
        for name in names:
            if item.get(name) not in (None, ""):
                return item[name]
        return None

    key = pick("digestKey", "latestDigestKey", "key", "digestS3Object", "lastDigestKey")
    bucket = pick("bucket", "digestBucket", "digestS3Bucket", "s3Bucket")
    end = pick("endTime", "digestEndTime", "latestEndTime", "end_time")
    if not (key and bucket and end):
        return None
    try:
        end_time = parse_date(str(end))
    except ValueError:
        return None
    sequence = pick("sequence", "seq")
    stops_raw = pick("stops", "stoppedAt", "stopTimes") or []
    stops = []
    for value in stops_raw if isinstance(stops_raw, list) else [stops_raw]:
        try:
            stops.append(parse_date(str(value)))
        except ValueError:
            continue
    return ChainHead(
        bucket=str(bucket),
        key=str(key),
        end_time=end_time,
        signature=_optional(pick("signature", "digestSignature")),
        sha256=_optional(pick("sha256", "digestSha256", "hash", "hashValue")),
        sequence=int(sequence) if sequence is not None else None,
        stops=tuple(stops),
    )


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _head_matches(item: Mapping[str, Any], trail_arn: str, target: TrailTarget) -> bool:
    if str(item.get("kind") or "regular") != "regular":
        return False
    trail = str(item.get("trailArn") or item.get("trail") or item.get("trailName") or "")
    if trail and trail not in (trail_arn, target.trail_name):
        return False
    account = str(item.get("accountId") or item.get("account") or "")
    if account and account != target.account_id:
        return False
    region = str(item.get("region") or item.get("sourceRegion") or "")
    if region and region != target.source_region:
        return False
    key = str(item.get("digestKey") or item.get("latestDigestKey") or item.get("key") or "")
    return not key or key.startswith(target.digest_prefix() + "/")


def select_chain_head(items: Iterable[Mapping[str, Any]], trail_arn: str, target: TrailTarget) -> ChainHead | None:
    for item in items:
        if _head_matches(item, trail_arn, target):
            head = chain_head_from_item(item)
            if head is not None:
                return head
    return None


def _dynamodb_items(session: Any, table: str, region: str | None, trail_name: str) -> list[dict[str, Any]]:
    """The trail's chain-head items: partition ``DIGESTCHAIN#<trail name>`` of the ledger table."""
    from boto3.dynamodb.types import TypeDeserializer

    client = session.client("dynamodb", region_name=region)
    deserializer = TypeDeserializer()
    items = []
    pages = client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{CHAIN_PARTITION}{trail_name}"}},
        ConsistentRead=True,
    )
    for page in pages:
        for raw in page.get("Items", []):
            items.append({name: _plain(deserializer.deserialize(value)) for name, value in raw.items()})
    return items


def _plain(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple | set):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- output --------------------------------------------------------------------------------


class Reporter:
    """The AWS CLI's _write_status / summary, byte for byte, plus an optional progress line."""

    def __init__(self, out: TextIO, err: TextIO, verbose: bool, progress: bool) -> None:
        self.out, self.err, self.verbose = out, err, verbose
        self._double_space = True
        self._progress = progress
        self._progress_shown = False
        self._last_progress = 0.0

    def status(self, message: str, is_error: bool = False) -> None:
        self._clear_progress()
        if is_error:
            self.err.write(f"{message}\n\n" if self._double_space else f"\n{message}\n\n")
            self.err.flush()
            self._double_space = True
        elif self.verbose:
            self._double_space = False
            self.out.write(f"{message}\n")

    def progress(self, text: str, force: bool = False) -> None:
        if not self._progress:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < 0.2:
            return
        self._last_progress = now
        self.out.flush()
        self.err.write(f"\r\x1b[K{text}")
        self.err.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._progress_shown = False

    def finish_progress(self) -> None:
        self._clear_progress()

    @property
    def double_space(self) -> bool:
        return self._double_space


@dataclass
class Counts:
    valid_digests: int = 0
    invalid_digests: int = 0
    valid_backfill: int = 0
    invalid_backfill: int = 0
    valid_logs: int = 0
    invalid_logs: int = 0
    compressed_bytes: int = 0
    inflated_bytes: int = 0
    found_start: datetime | None = None
    found_end: datetime | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.invalid_digests or self.invalid_backfill or self.invalid_logs or self.findings)


# -- the command ---------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """dateutil's parser, then the zone *replaced* by UTC (the CLI's normalize_date)."""
    from dateutil import parser

    try:
        moment: datetime = parser.parse(text)
        return moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise Abort(f"Unable to parse date value: {text}") from None


def run(options: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return _Validation(options, out, err).run()
    except Abort as error:
        out.flush()
        err.write(f"\n{error}\n")
        return 255
    except Exception as error:  # the AWS CLI's top level: any other error aborts with rc 255
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(error, BotoCoreError | ClientError | NoPublicKeysError | OSError):
            raise
        out.flush()
        err.write(f"\n{error}\n")
        return 255


class _Validation:
    def __init__(self, options: Options, out: TextIO, err: TextIO) -> None:
        self.options = options
        self.out = out
        self.err = err
        progress = options.progress or (hasattr(err, "isatty") and err.isatty())
        self.reporter = Reporter(out, err, options.verbose, progress)
        self.counts = Counts()
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
        return self._session

    def run(self) -> int:
        o = self.options
        if not _ARN.match(o.trail_arn):
            raise Abort(f"Invalid trail ARN provided: {o.trail_arn}")
        self.start = parse_time(o.start_time)
        self.end = parse_time(o.end_time) if o.end_time else datetime.now(UTC)
        if self.start > self.end:
            raise Abort("Invalid time range specified: start-time must occur before end-time")
        home_region = o.trail_arn.split(":")[3]
        trail_name = o.trail_arn.split("/")[-1]
        bucket, prefix, organization_id = o.s3_bucket, o.s3_prefix, None
        workers = max(1, o.workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
            if o.directory is not None:
                source_region = o.region or home_region
                if bucket is None:
                    bucket = self._bucket_of_directory(o.directory)
                store: Any = DirectoryStore(o.directory, bucket)
                digest_store: Any = store
            else:
                source_region = o.region or self.session.region_name or home_region
                if bucket is None:
                    trail = self._describe_trail(home_region)
                    bucket = str(trail["S3BucketName"])
                    prefix = trail.get("S3KeyPrefix") or None
                    if trail.get("IsOrganizationTrail"):
                        if not o.account_id:
                            raise Abort("Missing required parameter for organization trail: '--account-id'")
                        organizations = self.session.client("organizations", region_name=o.region)
                        organization_id = organizations.describe_organization()["Organization"]["Id"]
                store = S3Store(self.session, o.region or self.session.region_name, pool_size=workers + 4)
                digest_store = PrefetchingStore(store, ThreadPoolExecutor(max_workers=4))
            account_id = o.account_id or o.trail_arn.split(":")[4]
            self.target = TrailTarget(
                bucket=bucket,
                prefix=prefix,
                account_id=account_id,
                trail_name=trail_name,
                home_region=home_region,
                source_region=source_region,
                organization_id=organization_id,
            )
            self.store = store
            keys = self._public_keys(home_region)
            self.record = ChainRecord()
            traverser = DigestTraverser(digest_store, self.target, keys, record=self.record)
            self.out.write(
                f"Validating log files for trail {o.trail_arn} "
                f"between {display(self.start)} and {display(self.end)}\n\n"
            )
            self._started = time.monotonic()
            self._walk(traverser, pool, backfill=False)
            self._walk(traverser, pool, backfill=True)
            self.reporter.finish_progress()
            if o.opentrail_checks:
                self.counts.findings = self._findings()
            self._summary()
            if isinstance(digest_store, PrefetchingStore):
                digest_store._pool.shutdown(wait=False, cancel_futures=True)
        return 1 if self.counts.failed else 0

    # -- set-up

    def _bucket_of_directory(self, directory: Path) -> str:
        """--dir without --s3-bucket: the bucket named by the export manifest or the digests themselves."""
        manifest = directory / "export.json"
        if manifest.is_file():
            try:
                bucket = json.loads(manifest.read_text(encoding="utf-8")).get("bucket")
            except ValueError:
                bucket = None
            if bucket:
                return str(bucket)
        for path in sorted(directory.rglob("*_CloudTrail-Digest_*" + METADATA_SUFFIX))[:1]:
            body = path.with_name(path.name[: -len(METADATA_SUFFIX)])
            try:
                import gzip

                return str(json.loads(gzip.decompress(body.read_bytes()))["digestS3Bucket"])
            except (OSError, ValueError, KeyError, TypeError):
                break
        raise Abort(f"Cannot tell which bucket {directory} is a copy of: give --s3-bucket")

    def _describe_trail(self, home_region: str) -> Mapping[str, Any]:
        client = self.session.client(
            "cloudtrail", region_name=self.options.region, endpoint_url=self.options.endpoint_url
        )
        for trail in client.describe_trails().get("trailList", []):
            if trail.get("TrailARN") == self.options.trail_arn:
                return dict(trail)
        raise Abort(f"A trail could not be found for {self.options.trail_arn}")

    def _public_keys(self, home_region: str) -> Any:
        o = self.options
        if o.public_keys is not None:
            return PemKeys(o.public_keys)
        if o.directory is not None and (o.directory / PUBLIC_KEYS_DIR).is_dir():
            return PemKeys(o.directory / PUBLIC_KEYS_DIR)
        if o.directory is not None and o.endpoint_url is None:
            return PemKeys(o.directory / PUBLIC_KEYS_DIR)  # none there: "No public keys found ..."
        return CloudTrailKeys(self.session.client("cloudtrail", region_name=o.region, endpoint_url=o.endpoint_url))

    # -- traversal and log files, in the CLI's order

    def _walk(self, traverser: DigestTraverser, pool: ThreadPoolExecutor, *, backfill: bool) -> None:
        pending: deque[tuple[str, bool] | Future[LogCheck]] = deque()
        in_flight = 0
        limit = max(4, self.options.workers * 4)

        def drain(block: bool) -> None:
            nonlocal in_flight
            while pending:
                head = pending[0]
                if isinstance(head, Future):
                    if not block and not head.done():
                        return
                    self._log_result(head.result())
                    in_flight -= 1
                else:
                    self.reporter.status(head[0], head[1])
                pending.popleft()

        for event in traverser.traverse(self.start, self.end, backfill=backfill):
            if isinstance(event, ValidDigest):
                self._track(event.data)
                if backfill:
                    self.counts.valid_backfill += 1
                else:
                    self.counts.valid_digests += 1
                pending.append((event.line, False))
                for log in event.data["logFiles"] or []:
                    pending.append(pool.submit(self._check_log, log))
                    in_flight += 1
                    while in_flight > limit:
                        drain(block=False)
                        if in_flight > limit:
                            oldest = next(item for item in pending if isinstance(item, Future))
                            oldest.exception()  # wait for it
            elif isinstance(event, DigestProblem):
                if event.backfill:
                    self.counts.invalid_backfill += 1
                else:
                    self.counts.invalid_digests += 1
                pending.append((event.line, True))
            else:
                pending.append((event.line, True))
            drain(block=False)
        drain(block=True)

    def _check_log(self, log: Mapping[str, Any]) -> LogCheck:
        bucket, key = str(log["s3Bucket"]), str(log["s3Object"])
        try:
            result = hash_log_stream(self.store.chunks(bucket, key), str(log.get("hashValue")))
        except ObjectNotFound:
            return LogCheck(bucket, key, "not found")
        except Exception as error:
            from botocore.exceptions import ClientError

            if isinstance(error, ClientError):
                raise  # the CLI aborts on any S3 error other than NoSuchKey
            return LogCheck(bucket, key, "invalid format")
        return LogCheck(bucket, key, result.outcome, result.compressed_bytes, result.inflated_bytes)

    def _log_result(self, check: LogCheck) -> None:
        c = self.counts
        c.compressed_bytes += check.compressed_bytes
        c.inflated_bytes += check.inflated_bytes
        if check.valid:
            c.valid_logs += 1
        else:
            c.invalid_logs += 1
        self.reporter.status(check.line, not check.valid)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self.reporter.progress(
            f"validate-logs: {c.valid_digests + c.invalid_digests + c.valid_backfill + c.invalid_backfill} digests, "
            f"{c.valid_logs + c.invalid_logs} log files, {c.compressed_bytes / 1e6:.1f} MB "
            f"({c.compressed_bytes / 1e6 / elapsed:.1f} MB/s), {c.invalid_digests + c.invalid_logs} invalid"
        )

    def _track(self, data: Mapping[str, Any]) -> None:
        c = self.counts
        earliest = max(parse_date(str(data["digestStartTime"])), self.start)
        if c.found_start is None or earliest < c.found_start:
            c.found_start = earliest
        latest = min(parse_date(str(data["digestEndTime"])), self.end)
        if c.found_end is None or latest > c.found_end:
            c.found_end = latest

    # -- OpenTrail checks

    def _chain_head(self) -> tuple[ChainHead | None, str]:
        o = self.options
        if o.chain_head_table:
            region = o.region or self.session.region_name
            items = _dynamodb_items(self.session, o.chain_head_table, region, self.target.trail_name)
            head = select_chain_head(items, o.trail_arn, self.target)
            return head, f"DynamoDB table {o.chain_head_table}"
        if o.directory is not None and (o.directory / CHAIN_HEADS_FILE).is_file():
            document = json.loads((o.directory / CHAIN_HEADS_FILE).read_text(encoding="utf-8"))
            items = document if isinstance(document, list) else document.get("chainHeads", [])
            head = select_chain_head(items, o.trail_arn, self.target)
            return head, str(o.directory / CHAIN_HEADS_FILE)
        return None, ""

    def _findings(self) -> list[Finding]:
        head, self._head_source = self._chain_head()
        self._head = head
        bucket = self.target.bucket
        log_keys = list(
            log_keys_in_range(lambda prefix: self.store.list_keys(bucket, prefix), self.target, self.start, self.end)
        )
        return opentrail_findings(
            self.record, self.target, start=self.start, end=self.end, head=head, log_keys=log_keys
        )

    # -- summary

    def _summary(self) -> None:
        c, w = self.counts, self.out.write
        if not self.reporter.double_space:
            w("\n")
        w(f"Results requested for {display(self.start)} to {display(self.end)}\n")
        total_valid = c.valid_digests + c.valid_backfill
        total_invalid = c.invalid_digests + c.invalid_backfill
        if not total_valid and not total_invalid:
            w("No digests found\n")
        else:
            if c.found_start is None or c.found_end is None:
                w("No valid digests found in range\n")
            else:
                w(f"Results found for {display(c.found_start)} to {display(c.found_end)}:\n")
            self._ratio(c.valid_digests, c.invalid_digests, "digest")
            self._ratio(c.valid_backfill, c.invalid_backfill, "backfill digest")
            self._ratio(c.valid_logs, c.invalid_logs, "log")
            w("\n")
        if self.options.opentrail_checks:
            self._opentrail_section()
        self.out.flush()

    def _ratio(self, valid: int, invalid: int, name: str) -> None:
        total = valid + invalid
        if total > 0:
            self.out.write(f"\n{valid}/{total} {name} files valid")
            if invalid > 0:
                self.out.write(f", {invalid}/{total} {name} files INVALID")

    def _opentrail_section(self) -> None:
        w = self.out.write
        w("\nOpenTrail checks:\n")
        if self._head is not None:
            sequence = f", sequence {self._head.sequence}" if self._head.sequence is not None else ""
            w(f"chain head: s3://{self._head.bucket}/{self._head.key}{sequence} (from {self._head_source})\n")
        elif self._head_source:
            w(f"chain head: none recorded for this trail and region in {self._head_source}\n")
        else:
            w("chain head: not checked (give --chain-head-table, or a directory copy with chain-heads.json)\n")
        for finding in self.counts.findings:
            w(f"{finding.line}\n")
        count = len(self.counts.findings)
        if count:
            w(f"{count} {'problem' if count == 1 else 'problems'} found beyond the AWS CLI's checks\n")
        else:
            w(
                "no problems found beyond the AWS CLI's checks "
                "(previous-digest links, hour coverage, chain head, unlisted log files)\n"
            )


# -- command line ----------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate-logs",
        help="validate log files against their signed digests (aws cloudtrail validate-logs, plus more)",
        description=(
            "Validate the digest chain and the log files of a trail, exactly as `aws cloudtrail validate-logs` "
            "(same options, output and exit codes 0/1/255), from S3 or from a directory copy of the bucket, then "
            "run OpenTrail's extra checks (previous-digest links, deleted consecutive or newest digests, unlisted "
            "log files, hours with deliveries but no digest). See docs/validate-logs.md."
        ),
    )
    parser.add_argument("--trail-arn", required=True, help="ARN of the trail to validate")
    parser.add_argument(
        "--start-time", required=True, help='log files delivered on or after this UTC time, e.g. "2015-01-08T05:21:42Z"'
    )
    parser.add_argument("--end-time", help="log files delivered on or before this UTC time (default: now)")
    parser.add_argument("--s3-bucket", help="bucket of the digests (default: DescribeTrails)")
    parser.add_argument("--s3-prefix", help="key prefix of the digests (default: DescribeTrails)")
    parser.add_argument("--account-id", help="account whose logs to validate (organization trails)")
    parser.add_argument("--verbose", action="store_true", help="also print the valid files")
    parser.add_argument("--region", help="source region scanned (default: the AWS configuration, else the trail's)")
    parser.add_argument("--endpoint-url", help="CloudTrail-compatible API for ListPublicKeys/DescribeTrails")
    parser.add_argument("--dir", type=Path, dest="directory", metavar="DIR",
                        help="validate a directory copy of the bucket (<key>, <key>.metadata.json) not S3")  # fmt: skip
    parser.add_argument("--public-keys", type=Path, metavar="DIR",
                        help="PEM public keys (default with --dir: DIR/public-keys; else ListPublicKeys)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"parallel downloads and hashes (default {DEFAULT_WORKERS})")  # fmt: skip
    parser.add_argument("--progress", action="store_true", help="progress line on stderr even when not a terminal")
    parser.add_argument("--chain-head-table", metavar="TABLE",
                        help="DynamoDB table holding the chain heads (detects deleted newest digests)")  # fmt: skip
    parser.add_argument("--no-opentrail-checks", dest="opentrail_checks", action="store_false",
                        help="only the AWS CLI's checks and output")  # fmt: skip
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args: Any) -> int:
    return run(
        Options(
            trail_arn=args.trail_arn,
            start_time=args.start_time,
            end_time=args.end_time,
            s3_bucket=args.s3_bucket,
            s3_prefix=args.s3_prefix,
            account_id=args.account_id,
            verbose=args.verbose,
            region=args.region,
            endpoint_url=args.endpoint_url,
            directory=args.directory,
            public_keys=args.public_keys,
            workers=max(1, args.workers),
            progress=args.progress,
            chain_head_table=args.chain_head_table,
            opentrail_checks=args.opentrail_checks,
        )
    )
