"""Per-minute aggregates of management events per API: what Insights analyses.

Insights never rescans log files: records are folded, as they are delivered, into one
`ApiMinute` per (scope, minute, API), where

* scope = (recipientAccountId, awsRegion) — CloudTrail Insights is per account and region;
* API = (eventSource, eventName);
* an `ApiMinute` counts calls, writes, errors, and calls by error code, principal
  (userIdentity.arn, or the invoking service) and user agent.

Cardinality is bounded: each breakdown keeps its `TOP_K` largest values plus one ``"other"``
bucket, so an item stays small whatever the traffic (see docs/insights.md for sizes). Aggregates
are mergeable (the batcher can write one partial aggregate per batch and the Insights function
merges them) and serialise to compact dicts (`to_dict`/`from_dict`) for DynamoDB items.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, NamedTuple

from opentrail.domain.record import infer_read_only, parse_event_time

TOP_K: Final = 8
OTHER: Final = "other"
NO_ERROR: Final = "null"  # CloudTrail's attribution value for calls without an error
UNKNOWN: Final = "unknown"
_CANONICAL_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:[0-5]\dZ\Z")
MAX_VALUE_CHARS: Final = 256  # breakdown values are cut to this length (user agents can be 1 KB)

ApiKey = tuple[str, str]  # (eventSource, eventName)
Scope = tuple[str, str]  # (recipientAccountId, awsRegion)


def minute_of(epoch_seconds: float) -> int:
    """Minutes since the Unix epoch (UTC)."""
    return int(epoch_seconds // 60)


class CountTable:
    """Counts by value with at most `limit` named values plus an ``"other"`` bucket.

    Adding is exact until the table overflows; then the smallest named values are folded into
    ``"other"`` (a space-saving summary: the largest values are kept, totals stay exact).
    """

    __slots__ = ("counts", "limit")

    def __init__(self, counts: Mapping[str, int] | None = None, limit: int = TOP_K) -> None:
        self.limit = limit
        self.counts: dict[str, int] = dict(counts or {})
        self._shrink()

    def add(self, value: str, count: int = 1) -> None:
        value = value[:MAX_VALUE_CHARS]
        self.counts[value] = self.counts.get(value, 0) + count
        if len(self.counts) > 2 * self.limit + 1:  # shrink lazily: amortised O(1) per add
            self._shrink()

    def merge(self, other: CountTable) -> None:
        for value, count in other.counts.items():
            self.counts[value] = self.counts.get(value, 0) + count
        self._shrink()

    def total(self) -> int:
        return sum(self.counts.values())

    def top(self, n: int | None = None) -> list[tuple[str, int]]:
        """Named values, largest first (ties by value), then ``"other"`` if non-zero."""
        self._shrink()
        named = sorted(((v, c) for v, c in self.counts.items() if v != OTHER), key=lambda item: (-item[1], item[0]))
        return named[:n] if n is not None else named

    def _shrink(self) -> None:
        named = [(v, c) for v, c in self.counts.items() if v != OTHER]
        if len(named) <= self.limit:
            return
        named.sort(key=lambda item: (-item[1], item[0]))
        kept = dict(named[: self.limit])
        folded = sum(c for _, c in named[self.limit :]) + self.counts.get(OTHER, 0)
        if folded:
            kept[OTHER] = folded
        self.counts = kept

    def to_dict(self) -> dict[str, int]:
        self._shrink()
        return dict(self.counts)

    def copy(self) -> CountTable:
        return CountTable(self.counts, self.limit)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountTable) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"CountTable({self.to_dict()!r})"


@dataclass
class ApiMinute:
    """One API's management events in one minute."""

    calls: int = 0
    writes: int = 0
    errors: int = 0
    by_error: CountTable = field(default_factory=CountTable)  # errorCode -> calls (failed calls only)
    by_principal: CountTable = field(default_factory=CountTable)  # userIdentity.arn -> calls
    by_agent: CountTable = field(default_factory=CountTable)  # userAgent -> calls
    writers: CountTable = field(default_factory=CountTable)  # principal key -> write calls
    by_error_principal: dict[str, CountTable] = field(default_factory=dict)  # errorCode -> principal -> calls

    def add(
        self,
        *,
        write: bool,
        error_code: str | None,
        principal: str,
        user_agent: str,
        principal_key: str,
        count: int = 1,
    ) -> None:
        """`count` calls alike in all these respects."""
        self.calls += count
        self.by_principal.add(principal, count)
        self.by_agent.add(user_agent, count)
        if write:
            self.writes += count
            self.writers.add(principal_key, count)
        if error_code is not None:
            self.errors += count
            self.by_error.add(error_code, count)
            table = self.by_error_principal.setdefault(error_code[:MAX_VALUE_CHARS], CountTable(limit=3))
            table.add(principal, count)

    def merge(self, other: ApiMinute) -> None:
        self.calls += other.calls
        self.writes += other.writes
        self.errors += other.errors
        self.by_error.merge(other.by_error)
        self.by_principal.merge(other.by_principal)
        self.by_agent.merge(other.by_agent)
        self.writers.merge(other.writers)
        for code, table in other.by_error_principal.items():
            mine = self.by_error_principal.get(code)
            if mine is None:
                self.by_error_principal[code] = table.copy()
            else:
                mine.merge(table)
        if len(self.by_error_principal) > TOP_K:
            kept = {code for code, _ in self.by_error.top(TOP_K)}
            self.by_error_principal = {c: t for c, t in self.by_error_principal.items() if c in kept}

    def to_dict(self) -> dict[str, Any]:
        """Compact form (short keys, empty parts left out): a DynamoDB item's payload."""
        out: dict[str, Any] = {"c": self.calls}
        if self.writes:
            out["w"] = self.writes
            out["wp"] = self.writers.to_dict()
        if self.errors:
            out["e"] = self.errors
            out["ec"] = self.by_error.to_dict()
            out["ep"] = {code: table.to_dict() for code, table in self.by_error_principal.items()}
        out["p"] = self.by_principal.to_dict()
        out["ua"] = self.by_agent.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiMinute:
        return cls(
            calls=int(data.get("c", 0)),
            writes=int(data.get("w", 0)),
            errors=int(data.get("e", 0)),
            by_error=CountTable(data.get("ec")),
            by_principal=CountTable(data.get("p")),
            by_agent=CountTable(data.get("ua")),
            writers=CountTable(data.get("wp")),
            by_error_principal={code: CountTable(t, limit=3) for code, t in (data.get("ep") or {}).items()},
        )

    def copy(self) -> ApiMinute:
        return ApiMinute.from_dict(self.to_dict())


