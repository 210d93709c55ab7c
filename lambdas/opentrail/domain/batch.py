"""Batch planning for the batcher: pure, no I/O beyond the log file spool.

A *batch* is a set of bundles (SQS messages) delivered together under one intent in the
delivery ledger (see docs/batcher.md). Planning turns the bundles' record lines into log
files:

* every line is read once (`read_bundle`): it must be a JSON object with ``eventID``,
  ``eventTime``, ``recipientAccountId`` and ``awsRegion``, otherwise the whole bundle is
  poison; the parsed record is used to ask each trail whether it selects the record and
  then dropped: only the raw line and four short fields travel on;
* records are deduplicated by eventID within the batch (first one in bundle-id order wins);
* each selected record streams into the open `LogFileWriter` of its group
  (trail, recipientAccountId, awsRegion); a group starts a new *part* before its compressed
  size could pass ``max_file_bytes``;
* names are deterministic: ``unique_string(f"{batchId}/{trail}/{account}/{region}/{part}")``
  (``{batchId}#{attempt}`` for a re-attempt after an abort), so a retried batch can be
  recognised by its keys.

This module also owns the shapes the batcher writes to the delivery ledger (the intent and
its files, the ledger partition and sort keys) because the digester reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from opentrail.domain.log_file import LogFile, LogFileWriter, log_file_key, unique_string
from opentrail.domain.trail import Trail

# An intent's item must stay well under DynamoDB's 400 KB item limit (~400 bytes a file).
MAX_FILES_PER_BATCH: Final = 400
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z0-9-]{2,32}$")
# Bytes a file's tail can add beyond what deflate still holds: "]}" plus the gzip trailer.
_TAIL_BYTES: Final = 2 + 8
_LOOKAHEAD_SLACK: Final = 1024

IntentState = Literal["PENDING", "DONE", "ABORTED"]


class PoisonRecord(ValueError):
    """A record line the batcher can never deliver; its whole bundle goes to the DLQ."""


@dataclass(frozen=True, order=True)
class FileGroup:
    """Records of one trail, account and region go to the same log files."""

    trail: str
    account: str
    region: str


@dataclass(frozen=True)
class SelectedLine:
    """One record line with what planning needs; the parsed record is not kept."""

    line: bytes
    event_id: str
    event_time: str
    account: str
    region: str
    trails: tuple[str, ...]  # names of the trails that select the record, in trail order


def read_line(line: bytes, trails: Sequence[Trail]) -> SelectedLine:
    """Check one record line and find the trails that select it; raises PoisonRecord."""
    try:
        record = json.loads(line)
    except ValueError:
        raise PoisonRecord("is not JSON") from None
    if not isinstance(record, dict):
        raise PoisonRecord("is not a JSON object")
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise PoisonRecord("eventID: is required and must be a non-empty string")
    event_time = record.get("eventTime")
    if not isinstance(event_time, str) or not event_time:
        raise PoisonRecord("eventTime: is required and must be a string")
    account = record.get("recipientAccountId")
    if not isinstance(account, str) or not _ACCOUNT_ID.match(account):
        raise PoisonRecord("recipientAccountId: must be a 12-digit account id")
    region = record.get("awsRegion")
    if not isinstance(region, str) or not _REGION.match(region):
        raise PoisonRecord("awsRegion: must be a region name such as us-east-1")
    selected = tuple(trail.name for trail in trails if trail.selects(record))
    return SelectedLine(line, event_id, event_time, account, region, selected)


def read_bundle(lines: Iterable[bytes], trails: Sequence[Trail]) -> list[SelectedLine]:
    """`read_line` for every line of a bundle; a bad line makes the bundle poison."""
    selected = []
    for number, line in enumerate(lines, start=1):
        try:
            selected.append(read_line(line, trails))
        except PoisonRecord as error:
            raise PoisonRecord(f"record {number}: {error}") from None
    return selected


def deflate_bound(raw_bytes: int) -> int:
    """Most bytes deflate can emit for `raw_bytes` of input (zlib's deflateBound, rounded up)."""
    return raw_bytes + (raw_bytes >> 12) + (raw_bytes >> 14) + (raw_bytes >> 25) + 13


@dataclass(frozen=True)
class PlannedFile:
    """A finished log file of a batch, before it has a key."""

    group: FileGroup
    part: int
    log_file: LogFile


@dataclass
class _OpenPart:
    writer: LogFileWriter
    part: int
    # Upper bound of the uncompressed bytes deflate has taken but not yet emitted.
    pending_raw: int
    seen_compressed: int


class BatchPlan:
    """Streams the bundles of one batch into per-group log files, split at `max_file_bytes`.

    A file is never larger than `max_file_bytes` compressed, except a file holding a single
    record that alone compresses to more (a log file holds at least one record).
    """

    def __init__(
        self,
        trails: Sequence[Trail],
        *,
        max_file_bytes: int,
        max_files: int = MAX_FILES_PER_BATCH,
        writer_factory: Callable[[], LogFileWriter] = LogFileWriter,
    ) -> None:
        self.trails = tuple(trails)
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._writer_factory = writer_factory
        self._open: dict[FileGroup, _OpenPart] = {}
        self._done: list[PlannedFile] = []
        self._event_ids: set[str] = set()
        self.records = 0  # distinct records selected by at least one trail
        self.duplicates = 0  # records dropped because their eventID was already in the batch
        self.unselected = 0  # records no trail selects

    @property
    def file_count(self) -> int:
        return len(self._done) + len(self._open)

    def fits(self, lines: Iterable[SelectedLine]) -> bool:
        """Whether adding a bundle keeps the batch within `max_files` files (always true when empty)."""
        if self.file_count == 0:
            return True
        groups = {FileGroup(t, s.account, s.region) for s in lines for t in s.trails}
        return self.file_count + len(groups - self._open.keys()) <= self.max_files

    def add(self, lines: Iterable[SelectedLine]) -> None:
        for selected in lines:
            if selected.event_id in self._event_ids:
                self.duplicates += 1
                continue
            self._event_ids.add(selected.event_id)
            if not selected.trails:
                self.unselected += 1
                continue
            self.records += 1
            for trail in selected.trails:
                self._write(FileGroup(trail, selected.account, selected.region), selected)

    def _write(self, group: FileGroup, selected: SelectedLine) -> None:
        current = self._open.get(group)
        added = len(selected.line) + 1  # with the comma before it
        if current is not None:
            worst = current.seen_compressed + deflate_bound(current.pending_raw + added + 2) + _TAIL_BYTES
            if worst > self.max_file_bytes:
                self._done.append(PlannedFile(group, current.part, current.writer.finish()))
                current = None
                part = self._open.pop(group).part + 1
            else:
                part = current.part
        else:
            part = 0
        if current is None:
            writer = self._writer_factory()
            current = _OpenPart(writer, part, pending_raw=len(b'{"Records":['), seen_compressed=writer.compressed_bytes)
            self._open[group] = current
        current.writer.add(selected.line, selected.event_time)
        compressed = current.writer.compressed_bytes
        if compressed != current.seen_compressed:
            # deflate emitted a block: what it still holds is at most this line plus the
            # look-ahead (262 bytes in zlib) it kept from the previous input.
            current.seen_compressed = compressed
            current.pending_raw = added + _LOOKAHEAD_SLACK
        else:
            current.pending_raw += added

    def finish(self) -> list[PlannedFile]:
        """Close every open file; files come sorted by (trail, account, region, part)."""
        for group, current in self._open.items():
            self._done.append(PlannedFile(group, current.part, current.writer.finish()))
        self._open.clear()
        self._event_ids.clear()
        return sorted(self._done, key=lambda f: (f.group, f.part))


def batch_id(bundle_ids: Iterable[str]) -> str:
    """The batch's id: SHA-256 (hex) of its sorted, distinct bundle ids."""
    return hashlib.sha256("\n".join(sorted(set(bundle_ids))).encode()).hexdigest()


def file_seed(batch: str, attempt: int, group: FileGroup, part: int) -> str:
    owner = batch if attempt == 0 else f"{batch}#{attempt}"
    return f"{owner}/{group.trail}/{group.account}/{group.region}/{part}"


def iso_time(moment: datetime) -> str:
    """UTC, second precision, literal Z (the ledger's time format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeliveredFile:
    """One log file of an intent, and of the delivery ledger once the intent is DONE."""

    bucket: str
    key: str
    sha256: str  # lowercase hex of the uncompressed body
    record_count: int
    oldest_event_time: str
    newest_event_time: str
    trail: str
    account: str
    region: str
    compressed_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "sha256": self.sha256,
            "recordCount": self.record_count,
            "oldestEventTime": self.oldest_event_time,
            "newestEventTime": self.newest_event_time,
            "trail": self.trail,
            "account": self.account,
            "region": self.region,
            "compressedBytes": self.compressed_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeliveredFile:
        return cls(
            bucket=str(data["bucket"]),
            key=str(data["key"]),
            sha256=str(data["sha256"]),
            record_count=int(data["recordCount"]),
            oldest_event_time=str(data["oldestEventTime"]),
            newest_event_time=str(data["newestEventTime"]),
            trail=str(data["trail"]),
            account=str(data["account"]),
            region=str(data["region"]),
            compressed_bytes=int(data["compressedBytes"]),
        )


def name_files(
    planned: Sequence[PlannedFile],
    *,
    batch: str,
    attempt: int,
    delivered_at: datetime,
    bucket: str,
    trails: Sequence[Trail],
) -> list[DeliveredFile]:
    """Give each planned file its CloudTrail key (spec §2.1) under its trail's prefix."""
    prefixes = {trail.name: trail.s3_key_prefix for trail in trails}
    named = []
    for item in planned:
        group = item.group
        key = log_file_key(
            account_id=group.account,
            region=group.region,
            delivered_at=delivered_at,
            unique=unique_string(file_seed(batch, attempt, group, item.part)),
            prefix=prefixes[group.trail],
        )
        log = item.log_file
        named.append(
            DeliveredFile(
                bucket=bucket,
                key=key,
                sha256=log.sha256,
                record_count=log.record_count,
                oldest_event_time=log.oldest_event_time,
                newest_event_time=log.newest_event_time,
                trail=group.trail,
                account=group.account,
                region=group.region,
                compressed_bytes=log.compressed_bytes,
            )
        )
    return named


@dataclass(frozen=True)
class Intent:
    """What a batch is about to deliver, written before any log file (state PENDING)."""

    batch_id: str
    attempt: int
    state: IntentState
    files: tuple[DeliveredFile, ...]
    bundle_ids: tuple[str, ...]
    delivered_at: datetime  # also the intent's creation time
    lease_until: datetime  # the owner cannot be running after this (its Lambda deadline)
    expires_at: int  # epoch seconds (DynamoDB TTL)

    def ledger_entries(self, *, ttl_days: int) -> list[LedgerEntry]:
        return [LedgerEntry.of(file, self, ttl_days=ttl_days) for file in self.files]


def ledger_partition(trail: str, delivered_at: datetime) -> str:
    """``LEDGER#<trail>#<YYYYMMDDHH>`` of the delivery hour (UTC): one Query lists a trail's
    files of an hour across accounts and regions (what the digester reads)."""
    return f"LEDGER#{trail}#{delivered_at.astimezone(UTC).strftime('%Y%m%d%H')}"


def ledger_sort_key(account: str, region: str, delivered_at: datetime, key: str) -> str:
    """``<account>#<region>#<deliveredAt YYYY-MM-DDTHH:MM:SSZ>#<key>``."""
    return f"{account}#{region}#{iso_time(delivered_at)}#{key}"


def parse_ledger_sort_key(sk: str) -> tuple[str, str, datetime, str]:
    """(account, region, deliveredAt, key) of a ledger sort key."""
    account, region, delivered, key = sk.split("#", 3)
    return account, region, parse_iso_time(delivered), key


@dataclass(frozen=True)
class LedgerEntry:
    """One delivery-ledger item: a log file the digester lists for its hour.

    The ledger adapter adds ``recordedAt`` (when the item was first written; kept on
    re-puts) and the digester adds ``digestKey`` (the digest that lists the file).
    """

    pk: str
    sk: str
    file: DeliveredFile
    delivery_time: str
    batch_id: str
    expires_at: int

    @classmethod
    def of(cls, file: DeliveredFile, intent: Intent, *, ttl_days: int) -> LedgerEntry:
        return cls(
            pk=ledger_partition(file.trail, intent.delivered_at),
            sk=ledger_sort_key(file.account, file.region, intent.delivered_at, file.key),
            file=file,
            delivery_time=iso_time(intent.delivered_at),
            batch_id=intent.batch_id,
            expires_at=int(intent.delivered_at.timestamp()) + ttl_days * 86_400,
        )

    def to_item(self) -> dict[str, Any]:
        return {
            "pk": self.pk,
            "sk": self.sk,
            "bucket": self.file.bucket,
            "key": self.file.key,
            "account": self.file.account,
            "region": self.file.region,
            "sha256": self.file.sha256,
            "recordCount": self.file.record_count,
            "oldestEventTime": self.file.oldest_event_time,
            "newestEventTime": self.file.newest_event_time,
            "compressedBytes": self.file.compressed_bytes,
            "deliveryTime": self.delivery_time,
            "batchId": self.batch_id,
            "expiresAt": self.expires_at,
        }
