"""LookupEvents request rules, NextToken sealing and the response shape (opentrail.domain.lookup)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opentrail.domain.lookup import (
    DEFAULT_WINDOW,
    INSIGHT_ATTRIBUTE_KEYS,
    LOOKUP_ATTRIBUTE_KEYS,
    MATCH_ALL_FIELD,
    LookupQuery,
    LookupRequestError,
    attribute_value_length,
    event_summary,
    lookup_response,
    open_next_token,
    parse_lookup_events,
    parse_lookup_request,
    resource_name_of,
    seal_next_token,
    username_of,
)

NOW = datetime(2025, 3, 14, 10, 0, 0, tzinfo=UTC)
REGION = "us-east-1"
KEY = b"k" * 32
CURSOR = {"after": ["2025-03-14T09:00:00Z", "e-1"]}


def parse(body: dict[str, Any], *, allow_and: bool = False, region: str = REGION) -> LookupQuery:
    return parse_lookup_request(body, region=region, now=NOW, allow_and=allow_and)


def rejected(body: Any, code: str, *, allow_and: bool = False) -> str:
    with pytest.raises(LookupRequestError) as raised:
        parse_lookup_request(body, region=REGION, now=NOW, allow_and=allow_and)
    assert raised.value.code == code
    return raised.value.message


def attribute(key: str, value: str) -> dict[str, str]:
    return {"AttributeKey": key, "AttributeValue": value}


# --- defaults ---------------------------------------------------------------------------------


def test_lookup_empty_request_gets_cloudtrail_defaults() -> None:
    query = parse({})
    assert query == LookupQuery(region=REGION, start=NOW - timedelta(days=90), end=NOW, max_results=50)
    assert query.attributes == ()
    assert query.insight is False


def test_lookup_region_is_the_given_region() -> None:
    assert parse({}, region="eu-west-1").region == "eu-west-1"


# --- LookupAttributes -------------------------------------------------------------------------


@pytest.mark.parametrize("key", LOOKUP_ATTRIBUTE_KEYS)
def test_lookup_each_attribute_key_is_accepted(key: str) -> None:
    value = "true" if key == "ReadOnly" else "some-value"
    assert parse({"LookupAttributes": [attribute(key, value)]}).attributes == ((key, value),)


@pytest.mark.parametrize("key", ["eventName", "Region", "", "ErrorCode", 7])
def test_lookup_unknown_attribute_key_is_rejected(key: Any) -> None:
    message = rejected({"LookupAttributes": [attribute(key, "x")]}, "InvalidLookupAttributesException")
    assert "AttributeKey: must be one of EventId, EventName" in message


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({"AttributeValue": "x"}, "AttributeKey: is required"),
        ({"AttributeKey": "EventName"}, "AttributeValue: is required"),
        ({"AttributeKey": "EventName", "AttributeValue": ""}, "AttributeValue: must not be empty"),
        ({"AttributeKey": "EventName", "AttributeValue": 5}, "AttributeValue: must be a string"),
        ("EventName=x", "must be an object"),
    ],
)
def test_lookup_malformed_attribute_is_rejected(item: Any, fragment: str) -> None:
    assert fragment in rejected({"LookupAttributes": [item]}, "InvalidLookupAttributesException")


def test_lookup_attributes_must_be_a_list() -> None:
    rejected({"LookupAttributes": attribute("EventName", "x")}, "InvalidLookupAttributesException")


def test_lookup_empty_attribute_list_means_no_filter() -> None:
    assert parse({"LookupAttributes": []}).attributes == ()


@pytest.mark.parametrize(
    ("value", "length"),
    [("abc", 3), ("a_b", 4), ("a b", 4), ("a,b", 4), ("a\nb", 4), ("_ ,\n", 8), ("a-b.c/d", 7)],
)
def test_lookup_attribute_value_length_counts_four_characters_double(value: str, length: int) -> None:
    assert attribute_value_length(value) == length


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 2000, True),
        ("a" * 2001, False),
        ("_" * 1000, True),
        ("_" * 1000 + "a", False),
        (" " * 999 + "ab", True),
        ("," * 1001, False),
        ("\n" * 1000, True),
        ("a" * 1998 + "_", True),
        ("a" * 1999 + "_", False),
    ],
)
def test_lookup_attribute_value_at_most_2000_with_doubles(value: str, ok: bool) -> None:
    body = {"LookupAttributes": [attribute("ResourceName", value)]}
    if ok:
        assert parse(body).attributes == (("ResourceName", value),)
    else:
        assert "at most 2000 characters" in rejected(body, "InvalidLookupAttributesException")


@given(st.text(alphabet="ab_ ,\n", max_size=2100))
def test_lookup_attribute_value_rule_matches_the_model(value: str) -> None:
    expected_ok = bool(value) and len(value) + sum(value.count(c) for c in "_ ,\n") <= 2000
    try:
        parse({"LookupAttributes": [attribute("EventName", value)]})
    except LookupRequestError as error:
        assert error.code == "InvalidLookupAttributesException"
        assert not expected_ok
    else:
        assert expected_ok


@pytest.mark.parametrize(
    ("value", "normal"), [("true", "true"), ("false", "false"), ("True", "true"), ("FALSE", "false")]
)
def test_lookup_read_only_value_is_normalised(value: str, normal: str) -> None:
    assert parse({"LookupAttributes": [attribute("ReadOnly", value)]}).attributes == (("ReadOnly", normal),)


def test_lookup_read_only_value_must_be_true_or_false() -> None:
    message = rejected({"LookupAttributes": [attribute("ReadOnly", "yes")]}, "InvalidLookupAttributesException")
    assert "'true' or 'false'" in message


def test_lookup_more_than_one_attribute_without_opt_in_is_rejected() -> None:
    body = {"LookupAttributes": [attribute("EventName", "CreateUser"), attribute("Username", "alice")]}
    message = rejected(body, "InvalidLookupAttributesException")
    assert "at most one lookup attribute" in message
    assert MATCH_ALL_FIELD in message
    assert "X-OpenTrail-Match-All" in message


def test_lookup_match_all_by_header_ands_attributes() -> None:
    body = {"LookupAttributes": [attribute("EventName", "CreateUser"), attribute("Username", "alice")]}
    assert parse(body, allow_and=True).attributes == (("EventName", "CreateUser"), ("Username", "alice"))


def test_lookup_match_all_by_request_field_ands_attributes() -> None:
    body = {
        "LookupAttributes": [attribute("EventName", "CreateUser"), attribute("ReadOnly", "false")],
        MATCH_ALL_FIELD: True,
    }
    assert parse(body).attributes == (("EventName", "CreateUser"), ("ReadOnly", "false"))


def test_lookup_match_all_field_false_still_rejects_two() -> None:
    body = {"LookupAttributes": [attribute("EventName", "a"), attribute("EventName", "b")], MATCH_ALL_FIELD: False}
    rejected(body, "InvalidLookupAttributesException")


def test_lookup_match_all_field_must_be_boolean() -> None:
    rejected({MATCH_ALL_FIELD: "yes"}, "InvalidParameterException")


def test_lookup_unknown_opentrail_member_is_rejected() -> None:
    assert "OpenTrailMatchAll" in rejected({"OpenTrailMatchAll": True}, "InvalidParameterException")


def test_lookup_match_all_caps_the_number_of_attributes() -> None:
    body = {"LookupAttributes": [attribute("ResourceName", str(i)) for i in range(9)]}
    assert "at most 8" in rejected(body, "InvalidLookupAttributesException", allow_and=True)


# --- times --------------------------------------------------------------------------------------


def test_lookup_times_are_epoch_seconds_int_or_float() -> None:
    query = parse({"StartTime": 1741939200, "EndTime": 1741942800.5})
    assert query.start == datetime(2025, 3, 14, 8, 0, 0, tzinfo=UTC)
    assert query.end == datetime(2025, 3, 14, 9, 0, 0, 500000, tzinfo=UTC)


def test_lookup_start_equal_to_end_is_a_valid_instant() -> None:
    query = parse({"StartTime": 1741939200, "EndTime": 1741939200})
    assert query.start == query.end


def test_lookup_start_after_end_is_invalid_time_range() -> None:
    message = rejected({"StartTime": 1741942800, "EndTime": 1741939200}, "InvalidTimeRangeException")
    assert "StartTime: must not be after EndTime" in message


def test_lookup_start_in_the_future_without_end_is_invalid_time_range() -> None:
    future = (NOW + timedelta(hours=1)).timestamp()
    assert "(default: now)" in rejected({"StartTime": future}, "InvalidTimeRangeException")


def test_lookup_only_start_given_ends_now() -> None:
    query = parse({"StartTime": 1741939200})
    assert (query.start, query.end) == (datetime(2025, 3, 14, 8, tzinfo=UTC), NOW)


def test_lookup_only_old_end_given_keeps_a_valid_window() -> None:
    old_end = (NOW - timedelta(days=200)).timestamp()
    query = parse({"EndTime": old_end})
    assert query.start == query.end == NOW - timedelta(days=200)


def test_lookup_only_end_given_starts_90_days_back() -> None:
    end = (NOW - timedelta(days=1)).timestamp()
    assert parse({"EndTime": end}).start == NOW - DEFAULT_WINDOW


@pytest.mark.parametrize("value", ["2025-03-14T08:00:00Z", True, [1], -1, 1e20, float("nan")])
def test_lookup_bad_timestamps_are_invalid_time_range(value: Any) -> None:
    rejected({"StartTime": value}, "InvalidTimeRangeException")
    rejected({"EndTime": value}, "InvalidTimeRangeException")


def test_lookup_default_window_is_configurable() -> None:
    request = parse_lookup_events({}, region=REGION, now=NOW, allow_and=False, default_window=timedelta(days=7))
    assert request.query.start == NOW - timedelta(days=7)


# --- MaxResults, EventCategory -------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 25, 50])
def test_lookup_max_results_in_range(value: int) -> None:
    assert parse({"MaxResults": value}).max_results == value


@pytest.mark.parametrize("value", [0, 51, -1, 1.5, "10", True])
def test_lookup_max_results_out_of_range_is_rejected(value: Any) -> None:
    assert "MaxResults: must be an integer from 1 to 50" in rejected(
        {"MaxResults": value}, "InvalidMaxResultsException"
    )


def test_lookup_event_category_insight_selects_insights() -> None:
    assert parse({"EventCategory": "insight"}).insight is True


@pytest.mark.parametrize("value", ["Insight", "management", "data", "", 1])
def test_lookup_other_event_categories_are_rejected(value: Any) -> None:
    rejected({"EventCategory": value}, "InvalidEventCategoryException")


@pytest.mark.parametrize("key", INSIGHT_ATTRIBUTE_KEYS)
def test_lookup_insight_allows_its_three_keys(key: str) -> None:
    query = parse({"EventCategory": "insight", "LookupAttributes": [attribute(key, "v")]})
    assert query.attributes == ((key, "v"),)


@pytest.mark.parametrize("key", sorted(set(LOOKUP_ATTRIBUTE_KEYS) - set(INSIGHT_ATTRIBUTE_KEYS)))
def test_lookup_insight_rejects_other_keys(key: str) -> None:
    body = {"EventCategory": "insight", "LookupAttributes": [attribute(key, "true")]}
    assert "with EventCategory insight only" in rejected(body, "InvalidLookupAttributesException")


def test_lookup_body_must_be_an_object() -> None:
    rejected([], "SerializationException")


# --- NextToken ------------------------------------------------------------------------------------


def request(body: dict[str, Any], *, now: datetime = NOW, region: str = REGION, allow_and: bool = False) -> Any:
    return parse_lookup_events(body, region=region, now=now, allow_and=allow_and)


def next_page(body: dict[str, Any], token: str, **kwargs: Any) -> tuple[LookupQuery, dict[str, Any] | None]:
    return open_next_token(request({**body, "NextToken": token}, **kwargs), KEY)


def token_rejected(body: dict[str, Any], token: str, *, key: bytes = KEY, **kwargs: Any) -> str:
    with pytest.raises(LookupRequestError) as raised:
        open_next_token(request({**body, "NextToken": token}, **kwargs), key)
    assert raised.value.code == "InvalidNextTokenException"
    return raised.value.message


BODY = {"LookupAttributes": [attribute("EventName", "CreateUser")], "StartTime": 1741000000, "MaxResults": 5}


def first_token(body: dict[str, Any] = BODY, *, now: datetime = NOW) -> str:
    first = request(body, now=now)
    return seal_next_token(first, first.query, CURSOR, KEY)


def test_lookup_without_token_starts_at_the_top() -> None:
    first = request(BODY)
    assert open_next_token(first, KEY) == (first.query, None)


def test_lookup_token_round_trip_gives_the_cursor() -> None:
    query, cursor = next_page(BODY, first_token())
    assert cursor == CURSOR
    assert query == request(BODY).query


def test_lookup_token_is_opaque_urlsafe_text() -> None:
    token = first_token()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert set(payload) == {"v", "c", "f", "w"}


def test_lookup_token_keeps_the_first_pages_default_window() -> None:
    body = {"LookupAttributes": [attribute("EventName", "CreateUser")]}
    token = first_token(body)
    later = NOW + timedelta(minutes=5)
    query, _ = next_page(body, token, now=later)
    assert (query.start, query.end) == (NOW - DEFAULT_WINDOW, NOW)


def test_lookup_token_may_change_max_results() -> None:
    query, cursor = next_page({**BODY, "MaxResults": 50}, first_token())
    assert query.max_results == 50
    assert cursor == CURSOR


def test_lookup_token_survives_attribute_order_change_with_and() -> None:
    body = {"LookupAttributes": [attribute("EventName", "A"), attribute("Username", "u")], MATCH_ALL_FIELD: True}
    token = first_token(body)
    swapped = {**body, "LookupAttributes": list(reversed(body["LookupAttributes"]))}
    assert next_page(swapped, token)[1] == CURSOR


@pytest.mark.parametrize(
    "changed",
    [
        {"LookupAttributes": [attribute("EventName", "DeleteUser")]},
        {"LookupAttributes": [attribute("EventSource", "CreateUser")]},
        {"LookupAttributes": None},
        {"StartTime": 1741000001},
        {"StartTime": None},
        {"EndTime": 1741900000},
        {"EventCategory": "insight"},
    ],
)
def test_lookup_token_reused_with_other_parameters_is_rejected(changed: dict[str, Any]) -> None:
    body = {name: value for name, value in {**BODY, **changed}.items() if value is not None}
    assert "same parameters" in token_rejected(body, first_token())


def test_lookup_token_reused_in_another_region_is_rejected() -> None:
    token_rejected(BODY, first_token(), region="eu-west-1")


def test_lookup_token_sealed_with_another_key_is_rejected() -> None:
    token_rejected(BODY, first_token(), key=b"x" * 32)


def test_lookup_token_with_a_flipped_byte_is_rejected() -> None:
    token = first_token()
    for position in range(0, len(token), 7):
        if token[position] == ".":
            continue
        flipped = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
        token_rejected(BODY, flipped)


def test_lookup_token_with_altered_cursor_and_recomputed_payload_is_rejected() -> None:
    body_part, mac = first_token().split(".")
    payload = json.loads(base64.urlsafe_b64decode(body_part + "=="))
    payload["c"] = {"after": ["2030-01-01T00:00:00Z", "zzz"]}
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    token_rejected(BODY, f"{forged}.{mac}")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ".", "abc.", "é.é", "x" * 9000])
def test_lookup_malformed_tokens_are_rejected(token: str) -> None:
    token_rejected(BODY, token)


@pytest.mark.parametrize("token", ["", 5, ["t"]])
def test_lookup_token_of_wrong_type_is_rejected_at_parse(token: Any) -> None:
    rejected({"NextToken": token}, "InvalidNextTokenException")


# --- response shape -------------------------------------------------------------------------------

CREATE_USER = {
    "eventVersion": "1.11",
    "userIdentity": {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": "arn:aws:iam::123456789012:user/alice",
        "accountId": "123456789012",
        "accessKeyId": "AKIAEXAMPLE",
        "userName": "alice",
    },
    "eventTime": "2025-03-14T09:26:53Z",
    "eventSource": "iam.amazonaws.com",
    "eventName": "CreateUser",
    "awsRegion": "us-east-1",
    "sourceIPAddress": "198.51.100.7",
    "requestParameters": {"userName": "bob"},
    "responseElements": None,
    "eventID": "0e4ba7b5-2f5c-4f0d-9a7a-3c2f4f7b9e10",
    "readOnly": False,
    "resources": [
        {"ARN": "arn:aws:iam::123456789012:user/bob", "accountId": "123456789012", "type": "AWS::IAM::User"},
        {"ARN": "arn:aws:s3:::my-bucket/reports/2025.csv", "type": "AWS::S3::Object"},
    ],
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "123456789012",
    "eventCategory": "Management",
}


def test_lookup_event_summary_matches_cloudtrail_shape() -> None:
    summary = event_summary(CREATE_USER)
    assert summary == {
        "EventId": "0e4ba7b5-2f5c-4f0d-9a7a-3c2f4f7b9e10",
        "EventName": "CreateUser",
        "ReadOnly": "false",
        "AccessKeyId": "AKIAEXAMPLE",
        "EventTime": 1741944413.0,
        "EventSource": "iam.amazonaws.com",
        "Username": "alice",
        "Resources": [
            {"ResourceType": "AWS::IAM::User", "ResourceName": "bob"},
            {"ResourceType": "AWS::S3::Object", "ResourceName": "2025.csv"},
        ],
        "CloudTrailEvent": summary["CloudTrailEvent"],
    }
    assert isinstance(summary["EventTime"], float)
    assert json.loads(summary["CloudTrailEvent"]) == CREATE_USER


def test_lookup_event_summary_omits_absent_members_but_keeps_resources() -> None:
    record = {**CREATE_USER, "userIdentity": {"type": "IAMUser", "accessKeyId": ""}}
    del record["readOnly"], record["resources"]
    summary = event_summary(record)
    assert "AccessKeyId" not in summary
    assert "Username" not in summary
    assert "ReadOnly" not in summary
    assert summary["Resources"] == []


def test_lookup_event_summary_read_only_is_a_string() -> None:
    assert event_summary({**CREATE_USER, "readOnly": True})["ReadOnly"] == "true"


def test_lookup_insight_summary_comes_from_insight_details() -> None:
    record = {
        "eventVersion": "1.07",
        "eventTime": "2025-02-03T11:42:00Z",
        "awsRegion": "us-west-2",
        "eventID": "6a1f0c2e-1f4b-4c9a-9b1e-2a3b4c5d6e7f",
        "eventType": "AwsCloudTrailInsight",
        "recipientAccountId": "111122223333",
        "sharedEventID": "f3e2d1c0-b9a8-4765-8432-10fedcba9876",
        "insightDetails": {"state": "Start", "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances"},
        "eventCategory": "Insight",
    }
    summary = event_summary(record)
    assert {k: v for k, v in summary.items() if k != "CloudTrailEvent"} == {
        "EventId": "6a1f0c2e-1f4b-4c9a-9b1e-2a3b4c5d6e7f",
        "EventName": "RunInstances",
        "EventTime": 1738582920.0,
        "EventSource": "ec2.amazonaws.com",
        "Resources": [],
    }


@pytest.mark.parametrize(
    ("identity", "name"),
    [
        ({"type": "IAMUser", "userName": "alice", "arn": "arn:aws:iam::1:user/x"}, "alice"),
        ({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/Deploy/ci-run-7"}, "ci-run-7"),
        ({"type": "FederatedUser", "arn": "arn:aws:sts::123456789012:federated-user/Bob"}, "Bob"),
        ({"type": "Root", "arn": "arn:aws:iam::123456789012:root"}, "root"),
        ({"type": "AWSService", "invokedBy": "autoscaling.amazonaws.com"}, "autoscaling.amazonaws.com"),
        ({"type": "Root", "userName": "admin-alias"}, "root"),
        ({"type": "AWSService"}, None),
        ({"type": "Unknown"}, None),
        (None, None),
    ],
)
def test_lookup_username_derivation_is_the_index_one(identity: Any, name: str | None) -> None:
    record = {} if identity is None else {"userIdentity": identity}
    assert username_of(record) == name


@pytest.mark.parametrize(
    ("arn", "name"),
    [
        ("arn:aws:iam::123456789012:role/service-role/Admin", "Admin"),
        ("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc", "i-0abc"),
        ("arn:aws:lambda:us-east-1:123456789012:function:my-fn", "my-fn"),
        ("arn:aws:s3:::my-bucket", "my-bucket"),
        ("arn:aws:s3:::my-bucket/a/b.txt", "b.txt"),
        ("arn:aws:sns:us-east-1:123456789012:alerts", "alerts"),
        ("not-an-arn", "not-an-arn"),
    ],
)
def test_lookup_resource_short_name_is_the_index_one(arn: str, name: str) -> None:
    assert resource_name_of(arn) == name


def test_lookup_response_carries_next_token_only_when_more() -> None:
    assert lookup_response([CREATE_USER], None).keys() == {"Events"}
    assert lookup_response([], "t") == {"Events": [], "NextToken": "t"}
