"""An S3 server on 127.0.0.1 for the bucket-storage tests (moto's, in this process), and the URI
and environment a search needs to use it. moto[server] is in the test extra: without it the tests
fail (an ImportError naming it), never skip."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    """A running server; `bucket()` makes a fresh bucket and returns its storage URI."""

    def __init__(self) -> None:
        from moto import server as moto_server  # pip install -e '.[test]'

        self.port = _free_port()
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.query = f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"

    def uri(self, path: str) -> str:
        return f"s3://{path}?{self.query}"

    def bucket(self, prefix: str = "runs") -> str:
        import pyarrow.fs as pafs

        name = f"b{uuid.uuid4().hex[:12]}"
        fs, _ = pafs.FileSystem.from_uri(f"s3://{name}?{self.query}&allow_bucket_creation=true")
        fs.create_dir(name)
        return self.uri(f"{name}/{prefix}")

    def fs(self, uri: str):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(uri)

    def env(self, staging) -> dict[str, str]:
        """A search's environment: the credentials, and its own staging directory."""
        return {**os.environ, **CREDENTIALS, "EXITSEARCH_STAGING": str(staging)}

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def s3():
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = S3()
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
