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
from dataclasses import dataclass
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
# zlib level of a page: 6 rather than 9 makes pages ~0.8% larger (+0.002 write units per event)
# and the batcher ~10% faster; both sides are worth ~$0.0001 per 100k events (docs/benchmarks.md).
PAGE_ZLIB_LEVEL: Final = 6
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
    if type(identity) is not dict and not isinstance(identity, Mapping):  # dict first: the abc check is slow
        return None
    return identity_username(identity)


def identity_username(identity: Mapping[str, Any]) -> str | None:
    """`username` of a record's ``userIdentity``."""
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
        if type(item) is not dict and not isinstance(item, Mapping):
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
        size += len(name) if name.isascii() else len(name.encode())
        kind = type(value)  # exact types first (the index's items), then the general rules
        if kind is str:
            size += len(value) if value.isascii() else len(value.encode())
        elif kind is bytes:
            size += len(value)
        elif kind is int:
            size += _number_size(value)
        elif isinstance(value, bytes):
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


# Seconds "00".."59" of a canonical eventTime ("YYYY-MM-DDTHH:MM:SSZ"), for the builder's fast path.
_SECONDS: Final = {f"{n:02d}": n for n in range(60)}
# Bytes of a posting item's attribute names (item_size counts names too).
_POSTING_NAMES: Final = len("pk") + len("sk") + len(REFS_ATTRIBUTE) + len(TTL_ATTRIBUTE)
_CODES: Final = tuple(KEY_CODES[key] for key in ("EventId", "EventName", "ReadOnly", "Username", "ResourceType"))
_CODES_TAIL: Final = tuple(KEY_CODES[key] for key in ("ResourceName", "EventSource", "AccessKeyId"))


def _epoch(value: object) -> int | None:
    """`parse_event_time(value)` as epoch seconds; None when it does not parse."""
    try:
        return int(parse_event_time(value).timestamp())
    except RecordError:
        return None


def _token(value: str) -> str:
    """`value_token` of any key but ResourceName (the common case without hashing inline)."""
    if len(value) <= MAX_VALUE_BYTES and value.isascii():
        return value
    return value_token("", value)


def _post(bucket: dict[str, int | array[int]], pk: str, ref: int) -> None:
    """Add `ref` to posting list `pk` (a single ref stays an int until a second one arrives)."""
    refs = bucket.get(pk)
    if refs is None:
        bucket[pk] = ref
    elif isinstance(refs, int):
        bucket[pk] = array("Q", (refs, ref))
    else:
        refs.append(ref)


