"""Shared test set-up: no network, fake credentials, moto-backed resources."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check results, not speed: no per-example deadline (on a loaded CI machine a slow
# example would fail, and pass on Hypothesis' re-run, as "Flaky").
settings.register_profile("opentrail", deadline=None)
settings.load_profile("opentrail")

# Keep the caller's real AWS settings for the opt-in tests against a deployed stack
# (tests/e2e/test_deployed.py); everything else runs on moto with fake credentials.
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    if _name in os.environ:
        os.environ.setdefault(f"OPENTRAIL_E2E_{_name}", os.environ[_name])
if "AWS_REGION" in os.environ or "AWS_DEFAULT_REGION" in os.environ:
    os.environ.setdefault("OPENTRAIL_E2E_REGION", os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"])

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "OpenTrail",
        "POWERTOOLS_SERVICE_NAME": "opentrail",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_VALIDATION": "false",
    }
)
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(name, None)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def aws() -> Iterator[None]:
    """An embedded moto for one test; create clients inside it."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def resources(aws: None):  # type: ignore[no-untyped-def]
    """The stack's resources (bucket, key, queue + DLQ, ledger) in moto."""
    from opentrail.local.resources import provision

    return provision()


@pytest.fixture
def context():  # type: ignore[no-untyped-def]
    from opentrail.local.context import LocalContext

    return LocalContext()
