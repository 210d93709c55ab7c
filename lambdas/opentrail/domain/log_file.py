"""CloudTrail log files: the S3 key layout (spec §2.1) and the gzip body (spec §2.2).

`LogFileWriter` streams records into one gzip member shaped ``{"Records":[...]}`` while
keeping what the delivery ledger needs (SHA-256 of the uncompressed body, record count,
oldest and newest eventTime), so a batch never holds all its records in memory.
"""

from __future__ import annotations

import hashlib
import string
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Final

MAX_COMPRESSED_BYTES: Final = 50 * 1024 * 1024  # CloudTrail's cap per log file
LOG_FILE_SUFFIX: Final = ".json.gz"
_BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SPOOL_BYTES: Final = 8 * 1024 * 1024  # compressed bytes kept in memory before spilling to /tmp


def unique_string(seed: str, length: int = 16) -> str:
    """CloudTrail's 16-character [A-Za-z0-9] file-name suffix, derived from `seed`.

    Deterministic, so a retried batch names its files exactly as the first attempt did.
    """
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


def log_file_key(
    *,
    account_id: str,
    region: str,
    delivered_at: datetime,
    unique: str,
    prefix: str | None = None,
    organization_id: str | None = None,
    folder: str = "CloudTrail",
) -> str:
    """``[prefix/]AWSLogs/[o-id/]<account>/CloudTrail/<region>/YYYY/MM/DD/<file name>``.

    The date folders and the file's time stamp are the delivery time (UTC, minute precision).
    `folder` is ``CloudTrail`` for log files and ``CloudTrail-Insight`` for Insights files.
    """
    stamp = delivered_at.strftime("%Y%m%dT%H%MZ")
    name = f"{account_id}_{folder}_{region}_{stamp}_{unique}{LOG_FILE_SUFFIX}"
    parts = [prefix] if prefix else []
    parts.append("AWSLogs")
    if organization_id:
        parts.append(organization_id)
    parts += [account_id, folder, region, delivered_at.strftime("%Y/%m/%d"), name]
    return "/".join(parts)


@dataclass(frozen=True)
class LogFile:
    """A finished log file: its compressed body and what the delivery ledger records."""

    body: IO[bytes]  # positioned at 0; compressed bytes
    compressed_bytes: int
    sha256: str  # lowercase hex of the uncompressed body
    record_count: int
    oldest_event_time: str
    newest_event_time: str


class LogFileWriter:
    """Streams records into ``{"Records":[r1,r2,...]}`` compressed as one gzip member."""

    # Header of a gzip member with mtime 0 and no file name (deterministic bytes).
    _HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, compress_level: int = 6) -> None:
        self._out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._out.write(self._HEADER)
        self._compressed = len(self._HEADER)
        self._deflate = zlib.compressobj(compress_level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._sha = hashlib.sha256()
        self._crc = 0
        self._raw_size = 0
        self.record_count = 0
        self._oldest = ""
        self._newest = ""
        self._feed(b'{"Records":[')

    @property
    def compressed_bytes(self) -> int:
        """Compressed bytes so far (excluding what zlib still buffers, at most ~64 KB)."""
        return self._compressed

    def add(self, line: bytes, event_time: str) -> None:
        """Append one record, given as its compact JSON bytes and its eventTime."""
        self._feed(line if self.record_count == 0 else b"," + line)
        self.record_count += 1
        if not self._oldest or event_time < self._oldest:
            self._oldest = event_time
        if event_time > self._newest:
            self._newest = event_time

    def _feed(self, data: bytes) -> None:
        self._sha.update(data)
        self._crc = zlib.crc32(data, self._crc)
        self._raw_size += len(data)
        chunk = self._deflate.compress(data)
        if chunk:
            self._out.write(chunk)
            self._compressed += len(chunk)

    def finish(self) -> LogFile:
        if self.record_count == 0:
            raise ValueError("a log file holds at least one record")
        self._feed(b"]}")
        tail = self._deflate.flush()
        tail += zlib.crc32(b"", self._crc).to_bytes(4, "little") + (self._raw_size & 0xFFFFFFFF).to_bytes(4, "little")
        self._out.write(tail)
        self._compressed += len(tail)
        self._out.seek(0)
        return LogFile(
            body=self._out,
            compressed_bytes=self._compressed,
            sha256=self._sha.hexdigest(),
            record_count=self.record_count,
            oldest_event_time=self._oldest,
            newest_event_time=self._newest,
        )
