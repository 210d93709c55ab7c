"""Baselines: what "usual" means for an API, learnt online from per-minute aggregates.

All baselines are exponentially weighted (old data fades) and winsorised (a value above the
current alarm threshold is learnt as the threshold, so an anomaly barely moves the baseline),
keep a few floats per series and serialise to compact dicts (`to_dict`/`from_dict`).

* `SeasonalProfile` — a count series (e.g. an API's write calls) summed over 5-minute windows,
  with a mean and a mean absolute deviation per hour of day (24 buckets) and per hour of week
  (168 buckets), shrunk towards a global level while a bucket has few samples, and a slowly
  decaying peak per hour of day (so routine bursts, such as deployments, set the bar).
* `RatioProfile` — the share of an API's calls failing with one error code.
* `CadenceTracker` — the gaps between the minutes in which one principal calls one API: the
  typical gap, the largest usual gap, and how much of the time is spent in unusually long gaps
  (a job is "regular" when almost never silent for long).
* `AttributionProfile` — per-minute averages of an API's top principals, user agents and
  error codes (the ``baseline`` side of the attributions in Insights records).
* `SeenSet` — what was seen (APIs, principals that write) and when last, for unusual activity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from opentrail.domain.insights.aggregates import OTHER, TOP_K, CountTable

MINUTES_PER_DAY: Final = 1440
MINUTES_PER_WEEK: Final = 7 * MINUTES_PER_DAY
_EPOCH_WEEKDAY_HOURS: Final = 72  # 1970-01-01 was a Thursday: hour 72 of a Monday-based week
MAD_TO_SIGMA: Final = 1.25  # mean absolute deviation -> standard deviation (normal)


def hour_of_day(minute: int) -> int:
    return (minute // 60) % 24


def hour_of_week(minute: int) -> int:
    """0 = Monday 00:00-01:00 UTC ... 167 = Sunday 23:00-24:00 UTC."""
    return (minute // 60 + _EPOCH_WEEKDAY_HOURS) % 168


def _r(value: float) -> float:
    return round(value, 4)


def _ew(mean: float, value: float, n: float, horizon: float) -> float:
    """Exponentially weighted mean: a running average for the first `horizon` samples."""
    alpha = 1.0 / min(n, horizon)
    return mean + alpha * (value - mean)


@dataclass(frozen=True)
class Expectation:
    """What a `SeasonalProfile` expects for a 5-minute window ending at some minute."""

    mean: float  # expected window sum
    sigma: float  # spread of the window sum (robust; at least Poisson)
    peak: float  # largest routine window sum around this hour (decayed)
    samples: float  # how much data stands behind `mean` (bucket samples, weighted)


@dataclass
class SeasonalProfile:
    """Hour-of-day and hour-of-week profile of a count series, in 5-minute window sums.

    Horizons (in samples) set the memory: a sample is one 5-minute window, so a bucket of the
    hour-of-day profile gets 12 samples a day (horizon 84 = about a week), a bucket of the
    hour-of-week profile 12 a week (horizon 48 = about four weeks), the global level 288 a day
    (horizon 864 = three days). Peaks decay with a half-life of 14 days (hour of day) and
    7 days (global).
    """

    HOD_HORIZON: ClassVar[float] = 84
    HOW_HORIZON: ClassVar[float] = 48
    GLOBAL_HORIZON: ClassVar[float] = 864
    HOD_PRIOR: ClassVar[float] = 6.0  # samples of the global level a bucket starts from
    HOW_PRIOR: ClassVar[float] = 24.0  # samples of the hour-of-day profile a week bucket starts from
    HOD_PEAK_DECAY: ClassVar[float] = 0.5 ** (1 / 168)  # per sample of that bucket: 14 days
    GLOBAL_PEAK_DECAY: ClassVar[float] = 0.5 ** (1 / 2016)  # per window: 7 days

    samples: int = 0
    g_mean: float = 0.0
    g_dev: float = 0.0
    g_peak: float = 0.0
    hod_mean: list[float] = field(default_factory=lambda: [0.0] * 24)
    hod_dev: list[float] = field(default_factory=lambda: [0.0] * 24)
    hod_peak: list[float] = field(default_factory=lambda: [0.0] * 24)
    hod_n: list[int] = field(default_factory=lambda: [0] * 24)
    how_mean: list[float] = field(default_factory=lambda: [0.0] * 168)
    how_dev: list[float] = field(default_factory=lambda: [0.0] * 168)
    how_n: list[int] = field(default_factory=lambda: [0] * 168)

    def expected(self, minute: int) -> Expectation:
        h, w = hour_of_day(minute), hour_of_week(minute)
        n_h = min(self.hod_n[h], self.HOD_HORIZON)
        n_w = min(self.how_n[w], self.HOW_HORIZON)
        hod_mean = (n_h * self.hod_mean[h] + self.HOD_PRIOR * self.g_mean) / (n_h + self.HOD_PRIOR)
        hod_dev = (n_h * self.hod_dev[h] + self.HOD_PRIOR * self.g_dev) / (n_h + self.HOD_PRIOR)
        mean = (n_w * self.how_mean[w] + self.HOW_PRIOR * hod_mean) / (n_w + self.HOW_PRIOR)
        dev = (n_w * self.how_dev[w] + self.HOW_PRIOR * hod_dev) / (n_w + self.HOW_PRIOR)
        # The peak of this hour and its neighbours (bursts drift by an hour); while the
        # hour-of-day profile is young, the global peak stands in, fading as buckets fill.
        local_peak = max(self.hod_peak[h], self.hod_peak[(h + 1) % 24], self.hod_peak[(h - 1) % 24])
        global_share = max(0.75, 1.0 - n_h / 84)
        peak = max(local_peak, global_share * self.g_peak)
        sigma = max(MAD_TO_SIGMA * dev, math.sqrt(max(mean, 1.0)))
        return Expectation(mean=mean, sigma=sigma, peak=peak, samples=float(n_h))

    def update(self, minute: int, value: float, clip: float | None = None, peak_cap: float | None = None) -> None:
        """Learn the window sum `value` of the window ending at `minute`.

        Mean and deviation learn ``min(value, clip)``; peaks learn only windows at most
        `peak_cap` (an anomalous window must not raise the bar for the next anomaly).
        """
        learn_peak = peak_cap is None or value <= peak_cap
        if clip is not None:
            value = min(value, clip)
        h, w = hour_of_day(minute), hour_of_week(minute)
        self.samples += 1
        self.hod_n[h] += 1
        self.how_n[w] += 1
        self.g_dev = _ew(self.g_dev, abs(value - self.g_mean), self.samples, self.GLOBAL_HORIZON)
        self.g_mean = _ew(self.g_mean, value, self.samples, self.GLOBAL_HORIZON)
        self.hod_dev[h] = _ew(self.hod_dev[h], abs(value - self.hod_mean[h]), self.hod_n[h], self.HOD_HORIZON)
        self.hod_mean[h] = _ew(self.hod_mean[h], value, self.hod_n[h], self.HOD_HORIZON)
        self.how_dev[w] = _ew(self.how_dev[w], abs(value - self.how_mean[w]), self.how_n[w], self.HOW_HORIZON)
        self.how_mean[w] = _ew(self.how_mean[w], value, self.how_n[w], self.HOW_HORIZON)
        self.hod_peak[h] *= self.HOD_PEAK_DECAY
        self.g_peak *= self.GLOBAL_PEAK_DECAY
        if learn_peak:
            self.hod_peak[h] = max(self.hod_peak[h], value)
            self.g_peak = max(self.g_peak, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.samples,
            "g": [_r(self.g_mean), _r(self.g_dev), _r(self.g_peak)],
            "hm": [_r(v) for v in self.hod_mean],
            "hd": [_r(v) for v in self.hod_dev],
            "hp": [_r(v) for v in self.hod_peak],
            "hn": list(self.hod_n),
            "wm": [_r(v) for v in self.how_mean],
            "wd": [_r(v) for v in self.how_dev],
            "wn": list(self.how_n),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeasonalProfile:
        g_mean, g_dev, g_peak = (float(v) for v in data["g"])
        return cls(
            samples=int(data["n"]),
            g_mean=g_mean,
            g_dev=g_dev,
            g_peak=g_peak,
            hod_mean=[float(v) for v in data["hm"]],
            hod_dev=[float(v) for v in data["hd"]],
            hod_peak=[float(v) for v in data["hp"]],
            hod_n=[int(v) for v in data["hn"]],
            how_mean=[float(v) for v in data["wm"]],
            how_dev=[float(v) for v in data["wd"]],
            how_n=[int(v) for v in data["wn"]],
        )


@dataclass
class RatioProfile:
    """Share of an API's calls that fail with one error code, over 5-minute windows.

    `calls` and `errors` are exponentially weighted window sums (horizon 2016 windows = one
    week), `dev` the mean absolute deviation of the window's errors from ``ratio * calls``.
    """

    HORIZON: ClassVar[float] = 2016

    samples: int = 0
    calls: float = 0.0
    errors: float = 0.0
    dev: float = 0.0

    @property
    def ratio(self) -> float:
        return self.errors / self.calls if self.calls > 0 else 0.0

    def expected(self, window_calls: float) -> tuple[float, float]:
        """(expected errors, spread) for a window with `window_calls` calls."""
        mean = self.ratio * window_calls
        sigma = max(MAD_TO_SIGMA * self.dev, math.sqrt(max(mean, 1.0)))
        return mean, sigma

    def update(self, window_calls: float, window_errors: float, clip: float | None = None) -> None:
        if clip is not None:
            window_errors = min(window_errors, clip)
        self.samples += 1
        self.dev = _ew(self.dev, abs(window_errors - self.ratio * window_calls), self.samples, self.HORIZON)
        self.calls = _ew(self.calls, window_calls, self.samples, self.HORIZON)
        self.errors = _ew(self.errors, window_errors, self.samples, self.HORIZON)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.samples, "v": [_r(self.calls), _r(self.errors), _r(self.dev)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RatioProfile:
        calls, errors, dev = (float(v) for v in data["v"])
        return cls(samples=int(data["n"]), calls=calls, errors=errors, dev=dev)


@dataclass
class CadenceTracker:
    """The rhythm of one principal calling one API: gaps between minutes with calls.

    * `typical` — exponentially weighted mean of usual gaps (minutes), `dev` their mean absolute
      deviation (`dispersion` = dev / typical);
    * `high` — the largest usual gap, decaying with a half-life of 7 days;
    * `long_time` / `all_time` — time spent in long gaps (over `LONG_FACTOR` x typical) and in
      all gaps, both decaying with a half-life of 7 days. A job that runs every few minutes
      around the clock spends almost no time in long gaps; office-hours traffic spends most
      of the night in one, and is therefore not "regular".
    """

    LONG_FACTOR: ClassVar[float] = 4.0
    HORIZON: ClassVar[float] = 200
    HALF_LIFE_MINUTES: ClassVar[float] = 7 * MINUTES_PER_DAY

    first: int
    last: int
    gaps: int = 0
    typical: float = 0.0
    high: float = 0.0
    high_at: int = 0
    long_time: float = 0.0
    all_time: float = 0.0
    calls: float = 0.0  # calls per active minute (EW)
    dev: float = 0.0  # mean absolute deviation of gaps from `typical` (long gaps count, capped)

    def observe(self, minute: int, calls: int) -> int | None:
        """Note calls in `minute`; returns the gap since the previous active minute, if any."""
        self.calls = _ew(self.calls, float(calls), self.gaps + 1, self.HORIZON)
        if minute <= self.last:
            return None
        gap = minute - self.last
        self.last = minute
        decay = float(0.5 ** (gap / self.HALF_LIFE_MINUTES))
        self.long_time *= decay
        self.all_time = self.all_time * decay + gap
        is_long = self.gaps >= 8 and gap > self.LONG_FACTOR * max(self.typical, 1.0)
        if self.gaps:
            deviation = min(abs(gap - self.typical), self.LONG_FACTOR * max(self.typical, 1.0))
            self.dev = _ew(self.dev, deviation, self.gaps + 1, self.HORIZON)
        if is_long:
            self.long_time += gap
        else:
            self.gaps += 1
            self.typical = _ew(self.typical, float(gap), self.gaps, self.HORIZON)
            self.high = max(self.decayed_high(minute), float(gap))
            self.high_at = minute
        return gap

    def decayed_high(self, minute: int) -> float:
        return float(self.high * 0.5 ** ((minute - self.high_at) / self.HALF_LIFE_MINUTES))

    @property
    def dispersion(self) -> float:
        """Relative spread of the gaps: 0 for a clock-like job, about 0.7 for random calls."""
        return self.dev / max(self.typical, 1.0)

    @property
    def long_fraction(self) -> float:
        return self.long_time / self.all_time if self.all_time > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "f": self.first,
            "l": self.last,
            "g": self.gaps,
            "v": [_r(self.typical), _r(self.high), _r(self.long_time), _r(self.all_time), _r(self.calls), _r(self.dev)],
            "ha": self.high_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CadenceTracker:
        typical, high, long_time, all_time, calls, dev = (float(v) for v in data["v"])
        return cls(
            first=int(data["f"]),
            last=int(data["l"]),
            gaps=int(data["g"]),
            typical=typical,
            high=high,
            high_at=int(data["ha"]),
            long_time=long_time,
            all_time=all_time,
            calls=calls,
            dev=dev,
        )


ATTRIBUTES: Final = ("userIdentityArn", "userAgent", "errorCode")


@dataclass
class AttributionProfile:
    """Per-minute averages of an API's top values per attribute, learnt once an hour.

    Horizon 168 hours (a week); at most `TOP_K` values per attribute are kept.
    """

    HORIZON: ClassVar[float] = 168

    hours: int = 0
    averages: dict[str, dict[str, float]] = field(default_factory=dict)

    def update_hour(self, tables: Mapping[str, CountTable], minutes: int = 60) -> None:
        self.hours += 1
        alpha = 1.0 / min(self.hours, self.HORIZON)
        for attribute in ATTRIBUTES:
            current = self.averages.setdefault(attribute, {})
            table = tables.get(attribute)
            counts = table.counts if table is not None else {}
            for value in set(current) | set(counts):
                if value == OTHER:
                    continue
                rate = counts.get(value, 0) / minutes
                current[value] = current.get(value, 0.0) + alpha * (rate - current.get(value, 0.0))
            kept = sorted(current.items(), key=lambda item: -item[1])[:TOP_K]
            self.averages[attribute] = {v: a for v, a in kept if a >= 1e-5}

    def top(self, attribute: str, n: int = 5) -> list[tuple[str, float]]:
        values = self.averages.get(attribute, {})
        return sorted(values.items(), key=lambda item: (-item[1], item[0]))[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"h": self.hours, "a": {k: {v: _r(x) for v, x in d.items()} for k, d in self.averages.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionProfile:
        return cls(
            hours=int(data["h"]),
            averages={k: {v: float(x) for v, x in d.items()} for k, d in data["a"].items()},
        )


@dataclass
class SeenSet:
    """Keys seen, with the minute each was last seen; forgotten after `retention` minutes."""

    last_seen: dict[str, int] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.last_seen

    def see(self, key: str, minute: int) -> None:
        if self.last_seen.get(key, -1) < minute:
            self.last_seen[key] = minute

    def expire(self, before_minute: int) -> None:
        self.last_seen = {k: m for k, m in self.last_seen.items() if m >= before_minute}

    def to_dict(self) -> dict[str, int]:
        return dict(self.last_seen)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeenSet:
        return cls({str(k): int(v) for k, v in data.items()})
