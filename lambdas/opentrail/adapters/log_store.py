"""The log bucket (S3): write log files once, check they exist, remove aborted ones."""

from __future__ import annotations

import base64
import hashlib
from typing import IO, Any

import boto3
from botocore.exceptions import ClientError

_MISSING = {"404", "NoSuchKey", "NotFound"}
_CHUNK = 1024 * 1024


class LogStoreError(RuntimeError):
    """S3 refused a request; the batch stops and its messages come back later."""


class ObjectLockedError(LogStoreError):
    """The object cannot be deleted: S3 Object Lock retention protects it (WORM mode)."""


def _locked(message: str) -> bool:
    # S3 answers AccessDenied "... because object protected by object lock".
    return "object lock" in message.lower()


class LogStore:
    """Writes CloudTrail log files with SSE-KMS under the project key.

    Objects get ``Content-Type: application/json`` and **no** ``Content-Encoding``: a
    CloudTrail log file is a ``.json.gz`` object whose stored bytes are the gzip stream.
    With ``Content-Encoding: gzip``, HTTP clients (browsers, curl --compressed, some SDK
    downloaders) would transparently decompress on download, so tools that gunzip the
    bytes themselves (``aws cloudtrail validate-logs``, Athena, SIEM importers) would get
    plain JSON and fail, and the SHA-256 in digests would no longer match what they read.
    """

    def __init__(self, bucket: str, kms_key_arn: str, *, client: Any = None) -> None:
        self.bucket = bucket
        self.kms_key_arn = kms_key_arn
        self._s3 = client or boto3.client("s3")

    def put_new(self, key: str, body: IO[bytes], length: int) -> bool:
        """Store `body` at `key` unless an object is already there (If-None-Match: *).

        Returns True when written, False when an object of the same length was already
        there (a retried request whose first try succeeded; keys are unique per batch
        attempt, so only this batch attempt writes this key). Raises LogStoreError otherwise.
        """
        body.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            digest.update(chunk)
        body.seek(0)
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=length,
                ContentType="application/json",
                # S3 verifies the upload; the algorithm header is also what S3 Object Lock
                # (WORM mode) requires on every PutObject into a bucket with default retention.
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=self.kms_key_arn,
                BucketKeyEnabled=True,
                IfNoneMatch="*",
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise LogStoreError(f"s3://{self.bucket}/{key}: PutObject failed: {code or error}") from error
            size = self.size(key)
            if size != length:
                raise LogStoreError(
                    f"s3://{self.bucket}/{key}: another object ({size} bytes) is already there; not overwritten"
                ) from error
            return False
        return True

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no (current) object."""
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return None
            raise LogStoreError(f"s3://{self.bucket}/{key}: HeadObject failed: {code or error}") from error
        return int(response["ContentLength"])

    def get(self, key: str) -> bytes:
        """The object's bytes (a log file's gzip stream), e.g. to rebuild its history index."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise LogStoreError(f"s3://{self.bucket}/{key}: GetObject failed: {code or error}") from error

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def remove(self, key: str) -> None:
        """Delete every version of `key` (the bucket is versioned), so no copy of an
        aborted file's records stays behind; removing a missing key is fine."""
        try:
            versions: list[dict[str, str]] = []
            paginator = self._s3.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if item["Key"] == key:
                        versions.append({"Key": key, "VersionId": item["VersionId"]})
            if not versions:
                self._s3.delete_object(Bucket=self.bucket, Key=key)
                return
            for start in range(0, len(versions), 1000):
                response = self._s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": versions[start : start + 1000], "Quiet": True}
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    if _locked(first.get("Message", "")):
                        raise ObjectLockedError(f"s3://{self.bucket}/{key}: protected by S3 Object Lock")
                    raise LogStoreError(f"s3://{self.bucket}/{key}: DeleteObjects failed: {first.get('Code')}")
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if _locked(error.response.get("Error", {}).get("Message", "")):
                raise ObjectLockedError(f"s3://{self.bucket}/{key}: protected by S3 Object Lock") from error
            raise LogStoreError(f"s3://{self.bucket}/{key}: delete failed: {code or error}") from error
