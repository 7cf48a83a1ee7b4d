"""An S3-compatible server for blob-store tests: moto's server mode, on a free loopback port.

S3 is a remote service we cannot run here; moto speaks its HTTP protocol (signed requests, presigned
URLs, multipart uploads), which is all django-storages and the pulling clients use.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.network import free_port
from wave_site.storage import s3_blob_storage

ACCESS_KEY = "wave-test-key"
SECRET_KEY = "wave-test-secret"
REGION = "us-east-1"


@dataclass
class S3Bucket:
    endpoint: str
    name: str
    prefix: str
    client: Any

    def storage_settings(self) -> dict[str, Any]:
        return s3_blob_storage(
            f"s3://{self.name}/{self.prefix}", endpoint_url=self.endpoint, region=REGION, url_ttl=300,
            access_key=ACCESS_KEY, secret_key=SECRET_KEY,
        )  # fmt: skip

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")["Body"].read()


@contextmanager
def s3_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str) -> S3Bucket:
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    name = f"wave-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return S3Bucket(endpoint=endpoint, name=name, prefix="wave", client=client)
