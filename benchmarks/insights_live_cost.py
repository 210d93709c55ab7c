"""Live Insights cost per scope and day (docs/insights.md, "Cost per 100,000 events analysed").

Warms one scope's engine on 14 days of the evaluation workload, then replays one day the way
the live function does: every 5 minutes load the state blob, advance 5 minutes, store it; plus
the batcher's aggregate items (a batch a minute). Prints CPU per run, state size and units.

    .venv/bin/python benchmarks/insights_live_cost.py [office|service|sparse]
"""

from __future__ import annotations

import json
import math
import sys
import time
import zlib
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "lambdas"), str(Path(__file__).resolve().parent)]

from insights_eval import ACCOUNT, REGION, generate  # noqa: E402

from opentrail.adapters.insights_store import CHUNK_BYTES, aggregate_items, write_units  # noqa: E402
from opentrail.domain.insights import InsightsEngine, Sensitivity  # noqa: E402

WARM_DAYS, LIVE_DAYS, RUN_MINUTES = 14, 1, 5


def main(shape: str = "office") -> dict[str, object]:
    minutes, _, _ = generate(shape, WARM_DAYS + LIVE_DAYS, 1)
    engine = InsightsEngine((ACCOUNT, REGION), Sensitivity())
    live_minutes = []
    first = None
    for minute, apis in minutes:
        first = minute if first is None else first
        if minute - first >= WARM_DAYS * 1440:
            live_minutes.append((minute, apis))
        else:
            engine.process_minute(minute, apis)
    events = aggregate_wcu = aggregate_count = 0
    cpu = 0.0
    runs = 0
    sizes = []
    blob = zlib.compress(json.dumps({"engine": engine.to_dict(), "pending": []}, separators=(",", ":")).encode(), 6)
    for start in range(0, len(live_minutes), RUN_MINUTES):
        chunk = dict(live_minutes[start : start + RUN_MINUTES])
        events += sum(a.calls for apis in chunk.values() for a in apis.values())
        for minute, apis in chunk.items():
            items = aggregate_items(f"batch-{minute}", {("opentrail", ACCOUNT, REGION): {minute: apis}})
            aggregate_count += len(items)
            aggregate_wcu += sum(write_units(i) for i in items)
        began = time.process_time()
        state = json.loads(zlib.decompress(blob))
        live = InsightsEngine.from_dict(state["engine"], Sensitivity())
        records = live.advance(max(chunk), chunk)
        blob = zlib.compress(
            json.dumps({"engine": live.to_dict(), "pending": records}, separators=(",", ":")).encode(), 6
        )
        cpu += time.process_time() - began
        runs += 1
        sizes.append(len(blob))
    state_kb = sum(sizes) / len(sizes) / 1024
    return {
        "shape": shape,
        "apis": len(live.apis),
        "events_per_day": events,
        "runs": runs,
        "events_per_run": round(events / runs, 1),
        "aggregate_items": aggregate_count,
        "aggregate_wcu": aggregate_wcu,
        "cpu_ms_per_run": round(cpu / runs * 1000, 2),
        "state_kb_zlib": round(state_kb, 1),
        "state_chunks": math.ceil(state_kb * 1024 / CHUNK_BYTES),
        # chunk put + head put + mark delivered + delete of the previous chunk
        "state_wcu_per_run": 2 * math.ceil(state_kb) + 2,
        # heads Query + one Query per minute (eventually consistent) + the state (strongly consistent)
        "rcu_per_run": 0.5 + RUN_MINUTES * 0.5 + math.ceil(state_kb / 4),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:2]), indent=1))
