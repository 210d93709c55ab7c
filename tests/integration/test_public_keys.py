"""ListPublicKeys (query API, JSON 1.1) and ``opentrail public-keys``: the stock boto3
``cloudtrail`` client over a local HTTP adapter playing API Gateway, keys from the registry
the digester fills (moto DynamoDB + KMS)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from opentrail.adapters.digests import PublicKeyRegistry
from opentrail.adapters.signer import KmsSigner
from opentrail.cli import main
from opentrail.domain.digest import fingerprint, verify_signature
from opentrail.handlers import query
from opentrail.local.context import LocalContext
from opentrail.local.resources import LocalResources, create_signing_key
from opentrail.public_keys import list_public_keys, pkcs1_pem
from opentrail.settings import QuerySettings

T1 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
T2 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
T3 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


@pytest.fixture
def keys(resources: LocalResources) -> dict[str, Any]:
    """Two signing keys: the first used 10:00-14:00, the second (after a rotation) 14:00-20:00."""
    kms = boto3.client("kms", region_name=resources.region)
    registry = PublicKeyRegistry(resources.ledger_table)
    old = KmsSigner(resources.signing_key_arn, client=kms)
    new = KmsSigner(create_signing_key(kms, "rotated", alias=False), client=kms)
    for signer, start, end in ((old, T1, T2), (new, T2, T3)):
        public = signer.public_key()
        registry.record_use(fingerprint=public.fingerprint, der=public.der, key_arn=public.key_arn, start=start,
                            end=start)  # fmt: skip
        registry.record_use(fingerprint=public.fingerprint, der=public.der, key_arn=public.key_arn, start=end, end=end)
    return {"registry": registry, "old": old.public_key(), "new": new.public_key(), "resources": resources}


def test_list_public_keys_by_validity_overlap(keys: dict[str, Any]) -> None:
    registry = keys["registry"]
    old, new = keys["old"], keys["new"]
    listed = list_public_keys(registry, epoch(T1), epoch(T3))
    assert [k["Fingerprint"] for k in listed] == [old.fingerprint, new.fingerprint]
    assert listed[0] == {
        "Value": base64.b64encode(old.der).decode(),
        "ValidityStartTime": epoch(T1),
        "ValidityEndTime": epoch(T2),
        "Fingerprint": fingerprint(old.der),
    }
    assert listed[0]["Value"].startswith("MIIBCgKCAQEA")  # PKCS#1, base64 once
    assert [k["Fingerprint"] for k in list_public_keys(registry, epoch(T2) + 1, None)] == [new.fingerprint]
    assert [k["Fingerprint"] for k in list_public_keys(registry, None, epoch(T1) + 60)] == [old.fingerprint]
    assert list_public_keys(registry, epoch(T3) + 1, None) == []


class FakeApiGateway(BaseHTTPRequestHandler):
    settings: QuerySettings

    def do_POST(self) -> None:
        stage, _, rest = self.path.lstrip("/").partition("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        event = query.api_gateway_event(body=body, headers=dict(self.headers.items()), path=f"/{rest}", stage=stage)
        response = query.handler(event, LocalContext(), history=object(), settings=self.settings, token_key=b"k" * 32)
        payload = response["body"].encode()
        self.send_response(response["statusCode"])
        for name, value in response["headers"].items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = QuerySettings(history_table="unused", ledger_table=keys["resources"].ledger_table)
    handler = type("Api", (FakeApiGateway,), {"settings": settings})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_boto3_list_public_keys(api: str, keys: dict[str, Any]) -> None:
    client = boto3.client("cloudtrail", endpoint_url=api, region_name="us-east-1")
    reply = client.list_public_keys(StartTime=T1, EndTime=T3)
    listed = reply["PublicKeyList"]
    assert [k["Fingerprint"] for k in listed] == [keys["old"].fingerprint, keys["new"].fingerprint]
    # botocore decodes the blob once: the raw PKCS#1 DER (spec §3.5)
    assert listed[0]["Value"] == keys["old"].der
    assert listed[0]["ValidityStartTime"] == T1
    assert listed[1]["ValidityEndTime"] == T3
    only_new = client.list_public_keys(StartTime=datetime(2026, 11, 23, 15, tzinfo=UTC))["PublicKeyList"]
    assert [k["Fingerprint"] for k in only_new] == [keys["new"].fingerprint]
    with pytest.raises(ClientError, match="InvalidTimeRangeException"):
        client.list_public_keys(StartTime=T3, EndTime=T1)


def test_opentrail_public_keys_writes_pem_files(
    api: str, keys: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["public-keys", "--endpoint-url", api, "--region", "us-east-1", "--out", str(tmp_path)]) == 0
    # (the in-process query handler prints its metrics to stdout too)
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]
    assert lines == [
        f"{keys['old'].fingerprint}\t2026-11-23T10:00:00Z\t2026-11-23T14:00:00Z",
        f"{keys['new'].fingerprint}\t2026-11-23T14:00:00Z\t2026-11-23T20:00:00Z",
    ]
    pem = (tmp_path / f"{keys['old'].fingerprint}.pem").read_text()
    assert pem.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    loaded = serialization.load_pem_public_key(pem.encode())
    assert isinstance(loaded, rsa.RSAPublicKey)
    assert loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1) == keys["old"].der


def test_pem_round_trip_verifies_a_kms_signature(resources: LocalResources) -> None:
    signer = KmsSigner(resources.signing_key_arn, client=boto3.client("kms", region_name=resources.region))
    signature = signer.sign(b"message")
    pem = pkcs1_pem(signer.public_key().der)
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert verify_signature(der, b"message", signature)


def test_list_public_keys_without_a_ledger_table_is_empty(api: str) -> None:
    event = query.api_gateway_event(
        body=json.dumps({}),
        headers={"X-Amz-Target": query.TARGET_PREFIX + "ListPublicKeys", "Content-Type": query.CONTENT_TYPE},
    )
    reply = query.handler(event, LocalContext(), history=object(), settings=QuerySettings(history_table="x"))
    assert (reply["statusCode"], json.loads(reply["body"])) == (200, {"PublicKeyList": []})
