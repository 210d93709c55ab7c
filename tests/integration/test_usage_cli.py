"""`opentrail usage`: counts per trail and category, CloudTrail's price beside OpenTrail's cost,
and the price tables, from the counters a batcher run wrote (moto)."""

from __future__ import annotations

import json

import pytest
from test_batcher import Harness
from test_usage_batcher import TRAILS, workload

from opentrail.cli import main
from opentrail.domain.usage import opentrail_cost
from opentrail.local.resources import LocalResources

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture
def harness(resources: LocalResources) -> Harness:
    harness = Harness(resources, trails=json.dumps(TRAILS))
    harness.send(workload())
    harness.run()
    return harness


def usage(harness: Harness, *extra: str) -> list[str]:
    return [
        "usage",
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-30",
        "--ledger-table",
        harness.resources.ledger_table,
        "--region",
        harness.resources.region,
        *extra,
    ]


def test_usage_prints_counts_both_prices_and_the_price_table(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(usage(harness)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Usage from 2026-11-20 to 2026-11-30 (UTC delivery days)"
    row = {(line.split()[0], " ".join(line.split()[2:-3])): line.split()[-3:] for line in lines[2:12]}
    assert row[("audit", "management, additional copies")][:2] == ["4", "$0.000080"]  # 4 x $2.00/100k
    assert row[("audit", "data events")][0] == "2"
    assert row[("main", "management, first copy")][:2] == ["4", "$0.000000"]
    assert row[("main", "Insights events analysed")] == ["7", "$0.000024", "n/a"]  # 7 x $0.35/100k
    assert any(line.startswith("ALL TRAILS") and " 10 " in line for line in lines)
    assert "additional copy of management events     $2.00" in out
    assert "data events                              $0.10" in out
    assert "Insights events analysed                 $0.35" in out
    assert "OpenTrail's estimated AWS cost: $0.00" in out
    assert "SQS standard: $0.40 per million requests" in out
    assert "API Gateway REST requests" in out


def test_usage_json(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(usage(harness, "--output", "json")) == 0
    data = json.loads(capsys.readouterr().out)
    by_trail = {t["trail"]: t for t in data["trails"]}
    assert by_trail["audit"]["counts"] == {
        "managementFirstCopy": 0,
        "managementAdditionalCopies": 4,
        "dataEvents": 2,
        "insightsAnalysed": 0,
    }
    assert by_trail["audit"]["cloudTrailTotalUsd"] == pytest.approx(4 * 2.00 / 1e5 + 2 * 0.10 / 1e5, abs=1e-6)
    assert by_trail["main"]["cloudTrailTotalUsd"] == pytest.approx(7 * 0.35 / 1e5, abs=1e-6)
    assert by_trail["main"]["openTrailEstimatedUsd"] == pytest.approx(opentrail_cost(4), abs=1e-6)
    assert data["prices"]["cloudTrailPer100k"]["data events"] == 0.10


def test_usage_outside_the_range_and_bad_ranges(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["usage", "--ledger-table", harness.resources.ledger_table, "--region", harness.resources.region]
    assert main([*base, "--since", "2026-10-01", "--until", "2026-10-02"]) == 0
    assert "no events delivered in this range" in capsys.readouterr().out
    assert main([*base, "--since", "2026-10-02", "--until", "2026-10-01"]) == 2
    assert "--until is before --since" in capsys.readouterr().err
