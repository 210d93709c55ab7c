"""`opentrail local`: OpenTrail's APIs on 127.0.0.1, the production handlers over moto in server mode.

Two loopback endpoints:

* **AWS services** (``--aws-port``, default 4598): moto in server mode (the same WSGI app as
  ``moto_server`` / ``moto.server.ThreadedMotoServer``), holding the stack's resources
  (`opentrail.local.resources.provision`): KMS key, log bucket, buffer queue and DLQ,
  ledger and history tables. OpenTrail's own boto3 clients use it through
  ``endpoint_url`` / ``AWS_ENDPOINT_URL``, and so can any AWS tool
  (``aws s3 ls --endpoint-url ...``, ``AWS_ENDPOINT_URL_S3=...``).
* **OpenTrail API** (``--port``, default 4599): a small HTTP server that plays API Gateway.
  Each request becomes a REST proxy event and goes to the real handler, as in the
  deployed stack: ``POST /PutAuditEvents?channelArn=...`` to `handlers.ingest`,
  ``POST /`` with ``X-Amz-Target`` (JSON 1.1) to `handlers.query`. The stock boto3
  ``cloudtrail-data`` and ``cloudtrail`` clients and the AWS CLI work with
  ``endpoint_url`` / ``--endpoint-url`` (LookupEvents, and ListPublicKeys for
  ``aws cloudtrail validate-logs``). Extra routes: ``POST /_opentrail/flush`` (run the
  batcher now, reply with its summary), ``POST /_opentrail/digest`` (flush, then run the
  digester; ``{"closeHour": true}`` or ``{"until": T}`` digest windows before they end,
  for demos and tests) and ``GET /_opentrail/status``.

The batcher runs on a real timer (``--batch-interval``) in a background thread,
serialised with flushes. The digester (signed hourly digests, docs/integrity.md) runs in
the same thread, under the same lock, after a batcher run once a window has ended
(``--digest-delay`` after the hour), so a window is never digested while a batch is in
flight. No SigV4 check is made (any credentials are accepted, every caller is the
configured account), so the servers bind to loopback addresses only.

`LocalRuntime` is the whole thing (``start()``, ``flush()``, ``digest()``, ``stop()``, the endpoints);
tests drive it directly and `run_local` wraps it for the command line (banner, signals).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from opentrail.local.environment import patched_environ
from opentrail.local.resources import ACCOUNT_ID, BATCHER_TIMEOUT_SECONDS, REGION, LocalResources

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4599
DEFAULT_AWS_PORT = 4598
DEFAULT_BATCH_INTERVAL_SECONDS = 10.0
DEFAULT_ACCOUNT_ID = ACCOUNT_ID
DEFAULT_REGION = REGION
FLUSH_PATH = "/_opentrail/flush"
DIGEST_PATH = "/_opentrail/digest"
INSIGHTS_PATH = "/_opentrail/insights"
# Insights (docs/insights.md, "Live"): a minute is analysed this long after it ends. The deployed
# default (10) covers capture + buffer + the batcher's schedule; here the batcher runs every few
# seconds, so 2 minutes are enough.
DEFAULT_INSIGHTS_SETTLE_MINUTES = 2
# Windows are digested this long after they end. The deployed digester waits for the batcher's
# longest run; here the batcher and the digester share one lock, so no batch can be in flight
# when the digester reads the ledger, and the settings' minimum (60 s) is enough.
DEFAULT_DIGEST_DELAY_SECONDS = 60
DIGESTER_TIMEOUT_SECONDS = 900
MAX_DIGEST_AHEAD = timedelta(hours=24)  # how far `until` may close windows ahead of the clock
STATUS_PATH = "/_opentrail/status"
LOCAL_STAGE = "local"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "opentrail-local", "AWS_SECRET_ACCESS_KEY": "opentrail-local"}
_JSON_11 = "application/x-amz-json-1.1"
_LOOPBACK_NAMES = ("localhost",)

Response = tuple[int, list[tuple[str, str]], bytes]


class LocalRuntimeError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    aws_port: int = DEFAULT_AWS_PORT
    batch_interval: float = DEFAULT_BATCH_INTERVAL_SECONDS
    state_dir: Path | None = None
    account_id: str = ACCOUNT_ID
    region: str = REGION
    quiet: bool = False  # no access log lines
    digest: bool = True  # run the digester after batcher runs once a window has ended
    digest_delay_seconds: int = DEFAULT_DIGEST_DELAY_SECONDS
    trails: str | None = None  # the TRAILS setting (JSON list of trails, docs/trails.md); None: the default trail
    insights: bool = True  # run the Insights function after each batcher run (docs/insights.md)
    insights_sensitivity: str = "medium"  # low | medium | high (the deployed default: medium)
    insights_overrides: str = "{}"  # single knobs, a JSON object, e.g. {"unusual_warmup_minutes": 15}
    insights_settle_minutes: int = DEFAULT_INSIGHTS_SETTLE_MINUTES


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def local_environment(aws_endpoint: str, account_id: str, region: str) -> Iterator[None]:
    """The process environment of local mode: fake credentials, one region, every boto3
    client at the embedded AWS (``AWS_ENDPOINT_URL``), no proxy for loopback, Powertools quiet.
    Restores the caller's environment afterwards."""
    values = {
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "MOTO_ACCOUNT_ID": account_id,
    }
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        values[name] = ",".join(part for part in (current, "127.0.0.1", "localhost", "::1") if part)
    removed = (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    )
    with patched_environ(values, removed):
        yield


