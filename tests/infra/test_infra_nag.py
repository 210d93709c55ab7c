"""cdk-nag (3.x, AwsSolutions) finds nothing that is not acknowledged with a written reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cdk_nag import AwsSolutionsChecks

ROOT = Path(__file__).resolve().parents[2]


def _findings(synth: Any) -> list[str]:
    # validate_scope is cdk-nag 3's direct entry point: the same checks the Validations
    # plugin runs at synth, returned as a report instead of failing the synth.
    report = AwsSolutionsChecks(synth.app).validate_scope(synth.app)
    return [
        f"{violation.rule_name} at {resource.locations}: {violation.description}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


def test_nag_default_configuration_has_no_unacknowledged_findings(default_synth: Any) -> None:
    assert _findings(default_synth) == []


def test_nag_variant_configuration_has_no_unacknowledged_findings(variant_synth: Any) -> None:
    assert _findings(variant_synth) == []


@pytest.mark.slow
def test_nag_app_synth_with_plugin_succeeds(tmp_path: Path) -> None:
    # given the real app.py (context from cdk.json through the CLI's CDK_CONTEXT_JSON) and
    # the AwsSolutions plugin registered / when synthesized / then it exits 0 (a finding fails it)
    import json

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "CDK_CONTEXT_JSON": json.dumps(context)}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "OpenTrail.template.json").exists()
