"""Batch planning for the batcher: pure, no I/O beyond the log file spool.

A *batch* is a set of bundles (SQS messages) delivered together under one intent in the
delivery ledger (see docs/batcher.md). Planning turns the bundles' record lines into log
files:

* every line is read once (`read_bundle`): it must be a JSON object with ``eventID``,
  ``eventTime``, ``recipientAccountId`` and ``awsRegion``, otherwise the whole bundle is
  poison; the parsed record is used to ask each trail whether it selects the record and
  then dropped: only the raw line and four short fields travel on (unless the batcher asks
  to keep records, below);
* records are deduplicated by eventID within the batch (first one in bundle-id order wins);
* each selected record streams into the open `LogFileWriter` of its group
  (trail, recipientAccountId, awsRegion); a group starts a new *part* before its compressed
  size could pass ``max_file_bytes``;
* names are deterministic: ``unique_string(f"{batchId}/{trail}/{account}/{region}/{part}")``
  (``{batchId}#{attempt}`` for a re-attempt after an abort), so a retried batch can be
  recognised by its keys;
* with ``keep_records_bytes``, each planned file also carries its (line, parsed record) pairs
  in file order, so the batcher's index step (event history, Insights, usage) does not read
  and parse the files again; only while the kept lines stay under that many bytes, otherwise
  no file carries them (the index step then reads the files, as a rebuild from S3 does).

This module also owns the shapes the batcher writes to the delivery ledger (the intent and
its files, the ledger partition and sort keys) because the digester reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple

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
_JSON: Final = json.JSONDecoder()  # what json.loads uses


def _utf8_object(line: bytes) -> bool:
    """Whether json.loads(line) decodes `line` as UTF-8 (json.detect_encoding: no BOM, and
    no NUL as second byte, when the first byte is "{")."""
    return line[:1] == b"{" and line[1:2] != b"\x00"


class PoisonRecord(ValueError):
    """A record line the batcher can never deliver; its whole bundle goes to the DLQ."""


@dataclass(frozen=True, order=True)
class FileGroup:
    """Records of one trail, account and region go to the same log files."""

    trail: str
    account: str
    region: str


class SelectedLine(NamedTuple):  # a tuple: built for every record, cheaper than a frozen dataclass
    """One record line with what planning needs; the parsed record only when asked for."""

    line: bytes
    event_id: str
    event_time: str
    account: str
    region: str
    trails: tuple[str, ...]  # names of the trails that select the record, in trail order
    record: Mapping[str, Any] | None = None  # read_line(keep_record=True)


def read_line(line: bytes, trails: Sequence[Trail], *, keep_record: bool = False) -> SelectedLine:
    """Check one record line and find the trails that select it; raises PoisonRecord.
    `keep_record`: the parsed record travels on too (`SelectedLine.record`)."""
    try:
        # json.loads(line) without its encoding sniffing, which says UTF-8 for such a line
        record = _JSON.decode(line.decode("utf-8", "surrogatepass")) if _utf8_object(line) else json.loads(line)
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
    return SelectedLine(line, event_id, event_time, account, region, selected, record if keep_record else None)


def read_bundle(lines: Iterable[bytes], trails: Sequence[Trail], *, keep_records: bool = False) -> list[SelectedLine]:
    """`read_line` for every line of a bundle; a bad line makes the bundle poison."""
    selected = []
    for number, line in enumerate(lines, start=1):
        try:
            selected.append(read_line(line, trails, keep_record=keep_records))
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
    # The file's records as (line, parsed record), in file order; None when not kept
    # (`BatchPlan(keep_records_bytes=...)`).
    records: list[tuple[bytes, Mapping[str, Any]]] | None = None


@dataclass
class _OpenPart:
    writer: LogFileWriter
    part: int
    # Upper bound of the uncompressed bytes deflate has taken but not yet emitted.
    pending_raw: int
    seen_compressed: int
    group: FileGroup
    records: list[tuple[bytes, Mapping[str, Any]]] = field(default_factory=list)  # kept records, file order


class BatchPlan:
    """Streams the bundles of one batch into per-group log files, split at `max_file_bytes`.

    A file is never larger than `max_file_bytes` compressed, except a file holding a single
    record that alone compresses to more (a log file holds at least one record).

    `keep_records_bytes` > 0: every file also keeps its records (lines read with
    ``keep_records=True``) as long as the batch's kept lines stay within that many bytes
    (a parsed record takes ~4× its line in memory); past it, no file keeps any.
    """

    def __init__(
        self,
        trails: Sequence[Trail],
        *,
        max_file_bytes: int,
        max_files: int = MAX_FILES_PER_BATCH,
        writer_factory: Callable[[], LogFileWriter] = LogFileWriter,
        keep_records_bytes: int = 0,
    ) -> None:
        self.trails = tuple(trails)
        self.keep_records_bytes = keep_records_bytes
        self._keeping = keep_records_bytes > 0
        self._kept_bytes = 0
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._writer_factory = writer_factory
        # (trail, account, region) → its open part (plain tuples: cheaper to hash than FileGroup)
        self._open: dict[tuple[str, str, str], _OpenPart] = {}
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
        groups = {(t, s.account, s.region) for s in lines for t in s.trails}
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
            if self._keeping:
                self._kept_bytes += len(selected.line)
                if selected.record is None or self._kept_bytes > self.keep_records_bytes:
                    self._drop_records()
            for trail in selected.trails:
                self._write((trail, selected.account, selected.region), selected)

    def _drop_records(self) -> None:
        """Stop keeping records (over the budget, or a line without its record): no file keeps any."""
        self._keeping = False
        for current in self._open.values():
            current.records = []
        self._done = [replace(done, records=None) for done in self._done]

    def _write(self, group: tuple[str, str, str], selected: SelectedLine) -> None:
        current = self._open.get(group)
        added = len(selected.line) + 1  # with the comma before it
        if current is not None:
            worst = current.seen_compressed + deflate_bound(current.pending_raw + added + 2) + _TAIL_BYTES
            if worst > self.max_file_bytes:
                self._done.append(self._planned(current))
                current = None
                part = self._open.pop(group).part + 1
            else:
                part = current.part
        else:
            part = 0
        if current is None:
            writer = self._writer_factory()
            current = _OpenPart(
                writer,
                part,
                pending_raw=len(b'{"Records":['),
                seen_compressed=writer.compressed_bytes,
                group=FileGroup(*group),
            )
            self._open[group] = current
        current.writer.add(selected.line, selected.event_time)
        if self._keeping:
            assert selected.record is not None  # checked in `add`
            current.records.append((selected.line, selected.record))
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
        for current in self._open.values():
            self._done.append(self._planned(current))
        self._open.clear()
        self._event_ids.clear()
        return sorted(self._done, key=lambda f: (f.group, f.part))

    def _planned(self, current: _OpenPart) -> PlannedFile:
        records = current.records if self._keeping else None
        return PlannedFile(current.group, current.part, current.writer.finish(), records)


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
