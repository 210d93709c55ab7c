"""A deterministic, realistic audit workload for the demo and tests (pure: no I/O, no clock).

`generate(events=2000, hours=3, seed=7)` returns the API calls a small AWS team makes over a
simulated working morning: two IAM users (alice, an admin on the console and the CLI; bob, a
developer with boto3 scripts whose privileged calls are denied), a CI role session deploying
in bursts, a Lambda function's execution role, and AWS services acting on their own. Reads are
far more frequent than writes, some calls fail (``AccessDenied``,
``Client.UnauthorizedOperation``), events are spread over ``us-east-1`` and ``eu-west-1``
(IAM and STS are global and recorded in ``us-east-1``) and follow a daytime rhythm.

Every call is a `WorkloadEvent` with a capture path, so the demo exercises all three:

* ``ingest`` (most events): a PutAuditEvents ``eventData`` object (spec §6), `event_data()`;
* ``eventbridge``: an EventBridge envelope, `eventbridge_envelope()` — detail-type
  ``OpenTrail Audit Event`` with a partial record from an application, or ``AWS API Call via
  CloudTrail`` with a full record for calls made by AWS services;
* ``producer``: a partial CloudTrail record for ``opentrail.producer.emit``, `producer_record()`.

The same seed gives the same events, byte for byte.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

Path = Literal["ingest", "eventbridge", "producer"]
PATHS: Final[tuple[Path, ...]] = ("ingest", "eventbridge", "producer")

DEFAULT_EVENTS: Final = 2000
DEFAULT_HOURS: Final = 3.0
DEFAULT_SEED: Final = 7
DEFAULT_START: Final = datetime(2026, 3, 16, 8, 0, tzinfo=UTC)  # a Monday morning, UTC
DEFAULT_ACCOUNT_ID: Final = "123456789012"
HOME_REGION: Final = "us-east-1"
REGIONS: Final = ("us-east-1", "eu-west-1")
GLOBAL_SOURCES: Final = frozenset({"iam.amazonaws.com", "sts.amazonaws.com"})
AUDIT_EVENT_DETAIL_TYPE: Final = "OpenTrail Audit Event"
CLOUDTRAIL_DETAIL_TYPE: Final = "AWS API Call via CloudTrail"
APPLICATION_SOURCE: Final = "com.example.orders"
EVENT_DATA_VERSION: Final = "1.0"

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Who calls


@dataclass(frozen=True)
class Principal:
    name: str
    identity: Record  # CloudTrail userIdentity (account id filled in by `_principals`)
    user_agents: tuple[str, ...]
    source_ips: tuple[str, ...]
    weight: float  # share of all calls
    denied: frozenset[str] = frozenset()  # eventNames this principal is not allowed to call


def _principals(account: str, start: datetime) -> tuple[Principal, ...]:
    session_start = (start - timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cli = "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.8 md/command#{cmd}"
    alice = Principal(
        name="alice",
        identity={
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEALICE0001",
            "arn": f"arn:aws:iam::{account}:user/alice",
            "accountId": account,
            "accessKeyId": "AKIAEXAMPLEALICE0001",
            "userName": "alice",
        },
        user_agents=(cli, cli, "console.amazonaws.com", "AWS Internal"),
        source_ips=("203.0.113.10", "203.0.113.11"),
        weight=0.27,
    )
    bob = Principal(
        name="bob",
        identity={
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEBOB000002",
            "arn": f"arn:aws:iam::{account}:user/bob",
            "accountId": account,
            "accessKeyId": "AKIAEXAMPLEBOB000002",
            "userName": "bob",
        },
        user_agents=(
            "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/macos#23.4.0 md/arch#arm64 lang/python#3.12.2 "
            "cfg/retry-mode#legacy",
            cli,
        ),
        source_ips=("198.51.100.23",),
        weight=0.29,
        denied=frozenset(
            {
                "CreateUser",
                "AttachUserPolicy",
                "RunInstances",
                "TerminateInstances",
                "PutBucketPolicy",
                "RefundOrder",
                "UpdateFeatureFlag",
                "ApproveDeployment",
            }
        ),
    )
    ci_session = "gha-deploy-8841"
    ci = Principal(
        name="ci",
        identity={
            "type": "AssumedRole",
            "principalId": f"AROAEXAMPLECIROLE0003:{ci_session}",
            "arn": f"arn:aws:sts::{account}:assumed-role/ci-deploy/{ci_session}",
            "accountId": account,
            "accessKeyId": "ASIAEXAMPLECISESS003",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLECIROLE0003",
                    "arn": f"arn:aws:iam::{account}:role/ci-deploy",
                    "accountId": account,
                    "userName": "ci-deploy",
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": session_start, "mfaAuthenticated": "false"},
            },
        },
        user_agents=(
            "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.8 "
            "exec-env/GitHubActions md/command#{cmd}",
        ),
        source_ips=("192.0.2.44", "192.0.2.45"),
        weight=0.09,
    )
    function = "orders-api"
    lambda_role = Principal(
        name="orders-api",
        identity={
            "type": "AssumedRole",
            "principalId": f"AROAEXAMPLEFNROLE0004:{function}",
            "arn": f"arn:aws:sts::{account}:assumed-role/orders-api-role/{function}",
            "accountId": account,
            "accessKeyId": "ASIAEXAMPLEFNSESS004",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLEFNROLE0004",
                    "arn": f"arn:aws:iam::{account}:role/orders-api-role",
                    "accountId": account,
                    "userName": "orders-api-role",
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": session_start, "mfaAuthenticated": "false"},
            },
        },
        user_agents=(
            "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.10.219 md/arch#x86_64 lang/python#3.12.3 "
            "exec-env/AWS_Lambda_python3.12 cfg/retry-mode#legacy",
        ),
        source_ips=("54.240.197.233",),
        weight=0.28,
    )
    service = Principal(
        name="aws-service",
        identity={"type": "AWSService", "invokedBy": "lambda.amazonaws.com"},
        user_agents=("lambda.amazonaws.com",),
        source_ips=("lambda.amazonaws.com",),
        weight=0.07,
    )
    return (alice, bob, ci, lambda_role, service)


# --------------------------------------------------------------------------------------------
# What they call


@dataclass(frozen=True)
class Call:
    """The service-specific part of one API call."""

    request: Record | None
    response: Record | None = None
    resources: list[Record] | None = None
    additional: Record | None = None


Builder = Callable[["_Gen", Principal, str], Call]


@dataclass(frozen=True)
class Operation:
    source: str
    name: str
    read_only: bool
    weight: float
    principals: frozenset[str]  # principal names that make this call
    build: Builder
    category: str = "Management"


_BUCKETS: Final = ("orders-artifacts", "orders-reports", "team-shared-data", "ci-build-cache")
_TABLES: Final = ("orders", "customers", "inventory")
_FUNCTIONS: Final = ("orders-api", "orders-worker", "report-builder")
_ROLES: Final = ("ci-deploy", "orders-api-role", "report-builder-role", "ReadOnlyAudit")
_INSTANCE_TYPES: Final = ("t3.micro", "t3.small", "m6i.large")
_AMIS: Final = {"us-east-1": "ami-0abcdef1234567890", "eu-west-1": "ami-0fedcba9876543210"}


def _s3_list_buckets(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"Host": f"s3.{region}.amazonaws.com"}, None, None, g.s3_additional(0, 812))


def _s3_get_bucket_policy(g: _Gen, p: Principal, region: str) -> Call:
    bucket = g.pick(_BUCKETS)
    return Call(
        {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com", "policy": ""},
        None,
        g.bucket_resources(bucket),
        g.s3_additional(0, 402),
    )


def _s3_create_bucket(g: _Gen, p: Principal, region: str) -> Call:
    bucket = f"{g.pick(('orders', 'reports', 'scratch'))}-{g.hex(6)}"
    request: Record = {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com"}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    return Call(request, None, g.bucket_resources(bucket), g.s3_additional(0, 0))


def _s3_put_bucket_policy(g: _Gen, p: Principal, region: str) -> Call:
    bucket = g.pick(_BUCKETS)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    request = {
        "bucketName": bucket,
        "Host": f"{bucket}.s3.{region}.amazonaws.com",
        "bucketPolicy": policy,
        "policy": "",
    }
    return Call(request, None, g.bucket_resources(bucket), g.s3_additional(len(json.dumps(policy)), 0))


def _ec2_describe_instances(g: _Gen, p: Principal, region: str) -> Call:
    request: Record = {"instancesSet": {}, "filterSet": {}}
    if g.rng.random() < 0.4:
        request["filterSet"] = {"items": [{"name": "tag:app", "valueSet": {"items": [{"value": "orders"}]}}]}
    return Call(request)


def _ec2_describe_security_groups(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}})


def _ec2_run_instances(g: _Gen, p: Principal, region: str) -> Call:
    instance = f"i-{g.hex(17)}"
    instance_type = g.pick(_INSTANCE_TYPES)
    request = {
        "instancesSet": {"items": [{"imageId": _AMIS[region], "minCount": 1, "maxCount": 1}]},
        "instanceType": instance_type,
        "blockDeviceMapping": {},
        "monitoring": {"enabled": False},
        "disableApiTermination": False,
        "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": [{"key": "app", "value": "orders"}]}]},
    }
    response = {
        "requestId": g.uuid(),
        "reservationId": f"r-{g.hex(17)}",
        "ownerId": g.account,
        "groupSet": {},
        "instancesSet": {
            "items": [
                {
                    "instanceId": instance,
                    "imageId": _AMIS[region],
                    "instanceState": {"code": 0, "name": "pending"},
                    "instanceType": instance_type,
                    "placement": {"availabilityZone": f"{region}{g.pick('abc')}", "tenancy": "default"},
                }
            ]
        },
    }
    resources = [
        {
            "ARN": f"arn:aws:ec2:{region}:{g.account}:instance/{instance}",
            "accountId": g.account,
            "type": "AWS::EC2::Instance",
        }
    ]
    return Call(request, response, resources)


def _ec2_terminate_instances(g: _Gen, p: Principal, region: str) -> Call:
    instance = f"i-{g.hex(17)}"
    response = {
        "requestId": g.uuid(),
        "instancesSet": {
            "items": [
                {
                    "instanceId": instance,
                    "currentState": {"code": 32, "name": "shutting-down"},
                    "previousState": {"code": 16, "name": "running"},
                }
            ]
        },
    }
    resources = [
        {
            "ARN": f"arn:aws:ec2:{region}:{g.account}:instance/{instance}",
            "accountId": g.account,
            "type": "AWS::EC2::Instance",
        }
    ]
    return Call({"instancesSet": {"items": [{"instanceId": instance}]}}, response, resources)


def _iam_list_roles(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"maxItems": 100} if g.rng.random() < 0.3 else None)


def _iam_get_user(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"userName": g.pick(("alice", "bob", "build-bot"))})


def _iam_create_user(g: _Gen, p: Principal, region: str) -> Call:
    name = f"{g.pick(('svc', 'build', 'report'))}-bot-{g.hex(4)}"
    response = {
        "user": {
            "path": "/service/",
            "userName": name,
            "userId": f"AIDA{g.hex(16).upper()}",
            "arn": f"arn:aws:iam::{g.account}:user/service/{name}",
            "createDate": g.now.strftime("%b %d, %Y, %-I:%M:%S %p"),
        }
    }
    resources = [
        {"ARN": f"arn:aws:iam::{g.account}:user/service/{name}", "accountId": g.account, "type": "AWS::IAM::User"}
    ]
    return Call({"userName": name, "path": "/service/"}, response, resources)


def _iam_attach_user_policy(g: _Gen, p: Principal, region: str) -> Call:
    policy = g.pick(
        (
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
            "arn:aws:iam::aws:policy/AdministratorAccess",
        )
    )
    user = g.pick(("build-bot", "report-bot", "bob"))
    resources = [{"ARN": f"arn:aws:iam::{g.account}:user/{user}", "accountId": g.account, "type": "AWS::IAM::User"}]
    return Call({"userName": user, "policyArn": policy}, None, resources)


def _sts_get_caller_identity(g: _Gen, p: Principal, region: str) -> Call:
    return Call(None)


def _sts_assume_role(g: _Gen, p: Principal, region: str) -> Call:
    if p.name == "aws-service":
        role, session = "orders-api-role", "orders-api"
    else:
        role, session = g.pick(_ROLES), f"{p.name}-{g.hex(6)}"
    role_arn = f"arn:aws:iam::{g.account}:role/{role}"
    expiration = g.now + timedelta(hours=1)
    response = {
        "credentials": {
            "accessKeyId": f"ASIA{g.hex(16).upper()}",
            "sessionToken": "<sensitiveDataRemoved>" if p.name == "aws-service" else f"IQoJb3JpZ2luX2Vj{g.hex(24)}",
            "expiration": expiration.strftime("%b %d, %Y, %-I:%M:%S %p"),
        },
        "assumedRoleUser": {
            "assumedRoleId": f"AROA{g.hex(16).upper()}:{session}",
            "arn": f"arn:aws:sts::{g.account}:assumed-role/{role}/{session}",
        },
    }
    resources = [{"ARN": role_arn, "accountId": g.account, "type": "AWS::IAM::Role"}]
    return Call({"roleArn": role_arn, "roleSessionName": session, "durationSeconds": 3600}, response, resources)


def _lambda_invoke(g: _Gen, p: Principal, region: str) -> Call:
    function = g.pick(_FUNCTIONS)
    arn = f"arn:aws:lambda:{region}:{g.account}:function:{function}"
    return Call(
        {"functionName": arn, "invocationType": g.pick(("RequestResponse", "Event"))},
        None,
        [{"ARN": arn, "accountId": g.account, "type": "AWS::Lambda::Function"}],
        {"functionVersion": "$LATEST"},
    )


def _lambda_get_function(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"functionName": g.pick(_FUNCTIONS)})


def _lambda_update_function_code(g: _Gen, p: Principal, region: str) -> Call:
    function = g.pick(_FUNCTIONS)
    arn = f"arn:aws:lambda:{region}:{g.account}:function:{function}"
    sha = hashlib.sha256(g.hex(16).encode()).hexdigest()
    response = {
        "functionName": function,
        "functionArn": arn,
        "runtime": "python3.12",
        "handler": "app.handler",
        "codeSize": g.rng.randint(40_000, 900_000),
        "codeSha256": sha[:43] + "=",
        "version": "$LATEST",
        "lastUpdateStatus": "InProgress",
        "revisionId": g.uuid(),
    }
    request = {
        "functionName": function,
        "s3Bucket": "ci-build-cache",
        "s3Key": f"{function}/{sha[:12]}.zip",
        "publish": False,
    }
    return Call(request, response, [{"ARN": arn, "accountId": g.account, "type": "AWS::Lambda::Function"}])


def _dynamodb_describe_table(g: _Gen, p: Principal, region: str) -> Call:
    table = g.pick(_TABLES)
    arn = f"arn:aws:dynamodb:{region}:{g.account}:table/{table}"
    return Call({"tableName": table}, None, [{"ARN": arn, "accountId": g.account, "type": "AWS::DynamoDB::Table"}])


def _kms_decrypt(g: _Gen, p: Principal, region: str) -> Call:
    key = f"arn:aws:kms:{region}:{g.account}:key/{g.key_id(region)}"
    request: Record = {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}
    if p.name == "aws-service":
        request["encryptionContext"] = {
            "aws:lambda:FunctionArn": f"arn:aws:lambda:{region}:{g.account}:function:orders-api"
        }
    return Call(request, None, [{"ARN": key, "accountId": g.account, "type": "AWS::KMS::Key"}])


def _kms_generate_data_key(g: _Gen, p: Principal, region: str) -> Call:
    key = f"arn:aws:kms:{region}:{g.account}:key/{g.key_id(region)}"
    request = {"keyId": "alias/orders", "keySpec": "AES_256", "encryptionContext": {"table": g.pick(_TABLES)}}
    return Call(request, None, [{"ARN": key, "accountId": g.account, "type": "AWS::KMS::Key"}])


# Application (non-AWS) operations: the team's own services report these through
# PutAuditEvents (CloudTrail Lake refuses *.amazonaws.com sources there).
ORDERS_SOURCE: Final = "orders.example.com"
ADMIN_SOURCE: Final = "admin.example.com"
DEPLOY_SOURCE: Final = "deploy.example.com"


def _order_id(g: _Gen) -> str:
    return f"ord-{g.rng.randint(100000, 999999)}"


def _orders_get(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"orderId": _order_id(g)})


def _orders_list(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"status": g.pick(("open", "shipped", "refund-requested")), "limit": 50})


def _orders_create(g: _Gen, p: Principal, region: str) -> Call:
    order = _order_id(g)
    amount = round(g.rng.uniform(9, 480), 2)
    request = {
        "customerId": f"cus-{g.rng.randint(1000, 9999)}",
        "items": g.rng.randint(1, 6),
        "amount": amount,
        "currency": "EUR" if region == "eu-west-1" else "USD",
    }
    return Call(request, {"orderId": order, "status": "open"}, None, {"channel": g.pick(("web", "mobile", "api"))})


def _orders_update_status(g: _Gen, p: Principal, region: str) -> Call:
    order, status = _order_id(g), g.pick(("packed", "shipped", "delivered"))
    return Call({"orderId": order, "status": status}, {"orderId": order, "status": status})


def _orders_refund(g: _Gen, p: Principal, region: str) -> Call:
    order = _order_id(g)
    amount = round(g.rng.uniform(9, 200), 2)
    return Call(
        {"orderId": order, "amount": amount, "reason": g.pick(("damaged", "late", "changed-mind"))},
        {"refundId": f"rf-{g.hex(10)}", "status": "approved"},
    )


def _orders_export(g: _Gen, p: Principal, region: str) -> Call:
    return Call(
        {"from": (g.now - timedelta(days=30)).strftime("%Y-%m-%d"), "to": g.now.strftime("%Y-%m-%d"), "format": "csv"},
        {"exportId": f"exp-{g.hex(8)}", "rows": g.rng.randint(200, 20000)},
    )


def _admin_sign_in(g: _Gen, p: Principal, region: str) -> Call:
    return Call(
        None,
        {"SignIn": "Success"},
        None,
        {"MFAUsed": "Yes" if p.name == "alice" else "No", "LoginTo": f"https://{ADMIN_SOURCE}/"},
    )


def _admin_view_audit_log(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"page": g.rng.randint(1, 5), "filter": g.pick(("all", "refunds", "sign-ins"))})


def _admin_update_feature_flag(g: _Gen, p: Principal, region: str) -> Call:
    flag, enabled = g.pick(("new-checkout", "fast-refunds", "eu-shipping")), g.rng.random() < 0.5
    return Call({"flag": flag, "enabled": enabled}, {"flag": flag, "enabled": enabled, "version": g.rng.randint(2, 40)})


def _deploy_get_pipeline(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"pipeline": g.pick(_FUNCTIONS)})


def _deploy_start(g: _Gen, p: Principal, region: str) -> Call:
    pipeline = g.pick(_FUNCTIONS)
    return Call(
        {"pipeline": pipeline, "commit": g.hex(40), "environment": g.pick(("staging", "production"))},
        {"deploymentId": f"dep-{g.hex(8)}", "status": "InProgress"},
    )


def _deploy_approve(g: _Gen, p: Principal, region: str) -> Call:
    return Call({"deploymentId": f"dep-{g.hex(8)}", "environment": "production"}, {"status": "Approved"})


_APP_AGENTS: Final = {
    "alice": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "bob": "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
    "ci": "deploy-cli/3.2.1 (linux; GitHubActions)",
    "orders-api": "orders-api/2.14.0 python/3.12",
    "aws-service": "AWS Internal",
}
_HUMANS: Final = frozenset({"alice", "bob"})
_OPS: Final = frozenset({"alice", "bob", "ci"})
_EVERYONE: Final = frozenset({"alice", "bob", "ci", "orders-api"})

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation("s3.amazonaws.com", "ListBuckets", True, 6, _OPS, _s3_list_buckets),
    Operation("s3.amazonaws.com", "GetBucketPolicy", True, 3, _OPS, _s3_get_bucket_policy),
    Operation("s3.amazonaws.com", "CreateBucket", False, 0.4, _OPS, _s3_create_bucket),
    Operation("s3.amazonaws.com", "PutBucketPolicy", False, 0.5, _OPS, _s3_put_bucket_policy),
    Operation("ec2.amazonaws.com", "DescribeInstances", True, 12, _OPS, _ec2_describe_instances),
    Operation("ec2.amazonaws.com", "DescribeSecurityGroups", True, 4, _OPS, _ec2_describe_security_groups),
    Operation("ec2.amazonaws.com", "RunInstances", False, 1.5, _OPS, _ec2_run_instances),
    Operation("ec2.amazonaws.com", "TerminateInstances", False, 1.0, _OPS, _ec2_terminate_instances),
    Operation("iam.amazonaws.com", "ListRoles", True, 4, _OPS, _iam_list_roles),
    Operation("iam.amazonaws.com", "GetUser", True, 3, _HUMANS, _iam_get_user),
    Operation("iam.amazonaws.com", "CreateUser", False, 0.5, _HUMANS, _iam_create_user),
    Operation("iam.amazonaws.com", "AttachUserPolicy", False, 0.5, _HUMANS, _iam_attach_user_policy),
    Operation("sts.amazonaws.com", "GetCallerIdentity", True, 8, _EVERYONE, _sts_get_caller_identity),
    Operation("sts.amazonaws.com", "AssumeRole", True, 3, frozenset({"alice", "ci", "aws-service"}), _sts_assume_role),
    Operation("lambda.amazonaws.com", "Invoke", False, 5, frozenset({"ci", "orders-api"}), _lambda_invoke, "Data"),
    Operation("lambda.amazonaws.com", "GetFunction", True, 3, _OPS, _lambda_get_function),
    Operation(
        "lambda.amazonaws.com", "UpdateFunctionCode", False, 1.2, frozenset({"ci"}), _lambda_update_function_code
    ),
    Operation(
        "dynamodb.amazonaws.com",
        "DescribeTable",
        True,
        8,
        frozenset({"orders-api", "ci", "bob"}),
        _dynamodb_describe_table,
    ),
    Operation("kms.amazonaws.com", "Decrypt", True, 10, frozenset({"orders-api", "aws-service"}), _kms_decrypt),
    Operation("kms.amazonaws.com", "GenerateDataKey", True, 4, frozenset({"orders-api"}), _kms_generate_data_key),
    Operation(ORDERS_SOURCE, "GetOrder", True, 60, frozenset({"alice", "bob", "orders-api"}), _orders_get),
    Operation(ORDERS_SOURCE, "ListOrders", True, 20, frozenset({"alice", "bob", "orders-api"}), _orders_list),
    Operation(ORDERS_SOURCE, "CreateOrder", False, 9, frozenset({"orders-api"}), _orders_create),
    Operation(ORDERS_SOURCE, "UpdateOrderStatus", False, 5, frozenset({"orders-api", "alice"}), _orders_update_status),
    Operation(ORDERS_SOURCE, "RefundOrder", False, 1.5, _HUMANS, _orders_refund),
    Operation(ORDERS_SOURCE, "ExportOrders", False, 0.6, _HUMANS, _orders_export),
    Operation(ADMIN_SOURCE, "SignIn", False, 2, _HUMANS, _admin_sign_in),
    Operation(ADMIN_SOURCE, "ViewAuditLog", True, 3, _HUMANS, _admin_view_audit_log),
    Operation(ADMIN_SOURCE, "UpdateFeatureFlag", False, 0.8, _HUMANS, _admin_update_feature_flag),
    Operation(DEPLOY_SOURCE, "GetPipeline", True, 6, _OPS, _deploy_get_pipeline),
    Operation(DEPLOY_SOURCE, "StartDeployment", False, 2, frozenset({"ci", "alice"}), _deploy_start),
    Operation(DEPLOY_SOURCE, "ApproveDeployment", False, 0.8, _HUMANS, _deploy_approve),
)


# --------------------------------------------------------------------------------------------
# The events


@dataclass(frozen=True)
class WorkloadEvent:
    """One API call: when it completed, how it is captured, and its CloudTrail record.

    `record` is the record as the producer knows it (no eventID, eventVersion or other fields
    capture assigns); `uid` is the caller's request id, also the PutAuditEvents ``UID``.
    """

    at: datetime
    path: Path
    region: str
    uid: str
    record: Record = field(compare=False)

    @property
    def read_only(self) -> bool:
        return bool(self.record["readOnly"])

    @property
    def error_code(self) -> str | None:
        code = self.record.get("errorCode")
        return code if isinstance(code, str) else None

    def event_data(self) -> Record:
        """The PutAuditEvents ``eventData`` object (spec §6) for this call.

        `userIdentity.details` carries the rest of the CloudTrail userIdentity (arn,
        accountId, keys, session). Only application events (``path == "ingest"``) have one
        that PutAuditEvents accepts: it refuses ``*.amazonaws.com`` event sources.
        """
        record = self.record
        identity = record["userIdentity"]
        details = {k: copy.deepcopy(v) for k, v in identity.items() if k not in ("type", "principalId")}
        data: Record = {
            "version": EVENT_DATA_VERSION,
            "userIdentity": {
                "type": identity["type"],
                "principalId": identity.get("principalId") or identity.get("invokedBy", "AWS Internal"),
            },
            "eventSource": record["eventSource"],
            "eventName": record["eventName"],
            "eventTime": record["eventTime"],
            "UID": self.uid,
            "requestParameters": copy.deepcopy(record["requestParameters"]),
            "responseElements": copy.deepcopy(record["responseElements"]),
            "sourceIPAddress": record["sourceIPAddress"],
            "userAgent": record["userAgent"],
            "recipientAccountId": record["recipientAccountId"],
        }
        if details:
            data["userIdentity"]["details"] = details
        if "errorCode" in record:
            data["errorCode"] = record["errorCode"][:256]
            data["errorMessage"] = record["errorMessage"][:256]
        if record.get("additionalEventData"):
            data["additionalEventData"] = copy.deepcopy(record["additionalEventData"])
        return data

    def producer_record(self) -> Record:
        """The partial CloudTrail record an application hands to `producer.emit`."""
        return copy.deepcopy(self.record)

    def eventbridge_envelope(self) -> Record:
        """An EventBridge envelope: CloudTrail's own ``AWS API Call via CloudTrail`` with a
        full record for AWS API calls, an application's ``OpenTrail Audit Event`` otherwise."""
        record = copy.deepcopy(self.record)
        envelope_id = str(uuid.UUID(hashlib.md5(("envelope:" + self.uid).encode()).hexdigest()))
        if record["eventSource"].endswith(".amazonaws.com"):
            record.update(
                {
                    "eventVersion": "1.11",
                    "eventID": str(uuid.UUID(hashlib.md5(("event:" + self.uid).encode()).hexdigest(), version=4)),
                    "requestID": self.uid,
                    "eventType": "AwsApiCall",
                    "managementEvent": record.get("eventCategory", "Management") == "Management",
                    "eventCategory": record.get("eventCategory", "Management"),
                }
            )
            detail_type, source = CLOUDTRAIL_DETAIL_TYPE, "aws." + record["eventSource"].split(".")[0]
        else:
            detail_type, source = AUDIT_EVENT_DETAIL_TYPE, APPLICATION_SOURCE
        return {
            "version": "0",
            "id": envelope_id,
            "detail-type": detail_type,
            "source": source,
            "account": record["recipientAccountId"],
            "time": record["eventTime"],
            "region": record["awsRegion"],
            "resources": [],
            "detail": record,
        }


