"""The canonical record: normalisation at capture (spec §1)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain.record import (
    MAX_RECORD_BYTES,
    CaptureContext,
    RecordError,
    infer_read_only,
    normalize,
    parse_event_time,
    truncate_utf8,
)

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
CONTEXT = CaptureContext(account_id="111122223333", region="eu-west-1")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def minimal(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "userName": "alice"},
    }
    record.update(fields)
    return record


def test_normalize_fills_what_cloudtrail_always_carries() -> None:
    record = normalize(minimal(), CONTEXT, now=NOW)

    assert UUID.match(record["eventID"])
    assert record["eventTime"] == "2025-03-14T12:00:00Z"
    assert record["eventVersion"] == "1.11"
    assert record["recipientAccountId"] == "111122223333"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventCategory"] == "Management"
    assert record["managementEvent"] is True
    assert record["readOnly"] is False
    assert record["eventType"] == "AwsApiCall"
    assert record["requestParameters"] is None
    assert record["responseElements"] is None


def test_normalize_keeps_the_event_id_and_never_changes_it() -> None:
    first = normalize(minimal(), CONTEXT, now=NOW)
    second = normalize(first, CONTEXT, now=datetime(2030, 1, 1, tzinfo=UTC))

    assert second == first


def test_normalize_keeps_unknown_fields() -> None:
    record = normalize(minimal(futureField={"nested": [1, 2]}, eventContext={"x": 1}), CONTEXT, now=NOW)

    assert record["futureField"] == {"nested": [1, 2]}
    assert record["eventContext"] == {"x": 1}


def test_normalize_does_not_mutate_its_input() -> None:
    raw = minimal()
    normalize(raw, CONTEXT, now=NOW)

    assert "eventID" not in raw


@pytest.mark.parametrize(
    ("given_time", "expected"),
    [
        ("2025-03-14T09:26:53Z", "2025-03-14T09:26:53Z"),
        ("2025-03-14T09:26:53.123Z", "2025-03-14T09:26:53Z"),
        ("2025-03-14T09:26:53", "2025-03-14T09:26:53Z"),
        ("2025-03-14T11:26:53+02:00", "2025-03-14T09:26:53Z"),
        ("2025-03-14T04:26:53-0500", "2025-03-14T09:26:53Z"),
        ("2025-03-14 09:26:53Z", "2025-03-14T09:26:53Z"),
    ],
)
def test_normalize_writes_event_time_in_cloudtrail_format(given_time: str, expected: str) -> None:
    assert normalize(minimal(eventTime=given_time), CONTEXT, now=NOW)["eventTime"] == expected


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z", 1710408413, None])
def test_normalize_rejects_bad_event_time_naming_the_field(bad: object) -> None:
    with pytest.raises(RecordError) as raised:
        normalize(minimal(eventTime=bad), CONTEXT, now=NOW)

    assert raised.value.field == "eventTime"


def test_normalize_rejects_event_time_far_in_the_future() -> None:
    with pytest.raises(RecordError, match="future"):
        normalize(minimal(eventTime="2025-03-14T13:00:00Z"), CONTEXT, now=NOW)


@pytest.mark.parametrize(
    ("name", "read_only"),
    [
        ("GetObject", True),
        ("ListBuckets", True),
        ("DescribeInstances", True),
        ("HeadObject", True),
        ("LookupEvents", True),
        ("BatchGetItem", True),
        ("Get", True),
        ("CreateUser", False),
        ("PutObject", False),
        ("DeleteBucket", False),
        ("Getaway", False),
        ("Listen", False),
        ("RunInstances", False),
    ],
)
def test_read_only_is_inferred_from_the_event_name(name: str, read_only: bool) -> None:
    assert infer_read_only(name) is read_only
    assert normalize(minimal(eventName=name), CONTEXT, now=NOW)["readOnly"] is read_only


def test_explicit_read_only_wins_over_inference() -> None:
    assert normalize(minimal(eventName="GetObject", readOnly=False), CONTEXT, now=NOW)["readOnly"] is False


def test_data_events_are_not_management_events() -> None:
    record = normalize(minimal(eventCategory="Data", eventName="GetObject"), CONTEXT, now=NOW)

    assert record["managementEvent"] is False
    assert record["readOnly"] is True


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"eventID": "not-a-uuid"}, "eventID", "InvalidData"),
        ({"recipientAccountId": "12345"}, "recipientAccountId", "InvalidData"),
        ({"awsRegion": "US East"}, "awsRegion", "InvalidData"),
        ({"eventCategory": "Everything"}, "eventCategory", "InvalidData"),
        ({"readOnly": "true"}, "readOnly", "InvalidData"),
        ({"managementEvent": "yes"}, "managementEvent", "InvalidData"),
        ({"eventVersion": "one"}, "eventVersion", "InvalidData"),
        ({"eventType": "Api Call!"}, "eventType", "InvalidData"),
        ({"userIdentity": None}, "userIdentity", "FieldNotFound"),
        ({"userIdentity": {"principalId": "x"}}, "userIdentity.type", "FieldNotFound"),
        ({"eventName": ""}, "eventName", "InvalidData"),
        ({"eventName": "x" * 1025}, "eventName", "FieldTooLong"),
        ({"requestParameters": ["a"]}, "requestParameters", "InvalidData"),
        ({"resources": [1, 2]}, "resources", "InvalidData"),
        ({"userAgent": 42}, "userAgent", "InvalidData"),
        ({"sourceIPAddress": 42}, "sourceIPAddress", "InvalidData"),
    ],
)
def test_normalize_rejects_bad_fields_naming_field_and_rule(fields: dict[str, Any], field: str, code: str) -> None:
    with pytest.raises(RecordError) as raised:
        normalize(minimal(**fields), CONTEXT, now=NOW)

    assert raised.value.field == field
    assert raised.value.code == code
    assert str(raised.value).startswith(f"{field}: ")


def test_missing_event_source_is_field_not_found() -> None:
    raw = minimal()
    del raw["eventSource"]
    with pytest.raises(RecordError) as raised:
        normalize(raw, CONTEXT, now=NOW)

    assert (raised.value.field, raised.value.code) == ("eventSource", "FieldNotFound")


def test_non_object_record_is_rejected() -> None:
    with pytest.raises(RecordError, match="record: must be a JSON object"):
        normalize(["not", "a", "record"], CONTEXT, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["userAgent", "errorCode", "errorMessage", "requestID"])
def test_string_fields_over_1_kb_are_truncated_as_cloudtrail_does(field: str) -> None:
    record = normalize(minimal(**{field: "é" * 1000}), CONTEXT, now=NOW)

    assert len(record[field].encode("utf-8")) <= 1024
    assert record[field] == "é" * 510 + "..."


def test_values_cloudtrail_already_truncated_are_kept() -> None:
    already_cut = "x" * 1023 + "..."  # as in real CloudTrail logs (1,026 bytes)

    assert normalize(minimal(errorMessage=already_cut), CONTEXT, now=NOW)["errorMessage"] == already_cut


@pytest.mark.parametrize(
    ("field", "limit_kb"),
    [
        ("requestParameters", 100),
        ("responseElements", 100),
        ("serviceEventDetails", 100),
        ("additionalEventData", 28),
        ("edgeDeviceDetails", 28),
    ],
)
def test_object_fields_over_their_cap_are_rejected(field: str, limit_kb: int) -> None:
    at_limit = {"v": "x" * (limit_kb * 1024 - len('{"v":""}'))}
    assert normalize(minimal(**{field: at_limit}), CONTEXT, now=NOW)[field] == at_limit

    over = {"v": "x" * (limit_kb * 1024)}
    with pytest.raises(RecordError) as raised:
        normalize(minimal(**{field: over}), CONTEXT, now=NOW)
    assert (raised.value.field, raised.value.code) == (field, "FieldTooLong")


def test_records_over_256_kb_are_rejected() -> None:
    fields = {f"extra{i}": "x" * 60_000 for i in range(5)}
    with pytest.raises(RecordError) as raised:
        normalize(minimal(**fields), CONTEXT, now=NOW)

    assert (raised.value.field, raised.value.code) == ("record", "FieldTooLong")
    assert MAX_RECORD_BYTES == 256 * 1024


def test_insight_events_need_insight_details_and_no_identity() -> None:
    insight = {
        "eventType": "AwsCloudTrailInsight",
        "eventTime": "2025-03-14T10:00:00Z",
        "sharedEventID": "0d9e4c5b-3a2f-4e1d-8c7b-6a5f4e3d2c1b",
        "insightDetails": {"state": "Start", "eventSource": "iam.amazonaws.com", "eventName": "CreateUser"},
    }
    record = normalize(insight, CONTEXT, now=NOW)

    assert record["eventCategory"] == "Insight"
    assert "readOnly" not in record
    assert "managementEvent" not in record
    with pytest.raises(RecordError, match="insightDetails"):
        normalize({**insight, "insightDetails": None}, CONTEXT, now=NOW)


def test_truncate_utf8_never_splits_a_character() -> None:
    assert truncate_utf8("aéééé", 6) == "aé..."
    assert truncate_utf8("abc", 3) == "abc"


def test_parse_event_time_handles_offsets() -> None:
    assert parse_event_time("2025-01-01T00:30:00+01:00") == datetime(2024, 12, 31, 23, 30, tzinfo=UTC)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), json_values, max_size=12), st.booleans())
def test_normalize_either_returns_a_valid_record_or_names_the_field(raw: dict[str, Any], complete: bool) -> None:
    """Open input: any JSON object is either normalised or rejected with a RecordError."""
    if complete:
        raw = {**raw, **minimal()}
    try:
        record = normalize(raw, CONTEXT, now=NOW)
    except RecordError as error:
        assert error.field
        assert error.rule
        assert error.code in {"InvalidData", "FieldTooLong", "FieldNotFound"}
        return
    assert UUID.match(record["eventID"].lower())
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", record["eventTime"])
    assert normalize(record, CONTEXT, now=NOW) == record
    for key, value in raw.items():
        if key not in {"eventTime", "userAgent", "errorCode", "errorMessage", "requestID"}:
            assert record[key] == value
    json.dumps(record)
