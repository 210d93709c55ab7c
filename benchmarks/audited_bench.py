"""Overhead of ``@audited`` per invocation (docs/benchmarks.md).

    PYTHONPATH=. .venv/bin/python -m benchmarks.audited_bench [--quick]

Times a trivial handler bare and decorated, with the record built and sent through
`producer.emit` into a fake buffer (normalisation, gzip bundle; no network): the Python
cost the decorator adds. The SQS round trip of the default ``flush="invocation"`` mode
(one SendMessageBatch, typically a few ms in-region) comes on top and is not measured here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from opentrail.audited import AuditBuffer, audited
from opentrail.producer import emit


class FakeBuffer:
    def __init__(self) -> None:
        self.messages = 0

    def send(self, bodies: Any) -> None:
        self.messages += len(list(bodies))


class Context:
    function_name = "bench"
    function_version = "1"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:111122223333:function:bench"
    aws_request_id = "6f1e4c1a-0000-4000-8000-000000000001"


EVENT = {
    "requestContext": {
        "identity": {
            "userArn": "arn:aws:iam::111122223333:user/alice",
            "caller": "AIDAEXAMPLE",
            "accountId": "111122223333",
            "sourceIp": "198.51.100.7",
            "userAgent": "curl/8.0",
        }
    },
    "body": '{"orderId": "o-1"}',
}


def handler(event: Any, context: Any) -> dict[str, int]:
    return {"statusCode": 200}


def per_call_us(function: Callable[..., Any], rounds: int) -> float:
    context = Context()
    for _ in range(min(rounds, 200)):
        function(EVENT, context)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            function(EVENT, context)
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1e6


def main(argv: list[str]) -> None:
    rounds = 500 if "--quick" in argv else 5000
    fake = FakeBuffer()

    def sink(records: Any) -> Any:
        return emit(records, buffer=fake, account_id="111122223333", region="eu-west-1")

    variants: dict[str, Callable[..., Any]] = {
        "bare handler": handler,
        "@audited, record built, no-op sink": audited(sink=lambda records: None)(handler),
        "@audited, flush=invocation (emit → fake buffer)": audited(sink=sink)(handler),
        "@audited, flush=deferred (100/batch, emit → fake buffer)": audited(
            buffer=AuditBuffer(sink, flush="deferred", max_records=100, max_age_seconds=3600)
        )(handler),
    }
    base = per_call_us(handler, rounds)
    print(f"@audited overhead per invocation ({rounds} invocations x 5, best run)")
    for name, function in variants.items():
        cost = per_call_us(function, rounds)
        print(f"  {name:58s} {cost:8.1f} µs   (+{cost - base:.1f} µs)")


if __name__ == "__main__":
    main(sys.argv[1:])
