"""OpenTrail's CDK app: typed configuration, one construct per concern, the stack.

Runtime code lives in ``lambdas/`` and never imports ``aws_cdk``; the infrastructure imports the
runtime's settings models (the environment-variable contract), so ``lambdas`` must be importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = PROJECT_ROOT / "lambdas"

if str(LAMBDAS_DIR) not in sys.path:
    sys.path.insert(0, str(LAMBDAS_DIR))
