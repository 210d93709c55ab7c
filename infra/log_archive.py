"""LogArchive: the project KMS key and the S3 bucket that holds CloudTrail log files."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import OpenTrailConfig
from infra.nag import acknowledge

_STORAGE_CLASSES = {
    "GLACIER_IR": s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
    "GLACIER": s3.StorageClass.GLACIER,
    "DEEP_ARCHIVE": s3.StorageClass.DEEP_ARCHIVE,
    "STANDARD_IA": s3.StorageClass.INFREQUENT_ACCESS,
    "INTELLIGENT_TIERING": s3.StorageClass.INTELLIGENT_TIERING,
}


class LogArchive(Construct):
    """Customer-managed key (rotated, retained) + versioned, SSE-KMS, TLS-only log bucket.

    The key also encrypts the buffer queues and the delivery ledger (the "project key").
    Server access logs go to a separate SSE-S3 bucket (S3 cannot deliver access logs to a
    bucket whose default encryption is SSE-KMS) unless ``accessLogging`` is false.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: OpenTrailConfig, home: bool = True) -> None:
        super().__init__(scope, construct_id)

        self.key = kms.Key(
            self,
            "Key",
            description="OpenTrail: log files, buffer queues and delivery ledger",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # A non-home region (docs/trails.md, "Multi-region") owns no bucket: its functions write
        # into the home region's bucket, encrypted with the home region's key (both from config).
        self.home = home
        self.bucket: s3.IBucket
        self.log_key: kms.IKey = self.key
        self.access_log_bucket: s3.Bucket | None = None
        if not home:
            assert config.home_log_bucket, "load_config requires it with regions"
            assert config.home_kms_key_arn, "load_config requires it with regions"
            self.bucket = s3.Bucket.from_bucket_attributes(
                self, "HomeLogBucket", bucket_name=config.home_log_bucket, region=config.home
            )
            self.log_key = kms.Key.from_key_arn(self, "HomeLogKey", config.home_kms_key_arn)
            return

        if config.access_logging:
            self.access_log_bucket = s3.Bucket(
                self,
                "AccessLogBucket",
                encryption=s3.BucketEncryption.S3_MANAGED,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=False,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="ExpireAccessLogs",
                        expiration=Duration.days(config.access_log_expiration_days),
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=RemovalPolicy.RETAIN,
            )

        self.bucket = s3.Bucket(
            self,
            "LogBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="log-bucket/" if self.access_log_bucket else None,
            lifecycle_rules=[self._lifecycle(config)],
            removal_policy=RemovalPolicy.RETAIN,
            object_lock_enabled=True if config.object_lock_mode else None,
            object_lock_default_retention=self._object_lock(config),
        )
        if not config.access_logging:
            acknowledge(
                self.bucket,
                {"AwsSolutions-S1": f"Disabled by configuration: {config.access_logging_disabled_reason}"},
            )

    @staticmethod
    def _object_lock(config: OpenTrailConfig) -> s3.ObjectLockRetention | None:
        """WORM for log files and digests (off by default; docs/integrity.md, "Object Lock")."""
        if config.object_lock_mode is None:
            return None
        days = Duration.days(config.object_lock_retention_days)
        if config.object_lock_mode == "COMPLIANCE":
            return s3.ObjectLockRetention.compliance(days)
        return s3.ObjectLockRetention.governance(days)

    @staticmethod
    def _lifecycle(config: OpenTrailConfig) -> s3.LifecycleRule:
        return s3.LifecycleRule(
            id="ArchiveLogFiles",
            transitions=[
                s3.Transition(
                    storage_class=_STORAGE_CLASSES[config.log_transition_storage_class],
                    transition_after=Duration.days(config.log_transition_days),
                )
            ],
            expiration=Duration.days(config.log_expiration_days) if config.log_expiration_days else None,
            noncurrent_version_expiration=Duration.days(config.noncurrent_version_expiration_days),
            abort_incomplete_multipart_upload_after=Duration.days(7),
        )
