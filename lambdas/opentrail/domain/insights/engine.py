"""The Insights engine of one scope (account, region): minutes in, Insights records out.

    engine = InsightsEngine(scope, Sensitivity.preset("medium"))     # or InsightsEngine.from_dict(item)
    records = engine.advance(until_minute, minutes)                   # {minute: {api: ApiMinute}}
    item = engine.to_dict()                                           # baselines + open insights

`advance` processes every minute after the last one processed, up to `until_minute`, in order
(minutes absent from `minutes` had no management events). The live function calls it every few
minutes with the aggregates the batcher stored; the offline mode calls `process_minute` as it
streams log files. Both see the same detectors and the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from opentrail.domain.insights.aggregates import OTHER, ApiKey, ApiMinute, Scope, principal_key
from opentrail.domain.insights.baseline import MINUTES_PER_DAY, CadenceTracker, SeasonalProfile, SeenSet
from opentrail.domain.insights.detectors import (
    ApiState,
    CallRateDetector,
    ErrorRateDetector,
    Finding,
    MissingDetector,
    Sensitivity,
    UnusualDetector,
    api_seen_key,
    attribution_tables,
    cadence_key,
    writer_seen_key,
)
from opentrail.domain.insights.records import Record, insight_record
from opentrail.domain.insights.state import (
    CALL_RATE,
    ERROR_RATE,
    INSIGHT_TYPES,
    MISSING,
    UNUSUAL,
    BaselineAttributions,
    InsightTracker,
    OpenInsight,
    insight_key,
    shared_event_id,
)

STATE_VERSION: Final = 1
_QUIET_KINDS: Final = frozenset({CALL_RATE, ERROR_RATE, UNUSUAL})


class InsightsEngine:
    """`kinds`: the insight types reported (a trail's InsightSelectors; default all). Every
    detector keeps learning whatever `kinds` says, so enabling a type later finds a baseline."""

    def __init__(
        self, scope: Scope, sensitivity: Sensitivity | None = None, kinds: Iterable[str] | None = None
    ) -> None:
        self.scope = scope
        self.s = sensitivity or Sensitivity()
        self.kinds = frozenset(INSIGHT_TYPES if kinds is None else kinds)
        self.first_minute: int | None = None
        self.last_minute: int | None = None
        self.apis: dict[ApiKey, ApiState] = {}
        self.seen = SeenSet()
        self.cadences: dict[str, CadenceTracker] = {}
        self.cadence_of: dict[str, tuple[ApiKey, str]] = {}
        self.regular: set[str] = set()
        self.tracker = InsightTracker(quiet_minutes=self.s.quiet_minutes)
        self.rate = CallRateDetector(self.s)
        self.errors = ErrorRateDetector(self.s)
        self.unusual = UnusualDetector(self.s)
        self.missing = MissingDetector(self.s)

    # -- driving ------------------------------------------------------------------------------

    def advance(self, until_minute: int, minutes: Mapping[int, Mapping[ApiKey, ApiMinute]]) -> list[Record]:
        """Process every minute after the last processed one up to `until_minute` (inclusive)."""
        start = until_minute if self.last_minute is None else self.last_minute + 1
        if minutes and self.last_minute is None:
            start = min(start, min(minutes))
        out: list[Record] = []
        for minute in range(start, until_minute + 1):
            out += self.process_minute(minute, minutes.get(minute, {}))
        return out

    def process_minute(self, minute: int, apis: Mapping[ApiKey, ApiMinute]) -> list[Record]:
        """Process one minute; minutes skipped since the last call are processed as empty."""
        out: list[Record] = []
        if self.last_minute is not None:
            if minute <= self.last_minute:
                raise ValueError(f"minute {minute} already processed (last {self.last_minute})")
            for empty in range(self.last_minute + 1, minute):
                out += self._step(empty, {})
        out += self._step(minute, apis)
        return out

    def close(self) -> list[Record]:
        """End every open insight now (offline mode, at the end of the analysed period)."""
        out = []
        for key in sorted(self.tracker.open):
            out.append(insight_record(self.scope, self.tracker.finish(key), "End"))
        return out

    def pause(self, resume_minute: int) -> list[Record]:
        """The events of the minutes after the last processed one up to `resume_minute` are
        unknown (the trail was not logging): end the open insights, and resume at
        `resume_minute` as if the pause had not happened — no baseline learns the missing
        minutes as quiet, and regular callers' silence is counted from the resumption."""
        if self.last_minute is None or resume_minute <= self.last_minute + 1:
            return []
        out = self.close()
        gap = resume_minute - 1 - self.last_minute
        for tracker in self.cadences.values():
            tracker.last += gap
        self.last_minute = resume_minute - 1
        return out

    @property
    def open_insights(self) -> list[OpenInsight]:
        return list(self.tracker.open.values())

    # -- one minute ---------------------------------------------------------------------------

    def _step(self, minute: int, apis: Mapping[ApiKey, ApiMinute]) -> list[Record]:
        if self.first_minute is None:
            self.first_minute = minute
        self.last_minute = minute
        out: list[Record] = []
        for api in sorted(apis):
            out += self._observe(minute, api, apis[api])
        for api, state in self.apis.items():
            if state.last_seen <= minute - self.s.window_minutes:
                continue
            finding = self.rate.check(minute, api, state)
            if finding is not None:
                out += self._handle(minute, finding, state)
            for finding in self.errors.check(minute, api, state):
                out += self._handle(minute, finding, state)
        out += self._check_missing(minute)
        for insight in self.tracker.subsided(minute, _QUIET_KINDS):
            if insight.kind == UNUSUAL:
                self.seen.see(writer_seen_key(insight.detail) if insight.detail else api_seen_key(insight.api), minute)
            out.append(insight_record(self.scope, insight, "End"))
        if (minute + 1) % self.s.window_minutes == 0:
            for api, state in self.apis.items():
                self.rate.learn(minute, state, insight_key(CALL_RATE, api) in self.tracker.open)
                if state.last_seen > minute - self.s.window_minutes:
                    self.errors.learn(minute, state)
        if (minute + 1) % 60 == 0:
            for state in self.apis.values():
                if state.hour:
                    state.attributions.update_hour(state.hour)
                    state.hour = {}
        if (minute + 1) % MINUTES_PER_DAY == 0:
            self._forget(minute)
        return out

    def _observe(self, minute: int, api: ApiKey, aggregate: ApiMinute) -> list[Record]:
        out: list[Record] = []
        state = self.apis.get(api)
        if state is None:
            state = self.apis[api] = ApiState(first_seen=minute, last_seen=minute)
        state.push(minute, aggregate, self.s.window_minutes)
        if aggregate.writes and state.rate is None:
            state.rate = SeasonalProfile()
        warm = self.first_minute is not None and minute - self.first_minute >= self.s.unusual_warmup_minutes
        tables = attribution_tables(aggregate)
        # unusual: an API never called
        out += self._unusual(minute, api_seen_key(api), api, "", warm, aggregate.calls, tables, aggregate)
        # unusual: a principal that never wrote, writing
        for principal, count in aggregate.writers.top():
            if principal != OTHER:
                out += self._unusual(minute, writer_seen_key(principal), api, principal, warm, count, tables, aggregate)
        # missing: cadences of (API, principal)
        per_principal: dict[str, int] = {}
        for arn, count in aggregate.by_principal.top():
            if arn != OTHER:
                key = principal_key(arn)
                per_principal[key] = per_principal.get(key, 0) + count
        for principal, count in per_principal.items():
            out += self._cadence(minute, api, principal, count)
        return out

    def _unusual(
        self,
        minute: int,
        seen_key: str,
        api: ApiKey,
        principal: str,
        warm: bool,
        count: int,
        tables: dict[str, Any],
        aggregate: ApiMinute,
    ) -> list[Record]:
        if seen_key in self.seen:
            self.seen.see(seen_key, minute)
            return []
        key = insight_key(UNUSUAL, api, principal)
        insight = self.tracker.get(key)
        if insight is not None:
            insight.mark_active(minute)
            insight.add(minute, float(count), tables)
            return []
        if not warm or UNUSUAL not in self.kinds:
            self.seen.see(seen_key, minute)
            return []
        baseline = self._baseline_minutes(minute)
        explanation = (
            self.unusual.explain_writer(principal, api, aggregate, baseline)
            if principal
            else self.unusual.explain_api(api, aggregate, baseline)
        )
        insight = OpenInsight(
            kind=UNUSUAL,
            api=api,
            detail=principal,
            shared_event_id=shared_event_id(self.scope, key, minute),
            start=minute,
            last_active=minute,
            start_average=float(count),
            baseline_average=0.0,
            baseline_duration=baseline,
            explanation=explanation,
            start_tables={k: v.copy() for k, v in tables.items()},
            start_minutes=1,
            baseline_attributions={},
        )
        insight.add(minute, float(count), tables)
        self.tracker.begin(insight)
        return [insight_record(self.scope, insight, "Start")]

    def _cadence(self, minute: int, api: ApiKey, principal: str, count: int) -> list[Record]:
        key = cadence_key(api, principal)
        tracker = self.cadences.get(key)
        if tracker is None:
            self.cadences[key] = CadenceTracker(first=minute, last=minute, calls=float(count))
            self.cadence_of[key] = (api, principal)
            return []
        tracker.observe(minute, count)
        if self.missing.regular(tracker, minute):
            self.regular.add(key)
        else:
            self.regular.discard(key)
        insight = self.tracker.get(insight_key(MISSING, api, principal))
        if insight is None:
            return []
        insight.last_active = minute - 1
        insight.explanation += f"; resumed at {_hhmm(minute)} after {minute - insight.start} min"
        self.tracker.finish(insight.key)
        return [insight_record(self.scope, insight, "End")]

    def _check_missing(self, minute: int) -> list[Record]:
        out: list[Record] = []
        for insight in [i for i in self.tracker.open.values() if i.kind == MISSING]:
            if minute - insight.start >= self.s.missing_max_minutes:
                insight.last_active = minute - 1
                insight.explanation += f"; still silent after {minute - insight.start} min, no longer tracked"
                self.tracker.finish(insight.key)
                ckey = cadence_key(insight.api, insight.detail)
                self.cadences.pop(ckey, None)
                self.cadence_of.pop(ckey, None)
                self.regular.discard(ckey)
                out.append(insight_record(self.scope, insight, "End"))
            else:
                insight.last_active = minute
        for key in sorted(self.regular if MISSING in self.kinds else ()):
            tracker = self.cadences[key]
            if minute - tracker.last <= self.missing.deadline(tracker, minute):
                continue
            api, principal = self.cadence_of[key]
            ikey = insight_key(MISSING, api, principal)
            if self.tracker.get(ikey) is not None:
                continue
            usual = tracker.calls / max(tracker.typical, 1.0)
            insight = OpenInsight(
                kind=MISSING,
                api=api,
                detail=principal,
                shared_event_id=shared_event_id(self.scope, ikey, minute),
                start=minute,
                last_active=minute,
                start_average=0.0,
                baseline_average=usual,
                baseline_duration=min(minute - tracker.first, self.s.baseline_days * MINUTES_PER_DAY),
                explanation=self.missing.explain(api, principal, tracker, minute),
                baseline_attributions={"userIdentityArn": [(principal, usual)]},
            )
            self.tracker.begin(insight)
            out.append(insight_record(self.scope, insight, "Start"))
        return out

    def _handle(self, minute: int, finding: Finding, state: ApiState) -> list[Record]:
        key = insight_key(finding.kind, finding.api, finding.detail)
        insight = self.tracker.get(key)
        if insight is not None:
            if finding.hold:
                insight.mark_active(minute)
                insight.add(minute, finding.metric, finding.tables)
            return []
        if not finding.start or finding.kind not in self.kinds:
            return []
        insight = OpenInsight(
            kind=finding.kind,
            api=finding.api,
            detail=finding.detail,
            shared_event_id=shared_event_id(self.scope, key, minute),
            start=minute,
            last_active=minute,
            start_average=finding.value,
            baseline_average=finding.expected,
            baseline_duration=min(minute - state.first_seen, self.s.baseline_days * MINUTES_PER_DAY),
            explanation=finding.explanation,
            start_tables=finding.window_tables,
            start_minutes=self.s.window_minutes,
            baseline_attributions=self._baseline_attributions(state, finding),
        )
        insight.add(minute, finding.metric, finding.tables)
        self.tracker.begin(insight)
        return [insight_record(self.scope, insight, "Start")]

    def _baseline_attributions(self, state: ApiState, finding: Finding) -> BaselineAttributions:
        out = {name: state.attributions.top(name) for name in ("userIdentityArn", "userAgent", "errorCode")}
        if finding.kind == ERROR_RATE:
            out["errorCode"] = [(v, a) for v, a in out["errorCode"] if v == finding.detail]
        return out

    def _baseline_minutes(self, minute: int) -> int:
        first = self.first_minute if self.first_minute is not None else minute
        return min(minute - first, self.s.baseline_days * MINUTES_PER_DAY)

    def _forget(self, minute: int) -> None:
        horizon = minute - self.s.baseline_days * MINUTES_PER_DAY
        self.seen.expire(horizon)
        for api in [a for a, s in self.apis.items() if s.last_seen < horizon]:
            del self.apis[api]
        open_missing = {cadence_key(i.api, i.detail) for i in self.tracker.open.values() if i.kind == MISSING}
        for key in [k for k, t in self.cadences.items() if t.last < horizon and k not in open_missing]:
            del self.cadences[key]
            del self.cadence_of[key]
            self.regular.discard(key)

    # -- state --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to resume: baselines, seen sets, cadences and open insights."""
        return {
            "v": STATE_VERSION,
            "scope": list(self.scope),
            "f": self.first_minute,
            "l": self.last_minute,
            "apis": {f"{a[0]} {a[1]}": s.to_dict() for a, s in sorted(self.apis.items())},
            "seen": self.seen.to_dict(),
            "cad": {k: [*self.cadence_of[k][0], self.cadence_of[k][1], t.to_dict()] for k, t in self.cadences.items()},
            "open": self.tracker.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], sensitivity: Sensitivity | None = None, kinds: Iterable[str] | None = None
    ) -> InsightsEngine:
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"unknown Insights state version {data.get('v')!r}")
        engine = cls((str(data["scope"][0]), str(data["scope"][1])), sensitivity, kinds)
        engine.first_minute = data["f"]
        engine.last_minute = data["l"]
        for key, value in data["apis"].items():
            source, _, name = key.partition(" ")
            engine.apis[(source, name)] = ApiState.from_dict(value)
        engine.seen = SeenSet.from_dict(data["seen"])
        for key, (source, name, principal, value) in data["cad"].items():
            tracker = CadenceTracker.from_dict(value)
            engine.cadences[key] = tracker
            engine.cadence_of[key] = ((source, name), principal)
            if engine.last_minute is not None and engine.missing.regular(tracker, engine.last_minute):
                engine.regular.add(key)
        engine.tracker = InsightTracker.from_dict(data["open"])
        return engine


def _hhmm(minute: int) -> str:
    return f"{(minute // 60) % 24:02d}:{minute % 60:02d} UTC"
