"""cdk-nag 3.x wiring: the AwsSolutions pack and written acknowledgments (v3's suppressions)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, Stack, Token, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rules: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings on ``scope`` (and its children); every one needs a reason."""
    for rule_id, reason in rules.items():
        if not reason.strip():
            raise ValueError(f"{rule_id}: an acknowledgment needs a written reason")
    Validations.of(scope).acknowledge(*(Acknowledgment(id=rule_id, reason=reason) for rule_id, reason in rules.items()))


def arn_token(construct: IConstruct) -> str:
    """How cdk-nag prints the ARN of ``construct`` in a finding id: ``<LogicalId.Arn>``."""
    child = construct.node.default_child
    bucket_name = getattr(construct, "bucket_name", None)
    if child is None and bucket_name is not None:  # an imported bucket (a non-home region's home bucket)
        partition = Stack.of(construct).partition
        return f"arn:{'<AWS::Partition>' if Token.is_unresolved(partition) else partition}:s3:::{bucket_name}"
    assert child is not None, construct.node.path
    return f"<{Stack.of(construct).get_logical_id(child)}.Arn>"  # type: ignore[arg-type]


def acknowledge_kms_grants(scope: IConstruct) -> None:
    """The wildcard actions CDK's SQS/DynamoDB/KMS grants emit for a customer-managed key."""
    acknowledge(
        scope,
        {
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "CDK's queue/table/key grants use kms:GenerateDataKey* "
            "(GenerateDataKey and GenerateDataKeyWithoutPlaintext) on the single project key ARN, no other key.",
            "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "CDK's encrypt/decrypt grant uses kms:ReEncrypt* "
            "(ReEncryptFrom/ReEncryptTo) on the single project key ARN, no other key.",
        },
    )
