"""OpenTrail Insights: abnormal activity in management events, as CloudTrail Insights records.

Pure Python (no boto3, no clock, no numpy). The pieces, in the order data flows:

* `aggregates` — `Aggregator.add(record)` folds records into per-minute `ApiMinute` aggregates
  per (account, region) and API; bounded, mergeable, serialisable;
* `engine` — `InsightsEngine(scope, sensitivity).advance(until_minute, minutes)` runs the
  detectors minute by minute and returns Insights records; `to_dict`/`from_dict` keep its state;
* `detectors` — the four detectors and `Sensitivity` (all knobs, presets low/medium/high);
* `baseline` — seasonal, ratio, cadence and attribution baselines;
* `state` — open insights (Start ... End, sharing sharedEventID);
* `records` — the records, exactly as spec §4, plus `insightContext.explanation`.

docs/insights.md describes the method, the knobs and the evaluation.
"""

from opentrail.domain.insights.aggregates import Aggregator, ApiKey, ApiMinute, CountTable, MinuteApis, Scope
from opentrail.domain.insights.detectors import Sensitivity
from opentrail.domain.insights.engine import InsightsEngine
from opentrail.domain.insights.records import insight_record
from opentrail.domain.insights.state import CALL_RATE, ERROR_RATE, INSIGHT_TYPES, MISSING, UNUSUAL

__all__ = [
    "CALL_RATE",
    "ERROR_RATE",
    "INSIGHT_TYPES",
    "MISSING",
    "UNUSUAL",
    "Aggregator",
    "ApiKey",
    "ApiMinute",
    "CountTable",
    "InsightsEngine",
    "MinuteApis",
    "Scope",
    "Sensitivity",
    "insight_record",
]
