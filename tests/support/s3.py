"""A real S3 HTTP endpoint on loopback: moto's standalone server, in a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rowforge-test", "AWS_SECRET_ACCESS_KEY": "rowforge-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Endpoint:
    """A running moto server; :meth:`bucket` makes a fresh bucket on it."""

    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def bucket(self) -> str:
        name = f"rf-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def server_env(self, bucket: str, prefix: str = "rf/", **extra: str) -> dict[str, str]:
        """The environment of a rowforge server storing its files in ``bucket``."""
        return {**CREDENTIALS, "ROWFORGE_FILES_BACKEND": "s3", "ROWFORGE_FILES_BUCKET": bucket,
                "ROWFORGE_FILES_PREFIX": prefix, "ROWFORGE_FILES_ENDPOINT_URL": self.url,
                **extra}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def multipart_uploads(self, bucket: str) -> list[str]:
        reply = self.client().list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in reply.get("Uploads", [])]


@contextlib.contextmanager
def moto_server() -> Iterator[S3Endpoint]:
    """Start ``moto.server`` on a free loopback port; stop it after."""
    for _attempt in range(5):
        port = _free_port()
        env = {**os.environ, **CREDENTIALS}
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                    "-p", str(port)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            break
    else:
        raise RuntimeError("moto server did not start")
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
