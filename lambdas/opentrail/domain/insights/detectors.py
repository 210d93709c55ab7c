"""The four detectors and their sensitivity.

Every detector runs once per minute (in simulated time offline, every 5 minutes over the
minutes since the last run live) on the per-minute aggregates, and answers for one API:

* `CallRateDetector` (``ApiCallRateInsight``): write calls in the last `window_minutes`
  against the API's seasonal profile (hour of week, hour of day, global level, routine peak).
  Start when the window sum exceeds all of

      mean + rate_sigma x c x sigma,   rate_min_ratio x c x mean,   mean + rate_min_excess x c,
      rate_peak_margin x peak

  where ``c`` is the cold-start factor (`cold_factor` on day 0, falling linearly to 1 after
  `cold_days`). The insight holds while the window stays above ``mean + hold_fraction x
  (start threshold - mean)``.
* `ErrorRateDetector` (``ApiErrorRateInsight``, per error code, reads and writes): errors of
  one code in the window against ``ratio x calls in the window`` (the code's usual share of the
  API's calls), with the same three rules (`error_sigma`, `error_min_ratio`,
  `error_min_excess`). A surge of calls that fail at the usual rate is not an error-rate insight.
* `UnusualDetector` (``UnusualActivityInsight``): an API never called, or a principal (role
  sessions collapse to their role) making write calls that never made one, in the last
  `baseline_days`, once the scope has learnt for `unusual_warmup_minutes`.
* `MissingDetector` (``MissingActivityInsight``): a principal that calls an API regularly —
  at least `missing_min_occurrences` gaps over `missing_min_history_minutes`, usual gaps at most
  `missing_max_cadence_minutes`, gaps' relative spread at most `missing_max_dispersion`, at most
  `missing_max_long_fraction` of the time in long silences
  — stays silent longer than ``max(missing_gap_factor x usual largest gap, usual largest gap +
  missing_slack_minutes)``. Ends when the activity resumes (or after `missing_max_minutes`).

`Sensitivity.preset("low" | "medium" | "high")` gives the documented presets; single knobs are
set with `Sensitivity.with_overrides`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from opentrail.domain.insights.aggregates import NO_ERROR, ApiKey, ApiMinute, CountTable
from opentrail.domain.insights.baseline import (
    MINUTES_PER_DAY,
    AttributionProfile,
    CadenceTracker,
    Expectation,
    RatioProfile,
    SeasonalProfile,
)
from opentrail.domain.insights.records import duration_text, hour_text, minute_text, rate_text, top_share
from opentrail.domain.insights.state import CALL_RATE, ERROR_RATE, MISSING, UNUSUAL

PRESETS: Final = ("low", "medium", "high")


@dataclass(frozen=True)
class Sensitivity:
    """Every knob of the detectors (defaults = the ``medium`` preset)."""

    window_minutes: int = 5  # detection window (minutes); baselines learn from windows this long
    quiet_minutes: int = 5  # an insight ends after this many minutes below its hold threshold
    min_baseline_minutes: int = 60  # no call-rate/error-rate insight on an API younger than this
    cold_days: float = 7.0  # thresholds are raised by up to `cold_factor` until the API is this old
    cold_factor: float = 2.0
    hold_fraction: float = 0.5
    rate_sigma: float = 6.0
    rate_min_ratio: float = 3.0
    rate_min_excess: float = 10.0  # write calls per window above the mean
    rate_peak_margin: float = 2.5
    error_sigma: float = 6.0
    error_min_ratio: float = 3.0
    error_min_excess: float = 10.0  # errors per window above the expected
    unusual_warmup_minutes: int = 1440
    baseline_days: int = 28  # what "never seen" looks back on
    missing_min_history_minutes: int = 1440
    missing_min_occurrences: int = 24
    missing_gap_factor: float = 2.0
    missing_slack_minutes: int = 4
    missing_max_cadence_minutes: int = 120
    missing_max_long_fraction: float = 0.1
    missing_max_dispersion: float = 0.35
    missing_max_minutes: int = 1440

    PRESET_VALUES: ClassVar[dict[str, dict[str, float]]] = {
        "low": {
            "rate_sigma": 8.0,
            "rate_min_ratio": 4.0,
            "rate_min_excess": 20.0,
            "rate_peak_margin": 3.0,
            "error_sigma": 8.0,
            "error_min_ratio": 4.0,
            "error_min_excess": 20.0,
            "missing_gap_factor": 3.0,
            "missing_slack_minutes": 10,
        },
        "medium": {},
        "high": {
            "rate_sigma": 4.5,
            "rate_min_ratio": 2.2,
            "rate_min_excess": 6.0,
            "rate_peak_margin": 2.0,
            "error_sigma": 4.5,
            "error_min_ratio": 2.2,
            "error_min_excess": 6.0,
            "missing_gap_factor": 1.6,
            "missing_slack_minutes": 3,
            "unusual_warmup_minutes": 360,
        },
    }

    @classmethod
    def preset(cls, name: str) -> Sensitivity:
        if name not in cls.PRESET_VALUES:
            raise ValueError(f"sensitivity must be one of {', '.join(PRESETS)}, got {name!r}")
        return cls().with_overrides(cls.PRESET_VALUES[name])

    def with_overrides(self, values: Mapping[str, Any]) -> Sensitivity:
        """A copy with knobs changed; values may be strings (``"rate_sigma=5"`` on a command line)."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown sensitivity knob {name!r}; known: {', '.join(sorted(known))}")
            kind = int if known[name].type in ("int", int) else float
            changes[name] = kind(float(value)) if kind is int else float(value)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def cold(self, age_minutes: int) -> float:
        """Threshold multiplier: `cold_factor` for a new baseline, 1 once `cold_days` old."""
        young = max(0.0, 1.0 - age_minutes / (self.cold_days * MINUTES_PER_DAY))
        return 1.0 + (self.cold_factor - 1.0) * young


