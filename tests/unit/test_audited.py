"""@audited: one Invoke data event per invocation; never fails or changes the wrapped handler."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from opentrail.audited import AuditBuffer, audited, caller_of, invoke_record
from opentrail.producer import emit

ARN = "arn:aws:lambda:eu-west-1:111122223333:function:orders"


class Context:
    function_name = "orders"
    function_version = "7"
    memory_limit_in_mb = 128
    invoked_function_arn = ARN
    aws_request_id = "6f1e4c1a-0000-4000-8000-000000000001"


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, records: Any) -> None:
        if self.fail:
            raise ConnectionError("queue unreachable")
        self.batches.append(list(records))

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for batch in self.batches for record in batch]


def test_bare_decorator_records_an_invoke_data_event_per_invocation() -> None:
    sink = Sink()

    @audited(sink=sink)
    def handler(event: Any, context: Any) -> dict[str, int]:
        return {"ok": 1}

    assert handler({}, Context()) == {"ok": 1}
    assert handler({}, Context()) == {"ok": 1}
    first, second = sink.records
    assert first["eventSource"] == "lambda.amazonaws.com"
    assert first["eventName"] == "Invoke"
    assert first["eventCategory"] == "Data"
    assert first["managementEvent"] is False
    assert first["resources"] == [{"accountId": "111122223333", "type": "AWS::Lambda::Function", "ARN": ARN}]
    assert first["requestID"] == Context.aws_request_id
    assert (first["recipientAccountId"], first["awsRegion"]) == ("111122223333", "eu-west-1")
    assert first["additionalEventData"]["coldStart"] is True
    assert second["additionalEventData"]["coldStart"] is False
    assert first["additionalEventData"]["functionVersion"] == "7"
    assert first["additionalEventData"]["durationMs"] >= 0
    assert first["eventID"] != second["eventID"]
    assert len(sink.batches) == 2  # flush="invocation": one send per invocation
    assert "errorCode" not in first


def test_decorator_without_arguments_keeps_the_handler_name() -> None:
    @audited
    def handler(event: Any, context: Any) -> str:
        return "done"

    handler.audit_buffer._sink = Sink()  # type: ignore[attr-defined]
    assert handler.__name__ == "handler"
    assert handler({}, Context()) == "done"


def test_record_is_accepted_by_the_producer() -> None:
    sent: list[Any] = []

    class Buffer:
        def send(self, bodies: Any) -> None:
            sent.extend(bodies)

    @audited(sink=lambda records: emit(records, buffer=Buffer()))
    def handler(event: Any, context: Any) -> None:
        return None

    handler({"Records": [{"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q"}]}, Context())
    assert len(sent) == 1


def test_handler_error_is_recorded_and_re_raised_unchanged() -> None:
    sink = Sink()
    boom = KeyError("order-42")

    @audited(sink=sink)
    def handler(event: Any, context: Any) -> None:
        raise boom

    with pytest.raises(KeyError) as raised:
        handler({}, Context())
    assert raised.value is boom
    (record,) = sink.records
    assert record["errorCode"] == "KeyError"
    assert record["errorMessage"] == "'order-42'"


def test_sink_failure_never_fails_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    @audited(sink=Sink(fail=True))
    def handler(event: Any, context: Any) -> str:
        return "result"

    with caplog.at_level(logging.WARNING, logger="opentrail.audited"):
        assert handler({}, Context()) == "result"
    assert "could not send" in caplog.text


def test_sink_failure_does_not_mask_the_handler_error() -> None:
    @audited(sink=Sink(fail=True))
    def handler(event: Any, context: Any) -> None:
        raise ValueError("the handler's own error")

    with pytest.raises(ValueError, match="the handler's own error"):
        handler({}, Context())


def test_record_building_failure_never_fails_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()

    class Hostile:
        @property
        def invoked_function_arn(self) -> str:
            raise RuntimeError("broken context")

    @audited(sink=sink)
    def handler(event: Any, context: Any) -> int:
        return 7

    with caplog.at_level(logging.WARNING, logger="opentrail.audited"):
        assert handler({}, Hostile()) == 7
    assert sink.records == []
    assert "could not build" in caplog.text


def test_works_beside_powertools_logger_and_tracer() -> None:
    from aws_lambda_powertools import Logger, Tracer

    logger, tracer = Logger(service="orders"), Tracer(service="orders", disabled=True)
    sink = Sink()

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @audited(sink=sink)
    def handler(event: Any, context: Any) -> str:
        return "ok"

    assert handler({"source": "com.example", "detail-type": "Order", "account": "111122223333"}, Context()) == "ok"
    (record,) = sink.records
    assert record["userIdentity"] == {"type": "AWSService", "invokedBy": "events.amazonaws.com"}
    assert record["additionalEventData"]["trigger"]["source"] == "com.example"


def test_deferred_mode_sends_when_the_batch_is_full() -> None:
    sink = Sink()
    buffer = AuditBuffer(sink, flush="deferred", max_records=3, max_age_seconds=3600)

    @audited(buffer=buffer)
    def handler(event: Any, context: Any) -> None:
        return None

    for _ in range(5):
        handler({}, Context())
    assert [len(batch) for batch in sink.batches] == [3]
    assert len(buffer.records) == 2


def test_deferred_mode_sends_when_the_oldest_is_old() -> None:
    sink = Sink()
    clock = [0.0]
    buffer = AuditBuffer(sink, flush="deferred", max_records=100, max_age_seconds=10, monotonic=lambda: clock[0])

    @audited(buffer=buffer)
    def handler(event: Any, context: Any) -> None:
        return None

    handler({}, Context())
    clock[0] = 11.0
    handler({}, Context())
    assert [len(batch) for batch in sink.batches] == [2]


def test_unknown_flush_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="flush"):
        AuditBuffer(Sink(), flush="never")  # type: ignore[arg-type]


# -- caller identity per event source ---------------------------------------------------------


def test_api_gateway_iam_caller() -> None:
    event = {
        "requestContext": {
            "apiId": "abc123",
            "stage": "prod",
            "identity": {
                "userArn": "arn:aws:sts::111122223333:assumed-role/Deployer/alice",
                "caller": "AROAEXAMPLE:alice",
                "accountId": "111122223333",
                "accessKey": "ASIAEXAMPLE",
                "sourceIp": "198.51.100.7",
                "userAgent": "curl/8.0",
            },
        }
    }
    identity, ip, agent, trigger = caller_of(event, Context())
    assert identity == {
        "type": "AssumedRole",
        "arn": "arn:aws:sts::111122223333:assumed-role/Deployer/alice",
        "principalId": "AROAEXAMPLE:alice",
        "accountId": "111122223333",
        "accessKeyId": "ASIAEXAMPLE",
    }
    assert (ip, agent, trigger) == ("198.51.100.7", "curl/8.0", {"apiId": "abc123", "stage": "prod"})


def test_http_api_jwt_caller() -> None:
    event = {
        "requestContext": {
            "http": {"sourceIp": "203.0.113.9", "userAgent": "app/1.0"},
            "authorizer": {"jwt": {"claims": {"sub": "u-1", "username": "bob", "iss": "https://idp.example"}}},
        }
    }
    identity, ip, agent, _ = caller_of(event, Context())
    assert identity == {
        "type": "WebIdentityUser",
        "principalId": "u-1",
        "userName": "bob",
        "identityProvider": "https://idp.example",
    }
    assert (ip, agent) == ("203.0.113.9", "app/1.0")


def test_rest_api_lambda_authorizer_and_anonymous_callers() -> None:
    lambda_auth = {"requestContext": {"identity": {"sourceIp": "1.2.3.4"}, "authorizer": {"principalId": "tenant-9"}}}
    assert caller_of(lambda_auth, Context())[0] == {"type": "Unknown", "principalId": "tenant-9"}
    anonymous = {"requestContext": {"identity": {"sourceIp": "1.2.3.4"}}}
    assert caller_of(anonymous, Context())[0] == {"type": "Unknown", "principalId": "anonymous"}


@pytest.mark.parametrize(
    ("record", "service"),
    [
        ({"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:111122223333:orders"}, "sqs"),
        ({"EventSource": "aws:sns", "EventSubscriptionArn": "arn:aws:sns:eu-west-1:111122223333:t:1"}, "sns"),
        (
            {"eventSource": "aws:dynamodb", "eventSourceARN": "arn:aws:dynamodb:eu-west-1:1:table/t/stream/x"},
            "dynamodb",
        ),
        ({"eventSource": "aws:s3"}, "s3"),
    ],
)
def test_record_sources(record: dict[str, str], service: str) -> None:
    identity, ip, _, trigger = caller_of({"Records": [record, record]}, Context())
    assert identity == {"type": "AWSService", "invokedBy": f"{service}.amazonaws.com"}
    assert ip == f"{service}.amazonaws.com"
    assert trigger["records"] == 2


def test_direct_invoke_has_an_unknown_caller() -> None:
    assert caller_of({"orderId": "o-1"}, Context())[0] == {"type": "Unknown", "principalId": "unknown"}


def test_alias_invocation_keeps_the_function_arn_for_selectors() -> None:
    class Aliased(Context):
        invoked_function_arn = f"{ARN}:live"

    record = invoke_record({}, Aliased(), started=datetime(2025, 3, 14, tzinfo=UTC), duration_ms=1.0, cold_start=False)
    assert record["resources"][0]["ARN"] == ARN
    assert record["requestParameters"] == {"functionName": ARN, "qualifier": "live"}
