"""The extension example synthesizes with cdk-nag clean, using only OpenTrailStack's public methods."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aws_cdk import App
from cdk_nag import AwsSolutionsChecks

ROOT = Path(__file__).resolve().parents[2]


def test_example_app_synthesizes_nag_clean() -> None:
    import examples.app as example
    from tests.infra.conftest import cdk_context

    app = App(context=cdk_context())
    _trail, team = example.build(app, account="123456789012", region="us-east-1")
    report = AwsSolutionsChecks(app).validate_scope(app)
    findings = [f"{v.rule_name} {r.locations}" for v in report.violations for r in v.violating_resources]
    assert findings == []
    assert team.node.try_find_child("WebhookCapture") is not None


def test_example_does_not_edit_opentrail() -> None:
    # the example uses OpenTrailStack's public methods, not OpenTrail's internal constructs
    source = (ROOT / "examples" / "app.py").read_text()
    assert "infra.stack import OpenTrailStack" in source
    result = subprocess.run(["grep", "-rn", "import infra\\.\\(capture\\|buffer\\|function\\)", "examples"],
                            cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert result.stdout == ""