MinuteApis = dict[ApiKey, ApiMinute]


def merge_minutes(parts: Iterable[Mapping[ApiKey, ApiMinute]]) -> MinuteApis:
    """Merge partial aggregates of the same minute (e.g. one per delivered batch)."""
    merged: MinuteApis = {}
    for part in parts:
        for api, minute in part.items():
            mine = merged.get(api)
            if mine is None:
                merged[api] = minute.copy()
            else:
                mine.merge(minute)
    return merged


def apis_to_dict(apis: Mapping[ApiKey, ApiMinute]) -> dict[str, Any]:
    """``{"<eventSource> <eventName>": ApiMinute.to_dict()}`` (a space never occurs in either)."""
    return {f"{source} {name}": minute.to_dict() for (source, name), minute in sorted(apis.items())}


def apis_from_dict(data: Mapping[str, Any]) -> MinuteApis:
    out: MinuteApis = {}
    for key, value in data.items():
        source, _, name = key.partition(" ")
        out[(source, name)] = ApiMinute.from_dict(value)
    return out


# -- records --------------------------------------------------------------------------------


MANAGEMENT_ONLY: Final = frozenset({"Management"})


def is_analysed(record: Mapping[str, Any], categories: frozenset[str] = MANAGEMENT_ONLY) -> bool:
    """Is the record in one of the analysed `categories` (Management, Data)? CloudTrail
    Insights analyse management events unless a selector's EventCategories names Data.

    Records older than eventVersion 1.06/1.07 carry neither ``managementEvent`` nor
    ``eventCategory``: they are management events unless marked otherwise.
    """
    if record.get("eventType") == "AwsCloudTrailInsight":
        return False
    category = record.get("eventCategory")
    if category == "Data" or record.get("managementEvent") is False:
        return "Data" in categories
    return category in (None, "Management") and "Management" in categories


def principal_arn(record: Mapping[str, Any]) -> str:
    """The attribution value CloudTrail uses: userIdentity.arn (or the invoking service)."""
    identity = record.get("userIdentity")
    if not isinstance(identity, Mapping):
        return UNKNOWN
    arn = identity.get("arn")
    if isinstance(arn, str) and arn:
        return arn
    for key in ("invokedBy", "principalId", "type"):
        value = identity.get(key)
        if isinstance(value, str) and value:
            return value
    return UNKNOWN


@lru_cache(maxsize=4096)  # a batch has few distinct principals and many records
def principal_key(arn: str) -> str:
    """A principal as the unusual-activity detector knows it: role sessions collapse to the role.

    ``arn:aws:sts::1:assumed-role/ci-deploy/gha-8841`` -> ``arn:aws:sts::1:assumed-role/ci-deploy/*``:
    session names change on every run (CI jobs, Lambda cold starts), the role does not.
    """
    if ":assumed-role/" in arn:
        head, _, tail = arn.partition(":assumed-role/")
        role = tail.split("/", 1)[0]
        return f"{head}:assumed-role/{role}/*"
    return arn