# -- per-API state ------------------------------------------------------------------------------


@dataclass
class ApiState:
    """What the engine keeps per API between minutes (serialisable)."""

    first_seen: int
    last_seen: int
    recent: dict[int, ApiMinute] = field(default_factory=dict)  # the last `window_minutes` minutes
    rate: SeasonalProfile | None = None  # write calls (created on the first write)
    calls: RatioProfile = field(default_factory=RatioProfile)  # all calls, all errors
    errors: dict[str, RatioProfile] = field(default_factory=dict)  # by error code
    attributions: AttributionProfile = field(default_factory=AttributionProfile)
    hour: dict[str, CountTable] = field(default_factory=dict)  # this hour's attribution counts
    pending: list[list[float]] = field(default_factory=list)  # call-rate windows not learnt yet

    def window(self, minute: int, size: int) -> list[ApiMinute]:
        return [m for t, m in self.recent.items() if minute - size < t <= minute]

    def push(self, minute: int, aggregate: ApiMinute, size: int) -> None:
        self.recent[minute] = aggregate
        self.last_seen = max(self.last_seen, minute)
        for old in [t for t in self.recent if t <= minute - size]:
            del self.recent[old]
        for name, table in attribution_tables(aggregate).items():
            mine = self.hour.get(name)
            if mine is None:
                self.hour[name] = table.copy()
            else:
                mine.merge(table)

    def to_dict(self) -> dict[str, Any]:
        return {
            "f": self.first_seen,
            "l": self.last_seen,
            "r": {str(t): m.to_dict() for t, m in self.recent.items()},
            "rp": self.rate.to_dict() if self.rate else None,
            "c": self.calls.to_dict(),
            "e": {code: p.to_dict() for code, p in self.errors.items()},
            "at": self.attributions.to_dict(),
            "h": {k: v.to_dict() for k, v in self.hour.items()},
            "p": self.pending,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiState:
        return cls(
            first_seen=int(data["f"]),
            last_seen=int(data["l"]),
            recent={int(t): ApiMinute.from_dict(m) for t, m in data["r"].items()},
            rate=SeasonalProfile.from_dict(data["rp"]) if data.get("rp") else None,
            calls=RatioProfile.from_dict(data["c"]),
            errors={code: RatioProfile.from_dict(p) for code, p in data["e"].items()},
            attributions=AttributionProfile.from_dict(data["at"]),
            hour={k: CountTable(v) for k, v in data["h"].items()},
            pending=[[float(v) for v in item] for item in data.get("p", [])],
        )


def attribution_tables(aggregate: ApiMinute) -> dict[str, CountTable]:
    errors = aggregate.by_error.copy()
    if aggregate.calls > aggregate.errors:
        errors.add(NO_ERROR, aggregate.calls - aggregate.errors)
    return {"userIdentityArn": aggregate.by_principal, "userAgent": aggregate.by_agent, "errorCode": errors}


def merged_tables(minutes: list[ApiMinute]) -> dict[str, CountTable]:
    out: dict[str, CountTable] = {}
    for aggregate in minutes:
        for name, table in attribution_tables(aggregate).items():
            mine = out.get(name)
            if mine is None:
                out[name] = table.copy()
            else:
                mine.merge(table)
    return out


@dataclass
class Finding:
    """A detector's verdict on one API (or API + error code / principal) for one minute."""

    kind: str
    api: ApiKey
    detail: str
    start: bool  # above the start threshold
    hold: bool  # above the hold threshold
    value: float  # metric per minute over the window
    expected: float  # metric per minute in the baseline
    metric: float  # metric in this minute
    tables: dict[str, CountTable]  # this minute's attributions
    window_tables: dict[str, CountTable]  # the window's attributions
    explanation: str


# -- call rate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    mean: float
    start: float
    hold: float


class CallRateDetector:
    kind: Final = CALL_RATE
    LEARN_DELAY: Final = 15  # minutes a window waits before the profile learns it

    def __init__(self, sensitivity: Sensitivity) -> None:
        self.s = sensitivity

    def thresholds(self, expectation: Expectation, age_minutes: int) -> Thresholds:
        s, c, e = self.s, self.s.cold(age_minutes), expectation
        start = max(
            e.mean + s.rate_sigma * c * e.sigma,
            s.rate_min_ratio * c * e.mean,
            e.mean + s.rate_min_excess * c,
            s.rate_peak_margin * e.peak,
        )
        return Thresholds(e.mean, start, e.mean + s.hold_fraction * (start - e.mean))

    def check(self, minute: int, api: ApiKey, state: ApiState) -> Finding | None:
        if state.rate is None or state.rate.samples * self.s.window_minutes < self.s.min_baseline_minutes:
            return None
        window = state.window(minute, self.s.window_minutes)
        total = sum(m.writes for m in window)
        if total == 0:
            return None
        expectation = state.rate.expected(minute)
        limits = self.thresholds(expectation, minute - state.first_seen)
        if total <= limits.hold:
            return None
        now = state.recent.get(minute)
        size = self.s.window_minutes
        value, usual = total / size, expectation.mean / size
        tables = merged_tables(window)
        explanation = (
            f"{api[1]}: {rate_text(value)} write calls/min vs a usual {rate_text(usual)} at this hour "
            f"({hour_text(minute)}){top_share(tables.get('userIdentityArn'))}"
        )
        return Finding(
            kind=CALL_RATE,
            api=api,
            detail="",
            start=total > limits.start,
            hold=True,
            value=value,
            expected=usual,
            metric=float(now.writes) if now else 0.0,
            tables=attribution_tables(now) if now else {},
            window_tables=tables,
            explanation=explanation,
        )

    def learn(self, minute: int, state: ApiState, in_insight: bool = False) -> None:
        """Queue the window ending at `minute`; learn the windows older than `LEARN_DELAY` minutes.

        Learning is delayed so that the first windows of an anomaly — before it crossed the
        start threshold — are known to be part of it when learnt: mean and deviation learn
        them winsorised at the start threshold; peaks learn no window above the start threshold
        and no window that an open call-rate insight covers (`in_insight` at any time while queued).
        """
        if state.rate is None:
            return
        total = float(sum(m.writes for m in state.window(minute, self.s.window_minutes)))
        clip = None
        if state.rate.samples * self.s.window_minutes >= self.s.min_baseline_minutes:
            clip = self.thresholds(state.rate.expected(minute), minute - state.first_seen).start
        state.pending.append([minute, total, clip if clip is not None else -1.0, 1.0])
        if in_insight:
            for item in state.pending:
                item[3] = 0.0
        while state.pending and state.pending[0][0] <= minute - self.LEARN_DELAY:
            at, value, clip_at, peak_ok = state.pending.pop(0)
            cap = None if clip_at < 0 else clip_at
            state.rate.update(int(at), value, cap, cap if peak_ok else -1.0)


# -- error rate -------------------------------------------------------------------------------


class ErrorRateDetector:
    kind: Final = ERROR_RATE

    def __init__(self, sensitivity: Sensitivity) -> None:
        self.s = sensitivity

    def thresholds(self, profile: RatioProfile, calls: float, age_minutes: int) -> Thresholds:
        s, c = self.s, self.s.cold(age_minutes)
        mean, sigma = profile.expected(calls)
        start = max(mean + s.error_sigma * c * sigma, s.error_min_ratio * c * mean, mean + s.error_min_excess * c)
        return Thresholds(mean, start, mean + s.hold_fraction * (start - mean))

    def check(self, minute: int, api: ApiKey, state: ApiState) -> list[Finding]:
        if (minute - state.first_seen) < self.s.min_baseline_minutes:
            return []
        window = state.window(minute, self.s.window_minutes)
        errors = CountTable(limit=64)
        for aggregate in window:
            errors.merge(aggregate.by_error)
        if not errors.counts:
            return []
        calls = sum(m.calls for m in window)
        size = self.s.window_minutes
        findings = []
        for code, count in errors.top():
            profile = state.errors.get(code)
            if profile is None:
                profile = state.errors[code] = RatioProfile(samples=state.calls.samples, calls=state.calls.calls)
            limits = self.thresholds(profile, calls, minute - state.first_seen)
            if count <= limits.hold:
                continue
            now = state.recent.get(minute)
            window_tables = _error_tables(window, code)
            usual_share = profile.ratio
            explanation = (
                f"{api[1]}: {rate_text(count / size)} {code} errors/min ({100 * count / calls:.0f}% of calls) "
                f"vs a usual {rate_text(limits.mean / size)} ({100 * usual_share:.1f}% of calls)"
                f"{top_share(window_tables.get('userIdentityArn'))}"
            )
            findings.append(
                Finding(
                    kind=ERROR_RATE,
                    api=api,
                    detail=code,
                    start=count > limits.start,
                    hold=True,
                    value=count / size,
                    expected=profile.errors / size,
                    metric=float(now.by_error.counts.get(code, 0)) if now else 0.0,
                    tables=_error_tables([now], code) if now else {},
                    window_tables=window_tables,
                    explanation=explanation,
                )
            )
        return findings

    def learn(self, minute: int, state: ApiState) -> None:
        window = state.window(minute, self.s.window_minutes)
        calls = float(sum(m.calls for m in window))
        errors = CountTable(limit=64)
        for aggregate in window:
            errors.merge(aggregate.by_error)
        state.calls.update(calls, float(errors.total()))
        young = (minute - state.first_seen) < self.s.min_baseline_minutes
        for code, profile in state.errors.items():
            clip = None if young else self.thresholds(profile, calls, minute - state.first_seen).start
            profile.update(calls, float(errors.counts.get(code, 0)), clip)


def _error_tables(window: list[ApiMinute], code: str) -> dict[str, CountTable]:
    principals = CountTable()
    agents = CountTable()
    total = 0
    for aggregate in window:
        count = aggregate.by_error.counts.get(code, 0)
        if not count:
            continue
        total += count
        table = aggregate.by_error_principal.get(code)
        if table is not None:
            principals.merge(table)
        # user agents are not broken down by error code: attribute the code's errors to the
        # minute's agents in proportion (exact when one agent made the calls)
        for agent, n in aggregate.by_agent.top():
            share = round(count * n / max(aggregate.calls, 1))
            if share:
                agents.add(agent, share)
    return {"userIdentityArn": principals, "userAgent": agents, "errorCode": CountTable({code: total})}


# -- unusual activity -------------------------------------------------------------------------


def api_seen_key(api: ApiKey) -> str:
    return f"api:{api[0]} {api[1]}"


def writer_seen_key(principal: str) -> str:
    return f"writer:{principal}"


class UnusualDetector:
    kind: Final = UNUSUAL

    def __init__(self, sensitivity: Sensitivity) -> None:
        self.s = sensitivity

    def explain_api(self, api: ApiKey, aggregate: ApiMinute, baseline_minutes: int) -> str:
        who = aggregate.by_principal.top(1)
        agent = aggregate.by_agent.top(1)
        by = f" by {who[0][0]}" if who else ""
        using = f" with {agent[0][0]}" if agent else ""
        return (
            f"{api[1]} ({api[0]}) was never called in the {duration_text(baseline_minutes)} baseline; "
            f"{aggregate.calls} call(s) in its first minute{by}{using}"
        )

    def explain_writer(self, principal: str, api: ApiKey, aggregate: ApiMinute, baseline_minutes: int) -> str:
        return (
            f"{principal} made write calls ({api[1]} on {api[0]}, {aggregate.writers.counts.get(principal, 0)} "
            f"this minute) and had made none in the {duration_text(baseline_minutes)} baseline"
        )


# -- missing activity -------------------------------------------------------------------------


def cadence_key(api: ApiKey, principal: str) -> str:
    return f"{api[0]} {api[1]} {principal}"


class MissingDetector:
    kind: Final = MISSING

    def __init__(self, sensitivity: Sensitivity) -> None:
        self.s = sensitivity

    def regular(self, tracker: CadenceTracker, minute: int) -> bool:
        s = self.s
        return (
            tracker.gaps >= s.missing_min_occurrences
            and minute - tracker.first >= s.missing_min_history_minutes
            and tracker.decayed_high(minute) <= s.missing_max_cadence_minutes
            and tracker.long_fraction <= s.missing_max_long_fraction
            and tracker.dispersion <= s.missing_max_dispersion
        )

    def deadline(self, tracker: CadenceTracker, minute: int) -> float:
        """Minutes of silence after which the activity is missing."""
        high = max(tracker.decayed_high(minute), tracker.typical, 1.0)
        return max(self.s.missing_gap_factor * high, high + self.s.missing_slack_minutes)

    def explain(self, api: ApiKey, principal: str, tracker: CadenceTracker, minute: int) -> str:
        history = duration_text(tracker.last - tracker.first)
        return (
            f"{api[1]} by {principal}: usually every {rate_text(tracker.typical)} min "
            f"(largest usual gap {rate_text(tracker.decayed_high(minute))} min, over the last {history}), "
            f"no call for {minute - tracker.last} min since {minute_text(tracker.last)}"
        )
