"""The NextToken sealing key, kept in the history table (item pk="CONFIG", sk="NEXT_TOKEN_KEY").

The first lookup function to need it creates 32 random bytes with a conditional put, so
concurrent cold starts agree on one key; later reads are consistent reads. Tokens stay valid
across deployments and function versions, and rotating the key (delete the item) only
invalidates tokens in flight (callers restart their pagination).
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.lookup import CONFIG_PK, NEXT_TOKEN_KEY_SK

__all__ = ["CONFIG_PK", "KEY_ATTRIBUTE", "NEXT_TOKEN_KEY_SK", "HistoryConfigError", "NextTokenKeyStore"]
KEY_ATTRIBUTE: Final = "key"
KEY_BYTES: Final = 32


class HistoryConfigError(RuntimeError):
    pass


class NextTokenKeyStore:
    def __init__(self, table: str, *, client: Any = None) -> None:
        self.table = table
        self.client = client or boto3.client("dynamodb")

    def key(self) -> bytes:
        """The table's NextToken key; created on first use."""
        existing = self._read()
        if existing is not None:
            return existing
        candidate = secrets.token_bytes(KEY_BYTES)
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"pk": {"S": CONFIG_PK}, "sk": {"S": NEXT_TOKEN_KEY_SK}, KEY_ATTRIBUTE: {"B": candidate}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            existing = self._read()  # another container created it first
            if existing is None:
                raise HistoryConfigError(f"{self.table}: NextToken key vanished while being created") from error
            return existing
        return candidate

    def _read(self) -> bytes | None:
        item = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": CONFIG_PK}, "sk": {"S": NEXT_TOKEN_KEY_SK}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        value = item.get(KEY_ATTRIBUTE, {}).get("B")
        if not isinstance(value, bytes) or len(value) < KEY_BYTES:
            raise HistoryConfigError(f"{self.table}: the NextToken key item is malformed")
        return value
