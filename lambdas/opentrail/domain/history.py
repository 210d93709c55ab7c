"""The event history index (docs/history.md): schema, item building, refs, size arithmetic,
and the pure half of LookupEvents query planning. No I/O: `opentrail.adapters.history`
talks to DynamoDB.

One table (``pk``/``sk``, TTL ``expiresAt``), no secondary indexes, two kinds of item:

* **record pages** ``P#<batch ref><page>`` / ``P``: attribute ``d`` = zlib of up to
  `PAGE_MAX_RECORDS` record lines (compact JSON, ``\\n``-separated), as captured; the
  records a lookup returns come from here;
* **postings** ``<region>#<code>#<value>`` / ``<YYYYMMDDHHmm><batch ref><chunk>``:
  attribute ``r`` = packed refs (6 bytes each) to the records of that minute in that
  batch that have this attribute value. ``code`` is one letter per LookupEvents key
  (`KEY_CODES`) or ``*`` for the time-only list; Insights events use their own key space
  (``i`` before the code), so ordinary lookups never see them.

A ref is 48 bits: second in the minute (6) | order hash of the eventID (16) | page (14) |
index in the page (12). Ordering refs as integers orders them by (second, hash), the
index's order: newest first is (eventTime, `order_hash(eventID)`, eventID) descending.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from opentrail.domain.log_file import unique_string
from opentrail.domain.record import RecordError, parse_event_time

# LookupEvents attribute key → posting code (short: it is part of every partition key).
KEY_CODES: Final[dict[str, str]] = {
    "EventId": "I",
    "EventName": "E",
    "ReadOnly": "R",
    "Username": "U",
    "ResourceType": "T",
    "ResourceName": "N",
    "EventSource": "S",
    "AccessKeyId": "A",
}
TIME_CODE: Final = "*"
INSIGHT_PREFIX: Final = "i"
# Keys CloudTrail indexes for Insights events (spec §5); the others are not posted for them.
INSIGHT_KEYS: Final = ("EventId", "EventName", "EventSource")
PAGE_CODE: Final = "P"
MARKER_CODE: Final = "B"

TTL_ATTRIBUTE: Final = "expiresAt"
REFS_ATTRIBUTE: Final = "r"
DATA_ATTRIBUTE: Final = "d"

DEFAULT_RETENTION_DAYS: Final = 90
# A value longer than this (UTF-8 bytes) is posted under its hash: shorter keys, smaller items.
MAX_VALUE_BYTES: Final = 96
# A page closes at this many raw bytes or records (whichever first); the zlib of one page
# is then ~15-35 KB for CloudTrail records, and always < 400 KB (one record is <= 256 KB).
PAGE_RAW_BYTES: Final = 128 * 1024
PAGE_MAX_RECORDS: Final = 512
# Refs per posting item (6 bytes each: 24 KB); longer lists go on in chunk 1, 2, ...
CHUNK_REFS: Final = 4096
BATCH_REF_CHARS: Final = 10
KB: Final = 1024

_SECOND_BITS, _HASH_BITS, _PAGE_BITS, _INDEX_BITS = 6, 16, 14, 12
MAX_PAGES: Final = 1 << _PAGE_BITS
MAX_PAGE_RECORDS: Final = 1 << _INDEX_BITS
REF_BYTES: Final = 6
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class HistoryError(ValueError):
    """A batch the index cannot hold (more pages than refs can address)."""


# -- record fields ------------------------------------------------------------------------


def is_insight(record: Mapping[str, Any]) -> bool:
    return record.get("eventCategory") == "Insight"


def is_indexed(record: Mapping[str, Any], *, data_events: bool = False) -> bool:
    """Management events (category absent or Management), Insights events always, data
    events only when `data_events`; network activity events never (CloudTrail's event
    history has none of them)."""
    category = record.get("eventCategory", "Management")
    if category in ("Management", "Insight"):
        return True
    return bool(data_events and category == "Data")


def username(record: Mapping[str, Any]) -> str | None:
    """LookupEvents' Username: ``userIdentity.userName``; for Root ``root``; for AssumedRole
    and FederatedUser (and other identities with an ARN but no userName) the name after the
    last ``/`` of ``arn`` (the session or federated user name); for AWSService/AWSAccount
    the ``invokedBy`` service; otherwise none."""
    identity = record.get("userIdentity")
    if not isinstance(identity, Mapping):
        return None
    kind = identity.get("type")
    if kind == "Root":
        return "root"
    name = identity.get("userName")
    if isinstance(name, str) and name:
        return name
    arn = identity.get("arn")
    if isinstance(arn, str) and "/" in arn:
        return arn.rsplit("/", 1)[1] or None
    invoked_by = identity.get("invokedBy")
    if isinstance(invoked_by, str) and invoked_by:
        return invoked_by
    return None


def short_resource_name(name: str) -> str:
    """The short form of a resource ARN: the resource id after the last ``/`` or ``:`` of the
    ARN's resource part (``arn:aws:s3:::bucket`` → ``bucket``, ``arn:aws:iam::1:user/a`` →
    ``a``, ``arn:aws:s3:::b/k/x.txt`` → ``x.txt``). A value that is not an ARN is itself."""
    if not name.startswith("arn:"):
        return name
    parts = name.split(":", 5)
    if len(parts) < 6 or not parts[5]:
        return name
    resource = parts[5]
    cut = max(resource.rfind("/"), resource.rfind(":"))
    short = resource[cut + 1 :]
    return short or resource


def resources(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(type, ARN or ARNPrefix) of each resource of the record, in record order."""
    found: list[tuple[str, str]] = []
    items = record.get("resources")
    if not isinstance(items, list):
        return found
    for item in items:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        arn = item.get("ARN") or item.get("ARNPrefix")
        found.append((kind if isinstance(kind, str) else "", arn if isinstance(arn, str) else ""))
    return found


