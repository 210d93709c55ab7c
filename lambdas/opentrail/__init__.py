"""OpenTrail: a self-hosted, CloudTrail-compatible audit trail.

The Lambda asset is this package. `domain` is pure Python (no AWS calls), `adapters` wrap
boto3, `handlers` are the thin Lambda entry points, `settings` is the environment contract.
"""

__version__ = "0.1.0"
