"""The SDK call recorder: every AWS API call a process makes through boto3 becomes a
CloudTrail-shaped record in OpenTrail (CloudTrail's "SDK and CLI" capture, for your own code).

    import boto3
    from opentrail.recorder import record_boto3

    recorder = record_boto3(boto3.Session())      # or a client, or None: boto3's default session
    s3 = recorder_session.client("s3") ...        # clients created from the session afterwards
    recorder.flush()                              # also done at exit and when the batch is full

Hooks (botocore events): ``before-parameter-build`` keeps the caller's parameters (redacted at
once), ``before-call`` the credentials' access key, the user agent and the region,
``after-call`` builds the record from the parsed response (``errorCode``/``errorMessage`` when
the HTTP status is an error), ``after-call-error`` from a connection-level exception. One
record per API call, whatever the retries.

Record fields: ``eventSource`` ``<endpointPrefix>.amazonaws.com``; ``eventName`` the operation;
``awsRegion`` the client's (global endpoints → us-east-1); ``requestParameters`` the parameters
with the first letter of each key lower-cased (CloudTrail's JSON style; S3 ``Bucket`` →
``bucketName``) and secrets replaced by ``HIDDEN_DUE_TO_SECURITY_REASONS`` (members the
botocore model marks ``sensitive``, and keys whose name says password, secret, token,
credential, private key...); ``responseElements`` the same treatment of the response, or
``null`` when it is a stream or larger than `max_response_bytes`; ``userIdentity`` from the
credentials (``AKIA…`` → ``IAMUser``, ``ASIA…`` → ``AssumedRole``; ARN, account and principal
only with ``resolve_identity=True``, one cached STS GetCallerIdentity per access key);
``eventType`` ``AwsApiCall``; ``eventCategory`` ``Data`` for the data-plane operations in
`DATA_OPERATIONS`, else ``Management``; ``readOnly`` inferred from the operation name.

What the client cannot know: ``sourceIPAddress`` (the public address AWS sees) and TLS
details are not recorded; the identity without ``resolve_identity`` is only the access key.

Calls OpenTrail makes itself (a sink sending to the buffer, the STS identity lookup) are not
recorded (`opentrail.sinks.suppress_recording`), nor SQS sends to the buffer queue.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from opentrail.domain.record import infer_read_only
from opentrail.sinks import BufferSink, Sink, recording_suppressed, suppress_recording

HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
_CONTEXT_KEY = "opentrail_recorder"
# Key names that hold secrets whatever the model says (case-insensitive, anywhere in the name).
SECRET_KEY_PATTERN = re.compile(
    r"password|passphrase|passwd|secret|token|credential|private_?key|api_?key|auth(?:orization)?$|signature"
    r"|plaintext|session_?key|access_?key",
    re.IGNORECASE,
)
# ...unless the name is one of these: identifiers and pagination/idempotency tokens, not secrets.
NOT_SECRET = re.compile(
    r"(?:Id|Ids|Arn|Arns|Name|Names|Type|Types|Count|Version|VersionId|Stage|Length)$|^(?:Next|Continuation|Client|"
    r"Idempotency|Pagination|Starting)Token$|^NextContinuationToken$|^TokenCode$|^AccessKeyId$",
)
# Data-plane operations (eventCategory Data), per botocore service name.
DATA_OPERATIONS: dict[str, frozenset[str]] = {
    "s3": frozenset(
        {
            "GetObject", "HeadObject", "PutObject", "DeleteObject", "DeleteObjects", "CopyObject",
            "GetObjectAcl", "PutObjectAcl", "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging",
            "GetObjectAttributes", "GetObjectRetention", "PutObjectRetention", "GetObjectLegalHold",
            "PutObjectLegalHold", "RestoreObject", "SelectObjectContent", "ListObjects", "ListObjectsV2",
            "ListObjectVersions", "ListMultipartUploads", "ListParts", "CreateMultipartUpload", "UploadPart",
            "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload",
        }
    ),
    "lambda": frozenset({"Invoke", "InvokeAsync", "InvokeWithResponseStream"}),
    "dynamodb": frozenset(
        {
            "GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem", "Query", "Scan",
            "TransactGetItems", "TransactWriteItems", "ExecuteStatement", "BatchExecuteStatement",
            "ExecuteTransaction",
        }
    ),
    "sns": frozenset({"Publish", "PublishBatch"}),
    "sqs": frozenset({"SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch"}),
}  # fmt: skip
GLOBAL_REGIONS = {"aws-global": "us-east-1", "aws-cn-global": "cn-north-1", "aws-us-gov-global": "us-gov-west-1"}
_BUFFER_SEND_OPERATIONS = frozenset({"SendMessage", "SendMessageBatch"})


class Recorder:
    """Installed hooks plus the batch of records waiting for the sink."""

    def __init__(
        self,
        emitter: Any,
        *,
        sink: Sink,
        resolve_identity: bool,
        max_records: int,
        max_age_seconds: float,
        max_response_bytes: int,
        ignore_queue_urls: tuple[str, ...],
        identity_resolver: Callable[[Any], Mapping[str, Any]] | None,
    ) -> None:
        self.emitter = emitter
        self.sink = sink
        self.resolve_identity = resolve_identity
        self.max_records = max_records
        self.max_age_seconds = max_age_seconds
        self.max_response_bytes = max_response_bytes
        self.ignore_queue_urls = ignore_queue_urls
        self._identity_resolver = identity_resolver or _caller_identity
        self._identities: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()
        self.pending: list[dict[str, Any]] = []
        self._oldest = 0.0
        self.errors = 0
        self._unique = f"opentrail-recorder-{uuid.uuid4()}"
        self._handlers = {
            "before-parameter-build": self._before_parameter_build,
            "before-call": self._before_call,
            "after-call": self._after_call,
            "after-call-error": self._after_call_error,
        }
        for event, handler in self._handlers.items():
            emitter.register(event, handler, unique_id=f"{self._unique}-{event}")
        atexit.register(self.flush)

    # -- lifecycle -----------------------------------------------------------------------------

    def uninstall(self) -> None:
        """Remove the hooks (clients created before keep a copy of theirs: see record_boto3) and flush."""
        for event, handler in self._handlers.items():
            self.emitter.unregister(event, handler, unique_id=f"{self._unique}-{event}")
        atexit.unregister(self.flush)
        self.flush()

    def flush(self) -> None:
        """Send every pending record now. A sink error is counted and the records dropped."""
        with self._lock:
            records, self.pending = self.pending, []
        if not records:
            return
        try:
            with suppress_recording():
                self.sink(records)
        except Exception:
            self.errors += 1
            import logging

            logging.getLogger("opentrail.recorder").warning("could not send %d recorded calls", len(records),
                                                            exc_info=True)  # fmt: skip

    def _add(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if not self.pending:
                self._oldest = now
            self.pending.append(record)
            due = len(self.pending) >= self.max_records or now - self._oldest >= self.max_age_seconds
        if due:
            self.flush()

    # -- hooks ---------------------------------------------------------------------------------

    def _skip(self, model: Any, params: Any) -> bool:
        if recording_suppressed():
            return True
        if model.service_model.service_name == "sqs" and model.name in _BUFFER_SEND_OPERATIONS:
            urls = {*self.ignore_queue_urls, os.environ.get("OPENTRAIL_BUFFER_QUEUE_URL", "")}
            return isinstance(params, Mapping) and params.get("QueueUrl") in urls
        return False

    def _before_parameter_build(self, params: Any, model: Any, context: Any, **_: Any) -> None:
        try:
            if self._skip(model, params):
                return
            context[_CONTEXT_KEY] = {
                "model": model,
                "params": redact(params, model.input_shape),
                "started": time.perf_counter(),
            }
        except Exception:
            self.errors += 1

    def _before_call(self, model: Any, params: Any, request_signer: Any, context: Any, **_: Any) -> None:
        state = context.get(_CONTEXT_KEY)
        if state is None:
            return
        try:
            headers = params.get("headers") or {}
            agent = headers.get("User-Agent")
            state["userAgent"] = agent.decode() if isinstance(agent, bytes) else agent
            state["region"] = context.get("client_region") or getattr(request_signer, "region_name", None)
            credentials = getattr(request_signer, "_credentials", None)
            state["identity"] = self._identity(credentials)
        except Exception:
            self.errors += 1

    def _after_call(self, http_response: Any, parsed: Any, model: Any, context: Any, **_: Any) -> None:
        state = context.pop(_CONTEXT_KEY, None)
        if state is None:
            return
        try:
            status = getattr(http_response, "status_code", 200)
            error = parsed.get("Error") if isinstance(parsed, Mapping) and status >= 300 else None
            self._add(self._record(state, parsed if error is None else None, error))
        except Exception:
            self.errors += 1

    def _after_call_error(self, exception: BaseException, context: Any, **_: Any) -> None:
        state = context.pop(_CONTEXT_KEY, None)
        if state is None:
            return
        try:
            error = {"Code": type(exception).__name__, "Message": str(exception)}
            self._add(self._record(state, None, error))
        except Exception:
            self.errors += 1

    # -- records -------------------------------------------------------------------------------

    def _identity(self, credentials: Any) -> dict[str, Any]:
        if credentials is None:
            return {"type": "Unknown", "principalId": "anonymous"}
        access_key = str(getattr(credentials, "access_key", "") or "")
        kind = "IAMUser" if access_key.startswith("AKIA") else "AssumedRole" if access_key.startswith("ASIA") else ""
        identity: dict[str, Any] = {"type": kind or "Unknown", "accessKeyId": access_key}
        if self.resolve_identity and access_key:
            if access_key not in self._identities:
                with suppress_recording():
                    self._identities[access_key] = self._identity_resolver(credentials)
            identity.update(identity_from_caller(self._identities[access_key]))
        return identity

    def _record(self, state: Mapping[str, Any], parsed: Any, error: Mapping[str, Any] | None) -> dict[str, Any]:
        model = state["model"]
        service = model.service_model
        operation = str(model.name)
        region = str(state.get("region") or "")
        region = GLOBAL_REGIONS.get(region, region)
        identity = dict(state.get("identity") or {"type": "Unknown"})
        request_parameters = camel_keys(state["params"])
        if service.service_name == "s3" and isinstance(request_parameters, dict) and "bucket" in request_parameters:
            request_parameters["bucketName"] = request_parameters.pop("bucket")
        category = "Data" if operation in DATA_OPERATIONS.get(service.service_name, ()) else "Management"
        record: dict[str, Any] = {
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": f"{service.endpoint_prefix}.amazonaws.com",
            "eventName": operation,
            "eventType": "AwsApiCall",
            "eventCategory": category,
            "managementEvent": category == "Management",
            "readOnly": infer_read_only(operation),
            "userIdentity": identity,
            "requestParameters": request_parameters or None,
            "responseElements": None,
            "additionalEventData": {
                "recordedBy": "opentrail.recorder",
                "durationMs": round((time.perf_counter() - state["started"]) * 1000.0, 3),
            },
        }
        if region:
            record["awsRegion"] = region
        if identity.get("accountId"):
            record["recipientAccountId"] = identity["accountId"]
        if state.get("userAgent"):
            record["userAgent"] = state["userAgent"]
        if isinstance(parsed, Mapping):
            request_id = (parsed.get("ResponseMetadata") or {}).get("RequestId")
            if request_id:
                record["requestID"] = str(request_id)
            body = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
            response = camel_keys(redact(body, model.output_shape)) if body else None
            size = len(json.dumps(response, default=str)) if response else 0
            if size > self.max_response_bytes or _has_stream(body):
                record["additionalEventData"]["responseElementsOmitted"] = (
                    "a stream" if _has_stream(body) else f"{size} bytes of JSON"
                )
            else:
                record["responseElements"] = response
        if error is not None:
            record["errorCode"] = str(error.get("Code") or "UnknownError")
            record["errorMessage"] = str(error.get("Message") or record["errorCode"])[:1000]
        resources = _resources(service.service_name, operation, state["params"], region, identity.get("accountId"))
        if resources:
            record["resources"] = resources
        return record


def record_boto3(
    session_or_client: Any = None,
    *,
    emit: Sink | None = None,
    resolve_identity: bool = False,
    max_records: int = 50,
    max_age_seconds: float = 5.0,
    max_response_bytes: int = 16 * 1024,
    ignore_queue_urls: tuple[str, ...] = (),
    identity_resolver: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Recorder:
    """Record every API call made through `session_or_client`; returns the `Recorder`.

    `session_or_client`: a boto3 client (only that client), a boto3 or botocore Session
    (clients created from it *after* this call: botocore copies the session's hooks into a
    client when it is created), or None for boto3's default session. `emit`: where batches
    go (default: `opentrail.sinks.BufferSink`, i.e. `producer.emit` to the buffer queue).
    Records are sent in batches of `max_records`, or when the oldest is `max_age_seconds`
    old (checked on each call), on `Recorder.flush()` and at interpreter exit; records still
    pending when the process is killed are lost.
    """
    if session_or_client is None:
        import boto3

        session_or_client = boto3._get_default_session()
    meta = getattr(session_or_client, "meta", None)
    if meta is not None and hasattr(meta, "events"):
        emitter = meta.events
    elif hasattr(session_or_client, "events"):  # boto3.Session
        emitter = session_or_client.events
    elif hasattr(session_or_client, "get_component"):  # botocore Session
        emitter = session_or_client.get_component("event_emitter")
    else:
        raise TypeError("session_or_client: pass a boto3 client, a boto3/botocore Session, or None")
    return Recorder(
        emitter,
        sink=emit or BufferSink(),
        resolve_identity=resolve_identity,
        max_records=max_records,
        max_age_seconds=max_age_seconds,
        max_response_bytes=max_response_bytes,
        ignore_queue_urls=ignore_queue_urls,
        identity_resolver=identity_resolver,
    )


# -- redaction and shaping ----------------------------------------------------------------------


def is_secret_key(name: str) -> bool:
    return SECRET_KEY_PATTERN.search(name) is not None and NOT_SECRET.search(name) is None


def redact(value: Any, shape: Any = None) -> Any:
    """A JSON-safe copy: sensitive model members and secret-looking keys → HIDDEN; bytes and
    streams → a short description; datetimes → ISO 8601."""
    if shape is not None and getattr(shape, "metadata", {}).get("sensitive"):
        return HIDDEN
    if isinstance(value, Mapping):
        members = getattr(shape, "members", None) if getattr(shape, "type_name", "") == "structure" else None
        value_shape = getattr(shape, "value", None) if getattr(shape, "type_name", "") == "map" else None
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            member = members.get(name) if members else value_shape
            result[name] = HIDDEN if is_secret_key(name) else redact(item, member)
        return result
    if isinstance(value, list | tuple):
        item_shape = getattr(shape, "member", None) if getattr(shape, "type_name", "") == "list" else None
        return [redact(item, item_shape) for item in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "read"):
        return "<stream>"
    return str(value)


def camel_keys(value: Any) -> Any:
    """First letter of every object key lower-cased (``SecretId`` → ``secretId``), as CloudTrail writes."""
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:]): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def _has_stream(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_stream(item) for item in value.values())
    return hasattr(value, "read") and not isinstance(value, str | bytes)


def _resources(
    service: str, operation: str, params: Any, region: str, account: str | None
) -> list[dict[str, str]] | None:
    """Resources of data events, so trail data selectors can select them (S3, Lambda, DynamoDB)."""
    if not isinstance(params, Mapping) or operation not in DATA_OPERATIONS.get(service, ()):
        return None
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    account = account or os.environ.get("AWS_ACCOUNT_ID") or ""
    if service == "s3" and isinstance(params.get("Bucket"), str):
        bucket = params["Bucket"]
        found = []
        if isinstance(params.get("Key"), str):
            found.append({"type": "AWS::S3::Object", "ARN": f"arn:{partition}:s3:::{bucket}/{params['Key']}"})
        elif operation.startswith("List"):
            found.append({"type": "AWS::S3::Object", "ARNPrefix": f"arn:{partition}:s3:::{bucket}/"})
        bucket_resource = {"type": "AWS::S3::Bucket", "ARN": f"arn:{partition}:s3:::{bucket}"}
        if account:
            bucket_resource["accountId"] = account
        return [*found, bucket_resource]
    if service == "lambda" and isinstance(params.get("FunctionName"), str):
        name = params["FunctionName"]
        if name.startswith("arn:"):
            return [{"type": "AWS::Lambda::Function", "ARN": ":".join(name.split(":")[:7])}]
        if account and region:
            arn = f"arn:{partition}:lambda:{region}:{account}:function:{name.split(':')[0]}"
            return [{"type": "AWS::Lambda::Function", "ARN": arn, "accountId": account}]
    if service == "dynamodb" and isinstance(params.get("TableName"), str):
        table = params["TableName"]
        if table.startswith("arn:"):
            return [{"type": "AWS::DynamoDB::Table", "ARN": table}]
        if account and region:
            arn = f"arn:{partition}:dynamodb:{region}:{account}:table/{table}"
            return [{"type": "AWS::DynamoDB::Table", "ARN": arn, "accountId": account}]
    return None


# -- identity -----------------------------------------------------------------------------------


def _caller_identity(credentials: Any) -> Mapping[str, Any]:
    """STS GetCallerIdentity with exactly these credentials (a fresh, unhooked session)."""
    import boto3

    frozen = credentials.get_frozen_credentials()
    session = boto3.session.Session(
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
    )
    reply: Mapping[str, Any] = session.client("sts").get_caller_identity()
    return reply


def identity_from_caller(caller: Mapping[str, Any]) -> dict[str, Any]:
    """GetCallerIdentity's {UserId, Account, Arn} → CloudTrail userIdentity members."""
    arn = str(caller.get("Arn") or "")
    account = str(caller.get("Account") or "")
    found: dict[str, Any] = {"arn": arn, "accountId": account, "principalId": str(caller.get("UserId") or "")}
    resource = arn.split(":", 5)[-1] if arn.count(":") >= 5 else ""
    partition = arn.split(":")[1] if arn.count(":") >= 5 else "aws"
    if resource == "root":
        found["type"] = "Root"
    elif resource.startswith("user/"):
        found["type"] = "IAMUser"
        found["userName"] = resource.rsplit("/", 1)[-1]
    elif resource.startswith("assumed-role/"):
        role = resource.split("/")[1]
        found["type"] = "AssumedRole"
        found["sessionContext"] = {
            "sessionIssuer": {
                "type": "Role",
                "principalId": found["principalId"].split(":")[0],
                "arn": f"arn:{partition}:iam::{account}:role/{role}",  # the role's path is not in the session ARN
                "accountId": account,
                "userName": role,
            }
        }
    elif resource.startswith("federated-user/"):
        found["type"] = "FederatedUser"
    return found
