"""Bundles: how records travel through the SQS buffer.

Many records share one SQS message so that request counts stay low. A message body is a
small JSON envelope around gzip-compressed JSON lines, base64-encoded (SQS bodies must be
text)::

    {"v": 1, "bundleId": "<uuid>", "count": 120, "data": "<base64(gzip(record\\nrecord...))>"}

`bundleId` is fixed when the body is built, so a producer's retried send carries the same
id and the batcher delivers the bundle once, whichever copy it receives.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

BUNDLE_VERSION: Final = 1
# SQS's message size limit is 256 KiB (262,144 bytes); keep room for attributes.
MAX_BODY_BYTES: Final = 250_000
# Compress this much JSON at a time before checking the encoded size (records compress
# 5-15x, so a chunk usually fits in one body; if not, it is split in halves).
_RAW_CHUNK_BYTES: Final = 1_500_000


class BundleError(ValueError):
    """A message body is not a bundle this version can read (a poison message)."""


@dataclass(frozen=True)
class Bundle:
    bundle_id: str
    lines: list[bytes]  # one compact JSON record per line, exactly as captured

    def records(self) -> Iterator[dict[str, Any]]:
        for line in self.lines:
            yield json.loads(line)


def encode_record(record: dict[str, Any]) -> bytes:
    """Compact JSON line for one record (what goes into bundles and log files)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def pack(
    lines: Iterable[bytes],
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    make_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[str]:
    """Pack encoded records into as few message bodies as fit `max_body_bytes` each."""
    bodies: list[str] = []
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > _RAW_CHUNK_BYTES:
            bodies.extend(_fit(chunk, max_body_bytes, make_id))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        bodies.extend(_fit(chunk, max_body_bytes, make_id))
    return bodies


def _fit(chunk: list[bytes], max_body_bytes: int, make_id: Callable[[], str]) -> list[str]:
    body = _body(chunk, make_id())
    if len(body) <= max_body_bytes:
        return [body]
    if len(chunk) == 1:
        raise BundleError(
            f"record: one record compresses to {len(body)} bytes, "
            f"more than the buffer's {max_body_bytes}-byte message limit"
        )
    middle = len(chunk) // 2
    return _fit(chunk[:middle], max_body_bytes, make_id) + _fit(chunk[middle:], max_body_bytes, make_id)


def _body(lines: list[bytes], bundle_id: str) -> str:
    data = gzip.compress(b"\n".join(lines), compresslevel=6, mtime=0)
    envelope = {
        "v": BUNDLE_VERSION,
        "bundleId": bundle_id,
        "count": len(lines),
        "data": base64.b64encode(data).decode(),
    }
    return json.dumps(envelope, separators=(",", ":"))


def unpack(body: str) -> Bundle:
    """Read a message body; raises BundleError naming what is wrong."""
    try:
        envelope = json.loads(body)
    except ValueError:
        raise BundleError("body: is not JSON") from None
    if not isinstance(envelope, dict) or envelope.get("v") != BUNDLE_VERSION:
        raise BundleError(f"v: must be {BUNDLE_VERSION}")
    bundle_id = envelope.get("bundleId")
    if not isinstance(bundle_id, str) or not bundle_id:
        raise BundleError("bundleId: is required")
    try:
        raw = gzip.decompress(base64.b64decode(envelope["data"], validate=True))
    except (KeyError, TypeError, binascii.Error, OSError, EOFError, zlib.error):
        raise BundleError("data: must be base64 of gzip-compressed JSON lines") from None
    lines = raw.split(b"\n") if raw else []
    if envelope.get("count") != len(lines):
        raise BundleError(f"count: says {envelope.get('count')} records, data holds {len(lines)}")
    return Bundle(bundle_id=bundle_id, lines=lines)