def proxy_event(
    *,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
    account_id: str,
    caller_arn: str,
    access_key: str | None = None,
    source_ip: str = "127.0.0.1",
    stage: str = LOCAL_STAGE,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (``/{proxy+}``, IAM caller) for one HTTP request."""
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)
    text: str | None
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode("ascii"), True
    if not body:
        text = None
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": f"local-{time.time_ns()}",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {
                "accountId": account_id,
                "userArn": caller_arn,
                "caller": caller_arn,
                "accessKey": access_key,
                "sourceIp": source_ip,
                "userAgent": next((v for n, v in headers if n.lower() == "user-agent"), None),
            },
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def http_response(proxy_response: dict[str, Any]) -> Response:
    """A handler's proxy response as (status, headers, body bytes)."""
    status = int(proxy_response.get("statusCode", 500))
    headers: list[tuple[str, str]] = []
    multi: dict[str, list[str]] = proxy_response.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers.extend((name, str(value)) for value in values)
    seen = {name.lower() for name in multi}
    for name, value in (proxy_response.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((name, str(value)))
    headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    raw = proxy_response.get("body") or ""
    body = base64.b64decode(raw) if proxy_response.get("isBase64Encoded") else str(raw).encode("utf-8")
    return status, headers, body


def _json_response(status: int, document: Any, *, error_type: str | None = None) -> Response:
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    return status, headers, json.dumps(document).encode("utf-8")


class LocalRuntime:
    """OpenTrail's handlers on 127.0.0.1 over moto in server mode (see the module docstring)."""

    def __init__(self, options: LocalOptions | None = None, *, out: TextIO | None = None) -> None:
        self.options = options or LocalOptions()
        self.out = out or sys.stdout
        self.resources: LocalResources | None = None
        self.started_in_seconds = 0.0
        self.loaded: str | None = None  # what was loaded from the state directory
        self._stack = ExitStack()
        self._aws_server: Any = None
        self._api_server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._serving: list[Any] = []  # servers whose serve_forever runs (shutdown() would wait forever otherwise)
        self._stopping = threading.Event()
        self._batch_lock = threading.RLock()  # one batcher or digester run (or save) at a time
        self._ingest_lock = threading.Lock()  # a handler module serves one request at a time, like a Lambda instance
        self._query_lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._running = False
        self._query: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.batcher_runs = 0
        self.last_summary: dict[str, Any] | None = None
        self.digester_runs = 0
        self.last_digest: dict[str, Any] | None = None
        self.insights_runs = 0
        self.last_insights: dict[str, Any] | None = None
        self._digested_until: datetime | None = None  # the due-window boundary at the last digester run
        self._closed_until: datetime | None = None  # windows closed ahead of the clock (closeHour/until)

    # -- endpoints ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """OpenTrail's API: ``endpoint_url`` for the ``cloudtrail`` and ``cloudtrail-data`` clients."""
        if self._api_server is None:
            raise LocalRuntimeError("not started")
        return _url(self.options.host, self._api_server.server_address[1])

    @property
    def aws_endpoint(self) -> str:
        """The embedded AWS services (moto server mode): ``endpoint_url`` for s3, sqs, dynamodb, kms, ..."""
        if self._aws_server is None:
            raise LocalRuntimeError("not started")
        return _url(self.options.host, self._aws_server.server_address[1])

    @property
    def channel_arn(self) -> str:
        return self._resources.channel_arn

    @property
    def log_bucket(self) -> str:
        return self._resources.log_bucket

    @property
    def ledger_table(self) -> str:
        return self._resources.ledger_table

    @property
    def trail_arn(self) -> str:
        """The trail `aws cloudtrail validate-logs --trail-arn` names (the digests' home region)."""
        resources = self._resources
        name = self.digester_settings.trail_list[0].name
        return f"arn:aws:cloudtrail:{resources.region}:{resources.account_id}:trail/{name}"

    @property
    def _resources(self) -> LocalResources:
        if self.resources is None:
            raise LocalRuntimeError("not started")
        return self.resources

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> LocalRuntime:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._running:
            raise LocalRuntimeError("already started")
        if not is_loopback(self.options.host):
            raise LocalRuntimeError(
                f"--host {self.options.host}: local mode checks no signatures, so it listens on loopback addresses only"
            )
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self._shutdown_servers()
            self._stack.close()
            raise
        self._running = True
        self.started_in_seconds = time.monotonic() - started

    def _start(self) -> None:
        options = self.options
        # Bind both sockets first: a port in use fails here, before anything else starts.
        self._aws_server = _make_moto_server(options.host, options.aws_port)
        self._api_server = _make_api_server(options.host, options.port, self)
        self._serve("opentrail-local-aws", self._aws_server)
        _reset_moto(self.aws_endpoint)

        self._stack.enter_context(local_environment(self.aws_endpoint, options.account_id, options.region))
        self._stack.enter_context(_quiet())
        from opentrail.local.demo import moto_transactions_snapshot_once

        self._stack.enter_context(moto_transactions_snapshot_once())
        self._build_pipeline()
        if options.state_dir is not None:
            self._load()
        self._serve("opentrail-local-api", self._api_server)
        self._spawn("opentrail-local-batcher", self._timer)

    def _build_pipeline(self) -> None:
        import boto3

        from opentrail.adapters.buffer import Buffer
        from opentrail.adapters.ledger import Ledger
        from opentrail.adapters.log_store import LogStore
        from opentrail.local.resources import provision

        options = self.options
        session = boto3.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=options.region,
        )

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=self.aws_endpoint)

        self.s3, self.sqs, self.dynamodb = client("s3"), client("sqs"), client("dynamodb")
        self.resources = provision(region=options.region, account_id=options.account_id, trails=options.trails)
        resources = self.resources
        self.buffer = Buffer(
            resources.buffer_queue_url, dead_letter_queue_url=resources.dead_letter_queue_url, client=self.sqs
        )
        self.log_store = LogStore(resources.log_bucket, resources.kms_key_arn, client=self.s3)
        self.ledger = Ledger(resources.ledger_table, client=self.dynamodb)
        from opentrail.adapters.trail_state import TrailStateStore

        self.trail_state = TrailStateStore(resources.ledger_table, client=self.dynamodb)
        self.ingest_settings = resources.ingest_settings().model_copy(update={"log_level": "WARNING"})
        # no long poll: a flush should not wait for messages that are not coming
        trails = {"trails": options.trails} if options.trails else {}
        self.batcher_settings = resources.batcher_settings(log_level="WARNING", receive_wait_seconds=0, **trails)
        from opentrail.handlers.batcher import history_for

        self.history = history_for(self.batcher_settings, client=self.dynamodb)
        self.events = client("events")
        self.insights_settings = resources.insights_settings(
            trails=self.batcher_settings.trails,
            log_level="WARNING",
            sensitivity=options.insights_sensitivity,
            sensitivity_overrides=options.insights_overrides,
            settle_minutes=options.insights_settle_minutes,
        )
        self._build_digester(client("kms"))
        self._query = self._query_handler()

    def _build_digester(self, kms: Any) -> None:
        from opentrail.adapters.digests import ChainHeads, DigestStore, LedgerReader, PublicKeyRegistry
        from opentrail.adapters.signer import KmsSigner
        from opentrail.adapters.trail_state import TrailStateStore

        resources = self._resources
        self.digester_settings = resources.digester_settings(
            log_level="WARNING",
            digest_delay_seconds=self.options.digest_delay_seconds,
            **({"trails": self.options.trails} if self.options.trails else {}),
        )
        table = resources.ledger_table
        self._digester_adapters: dict[str, Any] = {
            "signer": KmsSigner(self.digester_settings.signing_key_id, client=kms),
            "store": DigestStore(resources.log_bucket, client=self.s3),
            "heads": ChainHeads(table, client=self.dynamodb),
            "ledger": LedgerReader(table, client=self.dynamodb),
            "registry": PublicKeyRegistry(table, client=self.dynamodb),
            "trail_state": TrailStateStore(table, client=self.dynamodb),
        }

    def _query_handler(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """The query handler: LookupEvents over the history table, ListPublicKeys over the key
        registry in the ledger table (`LocalResources.query_settings`)."""
        from opentrail.adapters.history import EventHistory
        from opentrail.adapters.history_config import NextTokenKeyStore
        from opentrail.handlers import query

        resources = self._resources
        # The trail operations (DescribeTrails, ...; docs/trails.md) report the batcher's trails.
        settings = resources.query_settings(
            log_level="WARNING",
            trails=self.batcher_settings.trails,
            log_bucket=resources.log_bucket,
            log_kms_key_arn=resources.kms_key_arn,
        )
        history = EventHistory(settings.history_table, client=self.dynamodb)
        keys: list[bytes] = []

        def call(event: dict[str, Any]) -> dict[str, Any]:
            if not keys:  # the NextToken key lives in the history table (so it is saved with --state-dir)
                keys.append(NextTokenKeyStore(settings.history_table, client=self.dynamodb).key())
            context = self._context("opentrail-query")
            result: dict[str, Any] = query.handler(
                event, context, history=history, settings=settings, token_key=keys[0], dynamodb=self.dynamodb
            )
            return result

        return call

    def _load(self) -> None:
        from opentrail.local.persist import has_state, load_state

        directory = self.options.state_dir
        assert directory is not None
        if has_state(directory):
            summary = load_state(
                directory, s3=self.s3, dynamodb=self.dynamodb, sqs=self.sqs, region=self.options.region
            )
            self.loaded = summary.describe()

    def stop(self) -> None:
        """Final flush, save the state (with --state-dir), stop the servers and threads. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        try:
            if self._api_server is not None:  # no new requests; the ones being served finish
                self._api_server.shutdown()
            self._join("opentrail-local-batcher", "opentrail-local-api")
            try:
                self.flush(save=False)
                if self.options.digest:
                    try:
                        self._run_digester("scheduled")
                    except Exception as error:  # the state is saved anyway; the next start catches up
                        self._print(f"digester: final run failed: {type(error).__name__}: {error}")
            finally:
                if self.options.state_dir is not None:
                    self.save(final=True)
        finally:
            self._shutdown_servers()
            self._stack.close()

    def _shutdown_servers(self) -> None:
        for server in (self._api_server, self._aws_server):
            if server is None:
                continue
            if any(served is server for served in self._serving):
                server.shutdown()  # returns at once when it is already shut down
            server.server_close()
        self._serving.clear()
        self._join()

    def _serve(self, name: str, server: Any) -> None:
        self._serving.append(server)
        self._spawn(name, lambda: server.serve_forever(poll_interval=0.1))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _join(self, *names: str) -> None:
        for thread in list(self._threads):
            if not names or thread.name in names:
                thread.join(timeout=30)
                self._threads.remove(thread)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # -- batcher --------------------------------------------------------------------------

    def _timer(self) -> None:
        while not self._stopping.wait(self.options.batch_interval):
            try:
                summary = self._run_batcher("scheduled")
            except Exception as error:  # keep the timer going; the next run retries
                self._print(f"batcher: run failed: {type(error).__name__}: {error}")
                continue
            delivered = bool(summary["records"] or summary["files"])
            digested = False
            if self.options.digest and self._digest_due(delivered):
                try:
                    digested = bool(self._run_digester("scheduled")["written"])
                except Exception as error:  # the next due run retries (the chain head says where it stopped)
                    self._print(f"digester: run failed: {type(error).__name__}: {error}")
            analysed = False
            if self.options.insights:
                try:
                    analysed = bool(self._run_insights("scheduled")["files"])
                except Exception as error:  # the next run retries (the state says where it stopped)
                    self._print(f"insights: run failed: {type(error).__name__}: {error}")
            if delivered or digested or analysed:
                self._after_delivery()

    def _digest_due(self, delivered: bool) -> bool:
        """After a batcher run: is there anything for the digester? A window ended (the
        boundary moved since its last run), or files were delivered into windows that were
        closed ahead of the clock (they go into backfill digests)."""
        now = datetime.now(UTC)
        boundary = _window_boundary(now, self.options.digest_delay_seconds)
        if self._digested_until is None or boundary > self._digested_until:
            return True
        return delivered and self._closed_until is not None and now < self._closed_until

    def flush(self, *, save: bool = True) -> dict[str, Any]:
        """Run the batcher now (drains the buffer); returns its summary. Saves the state after it."""
        summary = self._run_batcher("flush")
        if save and self.options.state_dir is not None:
            self.save()
        return summary

    def digest(self, *, close_hour: bool = False, until: datetime | None = None) -> dict[str, Any]:
        """Flush (deliver what is buffered), then run the digester; returns both summaries.

        By default only windows that ended `digest_delay_seconds` ago are digested, as in AWS.
        `close_hour` digests the current hour now; `until` every window ending at or before
        it (at most a day ahead). Files delivered later into a window closed early are listed
        by a backfill digest at the next digester run, as late files are (docs/integrity.md).
        """
        now = datetime.now(UTC)
        if close_hour and until is None:
            until = _floor_hour(now) + timedelta(hours=1)
        if until is not None:
            until = until.astimezone(UTC) if until.tzinfo else until.replace(tzinfo=UTC)
            until = _floor_hour(until)
            if until > now + MAX_DIGEST_AHEAD:
                raise ValueError(f"until {until:%Y-%m-%dT%H:%M:%SZ}: at most 24 hours ahead")
        with self._batch_lock:  # nothing is delivered between the flush and the digester's read
            flushed = self._run_batcher("flush")
            summary = self._run_digester("digest", until=until)
        if self.options.state_dir is not None:
            self.save()
        return {
            "flush": flushed,
            "digest": summary,
            "until": until.strftime("%Y-%m-%dT%H:%M:%SZ") if until is not None else None,
        }

    def _run_digester(self, action: str, *, until: datetime | None = None) -> dict[str, Any]:
        from opentrail.handlers import digester

        delay = timedelta(seconds=self.options.digest_delay_seconds)
        with self._batch_lock:
            now = datetime.now(UTC)
            # Windows close `delay` after they end: a clock `delay` past `until` closes those before it.
            when = max(now, until + delay) if until is not None else now
            context = self._context("opentrail-digester", DIGESTER_TIMEOUT_SECONDS)
            summary: dict[str, Any] = digester.handler(
                {"action": action},
                context,
                settings=self.digester_settings,
                clock=lambda: when,
                **self._digester_adapters,
            )
            _clear_metrics()
            self.digester_runs += 1
            self.last_digest = summary
            self._digested_until = _window_boundary(now, self.options.digest_delay_seconds)
            if until is not None and (self._closed_until is None or until > self._closed_until):
                self._closed_until = until
        if summary["written"] or summary["conflicts"]:
            self._print(f"digester ({action}): {describe_digest(summary)}")
        return summary

    def insights(self) -> dict[str, Any]:
        """Flush (deliver what is buffered), then run the Insights function; returns both summaries.

        Minutes are analysed once `insights_settle_minutes` have passed after their end, as the
        deployed function does (`until` in its summary)."""
        with self._batch_lock:
            flushed = self.flush(save=False)
            summary = self._run_insights("analyse")
        if self.options.state_dir is not None and (flushed["files"] or summary["files"]):
            self.save()
        return {"flush": flushed, "insights": summary}

    def _run_insights(self, action: str) -> dict[str, Any]:
        from opentrail.handlers.insights import analyse

        with self._batch_lock:
            summary = analyse(
                self.insights_settings, dynamodb_client=self.dynamodb, s3_client=self.s3, events_client=self.events
            )
            _clear_metrics()
            self.insights_runs += 1
            self.last_insights = summary
        if summary["starts"] or summary["ends"] or summary["errors"]:
            self._print(f"insights ({action}): {describe_insights(summary)}")
        return summary

    def _after_delivery(self) -> None:
        if self.options.state_dir is not None:
            try:
                self.save()
            except Exception as error:
                self._print(f"state: save failed: {type(error).__name__}: {error}")

    def _run_batcher(self, action: str) -> dict[str, Any]:
        from opentrail.handlers import batcher

        with self._batch_lock:
            context = self._context("opentrail-batcher", BATCHER_TIMEOUT_SECONDS)
            summary: dict[str, Any] = batcher.handler(
                {"action": action},
                context,
                buffer=self.buffer,
                log_store=self.log_store,
                ledger=self.ledger,
                history=self.history,
                settings=self.batcher_settings,
                trail_state=self.trail_state,
            )
            _clear_metrics()
            self.batcher_runs += 1
            self.last_summary = summary
        if summary["records"] or summary["files"] or summary["failedBatches"] or summary["deadLettered"]:
            self._print(f"batcher ({action}): {describe_summary(summary)}")
        return summary

    def save(self, *, final: bool = False) -> None:
        """Save the state to --state-dir (the queues too when `final`: that hides their messages)."""
        from opentrail.local.persist import save_state

        directory = self.options.state_dir
        if directory is None:
            raise LocalRuntimeError("no state directory")
        resources = self._resources
        with self._batch_lock:
            save_state(
                directory,
                s3=self.s3,
                dynamodb=self.dynamodb,
                sqs=self.sqs if final else None,
                account_id=resources.account_id,
                region=resources.region,
            )

    # -- requests -------------------------------------------------------------------------

    def dispatch(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
    ) -> Response:
        """One HTTP request to OpenTrail's API (`target` is the request line's path and query)."""
        url = urlsplit(target)
        path = url.path or "/"
        header = {name.lower(): value for name, value in headers}
        if path == FLUSH_PATH and method == "POST":
            return _json_response(200, self.flush())
        if path == DIGEST_PATH and method == "POST":
            return self._digest_request(body)
        if path == INSIGHTS_PATH and method == "POST":
            return _json_response(200, self.insights())
        if path == STATUS_PATH and method == "GET":
            return _json_response(200, self.status())
        account = self._resources.account_id
        access_key = header.get("authorization", "").partition("Credential=")[2].partition("/")[0] or None
        event = proxy_event(
            method=method,
            path=path,
            query=parse_qsl(url.query, keep_blank_values=True),
            headers=headers,
            body=body,
            account_id=account,
            caller_arn=f"arn:aws:iam::{account}:user/opentrail-local",
            access_key=access_key,
            source_ip=source_ip,
        )
        if "x-amz-target" in header:
            return self._call_query(event)
        return self._call_ingest(event)

    def _digest_request(self, body: bytes) -> Response:
        try:
            request = json.loads(body) if body.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            until = request.get("until")
            moment = datetime.fromisoformat(str(until).replace("Z", "+00:00")) if until else None
            result = self.digest(close_hour=bool(request.get("closeHour")), until=moment)
        except ValueError as error:
            return _json_response(400, {"__type": "ValidationException", "message": str(error)})
        return _json_response(200, result)

    def _context(self, function_name: str, timeout_seconds: float | None = None) -> Any:
        """The Lambda context a handler gets in local mode (this runtime's account and region)."""
        from opentrail.local.context import LocalContext

        resources = self._resources
        return LocalContext(
            function_name=function_name,
            account_id=resources.account_id,
            region=resources.region,
            timeout_seconds=LocalContext.timeout_seconds if timeout_seconds is None else float(timeout_seconds),
        )

    def _call_ingest(self, event: dict[str, Any]) -> Response:
        from opentrail.handlers import ingest

        context = self._context("opentrail-ingest")
        with self._ingest_lock:
            response = ingest.handler(event, context, buffer=self.buffer, settings=self.ingest_settings)
            _clear_metrics()
        return http_response(response)

    def _call_query(self, event: dict[str, Any]) -> Response:
        if self._query is None:
            raise LocalRuntimeError("not started")
        with self._query_lock:
            response = self._query(event)
            _clear_metrics()
        return http_response(response)

    def status(self) -> dict[str, Any]:
        resources = self._resources
        return {
            "endpoint": self.endpoint,
            "awsEndpoint": self.aws_endpoint,
            "accountId": resources.account_id,
            "region": resources.region,
            "channelArn": resources.channel_arn,
            "logBucket": resources.log_bucket,
            "bufferDepth": self.buffer.depth(),
            "batchIntervalSeconds": self.options.batch_interval,
            "batcherRuns": self.batcher_runs,
            "ledgerTable": resources.ledger_table,
            "historyTable": resources.history_table,
            "trailArn": self.trail_arn,
            "digester": self.options.digest,
            "digestDelaySeconds": self.options.digest_delay_seconds,
            "digesterRuns": self.digester_runs,
            "insights": self.options.insights,
            "insightsSensitivity": self.options.insights_sensitivity,
            "insightsOverrides": json.loads(self.options.insights_overrides),
            "insightsRuns": self.insights_runs,
            "insightsTable": resources.insights_table,
            "stateDir": str(self.options.state_dir) if self.options.state_dir else None,
        }

    def _print(self, line: str) -> None:
        with self._print_lock:
            print(line, file=self.out, flush=True)

    def access_log(self, method: str, target: str, status: int, operation: str | None) -> None:
        if not self.options.quiet:
            what = operation or urlsplit(target).path
            self._print(f"{time.strftime('%H:%M:%S')} {method} {what} -> {status}")

    # -- the banner -----------------------------------------------------------------------

    def banner(self) -> str:
        resources = self._resources
        api, aws, region = self.endpoint, self.aws_endpoint, resources.region
        state = (
            f"{self.options.state_dir} (saved after each delivery and on exit"
            + (f"; loaded {self.loaded})" if self.loaded else "; nothing saved yet)")
            if self.options.state_dir
            else "in memory only (use --state-dir DIR to keep data across restarts)"
        )
        lines = [
            f"OpenTrail local: the production handlers over moto, account {resources.account_id}, region {region}",
            f"(started in {self.started_in_seconds:.1f} s)",
            "",
            f"  OpenTrail API    {api}    PutAuditEvents (cloudtrail-data), LookupEvents (cloudtrail)",
            f"  AWS services     {aws}    moto server mode: S3, SQS, DynamoDB, KMS, ...",
            f"  channel ARN      {resources.channel_arn}",
            f"  log bucket       s3://{resources.log_bucket}",
            f"  batcher          every {self.options.batch_interval:g} s; now: opentrail flush --endpoint-url {api}",
            (
                f"  digester         each hour, {self.options.digest_delay_seconds} s after it ends; now: "
                f"opentrail flush --digest [--close-hour] --endpoint-url {api}"
                if self.options.digest
                else "  digester         off (--no-digest)"
            ),
            (
                f"  insights         after each batcher run, sensitivity {self.options.insights_sensitivity}"
                + (f" {self.options.insights_overrides}" if json.loads(self.options.insights_overrides) else "")
                + f"; now: opentrail flush --insights --endpoint-url {api}"
                if self.options.insights
                else "  insights         off (--no-insights)"
            ),
            f"  trail ARN        {self.trail_arn}",
            f"  state            {state}",
            "",
            f"  No SigV4 check: any credentials are accepted and every caller is account {resources.account_id}.",
            "  It listens on loopback only.",
            "",
            "Point clients at it (any credentials, e.g. AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing):",
            f'  boto3.client("cloudtrail-data", endpoint_url="{api}", region_name="{region}")',
            f'  boto3.client("cloudtrail", endpoint_url="{api}", region_name="{region}")',
            f"  aws cloudtrail-data put-audit-events --endpoint-url {api} --region {region} \\",
            f"      --channel-arn {resources.channel_arn} --audit-events file://events.json",
            f"  aws cloudtrail lookup-events --endpoint-url {api} --region {region}",
            f"  opentrail lookup-events --endpoint-url {api} --output table",
            f"  aws s3 ls s3://{resources.log_bucket}/ --recursive --endpoint-url {aws}",
            f"  AWS_ENDPOINT_URL_S3={aws} <a tool that reads CloudTrail logs from S3>",
            f"  AWS_ENDPOINT_URL_S3={aws} aws cloudtrail validate-logs --endpoint-url {api} \\",
            f"      --trail-arn {self.trail_arn} --s3-bucket {resources.log_bucket} --start-time <T>",
            f"  opentrail export --bucket {resources.log_bucket} --endpoint-url {aws} \\",
            f"      --ledger-table {resources.ledger_table} --dir ./copy",
            "",
            "Ctrl-C stops it (final flush, state saved, servers stopped).",
        ]
        return "\n".join(lines)


def describe_digest(summary: dict[str, Any]) -> str:
    text = (
        f"{summary.get('digests', 0)} digest(s) ({summary.get('emptyDigests', 0)} empty) listing "
        f"{summary.get('logFiles', 0)} log file(s), {summary.get('backfillDigests', 0)} backfill digest(s) listing "
        f"{summary.get('backfilledFiles', 0)}"
    )
    if summary.get("conflicts"):
        text += f"; {summary['conflicts']} chain conflict(s)"
    if summary.get("windowsBehind"):
        text += f"; {summary['windowsBehind']} window(s) still due"
    return text


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _window_boundary(now: datetime, delay_seconds: int) -> datetime:
    """End of the newest window the digester may digest at `now` (domain.chain.last_window_end)."""
    return _floor_hour(now - timedelta(seconds=delay_seconds))


def describe_insights(summary: dict[str, Any]) -> str:
    """One line for an Insights run's summary (docs/insights.md, "Live")."""
    text = (
        f"analysed to {summary.get('until') or '-'}: {summary.get('starts', 0)} started, "
        f"{summary.get('ends', 0)} ended, {len(summary.get('files') or [])} file(s), "
        f"{summary.get('eventBridgeSent', 0)} EventBridge event(s)"
    )
    if summary.get("errors"):
        text += f", {len(summary['errors'])} error(s): {summary['errors'][0]}"
    return text


def describe_summary(summary: dict[str, Any]) -> str:
    files = summary.get("files") or []
    text = (
        f"{summary.get('records', 0):,} records in {len(files)} log file(s) from {summary.get('messages', 0):,} "
        f"messages; {summary.get('duplicatesDropped', 0):,} duplicates dropped, "
        f"{summary.get('deadLettered', 0):,} dead-lettered"
    )
    if summary.get("failedBatches"):
        text += f"; {summary['failedBatches']} batch(es) failed: {'; '.join(summary.get('errors') or [])}"
    return text


# -- servers ----------------------------------------------------------------------------------


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _make_moto_server(host: str, port: int) -> Any:
    """moto's server mode, as ``ThreadedMotoServer`` builds it, but bound in the caller's
    thread (so a port in use raises here) and served by `serve_forever` in ours."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per AWS call
    app = DomainDispatcherApplication(create_backend_app)
    return make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def _reset_moto(aws_endpoint: str) -> None:
    """Start from empty backends (moto's state is per process; an earlier runtime's is gone)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST", data=b"")
    with opener.open(request, timeout=30) as reply:
        reply.read()


class _ApiRequestHandler(BaseHTTPRequestHandler):
    runtime: LocalRuntime
    server_version = "OpenTrailLocal"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = list(self.headers.items())
        target_header = self.headers.get("X-Amz-Target")
        operation = target_header.rpartition(".")[2] if target_header else None
        try:
            status, reply_headers, payload = self.runtime.dispatch(
                self.command, self.path, headers, body, source_ip=self.client_address[0]
            )
        except Exception as error:  # a bug, not a client error: report it as AWS would
            status, reply_headers, payload = _json_response(
                500,
                {"__type": "InternalFailure", "message": f"{type(error).__name__}: {error}"},
                error_type="InternalFailure",
            )
        self.send_response(status)
        for name, value in reply_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.runtime.access_log(self.command, self.path, status, operation)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access lines come from LocalRuntime.access_log


def _make_api_server(host: str, port: int, runtime: LocalRuntime) -> ThreadingHTTPServer:
    handler = type("ApiRequestHandler", (_ApiRequestHandler,), {"runtime": runtime})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


@contextmanager
def _quiet() -> Iterator[None]:
    """The handlers' shared Logger at WARNING; no Powertools warning about runs without metrics."""
    from opentrail.handlers._common import logger

    level = logger.log_level
    logger.setLevel("WARNING")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    try:
        yield
    finally:
        logger.setLevel(level)
        _clear_metrics()


def _clear_metrics() -> None:
    from opentrail.local.demo import _clear_metrics as clear

    clear()


# -- the command line ---------------------------------------------------------------------------


def run_local(options: LocalOptions, *, out: TextIO | None = None) -> int:
    """`opentrail local`: start, print the banner, run until SIGINT/SIGTERM, stop cleanly."""
    out = out or sys.stdout
    runtime = LocalRuntime(options, out=out)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        # a second Ctrl-C during the shutdown interrupts it
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            runtime.start()
        except (OSError, LocalRuntimeError) as error:
            print(f"opentrail local: {error}", file=sys.stderr)
            return 1
        print(runtime.banner(), file=out, flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping: final flush" + (", saving state" if options.state_dir else ""), file=out, flush=True)
        runtime.stop()
        print(f"stopped ({runtime.batcher_runs} batcher runs)", file=out, flush=True)
        return 0
    finally:
        runtime.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def request_flush(endpoint: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """`opentrail flush`: ask a running `opentrail local` to run the batcher now; its summary."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{endpoint.rstrip('/')}{FLUSH_PATH}", method="POST", data=b"")
    with opener.open(request, timeout=timeout) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def request_digest(
    endpoint: str, *, close_hour: bool = False, until: str | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """`opentrail flush --digest`: flush a running `opentrail local`, then run its digester."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body: dict[str, Any] = {"closeHour": close_hour}
    if until:
        body["until"] = until
    request = urllib.request.Request(
        f"{endpoint.rstrip('/')}{DIGEST_PATH}",
        method="POST",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with opener.open(request, timeout=timeout) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def request_insights(endpoint: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """`opentrail flush --insights`: flush a running `opentrail local`, then run its Insights function."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{endpoint.rstrip('/')}{INSIGHTS_PATH}", method="POST", data=b"")
    with opener.open(request, timeout=timeout) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def _insights_overrides(text: str) -> str:
    """--insights-overrides: a JSON object of Sensitivity knobs (docs/insights.md), validated."""
    from opentrail.domain.insights import Sensitivity

    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        Sensitivity().with_overrides(data)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(f"{error}") from error
    return json.dumps(data, separators=(",", ":"))


def _settle_minutes(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 120:
        raise argparse.ArgumentTypeError(f"must be 1-120 (InsightsSettings), got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _digest_delay(text: str) -> int:
    value = int(text)
    if not 60 <= value <= 3000:
        raise argparse.ArgumentTypeError(f"must be 60-3000 (DigesterSettings), got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_local_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = subparsers.add_parser(
        "local",
        help="serve PutAuditEvents and LookupEvents on 127.0.0.1 over embedded moto (docs/local.md)",
        description=(
            "Run OpenTrail on this machine: the production handlers behind a local API endpoint (the stock boto3 "
            "cloudtrail-data and cloudtrail clients and the AWS CLI work with --endpoint-url), moto in server mode "
            "for the AWS services (any AWS tool can look at the bucket, queue and tables), the batcher on a timer. "
            "No SigV4 check: loopback only. Ctrl-C stops it cleanly."
        ),
    )
    local.add_argument("--host", default=DEFAULT_HOST, help="loopback address to listen on (default 127.0.0.1)")
    local.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"OpenTrail API port (default {DEFAULT_PORT}; 0: any free port)",
    )
    local.add_argument(
        "--aws-port",
        type=_port,
        default=DEFAULT_AWS_PORT,
        help=f"AWS services (moto server) port (default {DEFAULT_AWS_PORT})",
    )
    local.add_argument(
        "--batch-interval",
        type=_seconds,
        default=DEFAULT_BATCH_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="seconds between batcher runs (default 10)",
    )
    local.add_argument("--state-dir", type=Path, metavar="DIR", help="keep the data in DIR across restarts")
    local.add_argument("--account", default=DEFAULT_ACCOUNT_ID, help="the account id (default 123456789012)")
    local.add_argument("--region", default=DEFAULT_REGION, help="the region (default us-east-1)")
    local.add_argument("--quiet", action="store_true", help="no line per request")
    local.add_argument(
        "--digest-delay",
        type=_digest_delay,
        default=DEFAULT_DIGEST_DELAY_SECONDS,
        metavar="SECONDS",
        help=f"digest each hour this long after it ends (default {DEFAULT_DIGEST_DELAY_SECONDS}; 60-3000)",
    )
    local.add_argument(
        "--no-digest", dest="digest", action="store_false", help="do not run the digester (no signed digests)"
    )
    local.add_argument(
        "--trails",
        type=Path,
        metavar="FILE",
        help="a JSON list of up to 5 trails in CloudTrail's shape (docs/trails.md); default: one trail 'opentrail'",
    )
    local.add_argument(
        "--no-insights",
        dest="insights",
        action="store_false",
        help="do not run the Insights function after batcher runs (docs/insights.md)",
    )
    local.add_argument(
        "--insights-sensitivity",
        choices=("low", "medium", "high"),
        default="medium",
        help="the Insights detectors' preset (default medium, as deployed)",
    )
    local.add_argument(
        "--insights-overrides",
        type=_insights_overrides,
        default="{}",
        metavar="JSON",
        help='single Insights knobs, e.g. \'{"unusual_warmup_minutes": 15}\' (docs/insights.md, "Sensitivity")',
    )
    local.add_argument(
        "--insights-settle-minutes",
        type=_settle_minutes,
        default=DEFAULT_INSIGHTS_SETTLE_MINUTES,
        metavar="MINUTES",
        help=f"analyse a minute this long after it ends (default {DEFAULT_INSIGHTS_SETTLE_MINUTES}; deployed: 10)",
    )
    local.set_defaults(func=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    options = LocalOptions(
        host=args.host,
        port=args.port,
        aws_port=args.aws_port,
        batch_interval=args.batch_interval,
        state_dir=args.state_dir,
        account_id=args.account,
        region=args.region,
        quiet=args.quiet,
        digest=args.digest,
        digest_delay_seconds=args.digest_delay,
        trails=_trails_file(args.trails),
        insights=args.insights,
        insights_sensitivity=args.insights_sensitivity,
        insights_overrides=args.insights_overrides,
        insights_settle_minutes=args.insights_settle_minutes,
    )
    return run_local(options)


def _trails_file(path: Path | None) -> str | None:
    """The --trails file's text, validated (a TrailError names the trail and the field)."""
    if path is None:
        return None
    from opentrail.domain.trail import trails_from_json, trails_to_json

    return trails_to_json(trails_from_json(path.read_text(encoding="utf-8")))


def add_flush_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    flush = subparsers.add_parser(
        "flush",
        help="make a running `opentrail local` deliver its buffer now (and digest, with --digest)",
        description=(
            "Run the batcher of a running `opentrail local` now and print what it delivered. With --digest, then "
            "run the digester: signed digests for the hour windows that have ended (--close-hour: the current "
            "hour too, now; --until T: every window ending at or before T). docs/local.md."
        ),
    )
    flush.add_argument("--endpoint-url", default="http://127.0.0.1:4599", help="its API endpoint")
    flush.add_argument("--json", action="store_true", help="print the summary as JSON")
    flush.add_argument("--digest", action="store_true", help="then run the digester")
    flush.add_argument(
        "--insights", action="store_true", help="then run the Insights function (after the digester, with --digest)"
    )
    flush.add_argument(
        "--close-hour",
        action="store_true",
        help="with --digest: digest the current hour now, before it ends (later files go to backfill digests)",
    )
    flush.add_argument(
        "--until",
        metavar="TIME",
        help="with --digest: digest every window ending at or before TIME (ISO 8601, at most 24 h ahead)",
    )
    flush.set_defaults(func=_run_flush)


def _run_flush(args: argparse.Namespace) -> int:
    from urllib.error import HTTPError, URLError

    if (args.close_hour or args.until) and not args.digest:
        print("opentrail flush: --close-hour and --until go with --digest", file=sys.stderr)
        return 2
    try:
        if args.digest:
            result = request_digest(args.endpoint_url, close_hour=args.close_hour, until=args.until)
            summary, digest = result["flush"], result["digest"]
            insights = request_insights(args.endpoint_url)["insights"] if args.insights else None
        elif args.insights:
            both = request_insights(args.endpoint_url)
            summary, digest, result, insights = both["flush"], None, {}, both["insights"]
        else:
            summary, digest, result, insights = request_flush(args.endpoint_url), None, {}, None
    except HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        print(f"opentrail flush: {args.endpoint_url}: HTTP {error.code}: {detail}", file=sys.stderr)
        return 1
    except (URLError, OSError, ValueError) as error:
        print(f"opentrail flush: {args.endpoint_url}: {error}", file=sys.stderr)
        return 1
    if args.json:
        document = result if args.digest else summary
        if insights is not None:
            document = {**(result if args.digest else {"flush": summary}), "insights": insights}
        print(json.dumps(document, indent=2))
    else:
        print(f"flushed: {describe_summary(summary)}")
        for item in summary.get("files") or []:
            print(f"  {item.get('key')}")
        if digest is not None:
            until = f" (windows closed until {result['until']})" if result.get("until") else ""
            print(f"digested{until}: {describe_digest(digest)}")
            for key in digest.get("written") or []:
                print(f"  {key}")
        if insights is not None:
            print(f"insights: {describe_insights(insights)}")
            for item in insights.get("files") or []:
                print(f"  {item.get('key')}")
    failed = bool(summary.get("failedBatches")) or bool(digest and digest.get("conflicts"))
    failed = failed or bool(insights and insights.get("errors"))
    return 1 if failed else 0
