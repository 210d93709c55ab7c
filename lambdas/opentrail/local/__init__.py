"""The local runtime: OpenTrail's production handlers over embedded moto.

Never shipped in the Lambda asset (see infra); imports moto lazily.
"""
