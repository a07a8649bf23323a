"""A real S3-compatible server (moto's server mode) on 127.0.0.1, for the remote-read tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def moto_s3(bucket: str) -> Iterator[tuple[dict[str, str], Any]]:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 with one empty bucket.

    Yields the storage options for ``s3://`` reads and a boto3 client to fill the bucket.
    Dummy credentials are set in the environment for the duration; nothing leaves the machine.
    """
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}, client
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
