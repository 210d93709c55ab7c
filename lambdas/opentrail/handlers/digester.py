"""DigesterFunction: hourly signed digest files, CloudTrail's log file integrity validation
(spec §3, docs/integrity.md).

Invoked by an hourly EventBridge schedule (``{"action": "scheduled"}``) or directly with
``{"action": "digest"}``. For each trail, oldest window first, from the oldest chain head
to the newest window that ended `DIGEST_DELAY_SECONDS` ago:

1. read the trail's ledger partition of the window (one Query, all accounts and regions);
2. for each (account, source region) whose chain is due, or that has files and no chain:
   build the digest (every field of spec §3.2), sign the string to sign with KMS, register
   the public key's use, ``PutObject`` with ``If-None-Match: *``; if the object exists
   (a racing digester or a crashed run wrote it), adopt it (read it back) when it links to
   the same head, otherwise stop;
3. mark the ledger items it lists (``digestKey``), then advance the chain head with a
   conditional write on the sequence number (a lost race stops the chain for this run);
4. then re-read the last `BACKFILL_LOOKBACK_HOURS` of delivery hours for items no digest
   lists (late files) and cover them with backfill digests, their own chain per source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from aws_lambda_powertools.metrics import MetricUnit

from opentrail.adapters.digests import ChainHeads, DigestStore, DigestStoreError, LedgerReader, PublicKeyRegistry
from opentrail.adapters.signer import KmsSigner
from opentrail.adapters.trail_state import TrailStateError, TrailStateStore, TrailStatus, trail_state_store
from opentrail.domain.chain import (
    BACKFILL,
    REGULAR,
    ChainHead,
    DigestPlan,
    Source,
    TrailTarget,
    backfill_hours,
    floor_hour,
    last_window_end,
    next_head,
    plan_backfill,
    plan_regular,
    restart_heads,
    stop_window,
    windows_due,
)
from opentrail.domain.clock import Clock, system_clock
from opentrail.domain.digest import DIGEST_PERIOD, build_digest, compress, serialize, sha256_hex, string_to_sign
from opentrail.domain.stop_cycles import StopCycle
from opentrail.handlers._common import deployment_of, logger, metrics, tracer
from opentrail.settings import DigesterSettings

ACTIONS: Final = frozenset({"scheduled", "digest"})


class ChainConflict(RuntimeError):
    """Another digester moved the chain, or an unexpected digest sits at the key."""


@dataclass
class DigestRunSummary:
    digests: int = 0
    empty_digests: int = 0
    backfill_digests: int = 0
    log_files: int = 0
    backfilled_files: int = 0
    adopted: int = 0  # digests found already written (racing or crashed digester) and adopted
    conflicts: int = 0
    windows_behind: int = 0  # windows still due after this run (time or per-run cap)
    stopped_by: str = "done"
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digests": self.digests,
            "emptyDigests": self.empty_digests,
            "backfillDigests": self.backfill_digests,
            "logFiles": self.log_files,
            "backfilledFiles": self.backfilled_files,
            "adopted": self.adopted,
            "conflicts": self.conflicts,
            "windowsBehind": self.windows_behind,
            "stoppedBy": self.stopped_by,
            "written": list(self.written),
        }


class Digester:
    def __init__(
        self,
        *,
        settings: DigesterSettings,
        home_region: str,
        signer: KmsSigner,
        store: DigestStore,
        heads: ChainHeads,
        ledger: LedgerReader,
        registry: PublicKeyRegistry,
        clock: Clock,
        remaining_ms: Callable[[], int] = lambda: 900_000,
        trail_state: TrailStateStore | None = None,
    ) -> None:
        self.settings = settings
        self.home_region = home_region
        self.signer = signer
        self.store = store
        self.heads = heads
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        self.remaining_ms = remaining_ms
        self.trail_state = trail_state  # None: no logging state or status (tests of the chain alone)

    def run(self) -> DigestRunSummary:
        summary = DigestRunSummary()
        states = self._states()
        for trail in self.settings.trail_list:
            if not trail.log_file_validation_enabled:
                continue  # LogFileValidationEnabled false: no digests for this trail (docs/trails.md)
            target = TrailTarget(name=trail.name, home_region=self.home_region, prefix=trail.s3_key_prefix)
            cycles = self._open_cycles(target, states.get(trail.name))
            written = len(summary.written)
            try:
                if cycles:
                    # StopLogging: close the chains with a final digest up to each stop, restart
                    # them at the start that ended it; no digests while stopped.
                    closed, restart = True, None
                    for cycle in cycles:
                        closed = self._close_trail(target, cycle.stop, summary, restart=restart)
                        if not closed:
                            break
                        restart = cycle.start
                    done = summary.stopped_by != "time"
                    if closed and restart is not None:
                        done = self._run_trail(target, summary, restart=restart)
                else:
                    done = self._run_trail(target, summary)
            except DigestStoreError as error:
                self._record(trail.name, error=str(error))
                raise
            if len(summary.written) > written:
                self._record(trail.name)
            if not done:
                break
        return summary

    def _states(self) -> dict[str, TrailStatus]:
        if self.trail_state is None:
            return {}
        try:
            return self.trail_state.all()
        except TrailStateError as error:  # digest every trail rather than none
            logger.warning("trail state not read", extra={"error": str(error)})
            return {}

    def _open_cycles(self, trail: TrailTarget, state: TrailStatus | None) -> list[StopCycle]:
        """The trail's stop cycles the chains have not passed yet: a cycle is done once every
        chain ends after its start (a chain ending at it was closed there, not restarted yet;
        without chains yet: the latest cycle only)."""
        cycles = state.stop_cycles() if state is not None else []
        if not cycles:
            return []
        regular = [head for head in self.heads.list(trail.name) if head.kind == REGULAR]
        if not regular:
            return cycles[-1:]
        oldest = min(head.end_time for head in regular)
        return [cycle for cycle in cycles if cycle.start is None or cycle.start >= oldest]

    def _record(self, trail: str, *, error: str | None = None) -> None:
        """LatestDigestDeliveryTime / LatestDigestDeliveryError (GetTrailStatus); best effort."""
        if self.trail_state is None:
            return
        try:
            self.trail_state.record(trail, "digest", self.clock(), error=error)
        except TrailStateError as failure:
            logger.warning("trail status not recorded", extra={"error": str(failure)})

    def _out_of_time(self) -> bool:
        return self.remaining_ms() < self.settings.time_budget_margin_seconds * 1000

    def _run_trail(self, trail: TrailTarget, summary: DigestRunSummary, *, restart: datetime | None = None) -> bool:
        now = self.clock()
        delay = timedelta(seconds=self.settings.digest_delay_seconds)
        all_heads = self.heads.list(trail.name)
        regular = {head.source: head for head in all_heads if head.kind == REGULAR}
        if restart is not None:  # StartLogging after a stop: closed chains start anew there
            regular = restart_heads(regular, restart)
            all_heads = [*regular.values(), *(head for head in all_heads if head.kind != REGULAR)]
        backfill = {head.source: head for head in all_heads if head.kind == BACKFILL}
        lookback = timedelta(hours=self.settings.backfill_lookback_hours)
        first_window = None
        if not regular:
            # No chain yet (first run, or a first run that crashed before its chain head was
            # written): start at the oldest delivery hour with files within the lookback.
            until = last_window_end(now, delay)
            first_window = next(
                (
                    hour
                    for hour in backfill_hours(digested_until=until, lookback=lookback)
                    if self.ledger.hour(trail.name, hour)
                ),
                None,
            )
        windows = windows_due(all_heads, now=now, delay=delay, max_windows=10_000, first_window=first_window)
        todo = windows[: self.settings.max_windows_per_run]
        # Delivery hours before this are digested (for sources without a chain: the trail's windows).
        digested_until = todo[0] if todo else min(head.end_time for head in regular.values())
        blocked: set[Source] = set()
        for index, window in enumerate(todo):
            if self._out_of_time():
                summary.windows_behind += len(windows) - index
                summary.stopped_by = "time"
                return False
            files = self.ledger.hour(trail.name, window)
            self._write_all(trail, plan_regular(trail, window, files, regular), regular, blocked, summary)
            digested_until = window + DIGEST_PERIOD
        summary.windows_behind += len(windows) - len(todo)

        for hour in backfill_hours(digested_until=digested_until, lookback=lookback):
            if self._out_of_time():
                summary.stopped_by = "time"
                return False
            files = self.ledger.hour(trail.name, hour)
            if not files:
                continue
            plans = plan_backfill(trail, hour, files, regular, digested_until=digested_until)
            self._write_all(trail, plans, backfill, blocked, summary)
        return True

    def _write_all(
        self,
        trail: TrailTarget,
        plans: Iterable[DigestPlan],
        heads: dict[Any, Any],
        blocked: set[Any],
        summary: DigestRunSummary,
    ) -> None:
        """Write each planned digest onto its chain; a chain that conflicts stops for this run."""
        for plan in plans:
            if plan.source in blocked:
                continue
            try:
                heads[plan.source] = self._write(trail, plan, heads.get(plan.source), summary)
            except ChainConflict as error:
                logger.warning("digest chain conflict", extra={"key": plan.key, "error": str(error)})
                summary.conflicts += 1
                blocked.add(plan.source)

    def _close_trail(
        self, trail: TrailTarget, stop: datetime, summary: DigestRunSummary, *, restart: datetime | None = None
    ) -> bool:
        """The final digests of a stopped trail: every window up to the stop, the last one ending
        at the stop (files delivered up to and including it), then the stop recorded on each
        chain head. Chains already closed (or past the stop) only get the stop recorded; with
        `restart` (the StartLogging after an earlier stop), chains closed by that earlier stop
        start anew there first.
        True when every chain is closed; False when the trail must wait (the stop is not
        `DIGEST_DELAY_SECONDS` old yet, time, the per-run cap, conflicts): a restarted trail's
        new chains wait too."""
        now = self.clock()
        if now < stop + timedelta(seconds=self.settings.digest_delay_seconds):
            return False  # late batches of before the stop may still reach the ledger
        regular = {head.source: head for head in self.heads.list(trail.name) if head.kind == REGULAR}
        if restart is not None:
            regular = restart_heads(regular, restart)
        open_heads = [head for head in regular.values() if not head.closed and head.end_time < stop]
        final = stop_window(stop)
        if open_heads:
            cursor = floor_hour(min(head.end_time for head in open_heads))
        elif not regular:
            lookback = timedelta(hours=self.settings.backfill_lookback_hours)
            cursor = next(
                (
                    hour
                    for hour in backfill_hours(digested_until=final + DIGEST_PERIOD, lookback=lookback)
                    if self.ledger.hour(trail.name, hour)
                ),
                final + DIGEST_PERIOD,
            )
        else:
            cursor = final + DIGEST_PERIOD  # nothing to write
        windows = 0
        blocked: set[Source] = set()
        while cursor <= final:
            if self._out_of_time() or windows >= self.settings.max_windows_per_run:
                summary.stopped_by = "time" if self._out_of_time() else summary.stopped_by
                summary.windows_behind += int((final - cursor) // DIGEST_PERIOD) + 1
                return False
            files = self.ledger.hour(trail.name, cursor)
            last = cursor == final
            for plan in plan_regular(trail, cursor, files, regular, stop=stop if last else None):
                if plan.source in blocked:
                    continue
                try:
                    regular[plan.source] = self._write(trail, plan, regular.get(plan.source), summary)
                except ChainConflict as error:
                    logger.warning("digest chain conflict", extra={"key": plan.key, "error": str(error)})
                    summary.conflicts += 1
                    blocked.add(plan.source)
            cursor += DIGEST_PERIOD
            windows += 1
        if blocked:
            return False
        for source, head in list(regular.items()):
            if head.end_time < stop and not head.closed:
                return False  # a chain that could not reach the stop (an adopted digest elsewhere)
            if head.end_time >= stop and stop not in head.stops and not head.closed:
                recorded = self.heads.record_stop(head, stop)
                if recorded is None:
                    summary.conflicts += 1
                    return False
                regular[source] = recorded
        return True

    def _write(
        self, trail: TrailTarget, plan: DigestPlan, head: ChainHead | None, summary: DigestRunSummary
    ) -> ChainHead:
        """Write one digest on top of `head` and advance the chain; returns the new head."""
        public = self.signer.public_key()
        previous = head.link() if head is not None and not plan.restart else None
        body = build_digest(
            account_id=plan.source.account,
            start_time=plan.start_time,
            end_time=plan.end_time,
            bucket=self.store.bucket,
            key=plan.key,
            fingerprint=public.fingerprint,
            log_files=[file.entry for file in plan.files],
            previous=previous,
        )
        raw = serialize(body)
        now = self.clock()
        signature = self.signer.sign(string_to_sign(body, raw))
        # Registered before the digest exists, so ListPublicKeys never lags a stored digest.
        self.registry.record_use(
            fingerprint=public.fingerprint, der=public.der, key_arn=public.key_arn, start=plan.start_time, end=now
        )
        written = self.store.put_new(
            plan.key, compress(raw), signature=signature, backfill_generated_at=now if plan.kind == BACKFILL else None
        )
        fingerprint = public.fingerprint
        listed = plan.files
        if not written:
            stored = self.store.get(plan.key)
            if stored is None or stored.signature is None:
                raise ChainConflict(f"{plan.key}: PutObject refused but no signed digest there")
            existing = stored.body
            expected_previous = previous.key if previous is not None else None
            if existing.get("previousDigestS3Object") != expected_previous:
                raise ChainConflict(
                    f"{plan.key}: the stored digest links to {existing.get('previousDigestS3Object')!r}, "
                    f"the chain head to {expected_previous!r}"
                )
            raw, signature, body = stored.raw, stored.signature, existing
            fingerprint = str(existing.get("digestPublicKeyFingerprint", fingerprint))
            keys = {entry.get("s3Object") for entry in existing.get("logFiles", [])}
            listed = tuple(file for file in plan.files if file.entry.key in keys)
            summary.adopted += 1
            logger.info("adopted an existing digest", extra={"key": plan.key})
        self.ledger.mark(listed, plan.key)
        new = next_head(
            plan, head, bucket=self.store.bucket, signature=signature, sha256=sha256_hex(raw),
            fingerprint=fingerprint, written_at=now,
        )  # fmt: skip
        if not self.heads.advance(new, trail_arn=trail.arn(plan.source.account), home_region=trail.home_region):
            current = self.heads.get(plan.trail, plan.source.account, plan.source.region, plan.kind)
            if current is not None and current.key == new.key and current.sha256 == new.sha256:
                return current  # a racing digester advanced the chain to this very digest
            raise ChainConflict(f"{plan.key}: chain head moved (now {current.key if current else None})")
        if written:
            summary.written.append(plan.key)
            count = len(body.get("logFiles", []))
            if plan.kind == BACKFILL:
                summary.backfill_digests += 1
                summary.backfilled_files += count
            else:
                summary.digests += 1
                summary.log_files += count
                summary.empty_digests += count == 0
        return new


@lru_cache(maxsize=1)
def _settings() -> DigesterSettings:
    return DigesterSettings.from_env()


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def handler(
    event: dict[str, Any],
    context: Any,
    *,
    settings: DigesterSettings | None = None,
    clock: Clock | None = None,
    signer: KmsSigner | None = None,
    store: DigestStore | None = None,
    heads: ChainHeads | None = None,
    ledger: LedgerReader | None = None,
    registry: PublicKeyRegistry | None = None,
    trail_state: TrailStateStore | None = None,
) -> dict[str, Any]:
    action = (event or {}).get("action")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action: must be one of {sorted(ACTIONS)}, got {action!r}")
    settings = settings or _settings()
    _, function_region = deployment_of(context)
    digester = Digester(
        settings=settings,
        # A non-home region's digester names its digests and trail ARNs after the home region.
        home_region=settings.home_region or function_region,
        signer=signer or KmsSigner(settings.signing_key_id),
        store=store or DigestStore(settings.log_bucket),
        heads=heads or ChainHeads(settings.ledger_table),
        ledger=ledger or LedgerReader(settings.ledger_table),
        registry=registry or PublicKeyRegistry(settings.ledger_table),
        clock=clock or system_clock,
        remaining_ms=context.get_remaining_time_in_millis,
        trail_state=trail_state or trail_state_store(settings),
    )
    summary = digester.run().to_dict()
    metrics.add_metric(name="DigestsWritten", unit=MetricUnit.Count, value=summary["digests"])
    metrics.add_metric(name="BackfillDigestsWritten", unit=MetricUnit.Count, value=summary["backfillDigests"])
    metrics.add_metric(name="BackfilledLogFiles", unit=MetricUnit.Count, value=summary["backfilledFiles"])
    metrics.add_metric(name="DigestChainConflicts", unit=MetricUnit.Count, value=summary["conflicts"])
    metrics.add_metric(name="DigestWindowsBehind", unit=MetricUnit.Count, value=summary["windowsBehind"])
    log = {k: v for k, v in summary.items() if k != "written"}
    logger.info("digester run", extra={"summary": json.loads(json.dumps(log)), "action": action or "scheduled"})
    return summary