class RecordFacts(NamedTuple):
    scope: Scope
    minute: int
    api: ApiKey
    write: bool
    error_code: str | None
    principal: str
    user_agent: str


@lru_cache(maxsize=4096)
def _canonical_minute(prefix: str) -> int:
    """Epoch minute of ``YYYY-MM-DDTHH:MM`` (ValueError when not a valid date and time)."""
    return minute_of(datetime.strptime(prefix, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp())


def event_minute(value: object) -> int:
    """The epoch minute of an eventTime; CloudTrail's own form (``...T09:26:53Z``, nearly every
    record) by a per-minute cache, any other ISO 8601 form by `parse_event_time`."""
    if isinstance(value, str) and _CANONICAL_TIME.match(value):
        return _canonical_minute(value[:16])
    return minute_of(parse_event_time(value).timestamp())


def record_facts(record: Mapping[str, Any]) -> RecordFacts:
    """What an aggregate keeps of one record (raises `RecordError`/`KeyError` on broken records)."""
    minute = event_minute(record.get("eventTime"))
    read_only = record.get("readOnly")
    name = str(record["eventName"])
    write = (not read_only) if isinstance(read_only, bool) else not infer_read_only(name)
    error = record.get("errorCode")
    agent = record.get("userAgent")
    identity = record.get("userIdentity")
    account = record.get("recipientAccountId")
    if not isinstance(account, str) and isinstance(identity, Mapping):
        account = identity.get("accountId")
    return RecordFacts(
        scope=(str(account or UNKNOWN), str(record.get("awsRegion") or UNKNOWN)),
        minute=minute,
        api=(str(record["eventSource"]), name),
        write=write,
        error_code=str(error) if error not in (None, "") else None,
        principal=principal_arn(record),
        user_agent=str(agent) if isinstance(agent, str) and agent else UNKNOWN,
    )


class Aggregator:
    """Folds records into per-minute aggregates, per scope.

    ``add(record)`` is all the batcher needs; ``drain(before_minute)`` hands back, in minute
    order, the minutes that are complete (older than the caller's watermark) and forgets them,
    so memory holds only the minutes still open (bounded by the allowed lateness).

    Alike records (the same facts) are counted first and folded into the aggregates once per
    distinct facts when they are read (`minutes`, `scopes`, `drain`): a batch repeats the same
    caller, API and minute many times, and one Counter increment is cheaper than a fold.
    """

    def __init__(self, *, categories: frozenset[str] = MANAGEMENT_ONLY) -> None:
        self.categories = categories  # the event categories analysed (see `is_analysed`)
        self._minutes: dict[Scope, dict[int, MinuteApis]] = {}
        self._alike: Counter[RecordFacts] = Counter()  # added, not yet folded into `_minutes`
        self.records = 0  # analysed records folded in
        self.skipped = 0  # not analysed (data events, Insights events)
        self.invalid = 0  # records without eventTime/eventSource/eventName

    def add(self, record: Mapping[str, Any]) -> RecordFacts | None:
        if not is_analysed(record, self.categories):
            self.skipped += 1
            return None
        try:
            facts = record_facts(record)
        except (KeyError, ValueError):
            self.invalid += 1
            return None
        self.add_facts(facts)
        return facts

    def add_facts(self, facts: RecordFacts) -> None:
        self._alike[facts] += 1
        self.records += 1

    def _fold(self) -> None:
        for facts, count in self._alike.items():  # in first-added order: deterministic
            apis = self._minutes.setdefault(facts.scope, {}).setdefault(facts.minute, {})
            aggregate = apis.get(facts.api)
            if aggregate is None:
                aggregate = apis[facts.api] = ApiMinute()
            aggregate.add(
                write=facts.write,
                error_code=facts.error_code,
                principal=facts.principal,
                user_agent=facts.user_agent,
                principal_key=principal_key(facts.principal),
                count=count,
            )
        self._alike.clear()

    def minutes(self, scope: Scope) -> dict[int, MinuteApis]:
        """The open minutes of one scope (not drained)."""
        self._fold()
        return self._minutes.get(scope, {})

    def scopes(self) -> list[Scope]:
        self._fold()
        return sorted(self._minutes)

    def drain(self, before_minute: int | None = None) -> Iterator[tuple[Scope, int, MinuteApis]]:
        """Yield and forget (scope, minute, apis) for minutes < `before_minute` (all when None)."""
        self._fold()
        ready: list[tuple[int, Scope]] = []
        for scope, minutes in self._minutes.items():
            ready.extend((m, scope) for m in minutes if before_minute is None or m < before_minute)
        ready.sort()
        for minute, scope in ready:
            yield scope, minute, self._minutes[scope].pop(minute)
        for scope in [s for s, m in self._minutes.items() if not m]:
            del self._minutes[scope]
