"""Digest chains: which digests the digester writes, for which windows, linked to what.

Pure: no I/O, no clock. The handler (`opentrail.handlers.digester`) reads the chain heads and
the delivery ledger, asks this module what to write, and writes it (docs/integrity.md).

* A *chain* belongs to one (trail, account, source region) and one kind: ``regular`` (one
  digest per hour window ``[H, H+1h)``, empty hours included) or ``backfill`` (CloudTrail's
  backfill digests for log files that entered the ledger after their hour was digested).
* The *chain head* is the chain's newest digest, kept in DynamoDB with a sequence number
  that every write advances by one under a condition (no fork when two digesters race).
* Windows are processed oldest first from the trail's cursor (the oldest regular head's end),
  so a missed hour is caught up, never skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from opentrail.domain.digest import DIGEST_PERIOD, LogFileEntry, PreviousDigest, digest_key, parse_digest_key

ChainKind = Literal["regular", "backfill"]
REGULAR: Final[ChainKind] = "regular"
BACKFILL: Final[ChainKind] = "backfill"


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, order=True)
class Source:
    """Whose log files a chain covers: an account and a source region."""

    account: str
    region: str


@dataclass(frozen=True)
class ChainHead:
    """The newest digest of a chain (the DynamoDB chain-head item, docs/integrity.md)."""

    trail: str
    account: str
    region: str
    kind: ChainKind
    sequence: int  # 1 for the first digest of the chain, +1 per digest
    bucket: str
    key: str
    start_time: datetime
    end_time: datetime
    signature: str  # hex, as in the digest's x-amz-meta-signature
    sha256: str  # hex SHA-256 of the digest's uncompressed bytes
    fingerprint: str
    written_at: datetime  # when the digester wrote (or adopted) it
    # StopLogging moments recorded on the chain (validate-logs accepts a new chain after one).
    stops: tuple[datetime, ...] = ()
    # Not stored: set by `restart_heads` on a closed chain after StartLogging; the next digest
    # starts a new chain (null previousDigest* fields) at this moment.
    restart_at: datetime | None = None

    @property
    def source(self) -> Source:
        return Source(self.account, self.region)

    @property
    def closed(self) -> bool:
        """The chain ended with a StopLogging final digest (its end is a recorded stop)."""
        return self.restart_at is None and self.end_time in self.stops

    def link(self) -> PreviousDigest:
        """What the next digest of the chain points back to."""
        return PreviousDigest(bucket=self.bucket, key=self.key, sha256=self.sha256, signature=self.signature)


@dataclass(frozen=True)
class LedgerFile:
    """One delivery-ledger item as the digester reads it."""

    pk: str
    sk: str
    account: str
    region: str
    delivered_at: datetime
    recorded_at: datetime | None  # None for items written before recordedAt existed
    entry: LogFileEntry
    digest_key: str | None  # the digest listing the file, once one does

    @property
    def source(self) -> Source:
        return Source(self.account, self.region)


@dataclass(frozen=True)
class DigestPlan:
    """One digest to write. Its link (previous digest) is the chain head at write time."""

    trail: str
    source: Source
    kind: ChainKind
    start_time: datetime
    end_time: datetime
    key: str
    files: tuple[LedgerFile, ...]
    restart: bool = False  # the first digest after StartLogging: null previousDigest* fields


@dataclass(frozen=True)
class TrailTarget:
    """What a digest key needs to know about the trail."""

    name: str
    home_region: str
    prefix: str | None = None

    def arn(self, account: str) -> str:
        return f"arn:aws:cloudtrail:{self.home_region}:{account}:trail/{self.name}"


def last_window_end(now: datetime, delay: timedelta) -> datetime:
    """End of the newest window the digester may digest at `now`: windows end on the hour
    and are digested `delay` after their end (late batches must have reached the ledger)."""
    return floor_hour(now - delay)


def windows_due(
    heads: Iterable[ChainHead],
    *,
    now: datetime,
    delay: timedelta,
    max_windows: int,
    first_window: datetime | None = None,
) -> list[datetime]:
    """Start times of the windows to digest now, oldest first.

    From the oldest regular head's end (every chain is caught up, hour by hour; nothing is
    skipped, a long outage takes several runs of `max_windows`), or — no chain yet — from
    `first_window` (the oldest delivery hour with files that the caller found), else the
    newest completed window only: digests start when the digester does, as CloudTrail's
    start when validation is enabled.
    """
    until = last_window_end(now, delay)
    regular = [head.end_time for head in heads if head.kind == REGULAR]
    if regular:
        cursor = min(regular)
    else:
        cursor = min(first_window, until - DIGEST_PERIOD) if first_window is not None else until - DIGEST_PERIOD
    cursor = floor_hour(cursor)
    windows: list[datetime] = []
    while cursor + DIGEST_PERIOD <= until and len(windows) < max_windows:
        windows.append(cursor)
        cursor += DIGEST_PERIOD
    return windows


def group_by_source(files: Iterable[LedgerFile]) -> dict[Source, list[LedgerFile]]:
    grouped: dict[Source, list[LedgerFile]] = {}
    for file in files:
        grouped.setdefault(file.source, []).append(file)
    return grouped


def plan_regular(
    trail: TrailTarget,
    window_start: datetime,
    files: Sequence[LedgerFile],
    heads: Mapping[Source, ChainHead],
    *,
    stop: datetime | None = None,
) -> list[DigestPlan]:
    """Regular digests for the window: one per source whose chain is due at this window
    (its head ends at `window_start`) or that has files here and no chain yet (a new chain).
    Sources whose chain is already past the window are left alone.

    With `stop` (StopLogging inside the window, or at its end) the digests are the chains'
    final ones: they end at `stop` and list the files delivered up to and including it. A head
    with `restart_at` starts a new chain there: its digest starts at `restart_at`, links to
    nothing and lists the files delivered after the chain's stop.
    """
    end = stop if stop is not None else window_start + DIGEST_PERIOD
    if stop is not None:
        files = [file for file in files if file.delivered_at <= stop]
    by_source = group_by_source(files)
    due = {source for source, head in heads.items() if head.end_time == window_start and not head.closed}
    due |= {source for source in by_source if source not in heads}
    plans = []
    for source in sorted(due):
        head = heads.get(source)
        restart = head is not None and head.restart_at is not None
        listed = tuple(by_source.get(source, ()))
        if head is not None and head.restart_at is not None and head.stops:
            listed = tuple(file for file in listed if file.delivered_at > head.stops[-1])
        start = head.restart_at if head is not None and head.restart_at is not None else window_start
        plans.append(_plan(trail, source, REGULAR, start, end, listed, restart=restart))
    return plans


def stop_window(stop: datetime) -> datetime:
    """Start of the window holding a StopLogging moment (a stop on the hour ends the window
    before it): the final digest covers ``[stop_window(stop), stop]``."""
    return floor_hour(stop - timedelta(microseconds=1))


def restart_heads(heads: Mapping[Source, ChainHead], start: datetime) -> dict[Source, ChainHead]:
    """Regular heads after StartLogging at `start`: a chain closed by a stop before `start`
    continues as a new chain from `start` (due at the window holding it); others unchanged."""
    return {
        source: (
            replace(head, end_time=floor_hour(start), restart_at=start)
            if head.closed and head.end_time <= start
            else head
        )
        for source, head in heads.items()
    }


def plan_backfill(
    trail: TrailTarget,
    hour_start: datetime,
    files: Sequence[LedgerFile],
    heads: Mapping[Source, ChainHead],
    *,
    digested_until: datetime,
) -> list[DigestPlan]:
    """Backfill digests for log files of this delivery hour that no digest lists although the
    hour has been digested (they entered the ledger after the regular digest was written: a
    crashed batch finalized late by a resolver, or a batch finalized after the digester's delay).

    The hour counts as digested for a source when its regular chain ends after the hour, or —
    a source with no regular chain — when the trail's windows are digested past it.
    A backfill digest covers the hour ``[H, H+1h)``; its key is the regular key with
    ``_backfill``. A second backfill for the same hour and source (files finalized even later)
    ends ``k`` seconds after the hour (``k`` = backfills already written for it), so keys stay
    unique and sort by time as the AWS CLI expects.
    """
    plans = []
    for source, group in sorted(group_by_source(files).items()):
        head = heads.get(source)
        digested = head.end_time > hour_start if head is not None else digested_until > hour_start
        if not digested:
            continue
        # A chain closed by StopLogging (or due to restart) covers its files up to its end only.
        missing = tuple(
            file
            for file in group
            if file.digest_key is None
            and (head is None or head.restart_at is None)
            and (head is None or file.delivered_at <= head.end_time)
        )
        if not missing:
            continue
        earlier = {file.digest_key for file in group if file.digest_key and _is_backfill(file.digest_key)}
        end = hour_start + DIGEST_PERIOD + timedelta(seconds=len(earlier))
        plans.append(_plan(trail, source, BACKFILL, hour_start, end, missing))
    return plans


def _plan(
    trail: TrailTarget,
    source: Source,
    kind: ChainKind,
    start: datetime,
    end: datetime,
    files: tuple[LedgerFile, ...],
    *,
    restart: bool = False,
) -> DigestPlan:
    key = digest_key(
        account_id=source.account,
        source_region=source.region,
        trail_name=trail.name,
        home_region=trail.home_region,
        end_time=end,
        prefix=trail.prefix,
        backfill=kind == BACKFILL,
    )
    return DigestPlan(trail.name, source, kind, start, end, key, files, restart)


def _is_backfill(key: str) -> bool:
    parsed = parse_digest_key(key)
    return parsed is not None and parsed.backfill


def backfill_hours(*, digested_until: datetime, lookback: timedelta) -> list[datetime]:
    """Delivery hours the digester re-reads for late files: the `lookback` before `digested_until`."""
    hours = []
    cursor = floor_hour(digested_until - lookback)
    while cursor < digested_until:
        hours.append(cursor)
        cursor += DIGEST_PERIOD
    return hours


def next_head(
    plan: DigestPlan,
    previous: ChainHead | None,
    *,
    bucket: str,
    signature: str,
    sha256: str,
    fingerprint: str,
    written_at: datetime,
) -> ChainHead:
    """The chain head after `plan` has been written on top of `previous`."""
    return ChainHead(
        trail=plan.trail,
        account=plan.source.account,
        region=plan.source.region,
        kind=plan.kind,
        sequence=(previous.sequence if previous is not None else 0) + 1,
        bucket=bucket,
        key=plan.key,
        start_time=plan.start_time,
        end_time=plan.end_time,
        signature=signature,
        sha256=sha256,
        fingerprint=fingerprint,
        written_at=written_at,
        stops=previous.stops if previous is not None else (),
    )
