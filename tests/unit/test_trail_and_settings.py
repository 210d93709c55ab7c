"""Trails (basic event selectors) and the settings contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opentrail.domain.trail import Trail, TrailError, trail_from_dict, trails_from_json, trails_to_json
from opentrail.settings import BatcherSettings, IngestSettings, SettingsError

MANAGEMENT_WRITE = {"eventCategory": "Management", "eventSource": "iam.amazonaws.com", "readOnly": False}
MANAGEMENT_READ = {"eventCategory": "Management", "eventSource": "ec2.amazonaws.com", "readOnly": True}
KMS_READ = {"eventCategory": "Management", "eventSource": "kms.amazonaws.com", "readOnly": True}
S3_DATA = {
    "eventCategory": "Data",
    "readOnly": True,
    "resources": [
        {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::acme-reports/2025/q1.csv"},
        {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::acme-reports"},
    ],
}
LAMBDA_DATA = {
    "eventCategory": "Data",
    "readOnly": False,
    "resources": [{"type": "AWS::Lambda::Function", "ARN": "arn:aws:lambda:us-east-1:111122223333:function:f"}],
}


def trail(**selector: Any) -> Trail:
    return trail_from_dict({"Name": "audit", "EventSelectors": [selector]})


def test_default_trail_records_all_management_events_and_no_data_events() -> None:
    default = Trail()

    assert default.selects(MANAGEMENT_WRITE)
    assert default.selects(MANAGEMENT_READ)
    assert not default.selects(S3_DATA)


@pytest.mark.parametrize(
    ("read_write", "write_selected", "read_selected"),
    [("All", True, True), ("ReadOnly", False, True), ("WriteOnly", True, False)],
)
def test_read_write_type(read_write: str, write_selected: bool, read_selected: bool) -> None:
    selected = trail(ReadWriteType=read_write)

    assert selected.selects(MANAGEMENT_WRITE) is write_selected
    assert selected.selects(MANAGEMENT_READ) is read_selected


def test_exclude_management_event_sources() -> None:
    selected = trail(ExcludeManagementEventSources=["kms.amazonaws.com"])

    assert not selected.selects(KMS_READ)
    assert selected.selects(MANAGEMENT_READ)


def test_data_resources_by_bucket_prefix_and_function_arn() -> None:
    by_prefix = trail(DataResources=[{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::acme-reports/2025/"]}])
    other_bucket = trail(DataResources=[{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::other/"]}])
    all_s3 = trail(DataResources=[{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}])
    function = trail(
        DataResources=[
            {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda:us-east-1:111122223333:function:f"]}
        ]
    )

    assert by_prefix.selects(S3_DATA)
    assert not other_bucket.selects(S3_DATA)
    assert all_s3.selects(S3_DATA)
    assert function.selects(LAMBDA_DATA)
    assert not function.selects(S3_DATA)


def test_include_management_events_false_drops_management_events() -> None:
    assert not trail(IncludeManagementEvents=False).selects(MANAGEMENT_WRITE)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"Name": "ab"}, "Name"),
        ({"Name": "bad..name"}, "Name"),
        ({"Name": "ok-trail", "S3KeyPrefix": "prefix/"}, "S3KeyPrefix"),
        ({"Name": "ok-trail", "EventSelectors": [{}] * 6}, "EventSelectors"),
        ({"Name": "ok-trail", "EventSelectors": [{"ReadWriteType": "Some"}]}, "EventSelectors[0].ReadWriteType"),
        (
            {
                "Name": "ok-trail",
                "EventSelectors": [{"DataResources": [{"Type": "AWS::EC2::Instance", "Values": ["x"]}]}],
            },
            "EventSelectors[0].DataResources[0].Type",
        ),
        (
            {"Name": "ok-trail", "EventSelectors": [{"ExcludeManagementEventSources": ["s3.amazonaws.com"]}]},
            "EventSelectors[0].ExcludeManagementEventSources",
        ),
    ],
)
def test_invalid_trail_names_the_trail_and_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(TrailError) as raised:
        trail_from_dict(data)

    assert raised.value.field == field


def test_trails_round_trip_through_json() -> None:
    trails = (trail(ReadWriteType="WriteOnly"), Trail(name="second", s3_key_prefix="team/logs"))

    assert trails_from_json(trails_to_json(trails)) == trails


def test_trails_json_rejects_duplicates_and_more_than_five() -> None:
    with pytest.raises(TrailError, match="unique"):
        trails_from_json(json.dumps([{"Name": "same"}, {"Name": "same"}]))
    with pytest.raises(TrailError, match="1 to 5"):
        trails_from_json(json.dumps([{"Name": f"trail{i}"} for i in range(6)]))


def test_settings_round_trip_through_the_environment() -> None:
    settings = BatcherSettings(
        buffer_queue_url="q",
        dead_letter_queue_url="d",
        log_bucket="b",
        log_kms_key_arn="k",
        ledger_table="t",
        history_table="h",
    )
    environment = settings.to_env()

    assert set(environment) == BatcherSettings.env_names()
    assert BatcherSettings.from_env(environment) == settings


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="BUFFER_QUEUE_URL"):
        IngestSettings.from_env({"CHANNEL_ARNS": "arn:aws:cloudtrail:us-east-1:111122223333:channel/x"})
    with pytest.raises(SettingsError, match="TRAILS"):
        BatcherSettings.from_env(
            {
                "BUFFER_QUEUE_URL": "q",
                "DEAD_LETTER_QUEUE_URL": "d",
                "LOG_BUCKET": "b",
                "LOG_KMS_KEY_ARN": "k",
                "LEDGER_TABLE": "t",
                "HISTORY_TABLE": "h",
                "TRAILS": '[{"Name": "x"}]',
            }
        )


def test_ingest_settings_parse_channel_list() -> None:
    settings = IngestSettings(buffer_queue_url="q", channel_arns="arn:a , arn:b,")

    assert settings.channels == frozenset({"arn:a", "arn:b"})


def test_bucket_level_data_events_match_whole_bucket_selectors() -> None:
    list_objects = {
        "eventCategory": "Data",
        "eventSource": "s3.amazonaws.com",
        "readOnly": True,
        "resources": [
            {"ARNPrefix": "arn:aws:s3:::acme-reports/", "type": "AWS::S3::Object"},
            {"ARN": "arn:aws:s3:::acme-reports", "accountId": "111122223333", "type": "AWS::S3::Bucket"},
        ],
    }
    whole_bucket = trail(DataResources=[{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::acme-reports/"]}])
    prefix_only = trail(DataResources=[{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::acme-reports/2026/"]}])

    assert whole_bucket.selects(list_objects)
    assert not prefix_only.selects(list_objects)


def test_all_resources_values_select_by_service() -> None:
    all_lambda = trail(DataResources=[{"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}])

    assert all_lambda.selects({**LAMBDA_DATA, "eventSource": "lambda.amazonaws.com"})
    assert not all_lambda.selects({**S3_DATA, "eventSource": "s3.amazonaws.com"})