def response_resources(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """LookupEvents' ``Resources``: ``[{ResourceType, ResourceName}]`` with the short name."""
    out: list[dict[str, str]] = []
    for kind, arn in resources(record):
        item: dict[str, str] = {}
        if kind:
            item["ResourceType"] = kind
        if arn:
            item["ResourceName"] = short_resource_name(arn)
        if item:
            out.append(item)
    return out


def read_only_text(record: Mapping[str, Any]) -> str | None:
    value = record.get("readOnly")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def attribute_values(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The posting values of a record per LookupEvents key (ResourceName: short names)."""
    identity = record.get("userIdentity")
    access_key = identity.get("accessKeyId") if isinstance(identity, Mapping) else None
    values: dict[str, list[str]] = {}
    singles = {
        "EventId": _text(record.get("eventID")),
        "EventName": _text(record.get("eventName")),
        "ReadOnly": read_only_text(record),
        "Username": username(record),
        "EventSource": _text(record.get("eventSource")),
        "AccessKeyId": _text(access_key),
    }
    for key, value in singles.items():
        if value is not None:
            values[key] = [value]
    listed = resources(record)
    types = list(dict.fromkeys(kind for kind, _ in listed if kind))
    names = list(dict.fromkeys(short_resource_name(arn) for _, arn in listed if arn))
    if types:
        values["ResourceType"] = types
    if names:
        values["ResourceName"] = names
    return values


def matches(record: Mapping[str, Any], key: str, value: str) -> bool:
    """Whether the record has this LookupEvents attribute value (exact, case-sensitive).
    ResourceName matches a resource's ARN or its short name."""
    if key == "ResourceName":
        return any(arn == value or short_resource_name(arn) == value for _, arn in resources(record) if arn)
    return value in attribute_values(record).get(key, [])


# -- keys -------------------------------------------------------------------------------


def value_token(key: str, value: str) -> str:
    """What a value is posted under: ResourceName by its short name; long values by hash."""
    if key == "ResourceName":
        value = short_resource_name(value)
    if len(value.encode()) > MAX_VALUE_BYTES:
        digest = hashlib.sha256(value.encode()).digest()[:16]
        return "#" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return value


def partition_key(region: str, key: str | None, value: str = "", *, insight: bool = False) -> str:
    """``<region>#<code>#<value>`` (``<region>#*`` for the time-only list; Insights: ``i``+code)."""
    prefix = INSIGHT_PREFIX if insight else ""
    if key is None:
        return f"{region}#{prefix}{TIME_CODE}"
    return f"{region}#{prefix}{KEY_CODES[key]}#{value_token(key, value)}"


def batch_ref(batch_id: str) -> str:
    """A batch's short, fixed-width name in index keys (10 base62 chars of its id)."""
    return unique_string(f"history/{batch_id}", BATCH_REF_CHARS)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    if number:
        raise HistoryError("number too large for its key width")
    return "".join(reversed(chars))


def page_partition(bref: str, page: int) -> str:
    return f"{PAGE_CODE}#{bref}{_base62(page, 3)}"


def marker_item(batch_id: str, *, expires_at: int) -> dict[str, Any]:
    """The batch's "indexed" marker (``B#<batch ref>`` / ``B``), written after its items."""
    return {"pk": f"{MARKER_CODE}#{batch_ref(batch_id)}", "sk": MARKER_CODE, TTL_ATTRIBUTE: expires_at}


def minute_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M")


def sort_key(minute: str, bref: str, chunk: int) -> str:
    return f"{minute}{bref}{_base62(chunk, 2)}"


def order_hash(event_id: str) -> int:
    """16-bit tie-break of records in the same second (part of every ref)."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:2], "big")


# -- refs -------------------------------------------------------------------------------


def pack_ref(second: int, hash16: int, page: int, index: int) -> int:
    return (((second << _HASH_BITS | hash16) << _PAGE_BITS | page) << _INDEX_BITS) | index


@dataclass(frozen=True, order=True)
class Ref:
    second: int  # 0-59 within the posting's minute
    hash16: int
    page: int
    index: int

    @classmethod
    def unpack(cls, value: int) -> Ref:
        index = value & (MAX_PAGE_RECORDS - 1)
        value >>= _INDEX_BITS
        page = value & (MAX_PAGES - 1)
        value >>= _PAGE_BITS
        return cls(value >> _HASH_BITS, value & 0xFFFF, page, index)


def encode_refs(refs: Iterable[int]) -> bytes:
    return b"".join(ref.to_bytes(REF_BYTES, "big") for ref in refs)


def decode_refs(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + REF_BYTES], "big") for i in range(0, len(data), REF_BYTES)]


# -- item size (DynamoDB's rules) ------------------------------------------------------


def _number_size(value: int) -> int:
    digits = len(str(abs(value)).rstrip("0")) or 1
    return (digits + 1) // 2 + 1


def item_size(item: Mapping[str, Any]) -> int:
    """Bytes DynamoDB counts for an item: attribute names + values (strings: UTF-8 bytes,
    binary: bytes, numbers: ~1 byte per 2 significant digits + 1)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if isinstance(value, bytes):
            size += len(value)
        elif isinstance(value, str):
            size += len(value.encode())
        elif isinstance(value, bool):
            size += 1
        elif isinstance(value, int):
            size += _number_size(value)
        else:
            raise TypeError(f"{name}: unsupported type {type(value).__name__}")
    return size


def write_units(item: Mapping[str, Any]) -> int:
    """Write units of one put: 1 per started KB of item size (at least 1)."""
    return units_for_size(item_size(item))


def units_for_size(size: int) -> int:
    return max(1, -(-size // KB))


# -- building a batch's items -------------------------------------------------------------


def iter_log_records(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The record lines of a CloudTrail log file (``gzip({"Records":[...]})``), as bytes,
    streamed from its compressed chunks (a record is decoded once to find its end)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    decoder = json.JSONDecoder()
    text = ""
    position = 0
    started = False
    pending = b""

    def feed(data: bytes) -> None:
        nonlocal text, position, pending
        data = pending + data
        # keep an incomplete UTF-8 sequence for the next chunk
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 == 0x80:
                continue
            if byte & 0x80:
                need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
                if back < need:
                    cut = len(data) - back
            break
        pending = data[cut:]
        text = text[position:] + data[:cut].decode()
        position = 0

    source = iter(chunks)
    exhausted = False
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if not started:
            head = '{"Records":['
            if len(text) - position >= len(head) or exhausted:
                if text[position : position + len(head)] != head:
                    raise ValueError("not a CloudTrail log file")
                position += len(head)
                started = True
                continue
        elif position < len(text) and text[position] == "]":
            return
        elif position < len(text):
            try:
                _, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                if exhausted:
                    raise ValueError("truncated CloudTrail log file") from None
            else:
                if end < len(text) or exhausted:
                    yield text[position:end].encode()
                    position = end
                    continue
        if exhausted:
            raise ValueError("truncated CloudTrail log file")
        chunk = next(source, None)
        if chunk is None:
            exhausted = True
            feed(inflate.flush())
        else:
            feed(inflate.decompress(chunk))


@dataclass
class BuildStats:
    records: int = 0  # records indexed
    skipped: int = 0  # not indexed (data events when off, network activity, bad eventTime)
    duplicates: int = 0  # eventID already seen in this batch
    pages: int = 0
    postings: int = 0  # posting items
    page_bytes: int = 0
    posting_bytes: int = 0
    page_units: int = 0
    posting_units: int = 0
    event_id_units: int = 0  # of posting_units: the EventId postings

    @property
    def items(self) -> int:
        return self.pages + self.postings

    @property
    def write_units(self) -> int:
        return self.page_units + self.posting_units


@dataclass
class _Page:
    lines: list[bytes] = field(default_factory=list)
    raw: int = 0
    newest: int = 0  # epoch seconds of the newest eventTime in the page


class IndexBuilder:
    """Turns one batch's record lines into index items, deterministically.

    Feed every record line of the batch with `add` (in a fixed order: the intent's files in
    order, records in file order; the same order on a rebuild gives the same items); it
    returns page items as pages fill, so pages never pile up in memory. `finish` returns
    the last page and every posting item. Per record only refs stay in memory.
    """

    def __init__(
        self,
        batch_id: str,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        data_events: bool = False,
        page_raw_bytes: int = PAGE_RAW_BYTES,
        page_max_records: int = PAGE_MAX_RECORDS,
        chunk_refs: int = CHUNK_REFS,
    ) -> None:
        if page_max_records > MAX_PAGE_RECORDS:
            raise ValueError(f"page_max_records: at most {MAX_PAGE_RECORDS}")
        self.bref = batch_ref(batch_id)
        self.retention = retention_days * 86_400
        self.data_events = data_events
        self.page_raw_bytes = page_raw_bytes
        self.page_max_records = page_max_records
        self.chunk_refs = chunk_refs
        self.stats = BuildStats()
        self._page = _Page()
        self._page_number = 0
        self._event_ids: set[str] = set()
        # (partition key, minute epoch) → refs
        self._postings: dict[tuple[str, int], array[int]] = {}

    def add(self, line: bytes, record: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Index one record line (`record` = the parsed line, when the caller has it)."""
        if record is None:
            record = json.loads(line)
        event_id = record.get("eventID")
        region = record.get("awsRegion")
        if not isinstance(event_id, str) or not event_id or not isinstance(region, str) or not region:
            self.stats.skipped += 1
            return []
        if event_id in self._event_ids:
            self.stats.duplicates += 1
            return []
        if not is_indexed(record, data_events=self.data_events):
            self.stats.skipped += 1
            return []
        try:
            moment = parse_event_time(record.get("eventTime"))
        except RecordError:
            self.stats.skipped += 1
            return []
        self._event_ids.add(event_id)
        done = self._roll(len(line))
        epoch = int(moment.timestamp())
        minute, second = divmod(epoch, 60)
        ref = pack_ref(second, order_hash(event_id), self._page_number, len(self._page.lines))
        self._page.lines.append(line)
        self._page.raw += len(line) + 1
        self._page.newest = max(self._page.newest, epoch)
        insight = is_insight(record)
        keys = INSIGHT_KEYS if insight else tuple(KEY_CODES)
        values = attribute_values(record)
        partitions = {partition_key(region, None, insight=insight)}
        for key in keys:
            for value in values.get(key, ()):
                partitions.add(partition_key(region, key, value, insight=insight))
        for pk in partitions:
            self._postings.setdefault((pk, minute * 60), array("Q")).append(ref)
        self.stats.records += 1
        return done

    def _roll(self, incoming: int) -> list[dict[str, Any]]:
        page = self._page
        if page.lines and (page.raw + incoming > self.page_raw_bytes or len(page.lines) >= self.page_max_records):
            item = self._page_item()
            self._page = _Page()
            self._page_number += 1
            if self._page_number >= MAX_PAGES:
                raise HistoryError(f"a batch fills at most {MAX_PAGES} pages")
            return [item]
        return []

    def _page_item(self) -> dict[str, Any]:
        data = zlib.compress(b"\n".join(self._page.lines), 9)
        item = {
            "pk": page_partition(self.bref, self._page_number),
            "sk": PAGE_CODE,
            DATA_ATTRIBUTE: data,
            TTL_ATTRIBUTE: self._page.newest + self.retention,
        }
        size = item_size(item)
        self.stats.pages += 1
        self.stats.page_bytes += size
        self.stats.page_units += units_for_size(size)
        return item

    def finish(self) -> list[dict[str, Any]]:
        """The last page and all posting items (sorted by key, so a rerun writes the same)."""
        items: list[dict[str, Any]] = []
        if self._page.lines:
            items.append(self._page_item())
            self._page = _Page()
        for (pk, minute), refs in sorted(self._postings.items()):
            ordered = sorted(refs, reverse=True)
            stamp = minute_text(datetime.fromtimestamp(minute, UTC))
            for chunk, start in enumerate(range(0, len(ordered), self.chunk_refs)):
                item = {
                    "pk": pk,
                    "sk": sort_key(stamp, self.bref, chunk),
                    REFS_ATTRIBUTE: encode_refs(ordered[start : start + self.chunk_refs]),
                    TTL_ATTRIBUTE: minute + self.retention,
                }
                size = item_size(item)
                units = units_for_size(size)
                self.stats.postings += 1
                self.stats.posting_bytes += size
                self.stats.posting_units += units
                if pk.split("#", 2)[1] in ("I", INSIGHT_PREFIX + "I"):
                    self.stats.event_id_units += units
                items.append(item)
        self._postings.clear()
        self._event_ids.clear()
        return items


def page_lines(data: bytes) -> list[bytes]:
    return zlib.decompress(data).split(b"\n")


# -- lookups ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Position:
    """A record's place in the index's order; newest first = descending."""

    epoch: int  # eventTime, epoch seconds
    hash16: int
    event_id: str

    def to_cursor(self) -> dict[str, Any]:
        return {"t": self.epoch, "h": self.hash16, "e": self.event_id}

    @classmethod
    def from_cursor(cls, cursor: Mapping[str, Any]) -> Position:
        try:
            epoch, hash16, event_id = cursor["t"], cursor["h"], cursor["e"]
        except (KeyError, TypeError):
            raise ValueError("cursor: not a history cursor") from None
        if not isinstance(epoch, int) or not isinstance(hash16, int) or not isinstance(event_id, str):
            raise ValueError("cursor: not a history cursor")
        return cls(epoch, hash16, event_id)


@dataclass(frozen=True)
class Candidate:
    """A ref resolved to absolute time and its page's key."""

    epoch: int
    hash16: int
    page_pk: str
    index: int

    @property
    def rank(self) -> tuple[int, int]:
        return (self.epoch, self.hash16)


def candidates(pk_sk_refs: Iterable[tuple[str, bytes]], *, start: int, end: int) -> list[Candidate]:
    """Candidates of posting items (sort key, refs) within [start, end] epoch seconds,
    newest first by (epoch, hash) (ties in rank keep ref order)."""
    out: list[Candidate] = []
    for sk, data in pk_sk_refs:
        minute = int(datetime.strptime(sk[:12], "%Y%m%d%H%M").replace(tzinfo=UTC).timestamp())
        bref = sk[12 : 12 + BATCH_REF_CHARS]
        for value in decode_refs(data):
            ref = Ref.unpack(value)
            epoch = minute + ref.second
            if start <= epoch <= end:
                out.append(Candidate(epoch, ref.hash16, page_partition(bref, ref.page), ref.index))
    out.sort(key=lambda c: (c.epoch, c.hash16, c.page_pk, c.index), reverse=True)
    return out


def sort_key_range(start: datetime, end: datetime) -> tuple[str, str]:
    """Sort keys of the posting items that may hold refs within [start, end]."""
    return minute_text(start), minute_text(end) + "~"


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def end_of_second(moment: datetime) -> int:
    """The last whole second at or before `moment` (records have second precision)."""
    return int((moment - timedelta(microseconds=moment.microsecond)).timestamp())
