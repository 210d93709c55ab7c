"""A small evaluation (benchmarks/insights_eval.py at reduced scale): every kind of anomaly on
every scored day, two seeds of the sparse shape, 11 days (7 of warm-up). The full evaluation —
three shapes, three seeds, 35 days — runs in `make bench` and is published in docs/insights.md."""

from __future__ import annotations

import statistics

import pytest

from benchmarks.insights_eval import KINDS, RunResult, run, summarise

# The targets are F1 >= 0.9 per kind, <= 1 false alarm per clean day and a median delay
# <= 10 minutes; with 6 anomalies per kind a single miss costs 0.09 of F1, hence the margin here.
MIN_F1 = 0.75
MAX_MEDIAN_DELAY = 12


@pytest.fixture(scope="module")
def results() -> list[RunResult]:
    return [run("sparse", seed, 11, dense=True) for seed in (1, 2)]


def test_small_evaluation_meets_the_targets_for_every_kind(results: list[RunResult]) -> None:
    summary = summarise(results)

    for kind in KINDS:
        scores = summary["kinds"][kind]
        assert scores["anomalies"] >= 6, kind
        assert scores["f1"] >= MIN_F1, (kind, scores)
        assert scores["median_delay_min"] is not None
        assert scores["median_delay_min"] <= MAX_MEDIAN_DELAY, (kind, scores)


def test_small_evaluation_raises_at_most_one_false_alarm_per_scored_day(results: list[RunResult]) -> None:
    scored_days = sum(r.days - 7 for r in results)
    false_alarms = sum(r.false_alarms for r in results)

    assert false_alarms <= scored_days, [r.false for r in results]
    assert statistics.mean(r.cold_start_alarms for r in results) <= 3


def test_engine_state_stays_small(results: list[RunResult]) -> None:
    for result in results:
        assert result.largest_api_bytes < 12_000
        assert result.state_bytes < 400_000
