"""The ``opentrail`` command line.

    opentrail demo [--events N] [--hours H] [--seed S] [--export DIR] [--quiet]
    opentrail export --bucket B --dir D [--prefix P] [--endpoint-url URL] [--region R] [--ledger-table T]
    opentrail local [--port 4599] [--aws-port 4598] [--batch-interval S] [--state-dir DIR]
    opentrail flush [--endpoint-url http://127.0.0.1:4599]
    opentrail lookup-events [--endpoint-url URL | --stack NAME] [aws cloudtrail lookup-events flags]
    opentrail trails | trail-status [NAME ...] [--endpoint-url URL | --stack NAME] [--output table|json]
    opentrail usage --since DATE [--until DATE] [--endpoint-url URL | --stack NAME] [--ledger-table T]
    opentrail --version

Each subcommand is a ``_add_<name>(subparsers)`` that registers its parser and sets
``func`` to a ``_run_<name>(args) -> int``; add ``local``, ``lookup-events``,
``validate-logs``, ... the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from opentrail import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opentrail",
        description="OpenTrail: a self-hosted, CloudTrail-compatible audit trail.",
    )
    parser.add_argument("--version", action="version", version=f"opentrail {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subparsers)
    _add_export(subparsers)
    _add_public_keys(subparsers)
    _add_local(subparsers)
    _add_flush(subparsers)
    _add_lookup_events(subparsers)
    _add_validate_logs(subparsers)
    _add_insights(subparsers)
    _add_trails(subparsers)
    _add_usage(subparsers)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


# -- demo ---------------------------------------------------------------------------------


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.local.workload import DEFAULT_EVENTS, DEFAULT_HOURS, DEFAULT_SEED

    demo = subparsers.add_parser(
        "demo",
        help="run the whole pipeline in-process on embedded moto, in simulated time",
        description=(
            "Generate a realistic workload, send it through the real capture handlers (PutAuditEvents, "
            "EventBridge, producer.emit) and the batcher inside moto (no AWS account, no network), then "
            "report the CloudTrail log files delivered. Exit status 0 when every event was delivered exactly once."
        ),
    )
    demo.add_argument(
        "--events",
        type=_non_negative_int,
        default=DEFAULT_EVENTS,
        help=f"events to generate (default {DEFAULT_EVENTS})",
    )
    demo.add_argument(
        "--hours", type=_positive_float, default=DEFAULT_HOURS, help=f"simulated hours (default {DEFAULT_HOURS:g})"
    )
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"workload seed (default {DEFAULT_SEED})")
    demo.add_argument("--batch-every", type=_positive_int, default=5, metavar="MINUTES",
                      help="simulated minutes between batcher runs (default 5)")  # fmt: skip
    demo.add_argument(
        "--export", type=Path, metavar="DIR", help="copy the log bucket to DIR (key layout + .metadata.json)"
    )
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.add_argument("--no-integrity", action="store_true", help="skip digests, validation and the tamper demo")
    demo.add_argument("--no-insights", action="store_true", help="do not run the Insights function")
    demo.add_argument("--no-anomalies", action="store_true", help="do not inject the labelled anomalies")
    demo.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from opentrail.local.demo import DemoOptions, run_demo

    report = run_demo(
        DemoOptions(
            events=args.events,
            hours=args.hours,
            seed=args.seed,
            export=args.export,
            quiet=args.quiet,
            batch_every_minutes=args.batch_every,
            integrity=not args.no_integrity,
            insights=not args.no_insights,
            anomalies=not args.no_anomalies,
        )
    )
    return 0 if report.ok else 1


# -- export -------------------------------------------------------------------------------


def _add_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = subparsers.add_parser(
        "export",
        help="copy a log bucket (real S3 or any S3 endpoint) to a local directory",
        description=(
            "Download every object under --prefix to DIR/<key>, each with <key>.metadata.json in the shape "
            "`aws s3api head-object` prints. With --ledger-table, also the digest signing public keys "
            "(DIR/public-keys/<fingerprint>.pem) and the chain heads (DIR/chain-heads.json), so "
            "`opentrail validate-logs --dir DIR` works offline. Uses the standard AWS credential chain."
        ),
    )
    export.add_argument("--bucket", required=True)
    export.add_argument("--dir", required=True, type=Path, dest="directory", metavar="DIR")
    export.add_argument("--prefix", default="", help="only keys starting with this (e.g. AWSLogs/123456789012/)")
    export.add_argument(
        "--endpoint-url", help="S3 (and DynamoDB) endpoint, e.g. `opentrail local`'s AWS services http://127.0.0.1:4598"
    )
    export.add_argument(
        "--ledger-table",
        metavar="TABLE",
        help="the ledger table (stack output LedgerTableName; opentrail-ledger locally): export public keys and "
        "chain heads",
    )
    export.add_argument("--region", help="AWS region of the bucket (default: from the AWS configuration)")
    export.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from opentrail.local.export import export_trail

    client = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    dynamodb = boto3.client("dynamodb", endpoint_url=args.endpoint_url, region_name=args.region)
    try:
        result = export_trail(
            client, args.bucket, args.directory, prefix=args.prefix, dynamodb=dynamodb, ledger_table=args.ledger_table
        )
    except (BotoCoreError, ClientError, ValueError) as error:
        print(f"opentrail export: {error}", file=sys.stderr)
        return 1
    print(f"exported {result.describe()} from s3://{args.bucket}/{args.prefix} to {args.directory}")
    if result.digests and not args.ledger_table:
        print(
            "note: no public keys or chain heads exported (give --ledger-table); validate-logs --dir then needs "
            "--public-keys DIR",
            file=sys.stderr,
        )
    return 0


# -- local, flush, lookup-events (their parsers live next to their code) -----------------


def _add_local(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.local.server import add_local_parser

    add_local_parser(subparsers)


def _add_flush(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.local.server import add_flush_parser

    add_flush_parser(subparsers)


def _add_lookup_events(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.lookup_cli import add_parser

    add_parser(subparsers)


# -- public-keys --------------------------------------------------------------------------


def _add_public_keys(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.public_keys import add_parser

    add_parser(subparsers)


# -- validate-logs (parser next to its code) ----------------------------------------------


def _add_validate_logs(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.validate_logs import add_parser

    add_parser(subparsers)


# -- insights (offline mode; parser next to its code) ---------------------------------------


def _add_insights(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.insights_offline import add_parser

    add_parser(subparsers)


# -- trails, trail-status -------------------------------------------------------------------


def _add_trails(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.trails_cli import add_parser

    add_parser(subparsers)


def _add_usage(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from opentrail.usage_cli import add_parser

    add_parser(subparsers)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
