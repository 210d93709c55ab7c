"""Pure domain logic: no boto3, no environment reads, time injected by the caller."""
