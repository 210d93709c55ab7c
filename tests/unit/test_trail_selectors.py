"""Advanced event selectors, insight selectors, deliveries and the trail limits (spec §7.3-7.6);
selector evaluation property-tested against a straightforward reference implementation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentrail.domain.trail import (
    Deliveries,
    Trail,
    TrailError,
    trail_from_dict,
    trails_from_json,
    trails_from_list,
    trails_to_json,
)

S3_GET = {
    "eventCategory": "Data",
    "eventSource": "s3.amazonaws.com",
    "eventName": "GetObject",
    "eventType": "AwsApiCall",
    "readOnly": True,
    "userIdentity": {"arn": "arn:aws:iam::111122223333:user/alice"},
    "resources": [
        {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::acme-reports/2025/q1.csv"},
        {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::acme-reports"},
    ],
}
IAM_WRITE = {"eventCategory": "Management", "eventSource": "iam.amazonaws.com", "readOnly": False}
KMS_READ = {"eventCategory": "Management", "eventSource": "kms.amazonaws.com", "readOnly": True}


def advanced(*selectors: list[dict[str, Any]], name: str = "adv") -> Trail:
    return trail_from_dict(
        {"Name": name, "AdvancedEventSelectors": [{"FieldSelectors": fields} for fields in selectors]}
    )


def category(value: str) -> dict[str, Any]:
    return {"Field": "eventCategory", "Equals": [value]}


# -- each field and operator --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "selected"),
    [
        ({"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::acme-reports/"]}, True),
        ({"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::other/"]}, False),
        ({"Field": "resources.ARN", "EndsWith": [".csv"]}, True),
        ({"Field": "resources.ARN", "EndsWith": [".json", ".txt"]}, False),
        ({"Field": "resources.ARN", "Equals": ["arn:aws:s3:::acme-reports/2025/q1.csv"]}, True),
        ({"Field": "resources.ARN", "NotEquals": ["arn:aws:s3:::acme-reports/2025/q1.csv"]}, False),
        ({"Field": "resources.ARN", "NotStartsWith": ["arn:aws:s3:::acme-reports/secret/"]}, True),
        ({"Field": "resources.ARN", "NotEndsWith": [".csv"]}, False),
        ({"Field": "eventName", "Equals": ["PutObject", "GetObject"]}, True),
        ({"Field": "eventName", "NotEquals": ["GetObject"]}, False),
        ({"Field": "eventName", "StartsWith": ["Get"], "NotEquals": ["GetObjectAcl"]}, True),
        ({"Field": "eventSource", "Equals": ["s3.amazonaws.com"]}, True),
        ({"Field": "eventType", "Equals": ["AwsServiceEvent"]}, False),
        ({"Field": "readOnly", "Equals": ["true"]}, True),
        ({"Field": "readOnly", "Equals": ["false"]}, False),
        ({"Field": "userIdentity.arn", "EndsWith": [":user/alice"]}, True),
        ({"Field": "userIdentity.arn", "NotStartsWith": ["arn:aws:iam::111122223333:"]}, False),
        ({"Field": "sessionCredentialFromConsole", "NotEquals": ["true"]}, True),
    ],
)
def test_data_selector_fields_and_operators(condition: dict[str, Any], selected: bool) -> None:
    trail = advanced([category("Data"), {"Field": "resources.type", "Equals": ["AWS::S3::Object"]}, condition])

    assert trail.selects(S3_GET) is selected


def test_resource_conditions_hold_for_one_and_the_same_resource() -> None:
    # The bucket resource's ARN has no "/" and the object's type is not AWS::S3::Bucket.
    mixed = advanced(
        [
            category("Data"),
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
            {"Field": "resources.ARN", "Equals": ["arn:aws:s3:::acme-reports"]},
        ]
    )
    assert not mixed.selects(S3_GET)


def test_conditions_and_selectors_or() -> None:
    writes = [category("Management"), {"Field": "readOnly", "Equals": ["false"]}]
    s3_reads = [category("Data"), {"Field": "resources.type", "Equals": ["AWS::S3::Object"]}]
    trail = advanced(writes, s3_reads)

    assert trail.selects(IAM_WRITE)
    assert trail.selects(S3_GET)
    assert not trail.selects(KMS_READ)
    assert not advanced(writes).selects(S3_GET)


def test_management_selector_excludes_sources_like_basic_exclusions() -> None:
    trail = advanced([category("Management"), {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]}])

    assert trail.selects(IAM_WRITE)
    assert not trail.selects(KMS_READ)
    assert not trail.selects(S3_GET)


def test_network_activity_selector() -> None:
    trail = advanced(
        [
            category("NetworkActivity"),
            {"Field": "eventSource", "Equals": ["s3.amazonaws.com"]},
            {"Field": "errorCode", "Equals": ["VpceAccessDenied"]},
        ]
    )
    record = {"eventCategory": "NetworkActivity", "eventSource": "s3.amazonaws.com", "errorCode": "VpceAccessDenied"}

    assert trail.selects(record)
    assert not trail.selects({**record, "errorCode": None})


def test_insight_records_are_never_selected_by_event_selectors() -> None:
    insight = {"eventCategory": "Insight", "eventSource": "iam.amazonaws.com"}

    assert not Trail().selects(insight)
    assert not advanced([category("Management")]).selects(insight)


def test_include_global_service_events_false_drops_iam() -> None:
    trail = trail_from_dict({"Name": "regional", "IncludeGlobalServiceEvents": False})

    assert not trail.selects(IAM_WRITE)
    assert trail.selects(KMS_READ)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"EventSelectors": [{}], "AdvancedEventSelectors": [{"FieldSelectors": [category("Data")]}]},
            "AdvancedEventSelectors",
        ),
        ({"AdvancedEventSelectors": []}, "AdvancedEventSelectors"),
        ({"AdvancedEventSelectors": [{"FieldSelectors": []}]}, "AdvancedEventSelectors[0].FieldSelectors"),
        (
            {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventSource", "Equals": ["x"]}]}]},
            "AdvancedEventSelectors[0].FieldSelectors",
        ),
        (
            {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "StartsWith": ["Man"]}]}]},
            "AdvancedEventSelectors[0].FieldSelectors[0].StartsWith",
        ),
        (
            {"AdvancedEventSelectors": [{"FieldSelectors": [category("Data")]}]},
            "AdvancedEventSelectors[0].FieldSelectors",
        ),
        (
            {
                "AdvancedEventSelectors": [
                    {"FieldSelectors": [category("Management"), {"Field": "eventName", "Equals": ["CreateUser"]}]}
                ]
            },
            "AdvancedEventSelectors[0].FieldSelectors[1].Field",
        ),
        (
            {
                "AdvancedEventSelectors": [
                    {
                        "FieldSelectors": [
                            category("Data"),
                            {"Field": "resources.type", "NotEquals": ["AWS::S3::Object"]},
                        ]
                    }
                ]
            },
            "AdvancedEventSelectors[0].FieldSelectors[1].NotEquals",
        ),
        (
            {
                "AdvancedEventSelectors": [
                    {"FieldSelectors": [category("Management"), {"Field": "readOnly", "Equals": ["yes"]}]}
                ]
            },
            "AdvancedEventSelectors[0].FieldSelectors[1].Equals",
        ),
        (
            {
                "AdvancedEventSelectors": [
                    {"FieldSelectors": [category("Management"), {"Field": "eventSource", "Like": ["x"]}]}
                ]
            },
            "AdvancedEventSelectors[0].FieldSelectors[1].Like",
        ),
        (
            {
                "AdvancedEventSelectors": [
                    {"FieldSelectors": [category("Management"), {"Field": "eventSource", "Equals": [""]}]}
                ]
            },
            "AdvancedEventSelectors[0].FieldSelectors[1].Equals",
        ),
        ({"InsightSelectors": [{"InsightType": "ApiThrottleInsight"}]}, "InsightSelectors[0].InsightType"),
        ({"InsightSelectors": [{"InsightType": "ApiCallRateInsight"}] * 2}, "InsightSelectors"),
        ({"LogFileValidationEnabled": "yes"}, "LogFileValidationEnabled"),
        ({"Deliveries": {"CloudWatchLogs": "bad name!"}}, "Deliveries.CloudWatchLogs"),
        ({"Deliveries": {"SnsTopic": "a.b"}}, "Deliveries.SnsTopic"),
        ({"Deliveries": {"Kinesis": True}}, "Deliveries.Kinesis"),
        ({"KmsKeyId": "x"}, "KmsKeyId"),
        ({"Name": "192.168.10.10"}, "Name"),
    ],
)
def test_invalid_configuration_names_trail_and_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(TrailError) as raised:
        trail_from_dict({"Name": "audit", **data})

    assert raised.value.field == field
    assert raised.value.trail == data.get("Name", "audit")
    assert str(raised.value).startswith(f"trail {data.get('Name', 'audit')!r}: {field}: ")


def test_limit_250_data_resources_not_counting_all_values() -> None:
    def selectors(count: int) -> list[dict[str, Any]]:
        values = [f"arn:aws:s3:::bucket-{i}/" for i in range(count)]
        return [
            {"DataResources": [{"Type": "AWS::S3::Object", "Values": [*values[:125], "arn:aws:s3"]}]},
            {"DataResources": [{"Type": "AWS::S3::Object", "Values": values[125:]}]},
        ]

    trail_from_dict({"Name": "audit", "EventSelectors": selectors(250)})
    with pytest.raises(TrailError, match="250 data resources") as raised:
        trail_from_dict({"Name": "audit", "EventSelectors": selectors(251)})
    assert raised.value.field == "EventSelectors"


def test_limit_500_advanced_values() -> None:
    def trail(count: int) -> dict[str, Any]:
        values = [f"arn:aws:s3:::bucket-{i}/" for i in range(count - 2)]
        fields = [
            category("Data"),
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
            {"Field": "resources.ARN", "StartsWith": values},
        ]
        return {"Name": "audit", "AdvancedEventSelectors": [{"FieldSelectors": fields}]}

    trail_from_dict(trail(500))
    with pytest.raises(TrailError, match="500 values"):
        trail_from_dict(trail(501))


def test_limit_five_selectors_and_five_trails() -> None:
    with pytest.raises(TrailError, match="1 to 5 selectors"):
        trail_from_dict({"Name": "audit", "EventSelectors": [{}] * 6})
    with pytest.raises(TrailError, match="1 to 5 trails"):
        trails_from_list([{"Name": f"trail{i}"} for i in range(6)])
    with pytest.raises(TrailError) as raised:
        trails_from_list([{"Name": "same"}, {"Name": "other"}, {"Name": "same"}])
    assert raised.value.trail == "same"


def test_full_trail_round_trips_through_json() -> None:
    trails = (
        advanced([category("Data"), {"Field": "resources.type", "Equals": ["AWS::Lambda::Function"]}], name="data"),
        trail_from_dict(
            {
                "Name": "security",
                "S3KeyPrefix": "sec",
                "EventSelectors": [{"ReadWriteType": "WriteOnly"}],
                "InsightSelectors": [{"InsightType": "ApiErrorRateInsight", "EventCategories": ["Management"]}],
                "LogFileValidationEnabled": False,
                "IsMultiRegionTrail": False,
                "Deliveries": {"CloudWatchLogs": True, "EventBridge": True, "SnsTopic": "sec-alerts"},
            }
        ),
    )

    assert trails_from_json(trails_to_json(trails)) == trails
    security = trails[1]
    assert security.deliveries == Deliveries(
        cloud_watch_logs="opentrail/security", event_bridge=True, sns_topic="sec-alerts"
    )
    assert security.has_custom_event_selectors
    assert security.has_insight_selectors
    assert not Trail().has_custom_event_selectors
    assert not security.records_in("eu-west-1", "us-east-1")
    assert security.records_in("us-east-1", "us-east-1")
    assert json.loads(trails_to_json(trails))[0]["AdvancedEventSelectors"][0]["FieldSelectors"][0] == category("Data")


def test_default_log_file_validation_comes_from_the_caller() -> None:
    assert not trail_from_dict({"Name": "audit"}, default_log_file_validation=False).log_file_validation_enabled
    assert trail_from_dict({"Name": "audit", "LogFileValidationEnabled": True}, default_log_file_validation=False)


# -- property test: the domain agrees with a straightforward reference ---------------------------


def reference_value(record: dict[str, Any], field: str) -> str:
    if field == "eventCategory":
        return record.get("eventCategory") or "Management"
    if field == "readOnly":
        return "true" if record.get("readOnly") is True else "false"
    if field == "userIdentity.arn":
        return (record.get("userIdentity") or {}).get("arn") or ""
    return record.get(field) or ""


def reference_condition(condition: dict[str, Any], value: str) -> bool:
    for operator, values in condition.items():
        if operator == "Field":
            continue
        if operator == "Equals":
            ok = any(value == v for v in values)
        elif operator == "StartsWith":
            ok = any(value.startswith(v) for v in values)
        elif operator == "EndsWith":
            ok = any(value.endswith(v) for v in values)
        elif operator == "NotEquals":
            ok = all(value != v for v in values)
        elif operator == "NotStartsWith":
            ok = all(not value.startswith(v) for v in values)
        else:
            ok = all(not value.endswith(v) for v in values)
        if not ok:
            return False
    return True


def reference_selects(selectors: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    for selector in selectors:
        conditions = selector["FieldSelectors"]
        on_resources = [c for c in conditions if c["Field"].startswith("resources.")]
        others = [c for c in conditions if not c["Field"].startswith("resources.")]
        if not all(reference_condition(c, reference_value(record, c["Field"])) for c in others):
            continue
        if not on_resources:
            return True
        for resource in record.get("resources") or []:
            values = {"resources.type": resource.get("type") or "", "resources.ARN": resource.get("ARN") or ""}
            if all(reference_condition(c, values[c["Field"]]) for c in on_resources):
                return True
    return False


TEXT = st.sampled_from(["", "a", "ab", "abc", "b", "ba", "Get", "GetObject", "Put", "s3.amazonaws.com", "x.csv"])
VALUES = st.lists(
    st.sampled_from(["a", "ab", "b", "Get", "GetObject", "s3.amazonaws.com", ".csv", "x"]), min_size=1, max_size=3
)
OPERATOR_NAMES = ["Equals", "StartsWith", "EndsWith", "NotEquals", "NotStartsWith", "NotEndsWith"]


@st.composite
def conditions(draw: st.DrawFn, field: str) -> dict[str, Any]:
    if field == "readOnly":
        return {"Field": field, "Equals": draw(st.lists(st.sampled_from(["true", "false"]), min_size=1, max_size=2))}
    if field == "resources.type":
        return {"Field": field, "Equals": [draw(st.sampled_from(["AWS::S3::Object", "AWS::Lambda::Function", "T"]))]}
    operators = draw(st.lists(st.sampled_from(OPERATOR_NAMES), min_size=1, max_size=3, unique=True))
    return {"Field": field, **{operator: draw(VALUES) for operator in operators}}


FIELDS = {
    "Management": ["eventSource", "readOnly"],
    "Data": ["resources.ARN", "eventName", "eventSource", "eventType", "readOnly", "userIdentity.arn"],
    "NetworkActivity": ["eventName", "errorCode", "vpcEndpointId", "userIdentity.arn"],
}


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    fields = draw(st.lists(st.sampled_from(FIELDS[kind]), max_size=3))
    required = {"Data": ["resources.type"], "NetworkActivity": ["eventSource"]}.get(kind, [])
    return {"FieldSelectors": [category(kind), *(draw(conditions(f)) for f in [*required, *fields])]}


RECORDS = st.fixed_dictionaries(
    {
        "eventCategory": st.sampled_from(["Management", "Data", "NetworkActivity", "Insight", None]),
        "eventSource": TEXT,
        "eventName": TEXT,
        "eventType": TEXT,
        "errorCode": st.one_of(st.none(), TEXT),
        "vpcEndpointId": TEXT,
        "readOnly": st.sampled_from([True, False, None]),
        "userIdentity": st.fixed_dictionaries({"arn": TEXT}),
        "resources": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["AWS::S3::Object", "AWS::Lambda::Function", "T"]), "ARN": TEXT}
            ),
            max_size=3,
        ),
    }
)


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(selectors(), min_size=1, max_size=3), record=RECORDS)
def test_advanced_selection_matches_the_reference(raw: list[dict[str, Any]], record: dict[str, Any]) -> None:
    trail = trail_from_dict({"Name": "prop", "AdvancedEventSelectors": raw})

    assert trail.selects(record) is reference_selects(raw, record)


def reference_basic(selectors: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    for selector in selectors:
        mode = selector.get("ReadWriteType", "All")
        if (mode == "ReadOnly" and record.get("readOnly") is not True) or (
            mode == "WriteOnly" and record.get("readOnly") is True
        ):
            continue
        kind = record.get("eventCategory", "Management")
        if kind == "Management":
            if selector.get("IncludeManagementEvents", True) and record.get("eventSource") not in selector.get(
                "ExcludeManagementEventSources", []
            ):
                return True
        elif kind == "Data":
            for resource in selector.get("DataResources", []):
                for value in resource["Values"]:
                    if value == "arn:aws:s3" and record.get("eventSource") == "s3.amazonaws.com":
                        return True
                    for item in record.get("resources", []):
                        if (
                            item["type"] == resource["Type"]
                            and item["ARN"].startswith(value)
                            and (resource["Type"] == "AWS::S3::Object" or item["ARN"] == value)
                        ):
                            return True
    return False


BASIC = st.fixed_dictionaries(
    {},
    optional={
        "ReadWriteType": st.sampled_from(["ReadOnly", "WriteOnly", "All"]),
        "IncludeManagementEvents": st.booleans(),
        "ExcludeManagementEventSources": st.lists(st.just("kms.amazonaws.com"), max_size=1),
        "DataResources": st.lists(
            st.fixed_dictionaries(
                {
                    "Type": st.sampled_from(["AWS::S3::Object", "AWS::Lambda::Function"]),
                    "Values": st.lists(
                        st.sampled_from(["arn:aws:s3", "arn:aws:s3:::b/", "arn:aws:s3:::b/k", "fn"]),
                        min_size=1,
                        max_size=2,
                    ),
                }
            ),
            max_size=2,
        ),
    },
)
BASIC_RECORDS = st.fixed_dictionaries(
    {
        "eventCategory": st.sampled_from(["Management", "Data"]),
        "eventSource": st.sampled_from(["s3.amazonaws.com", "kms.amazonaws.com", "lambda.amazonaws.com"]),
        "readOnly": st.sampled_from([True, False]),
        "resources": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["AWS::S3::Object", "AWS::Lambda::Function"]),
                    "ARN": st.sampled_from(["arn:aws:s3:::b/k", "arn:aws:s3:::b/kx", "arn:aws:s3:::c/k", "fn", "fn2"]),
                }
            ),
            max_size=2,
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(BASIC, min_size=1, max_size=3), record=BASIC_RECORDS)
def test_basic_selection_matches_the_reference(raw: list[dict[str, Any]], record: dict[str, Any]) -> None:
    trail = trail_from_dict({"Name": "prop", "EventSelectors": raw})

    assert trail.selects(record) is reference_basic(raw, record)