class IndexBuilder:
    """Turns one batch's record lines into index items, deterministically.

    Feed every record line of the batch with `add` (in a fixed order: the intent's files in
    order, records in file order; the same order on a rebuild gives the same items); it
    returns page items as pages fill, so pages never pile up in memory. `finish` returns
    the last page and every posting item. Per record only refs stay in memory (and its
    eventID for the batch's dedupe; plus one entry per distinct (minute, values) seen).

    The items are those of the plain definition (`attribute_values`, `partition_key`,
    `pack_ref`, `sort_key`, `item_size`; tests/unit/test_history_builder.py checks it); the
    code below computes them with per-batch caches (time prefixes, key prefixes per region,
    per-minute sort keys and TTLs) because it runs for every record the batcher delivers.
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
        # The open page: its lines, raw bytes (lines + separators), newest eventTime (epoch).
        self._lines: list[bytes] = []
        self._raw = 0
        self._newest = 0
        self._page_number = 0
        self._page_bits = 0  # the page number in its place in a ref
        self._event_ids: set[str] = set()
        # minute epoch → partition key → refs: a single ref as an int (most EventId and rare
        # values; ints are not tracked by the garbage collector, arrays are), more in an array
        self._postings: dict[int, dict[str, int | array[int]]] = {}
        # "YYYY-MM-DDTHH:MM:" → epoch of that minute (None: not a valid time)
        self._minutes: dict[str, int | None] = {}
        # region → key prefixes: time-only list, then "<region>#<code>#" per code (Insights: own)
        self._prefixes: dict[str, tuple[str, ...]] = {}
        self._insight_prefixes: dict[str, tuple[str, ...]] = {}
        # a record's values (minute, region, ...: see `_posting_lists`) → their posting lists
        self._lists: dict[tuple[Any, ...], list[array[int]]] = {}

    def add(self, line: bytes, record: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Index one record line (`record` = the parsed line, when the caller has it)."""
        if record is None:
            record = json.loads(line)
        get = record.get
        event_id = get("eventID")
        region = get("awsRegion")
        if not isinstance(event_id, str) or not event_id or not isinstance(region, str) or not region:
            self.stats.skipped += 1
            return []
        if event_id in self._event_ids:
            self.stats.duplicates += 1
            return []
        category = get("eventCategory", "Management")
        if category != "Management" and category != "Insight" and not (self.data_events and category == "Data"):
            self.stats.skipped += 1  # as `is_indexed`
            return []
        # eventTime → epoch seconds, as `parse_event_time`: a canonical time (...T09:26:53Z)
        # costs two lookups (its minute is parsed once per batch), any other is parsed.
        value = get("eventTime")
        epoch: int | None
        if (
            type(value) is str
            and len(value) == 20
            and value[19] == "Z"
            and (second := _SECONDS.get(value[17:19])) is not None
        ):
            minute_epoch = self._minutes.get(value[:17], -1)  # -1: not seen (a minute epoch is a multiple of 60)
            if minute_epoch == -1:
                minute_epoch = self._minute(value[:17])
            epoch = None if minute_epoch is None else minute_epoch + second
        else:
            epoch = _epoch(value)
        if epoch is None:
            self.stats.skipped += 1
            return []
        self._event_ids.add(event_id)
        size = len(line)
        lines = self._lines
        done: list[dict[str, Any]] = []
        if lines and (self._raw + size > self.page_raw_bytes or len(lines) >= self.page_max_records):
            done.append(self._roll())
            lines = self._lines
        digest = hashlib.sha256(event_id.encode()).digest()
        second = epoch % 60
        # pack_ref(second, order_hash(event_id), page, index), inline
        ref = second << 42 | digest[0] << 34 | digest[1] << 26 | self._page_bits | len(lines)
        lines.append(line)
        self._raw += size + 1
        if epoch > self._newest:
            self._newest = epoch

        # The posting keys, as `attribute_values` + `partition_key` (value_token inline for
        # short ASCII values, the usual case). A record's refs go to the lists of its keys in
        # its minute: EventId (one per record), the keys its other values give (records with
        # the same values share them: looked up once per batch, minute and values), and each
        # resource type and name.
        insight = category == "Insight"
        prefixes = (self._insight_prefixes if insight else self._prefixes).get(region)
        if prefixes is None:
            prefixes = self._region_prefixes(region, insight)
        minute = epoch - second
        bucket = self._postings.get(minute)
        if bucket is None:
            bucket = self._postings[minute] = {}
        pk = prefixes[1] + (event_id if len(event_id) <= MAX_VALUE_BYTES and event_id.isascii() else _token(event_id))
        _post(bucket, pk, ref)
        name = get("eventName")
        if not isinstance(name, str) or not name:
            name = None
        source = get("eventSource")
        if not isinstance(source, str) or not source:
            source = None
        listed: list[tuple[str, str]] | None = None
        if insight:  # Insights events: EventId, EventName, EventSource only (INSIGHT_KEYS)
            values: tuple[Any, ...] = (minute, region, True, name, source)
        else:
            read_only = get("readOnly")
            if read_only is True:
                read_text: str | None = "true"
            elif read_only is False:
                read_text = "false"
            else:
                read_text = None if read_only is None else read_only_text(record)
            user = key = None
            identity = get("userIdentity")
            if type(identity) is dict or isinstance(identity, Mapping):
                user = identity_username(identity)
                key = identity.get("accessKeyId")
                if not isinstance(key, str) or not key:
                    key = None
            values = (minute, region, False, name, source, read_text, user, key)
            if "resources" in record:
                listed = resources(record)
        lists = self._lists.get(values)
        if lists is None:
            lists = self._lists[values] = self._posting_lists(bucket, prefixes, values)
        for refs in lists:
            refs.append(ref)
        if listed:
            pks = dict.fromkeys(prefixes[5] + _token(kind) for kind in dict.fromkeys(k for k, _ in listed) if kind)
            pks.update(
                dict.fromkeys(
                    prefixes[6] + value_token("ResourceName", short)
                    for short in dict.fromkeys(short_resource_name(arn) for _, arn in listed if arn)
                )
            )
            for pk in pks:
                _post(bucket, pk, ref)
        self.stats.records += 1
        return done

    @staticmethod
    def _posting_lists(
        bucket: dict[str, int | array[int]], prefixes: tuple[str, ...], values: tuple[Any, ...]
    ) -> list[array[int]]:
        """The posting lists (in `bucket`, a minute's) of a record's values other than its
        EventId and resources: (minute, region, insight, eventName, eventSource[, ReadOnly,
        Username, AccessKeyId]), each None when the record has none."""
        name, source = values[3], values[4]
        pks = [prefixes[0]]
        if name is not None:
            pks.append(prefixes[2] + (name if len(name) <= MAX_VALUE_BYTES and name.isascii() else _token(name)))
        if source is not None:
            pks.append(
                prefixes[7] + (source if len(source) <= MAX_VALUE_BYTES and source.isascii() else _token(source))
            )
        if not values[2]:
            read_text, user, key = values[5:]
            if read_text is not None:
                pks.append(prefixes[3] + read_text)
            if user is not None:
                pks.append(prefixes[4] + _token(user))
            if key is not None:
                pks.append(prefixes[8] + _token(key))
        lists: list[array[int]] = []
        for pk in pks:
            refs = bucket.get(pk)
            if not isinstance(refs, array):
                refs = bucket[pk] = array("Q") if refs is None else array("Q", (refs,))
            lists.append(refs)
        return lists

    def _minute(self, prefix: str) -> int | None:
        """Epoch of a canonical eventTime's minute ("YYYY-MM-DDTHH:MM:"), None if not a time."""
        minute = _epoch(prefix + "00Z")
        self._minutes[prefix] = minute
        return minute

    def _region_prefixes(self, region: str, insight: bool) -> tuple[str, ...]:
        """Partition key prefixes of a region: [time-only, EventId, EventName, ReadOnly,
        Username, ResourceType, ResourceName, EventSource, AccessKeyId]."""
        prefix = INSIGHT_PREFIX if insight else ""
        prefixes = (
            partition_key(region, None, insight=insight),
            *(f"{region}#{prefix}{code}#" for code in _CODES),
            *(f"{region}#{prefix}{code}#" for code in _CODES_TAIL),
        )
        (self._insight_prefixes if insight else self._prefixes)[region] = prefixes
        return prefixes

    def _roll(self) -> dict[str, Any]:
        """Close the open page: its item; the next record starts the next page."""
        item = self._page_item()
        self._lines = []
        self._raw = 0
        self._newest = 0
        self._page_number += 1
        self._page_bits = self._page_number << _INDEX_BITS
        if self._page_number >= MAX_PAGES:
            raise HistoryError(f"a batch fills at most {MAX_PAGES} pages")
        return item

    def _page_item(self) -> dict[str, Any]:
        data = zlib.compress(b"\n".join(self._lines), PAGE_ZLIB_LEVEL)
        item = {
            "pk": page_partition(self.bref, self._page_number),
            "sk": PAGE_CODE,
            DATA_ATTRIBUTE: data,
            TTL_ATTRIBUTE: self._newest + self.retention,
        }
        size = item_size(item)
        self.stats.pages += 1
        self.stats.page_bytes += size
        self.stats.page_units += units_for_size(size)
        return item

    def finish(self) -> list[dict[str, Any]]:
        """The last page and all posting items (sorted by key, so a rerun writes the same)."""
        items: list[dict[str, Any]] = []
        if self._lines:
            items.append(self._page_item())
            self._lines = []
            self._raw = 0
            self._newest = 0
        postings = self._postings
        # minute → (sort key up to the chunk, TTL, bytes of the TTL number)
        minutes: dict[int, tuple[str, int, int]] = {}
        for minute in postings:
            expires = minute + self.retention
            minutes[minute] = (
                minute_text(datetime.fromtimestamp(minute, UTC)) + self.bref,
                expires,
                _number_size(expires),
            )
        chunk_refs = self.chunk_refs
        count = size_total = units_total = id_units = 0
        append = items.append
        # (pk, minute) are distinct: the sort never compares refs
        for pk, minute, refs in sorted(
            [(pk, m, refs) for m, bucket in postings.items() for pk, refs in bucket.items()]
        ):
            stamp, expires, expires_size = minutes[minute]
            size = _POSTING_NAMES + (len(pk) if pk.isascii() else len(pk.encode())) + expires_size + len(stamp) + 2
            event_id = pk.split("#", 2)[1] in ("I", INSIGHT_PREFIX + "I")
            if isinstance(refs, int):  # one ref (one chunk)
                append(
                    {
                        "pk": pk,
                        "sk": stamp + "00",
                        REFS_ATTRIBUTE: refs.to_bytes(REF_BYTES, "big"),
                        TTL_ATTRIBUTE: expires,
                    }
                )
                size += REF_BYTES
                units = -(-size // KB)
                count += 1
                size_total += size
                units_total += units
                if event_id:
                    id_units += units
                continue
            ordered = sorted(refs, reverse=True)
            for chunk, start in enumerate(range(0, len(ordered), chunk_refs)):
                data = b"".join([ref.to_bytes(REF_BYTES, "big") for ref in ordered[start : start + chunk_refs]])
                append({"pk": pk, "sk": stamp + _base62(chunk, 2), REFS_ATTRIBUTE: data, TTL_ATTRIBUTE: expires})
                units = -(-(size + len(data)) // KB)
                count += 1
                size_total += size + len(data)
                units_total += units
                if event_id:
                    id_units += units
        self.stats.postings += count
        self.stats.posting_bytes += size_total
        self.stats.posting_units += units_total
        self.stats.event_id_units += id_units
        postings.clear()
        self._lists.clear()
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
