"""Digest signing public keys: CloudTrail's ListPublicKeys, and ``opentrail public-keys``.

`list_public_keys(registry, start, end)` returns CloudTrail's ``PublicKeyList`` entries for
the keys whose validity overlaps [start, end] (epoch seconds; None = open):
``{"Value": base64(PKCS#1 DER), "ValidityStartTime": epoch, "ValidityEndTime": epoch,
"Fingerprint": md5 hex}``. ``Value`` is base64 **once** (a JSON 1.1 blob), which the AWS CLI
base64-decodes to the PKCS#1 DER it loads (spec §3.5). `list_public_keys_operation` is the
query API's ``ListPublicKeys`` (handlers/query.py); `main` is ``opentrail public-keys``.
"""

from __future__ import annotations

import argparse
import base64
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentrail.domain.digest import fingerprint as md5_fingerprint


class PublicKeyRequestError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def list_public_keys(registry: Any, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
    """``PublicKeyList`` for [start, end]; with neither, every registered key (the current
    key is the one with the latest validity end)."""
    return [
        {
            "Value": base64.b64encode(key.der).decode("ascii"),
            "ValidityStartTime": key.validity_start,
            "ValidityEndTime": key.validity_end,
            "Fingerprint": key.fingerprint,
        }
        for key in registry.overlapping(start, end)
    ]


def _epoch(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PublicKeyRequestError("InvalidTimeRangeException", f"{name}: must be a time (epoch seconds)")
    return int(value)


def list_public_keys_operation(call: Any) -> dict[str, Any]:
    """The ``ListPublicKeys`` operation for `opentrail.handlers.query.OPERATIONS`."""
    from opentrail.handlers.query import ServiceError

    try:
        start, end = _epoch(call.body, "StartTime"), _epoch(call.body, "EndTime")
    except PublicKeyRequestError as error:
        raise ServiceError(error.code, error.message) from None
    if start is not None and end is not None and start > end:
        raise ServiceError("InvalidTimeRangeException", "StartTime must be before EndTime")
    table = getattr(call.settings, "ledger_table", "")
    if not table:
        return {"PublicKeyList": []}
    from opentrail.adapters.digests import PublicKeyRegistry

    return {"PublicKeyList": list_public_keys(PublicKeyRegistry(table), start, end)}


# -- PEM ----------------------------------------------------------------------------------


def pkcs1_pem(der: bytes) -> str:
    """PKCS#1 ``-----BEGIN RSA PUBLIC KEY-----`` PEM of an RSAPublicKey DER."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN RSA PUBLIC KEY-----\n{body}\n-----END RSA PUBLIC KEY-----\n"


def write_pem_files(keys: list[dict[str, Any]], directory: Path) -> list[Path]:
    """``<fingerprint>.pem`` per key (PKCS#1 PEM); checks each fingerprint against its DER."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        der = _der_of(key["Value"])
        fingerprint = str(key["Fingerprint"])
        if md5_fingerprint(der) != fingerprint:
            raise ValueError(f"key {fingerprint}: the fingerprint is not the MD5 of the key")
        path = directory / f"{fingerprint}.pem"
        path.write_text(pkcs1_pem(der))
        written.append(path)
    return written


def _der_of(value: Any) -> bytes:
    """A ``Value`` as the boto3 client gives it (raw DER bytes) or as on the wire (base64 text)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return base64.b64decode(str(value))


# -- opentrail public-keys ------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "public-keys",
        help="list the digest signing public keys (ListPublicKeys) and export them as PEM",
        description=(
            "Call ListPublicKeys on the OpenTrail query API (--endpoint-url, or the QueryApiUrl output of "
            "--stack) and print each key's fingerprint and validity; with --out, write <fingerprint>.pem "
            "(PKCS#1 'RSA PUBLIC KEY') files for offline digest validation."
        ),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint-url", help="the query API endpoint (e.g. http://127.0.0.1:4599 for opentrail local)")
    where.add_argument("--stack", help="CloudFormation stack name; its QueryApiUrl output is the endpoint")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--start-time", help="keys valid at or after this time (ISO 8601, e.g. 2025-03-14T00:00:00Z)")
    parser.add_argument("--end-time", help="keys valid at or before this time (ISO 8601)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write <fingerprint>.pem files to DIR")
    parser.set_defaults(func=run)


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stack_endpoint(stack: str, region: str | None) -> str:
    import boto3

    outputs = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)["Stacks"][0]
    for output in outputs.get("Outputs", []):
        if output["OutputKey"] == "QueryApiUrl":
            return str(output["OutputValue"])
    raise ValueError(f"stack {stack}: no QueryApiUrl output")


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        start, end = _parse_time(args.start_time), _parse_time(args.end_time)
        endpoint = args.endpoint_url or (_stack_endpoint(args.stack, args.region) if args.stack else None)
        keys = fetch_public_keys(endpoint, args.region, start, end, api_gateway=args.stack is not None)
        for key in keys:
            print(
                f"{key['Fingerprint']}\t{_iso(key['ValidityStartTime'])}\t{_iso(key['ValidityEndTime'])}",
            )
        if args.out is not None:
            paths = write_pem_files(keys, args.out)
            print(f"wrote {len(paths)} PEM file(s) to {args.out}", file=sys.stderr)
    except (BotoCoreError, ClientError, ValueError) as error:
        print(f"opentrail public-keys: {error}", file=sys.stderr)
        return 1
    if not keys:
        print("no public keys found", file=sys.stderr)
        return 1
    return 0


def fetch_public_keys(
    endpoint: str | None,
    region: str | None,
    start: datetime | None,
    end: datetime | None,
    *,
    api_gateway: bool = False,
) -> list[dict[str, Any]]:
    """ListPublicKeys through the stock boto3 ``cloudtrail`` client (Value comes back as DER
    bytes); `api_gateway`: a deployed query API, so requests are signed for ``execute-api``."""
    import boto3

    from opentrail.client import cloudtrail_client

    if api_gateway and endpoint:
        client = cloudtrail_client(endpoint, region_name=region)
    else:
        client = boto3.client("cloudtrail", endpoint_url=endpoint, region_name=region)
    request: dict[str, Any] = {}
    if start is not None:
        request["StartTime"] = start
    if end is not None:
        request["EndTime"] = end
    keys: list[dict[str, Any]] = []
    while True:
        response = client.list_public_keys(**request)
        keys.extend(response.get("PublicKeyList", []))
        token = response.get("NextToken")
        if not token:
            return [
                {**key, "ValidityStartTime": _epoch_of(key["ValidityStartTime"]),
                 "ValidityEndTime": _epoch_of(key["ValidityEndTime"])}
                for key in keys
            ]  # fmt: skip
        request["NextToken"] = token


def _epoch_of(value: Any) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
