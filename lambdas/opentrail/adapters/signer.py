"""The digest signer (KMS): an asymmetric RSA_2048 SIGN_VERIFY key.

`sign` uses RSASSA_PKCS1_V1_5_SHA_256 with ``MessageType=RAW`` over the digest's string to
sign (four short lines, far below KMS's 4,096-byte RAW limit): KMS hashes it with SHA-256,
which is exactly CloudTrail's ``SHA256withRSA``. `public_key` is GetPublicKey's
SubjectPublicKeyInfo turned into the PKCS#1 ``RSAPublicKey`` DER CloudTrail publishes, and
its fingerprint (MD5 hex of that DER).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.digest import fingerprint, pkcs1_der

SIGNING_ALGORITHM: Final = "RSASSA_PKCS1_V1_5_SHA_256"
MAX_RAW_MESSAGE: Final = 4096


class SignerError(RuntimeError):
    """KMS refused a request (key disabled, no permission, wrong key spec...)."""


@dataclass(frozen=True)
class PublicKey:
    key_arn: str
    der: bytes  # PKCS#1 RSAPublicKey DER
    fingerprint: str  # MD5 hex of `der`


class KmsSigner:
    """Signs with one KMS key (id, ARN or alias); the public key is read once and cached."""

    def __init__(self, key_id: str, *, client: Any = None) -> None:
        self.key_id = key_id
        self._kms = client or boto3.client("kms")
        self._public: PublicKey | None = None

    def public_key(self) -> PublicKey:
        if self._public is None:
            try:
                response = self._kms.get_public_key(KeyId=self.key_id)
            except ClientError as error:
                raise SignerError(f"GetPublicKey {self.key_id}: {_code(error)}") from error
            if response.get("KeySpec") not in (None, "RSA_2048") or response.get("KeyUsage") not in (
                None,
                "SIGN_VERIFY",
            ):
                raise SignerError(
                    f"{self.key_id}: digests need an RSA_2048 SIGN_VERIFY key, got "
                    f"{response.get('KeySpec')} {response.get('KeyUsage')}"
                )
            der = pkcs1_der(bytes(response["PublicKey"]))
            self._public = PublicKey(key_arn=str(response["KeyId"]), der=der, fingerprint=fingerprint(der))
        return self._public

    def sign(self, message: bytes) -> str:
        """Hex RSASSA-PKCS1-v1_5 SHA-256 signature of `message` (lowercase)."""
        if len(message) > MAX_RAW_MESSAGE:
            raise SignerError(f"message of {len(message)} bytes: KMS signs at most {MAX_RAW_MESSAGE} bytes RAW")
        try:
            response = self._kms.sign(
                KeyId=self.public_key().key_arn,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        except ClientError as error:
            raise SignerError(f"Sign with {self.key_id}: {_code(error)}") from error
        return bytes(response["Signature"]).hex()


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "")) or str(error)
