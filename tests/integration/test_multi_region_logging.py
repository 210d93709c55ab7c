"""StartLogging/StopLogging across regions over moto (docs/trails.md, "Multi-region").

As in CloudTrail, a multi-region trail's logging state is set in its home region and holds in
every region: a non-home region's functions read it from the home region's ledger
(``HOME_LEDGER_TABLE``), and its query API refuses StartLogging/StopLogging with
InvalidHomeRegionException. The two regions are those of tests/integration/test_multi_region.py;
each region's query API is served over HTTP to the stock boto3 ``cloudtrail`` client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from opentrail.settings import QuerySettings
from tests.integration.test_batcher import record
from tests.integration.test_multi_region import HOME, OTHER, Region, deploy, log_folder
from tests.integration.test_trail_api import serve

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

STOPPED_AT = datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
T1 = datetime(2026, 11, 23, 10, 15, 42, tzinfo=UTC)
T2 = datetime(2026, 11, 23, 10, 30, 7, tzinfo=UTC)


@contextmanager
def query_api(region: Region) -> Iterator[Any]:
    """The region's query API (its settings as the stack gives them) for a boto3 client."""
    settings = region.batcher
    query = QuerySettings(
        history_table=settings.history_table,
        ledger_table=settings.ledger_table,
        trails=settings.trails,
        log_bucket=settings.log_bucket,
        log_kms_key_arn=settings.log_kms_key_arn,
        home_region=settings.home_region,
        home_ledger_table=settings.home_ledger_table,
    )
    served = serve(query, region=region.name, dynamodb=region.client("dynamodb"))
    try:
        yield next(served)
    finally:
        served.close()


def log_files(trail: str, region: str) -> list[str]:
    s3 = boto3.client("s3", region_name=HOME)
    bucket = s3.list_buckets()["Buckets"][0]["Name"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=log_folder(trail, region))
    return [item["Key"] for item in listed.get("Contents", [])]


def test_stop_logging_in_the_home_region_holds_in_every_region(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        regions = deploy()
        home, other = regions[HOME], regions[OTHER]
        with query_api(home) as home_api, query_api(other) as other_api:
            # given the writes trail stopped in its home region
            monkeypatch.setattr("tests.integration.test_trail_api.Api.clock", lambda: STOPPED_AT)
            reply = home_api.stop_logging(Name="writes")
            assert {k: v for k, v in reply.items() if k != "ResponseMetadata"} == {}

            # then the other region reports it stopped, and refuses to change it
            status = other_api.get_trail_status(Name="writes")
            assert status["IsLogging"] is False
            assert status["StopLoggingTime"] == STOPPED_AT
            assert other_api.get_trail_status(Name="everything")["IsLogging"] is True
            for call in (other_api.start_logging, other_api.stop_logging):
                with pytest.raises(other_api.exceptions.InvalidHomeRegionException) as refused:
                    call(Name="writes")
                assert "home region us-east-1" in str(refused.value)

            # and the other region's batcher skips the stopped trail
            other.send([record(account="123456789012", region=OTHER)])
            other.run_batcher(T1)
            assert log_files("writes", OTHER) == []
            assert len(log_files("everything", OTHER)) == 1

            # once logging starts again in the home region, the other region delivers again
            home_api.start_logging(Name="writes")
            assert other_api.get_trail_status(Name="writes")["IsLogging"] is True
            other.send([record(account="123456789012", region=OTHER, eventTime="2026-11-23T10:29:00Z")])
            other.run_batcher(T2)
            assert len(log_files("writes", OTHER)) == 1
            # the other region's delivery status stays its own
            assert other_api.get_trail_status(Name="writes")["LatestDeliveryTime"] == T2
            assert "LatestDeliveryTime" not in home_api.get_trail_status(Name="writes")