@dataclass(frozen=True)
class Workload:
    start: datetime
    end: datetime
    seed: int
    account_id: str
    events: tuple[WorkloadEvent, ...]
    anomalies: tuple[Anomaly, ...] = ()  # the injected, labelled anomalies (`generate(anomalies=True)`)

    def by_path(self, path: Path) -> list[WorkloadEvent]:
        return [event for event in self.events if event.path == path]

    def between(self, start: datetime, end: datetime) -> list[WorkloadEvent]:
        """Events with start <= at < end (events are sorted by time)."""
        return [event for event in self.events if start <= event.at < end]


class _Gen:
    """Random choices for one workload (one `random.Random`, so runs are reproducible)."""

    def __init__(self, seed: int, account: str) -> None:
        self.rng = random.Random(seed)
        self.account = account
        self.now = DEFAULT_START
        self._keys = {
            region: str(uuid.UUID(int=random.Random(f"{seed}:{region}").getrandbits(128), version=4))
            for region in REGIONS
        }

    def pick(self, options: Sequence[str]) -> str:
        return options[self.rng.randrange(len(options))]

    def hex(self, length: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def key_id(self, region: str) -> str:
        return self._keys[region]

    def bucket_resources(self, bucket: str) -> list[Record]:
        return [{"accountId": self.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}]

    def s3_additional(self, bytes_in: int, bytes_out: int) -> Record:
        return {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": bytes_in,
            "AuthenticationMethod": "AuthHeader",
            "bytesTransferredOut": bytes_out,
        }


def _minute_weights(start: datetime, minutes: int, rng: random.Random) -> list[float]:
    """Activity per simulated minute: a daytime curve (quiet at night, peak early afternoon
    UTC) times a little noise, plus a few CI bursts."""
    weights = []
    for minute in range(minutes):
        moment = start + timedelta(minutes=minute)
        hour = moment.hour + moment.minute / 60
        daytime = 0.15 + max(0.0, math.sin(math.pi * (hour - 6) / 14)) ** 1.5  # 06:00-20:00 UTC
        weights.append(daytime * rng.uniform(0.7, 1.3))
    for _ in range(max(1, minutes // 45)):  # a deploy every ~45 minutes
        burst = rng.randrange(minutes)
        for offset in range(min(4, minutes - burst)):
            weights[burst + offset] *= 3.0
    return weights


def _error(
    principal: Principal, operation: Operation, region: str, account: str, rng: random.Random
) -> tuple[str, str] | None:
    service = operation.source.split(".")[0]
    action = f"{service}:{operation.name}"
    if operation.name in principal.denied:
        if not _is_aws(operation):
            return (
                "AccessDenied",
                f"{principal.name} may not call {operation.source}/{operation.name}: "
                "role 'developer' lacks this permission",
            )
        if service == "ec2":
            encoded = "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(96)
            )
            return (
                "Client.UnauthorizedOperation",
                f"You are not authorized to perform this operation. User: {principal.identity['arn']} is not "
                f"authorized to perform: {action} on resource: arn:aws:ec2:{region}:{account}:instance/* because no "
                f"identity-based policy allows the {action} action. Encoded authorization failure message: {encoded}",
            )
        return (
            "AccessDenied",
            f"User: {principal.identity['arn']} is not authorized to perform: {action} because no identity-based "
            f"policy allows the {action} action",
        )
    roll = rng.random()
    if operation.name == "SignIn" and roll < 0.08:
        return ("InvalidCredentials", "Failed authentication: wrong password or MFA code")
    if operation.name == "GetOrder" and roll < 0.02:
        return ("OrderNotFound", "No order with this id")
    if operation.name == "GetBucketPolicy" and roll < 0.15:
        return ("NoSuchBucketPolicy", "The bucket policy does not exist")
    if operation.name == "DescribeInstances" and roll < 0.01:
        return ("Client.RequestLimitExceeded", "Request limit exceeded.")
    if operation.name == "AssumeRole" and principal.name != "aws-service" and roll < 0.05:
        return ("AccessDenied", f"User: {principal.identity['arn']} is not authorized to perform: sts:AssumeRole")
    return None


def _is_aws(operation: Operation) -> bool:
    return operation.source.endswith(".amazonaws.com")


def _path_for(principal: Principal, operation: Operation, region: str, rng: random.Random) -> Path:
    """AWS API calls reach OpenTrail as CloudTrail's own events through EventBridge, except
    the Lambda function's, which its in-process recorder sends with `producer.emit`.
    Application events arrive through PutAuditEvents (in the ingest function's region); the
    orders function also puts some on its EventBridge bus."""
    if _is_aws(operation):
        return "producer" if principal.name == "orders-api" else "eventbridge"
    if region != HOME_REGION or (principal.name == "orders-api" and rng.random() < 0.15):
        return "eventbridge"
    return "ingest"


def generate(
    events: int = DEFAULT_EVENTS,
    hours: float = DEFAULT_HOURS,
    seed: int = DEFAULT_SEED,
    *,
    start: datetime = DEFAULT_START,
    account_id: str = DEFAULT_ACCOUNT_ID,
    anomalies: bool = False,
) -> Workload:
    """`events` API calls spread over `hours` from `start`, sorted by time.

    `anomalies`: also a regular job and, in the last part, the labelled anomalies of
    `inject_anomalies` (their events come on top of `events`; the background is unchanged).
    """
    if events < 0:
        raise ValueError("events must be >= 0")
    if hours <= 0:
        raise ValueError("hours must be > 0")
    start = start.astimezone(UTC).replace(second=0, microsecond=0)
    minutes = max(1, math.ceil(hours * 60))
    end = start + timedelta(minutes=minutes)
    g = _Gen(seed, account_id)
    principals = _principals(account_id, start)
    weights = _minute_weights(start, minutes, g.rng)
    seconds = sorted(
        minute * 60 + g.rng.randrange(60) for minute in g.rng.choices(range(minutes), weights=weights, k=events)
    )
    principal_weights = [p.weight for p in principals]
    out: list[WorkloadEvent] = []
    for offset in seconds:
        moment = start + timedelta(seconds=offset)
        g.now = moment
        principal = g.rng.choices(principals, weights=principal_weights)[0]
        candidates = [op for op in OPERATIONS if principal.name in op.principals]
        operation = g.rng.choices(candidates, weights=[op.weight for op in candidates])[0]
        if operation.source in GLOBAL_SOURCES or (not _is_aws(operation) and principal.name != "orders-api"):
            region = HOME_REGION
        elif not _is_aws(operation):  # the orders function runs in both regions, mostly at home
            region = g.rng.choices(REGIONS, weights=(0.85, 0.15))[0]
        else:
            region = g.rng.choices(REGIONS, weights=(0.65, 0.35))[0]
        call = operation.build(g, principal, region)
        agent = g.pick(principal.user_agents) if _is_aws(operation) else _APP_AGENTS[principal.name]
        if "{cmd}" in agent:
            command = operation.source.split(".")[0] + "." + _kebab(operation.name)
            agent = agent.replace("{cmd}", command)
        uid = g.uuid()
        record: Record = {
            "userIdentity": copy.deepcopy(principal.identity),
            "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": operation.source,
            "eventName": operation.name,
            "awsRegion": region,
            "sourceIPAddress": g.pick(principal.source_ips),
            "userAgent": agent,
            "requestParameters": call.request,
            "responseElements": call.response,
            "requestID": uid,
            "readOnly": operation.read_only,
            "eventType": "AwsApiCall",
            "eventCategory": operation.category,
            "recipientAccountId": account_id,
        }
        if agent == "console.amazonaws.com":
            record["sessionCredentialFromConsole"] = "true"
        if call.additional is not None:
            record["additionalEventData"] = call.additional
        if call.resources:
            record["resources"] = call.resources
        if principal.identity["type"] != "AWSService":
            record["tlsDetails"] = {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": _host(operation.source, region),
            }
        error = _error(principal, operation, region, account_id, g.rng)
        if error is not None:
            record["errorCode"], record["errorMessage"] = error
            record["responseElements"] = None
        path = _path_for(principal, operation, region, g.rng)
        out.append(WorkloadEvent(at=moment, path=path, region=region, uid=uid, record=record))
    labels: tuple[Anomaly, ...] = ()
    if anomalies:
        injected, labels = inject_anomalies(start, end, seed, account_id)
        out = sorted([*out, *injected], key=lambda event: event.at)
    return Workload(start=start, end=end, seed=seed, account_id=account_id, events=tuple(out), anomalies=labels)


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _host(source: str, region: str) -> str:
    service = source.split(".")[0]
    if source in GLOBAL_SOURCES:
        return f"{service}.amazonaws.com"
    return f"{service}.{region}.amazonaws.com"


# --------------------------------------------------------------------------------------------
# Injected anomalies (the demo's Insights section, docs/demo.md)

ANOMALY_MIN_MINUTES: Final = 180  # the anomalies sit in the last 80 minutes, after an hour or more of baseline
JOB_EVERY_MINUTES: Final = 5
INTRUDER_IP: Final = "198.18.0.61"
INTRUDER_AGENT: Final = "aws-cli/1.18.136 Python/3.8.5 Darwin/19.6.0 botocore/1.17.59"


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly and the Insights event it should produce."""

    insight_type: str  # ApiCallRateInsight | ApiErrorRateInsight | UnusualActivityInsight | MissingActivityInsight
    event_source: str
    event_name: str
    start: datetime  # first anomalous minute (missing activity: the first missed run)
    end: datetime  # end of the last anomalous minute (missing activity: when the job resumes)
    region: str
    description: str
    principal: str = ""  # the principal it is about (unusual writer, missing job)
    error_code: str = ""  # ApiErrorRateInsight


def _s3_get_bucket_acl(g: _Gen, p: Principal, region: str) -> Call:
    bucket = g.pick(_BUCKETS)
    return Call(
        {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com", "acl": ""},
        None,
        g.bucket_resources(bucket),
        g.s3_additional(0, 564),
    )


def _s3_get_object(g: _Gen, p: Principal, region: str) -> Call:
    bucket = g.pick(("orders-reports", "team-shared-data"))
    key = f"{g.pick(('exports', 'customers', 'finance'))}/{g.hex(8)}.csv"
    resources = [
        {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
        {"accountId": g.account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"},
    ]
    request = {"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com", "key": key}
    return Call(request, None, resources, g.s3_additional(0, g.rng.randint(20_000, 4_000_000)))


_OP = {(op.source, op.name): op for op in OPERATIONS}
_GET_BUCKET_ACL: Final = Operation("s3.amazonaws.com", "GetBucketAcl", True, 0, frozenset(), _s3_get_bucket_acl)
_GET_OBJECT: Final = Operation("s3.amazonaws.com", "GetObject", True, 0, frozenset(), _s3_get_object, "Data")


def _role_session(account: str, role: str, session: str, key: str, start: datetime) -> Record:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE{role.upper().replace('-', '')[:9]}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": f"AROAEXAMPLE{role.upper().replace('-', '')[:9]}",
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "mfaAuthenticated": "false"},
        },
    }


def inject_anomalies(
    start: datetime, end: datetime, seed: int, account: str
) -> tuple[list[WorkloadEvent], tuple[Anomaly, ...]]:
    """A regular job from the start, and one anomaly of each Insights kind in the last 80 minutes
    (times for a 3-hour workload from 08:00; relative to the end for longer ones):

    * the ``inventory-sync`` job calls DescribeTable every 5 minutes, stops 65 minutes before
      the end and resumes 25 minutes before it (MissingActivityInsight);
    * 80-74 minutes before the end a card-testing bot floods the checkout: the orders API
      records 25 CreateOrder a minute for 6 minutes, about 25 times its usual rate
      (ApiCallRateInsight);
    * 50-44 minutes before the end bob's key sweeps bucket policies it may not read: 15
      GetBucketPolicy a minute failing with AccessDenied for 6 minutes (ApiErrorRateInsight);
    * 35-28 minutes before the end the OTRF cloud-bank-breach pattern: an EC2 instance role's
      session used from an outside IP with a laptop's AWS CLI lists the buckets, reads their
      ACLs (GetBucketAcl: an API never called before), downloads objects (data events) and
      changes a bucket policy (a write by a principal that never wrote: UnusualActivityInsight
      twice, for the API and for the principal).
    """
    minutes = int((end - start).total_seconds() // 60)
    if minutes < ANOMALY_MIN_MINUTES:
        raise ValueError(f"anomalies need a workload of at least {ANOMALY_MIN_MINUTES} minutes, got {minutes}")
    g = _Gen(seed * 1000 + 17, account)
    g.rng = random.Random(f"anomalies:{seed}")
    region = HOME_REGION
    principals = {p.name: p for p in _principals(account, start)}
    job = Principal(
        name="inventory-sync",
        identity=_role_session(account, "inventory-sync-role", "inventory-sync", "ASIAEXAMPLEJOBSESS05", start),
        user_agents=(
            "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.10.219 md/arch#x86_64 lang/python#3.12.3 "
            "exec-env/AWS_Lambda_python3.12 cfg/retry-mode#standard",
        ),
        source_ips=("54.240.197.240",),
        weight=0,
    )
    intruder = Principal(
        name="intruder",
        identity=_role_session(
            account, "orders-web-instance-role", "i-0317f6c6b66ae9c40", "ASIAEXAMPLEINSTANCE6", start
        ),
        user_agents=(INTRUDER_AGENT,),
        source_ips=(INTRUDER_IP,),
        weight=0,
    )
    events: list[WorkloadEvent] = []

    def at(minute: float, second: int) -> datetime:
        return start + timedelta(minutes=minute, seconds=second)

    def add(moment: datetime, principal: Principal, operation: Operation, error: tuple[str, str] | None = None) -> None:
        g.now = moment
        events.append(_injected_event(g, principal, operation, region, moment, account, error))

    describe_table = _OP[("dynamodb.amazonaws.com", "DescribeTable")]
    stop, resume = minutes - 65, minutes - 25
    for minute in range(2, minutes, JOB_EVERY_MINUTES):
        if not stop <= minute < resume:
            add(at(minute, 5 + g.rng.randrange(20)), job, describe_table)
    first_missed = next(m for m in range(2, minutes, JOB_EVERY_MINUTES) if m >= stop)
    first_back = next(m for m in range(2, minutes, JOB_EVERY_MINUTES) if m >= resume)

    create_order = _OP[(ORDERS_SOURCE, "CreateOrder")]
    burst = minutes - 80
    for minute in range(burst, burst + 6):
        for second in sorted(g.rng.randrange(60) for _ in range(25)):
            add(at(minute, second), principals["orders-api"], create_order)

    get_bucket_policy = _OP[("s3.amazonaws.com", "GetBucketPolicy")]
    bob = principals["bob"]
    errors = minutes - 50
    for minute in range(errors, errors + 6):
        for second in sorted(g.rng.randrange(60) for _ in range(15)):
            action = "s3:GetBucketPolicy"
            denied = (
                "AccessDenied",
                f"User: {bob.identity['arn']} is not authorized to perform: {action} because no resource-based "
                f"policy allows the {action} action",
            )
            add(at(minute, second), bob, get_bucket_policy, denied)

    list_buckets, put_bucket_policy = (
        _OP[("s3.amazonaws.com", "ListBuckets")],
        _OP[("s3.amazonaws.com", "PutBucketPolicy")],
    )
    breach = minutes - 35
    steps: list[tuple[int, int, Operation]] = [(0, 12, list_buckets), (0, 40, list_buckets)]
    steps += [(1, 3 + 11 * i, _GET_BUCKET_ACL) for i in range(4)]
    steps += [(2 + i // 8, (i % 8) * 7 + 2, _GET_OBJECT) for i in range(40)]
    steps += [(7, 20, put_bucket_policy)]
    for minute, second, operation in steps:
        add(at(breach + minute, second), intruder, operation)

    arn = intruder.identity["arn"]
    labels = (
        Anomaly(
            "ApiCallRateInsight",
            ORDERS_SOURCE,
            "CreateOrder",
            at(burst, 0),
            at(burst + 6, 0),
            region,
            "a card-testing bot floods the checkout: 25 CreateOrder a minute for 6 minutes (usually about 1)",
            principal=principals["orders-api"].identity["arn"],
        ),
        Anomaly(
            "ApiErrorRateInsight",
            "s3.amazonaws.com",
            "GetBucketPolicy",
            at(errors, 0),
            at(errors + 6, 0),
            region,
            "bob's key sweeps bucket policies: 15 GetBucketPolicy a minute denied for 6 minutes",
            principal=bob.identity["arn"],
            error_code="AccessDenied",
        ),
        Anomaly(
            "UnusualActivityInsight",
            "s3.amazonaws.com",
            "GetBucketAcl",
            at(breach + 1, 0),
            at(breach + 2, 0),
            region,
            "stolen instance-role credentials from outside: GetBucketAcl, never called before",
            principal=arn,
        ),
        Anomaly(
            "UnusualActivityInsight",
            "s3.amazonaws.com",
            "PutBucketPolicy",
            at(breach + 7, 0),
            at(breach + 8, 0),
            region,
            "stolen instance-role credentials from outside: a write (PutBucketPolicy) by a principal that never wrote",
            principal=arn,
        ),
        Anomaly(
            "MissingActivityInsight",
            "dynamodb.amazonaws.com",
            "DescribeTable",
            at(first_missed, 0),
            at(first_back, 0),
            region,
            "the inventory-sync job (DescribeTable every 5 minutes) stops for 40 minutes",
            principal=job.identity["arn"],
        ),
    )
    return events, labels


def _injected_event(
    g: _Gen,
    principal: Principal,
    operation: Operation,
    region: str,
    moment: datetime,
    account: str,
    error: tuple[str, str] | None,
) -> WorkloadEvent:
    call = operation.build(g, principal, region)
    agent = principal.user_agents[0] if _is_aws(operation) else _APP_AGENTS[principal.name]
    if "{cmd}" in agent:
        agent = agent.replace("{cmd}", operation.source.split(".")[0] + "." + _kebab(operation.name))
    uid = g.uuid()
    record: Record = {
        "userIdentity": copy.deepcopy(principal.identity),
        "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": operation.source,
        "eventName": operation.name,
        "awsRegion": region,
        "sourceIPAddress": principal.source_ips[0],
        "userAgent": agent,
        "requestParameters": call.request,
        "responseElements": call.response,
        "requestID": uid,
        "readOnly": operation.read_only,
        "eventType": "AwsApiCall",
        "eventCategory": operation.category,
        "recipientAccountId": account,
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": _host(operation.source, region),
        },
    }
    if call.additional is not None:
        record["additionalEventData"] = call.additional
    if call.resources:
        record["resources"] = call.resources
    if error is not None:
        record["errorCode"], record["errorMessage"] = error
        record["responseElements"] = None
    path: Path = "eventbridge" if _is_aws(operation) else "ingest"
    return WorkloadEvent(at=moment, path=path, region=region, uid=uid, record=record)
