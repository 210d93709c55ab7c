"""record_boto3: AWS API calls → CloudTrail-shaped records, secrets redacted (moto-backed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from opentrail.recorder import HIDDEN, identity_from_caller, is_secret_key, record_boto3, redact
from opentrail.sinks import BufferSink

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, records: Any) -> None:
        self.records.extend(records)


@pytest.mark.parametrize(
    "name", ["Password", "SecretString", "SecretBinary", "SessionToken", "PrivateKey", "private_key", "ApiKey",
             "Credentials", "AuthToken", "MasterUserPassword", "Plaintext"]
)  # fmt: skip
def test_secret_key_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name", ["SecretId", "SecretArn", "NextToken", "ClientToken", "KeyId", "AccessKeyId", "TokenCode", "Bucket",
             "SecretName", "ContinuationToken"]
)  # fmt: skip
def test_not_secret_key_names(name: str) -> None:
    assert not is_secret_key(name)


def test_redact_nested_and_shapes() -> None:
    session = boto3.session.Session(region_name="us-east-1")
    model = session.client("iam").meta.service_model.operation_model("CreateLoginProfile")
    value = redact(
        {"UserName": "bob", "Password": "hunter2", "Extra": [{"apiKey": "k"}], "Blob": b"abc"}, model.input_shape
    )
    assert value == {"UserName": "bob", "Password": HIDDEN, "Extra": [{"apiKey": HIDDEN}], "Blob": "<3 bytes>"}


def test_sensitive_model_member_is_hidden_whatever_its_name() -> None:
    session = boto3.session.Session(region_name="us-east-1")
    shape = session.client("sts").meta.service_model.operation_model("AssumeRole").output_shape
    # Credentials.SecretAccessKey is `sensitive: true` in the model; AccessKeyId is not
    redacted = redact({"Credentials": {"AccessKeyId": "ASIAX", "SecretAccessKey": "s3cr3t"}}, shape)
    assert redacted["Credentials"] == HIDDEN or redacted["Credentials"]["SecretAccessKey"] == HIDDEN


def test_secretsmanager_calls_are_recorded_with_secrets_hidden(aws: None) -> None:
    sink = Sink()
    session = boto3.session.Session(region_name="us-east-1")
    recorder = record_boto3(session, emit=sink, max_records=1)
    client = session.client("secretsmanager")
    client.create_secret(Name="db", SecretString='{"password": "hunter2"}')
    client.get_secret_value(SecretId="db")
    recorder.uninstall()
    create, get = sink.records
    assert (create["eventSource"], create["eventName"]) == ("secretsmanager.amazonaws.com", "CreateSecret")
    assert create["requestParameters"] == {
        "name": "db",
        "secretString": HIDDEN,
        "clientRequestToken": create["requestParameters"]["clientRequestToken"],
    }
    assert create["readOnly"] is False
    assert create["eventCategory"] == "Management"
    assert get["readOnly"] is True
    assert get["requestParameters"] == {"secretId": "db"}
    assert get["responseElements"]["secretString"] == HIDDEN
    assert "hunter2" not in json.dumps(sink.records)
    assert get["awsRegion"] == "us-east-1"
    assert get["eventType"] == "AwsApiCall"
    assert get["userAgent"].startswith("Boto3/")
    assert get["requestID"]


@pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets is not beside the repository")
def test_recorded_get_secret_value_has_the_shape_of_the_real_record(aws: None) -> None:
    # real CloudTrail GetSecretValue records (stratus-red-team dataset) vs the recorder's
    real = next(
        r
        for r in json.loads((DATASETS / "stratus-red-team-detonation-logs" /
                             "aws.credential-access.secretsmanager-retrieve-secrets.json").read_text())
        if r["eventName"] == "GetSecretValue"
    )  # fmt: skip
    sink = Sink()
    session = boto3.session.Session(region_name="us-east-1")
    record_boto3(session, emit=sink, max_records=1)
    client = session.client("secretsmanager")
    client.create_secret(Name="s", SecretString="x")
    client.get_secret_value(SecretId="s")
    mine = sink.records[-1]
    for name in ("eventSource", "eventName", "readOnly", "eventCategory", "managementEvent", "eventType"):
        assert mine[name] == real[name], name
    assert set(mine["requestParameters"]) == set(real["requestParameters"])


def test_errors_are_recorded(aws: None) -> None:
    sink = Sink()
    session = boto3.session.Session(region_name="us-east-1")
    record_boto3(session, emit=sink, max_records=1)
    with pytest.raises(session.client("secretsmanager").exceptions.ResourceNotFoundException):
        session.client("secretsmanager").get_secret_value(SecretId="missing")
    (record,) = sink.records
    assert record["errorCode"] == "ResourceNotFoundException"
    assert record["errorMessage"]
    assert record["responseElements"] is None


def test_s3_data_events_name_object_and_bucket_and_omit_streams(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCOUNT_ID", "111122223333")
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client("s3")
    s3.create_bucket(Bucket="reports")
    sink = Sink()
    record_boto3(s3, emit=sink, max_records=1)  # one client only
    s3.put_object(Bucket="reports", Key="q1.csv", Body=b"a,b\n")
    s3.get_object(Bucket="reports", Key="q1.csv")["Body"].read()
    put, get = sink.records
    assert put["eventCategory"] == "Data"
    assert put["managementEvent"] is False
    assert put["requestParameters"]["bucketName"] == "reports"
    assert put["requestParameters"]["body"] in ("<4 bytes>", "<stream>")  # botocore may wrap bytes
    assert get["resources"] == [
        {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::reports/q1.csv"},
        {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::reports", "accountId": "111122223333"},
    ]
    assert get["responseElements"] is None
    assert get["additionalEventData"]["responseElementsOmitted"] == "a stream"


def test_identity_from_access_key_type() -> None:
    sink = Sink()
    session = boto3.session.Session(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="x", region_name="us-east-1")
    recorder = record_boto3(session, emit=sink)
    assert recorder._identity(session.get_credentials()) == {"type": "IAMUser", "accessKeyId": "AKIAEXAMPLE"}


def test_resolved_identity_is_looked_up_once_per_key(aws: None) -> None:
    calls: list[Any] = []

    def resolver(credentials: Any) -> dict[str, str]:
        calls.append(credentials)
        return {"UserId": "AROAEX:alice", "Account": "111122223333",
                "Arn": "arn:aws:sts::111122223333:assumed-role/Deployer/alice"}  # fmt: skip

    sink = Sink()
    session = boto3.session.Session(aws_access_key_id="ASIAEXAMPLE", aws_secret_access_key="x",
                                    aws_session_token="t", region_name="us-east-1")  # fmt: skip
    record_boto3(session, emit=sink, max_records=1, resolve_identity=True, identity_resolver=resolver)
    client = session.client("sqs")
    client.list_queues()
    client.list_queues()
    assert len(calls) == 1
    identity = sink.records[0]["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == "arn:aws:iam::111122223333:role/Deployer"
    assert sink.records[0]["recipientAccountId"] == "111122223333"


def test_identity_from_caller_types() -> None:
    assert identity_from_caller({"Arn": "arn:aws:iam::111122223333:user/ops/carol", "Account": "111122223333",
                                 "UserId": "AIDA1"})["userName"] == "carol"  # fmt: skip
    assert identity_from_caller({"Arn": "arn:aws:iam::111122223333:root", "Account": "111122223333"})["type"] == "Root"


def test_batches_go_to_the_sink_when_full(aws: None) -> None:
    sink = Sink()
    session = boto3.session.Session(region_name="us-east-1")
    recorder = record_boto3(session, emit=sink, max_records=3, max_age_seconds=3600)
    client = session.client("sqs")
    for _ in range(4):
        client.list_queues()
    assert len(sink.records) == 3
    recorder.flush()
    assert len(sink.records) == 4


def test_opentrail_own_emits_are_not_recorded(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the recorder on boto3's default session, sending its batches to the buffer with
    # BufferSink / when a call is recorded and flushed / then the SQS sends are not recorded
    monkeypatch.setenv("AWS_ACCOUNT_ID", "111122223333")
    session = boto3.session.Session(region_name="us-east-1")
    url = session.client("sqs").create_queue(QueueName="buffer")["QueueUrl"]
    monkeypatch.setenv("OPENTRAIL_BUFFER_QUEUE_URL", url)  # as add_capture_source sets it
    sink = BufferSink(client=session.client("sqs"))
    seen: list[dict[str, Any]] = []

    def recording_sink(records: Any) -> None:
        seen.extend(records)
        sink(records)

    recorder = record_boto3(session, emit=recording_sink, max_records=1)
    other = session.client("sqs")
    other.list_queues()
    other.send_message(QueueUrl=url, MessageBody="x")  # user code sending to the buffer queue directly
    recorder.uninstall()
    assert [r["eventName"] for r in seen] == ["ListQueues"]
    messages = session.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 2  # the recorded ListQueues bundle + the user's message


def test_recorded_calls_fixture(recorded_calls: Any, aws: None) -> None:
    sqs = recorded_calls.session.client("sqs", region_name="us-east-1")
    sqs.create_queue(QueueName="orders")
    assert recorded_calls.find("sqs.amazonaws.com", "CreateQueue")
    assert recorded_calls.names() == ["sqs.amazonaws.com:CreateQueue"]
