"""Fixtures of the search tests."""

from tests.s3_server import s3  # noqa: F401  (an S3 server on 127.0.0.1, for the bucket-storage tests)
