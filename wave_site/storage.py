"""Storage backend settings for the blob store."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from botocore.config import Config


def s3_blob_storage(
    url: str, *, endpoint_url: str | None, region: str | None, url_ttl: int, **options: Any
) -> dict[str, Any]:
    """django-storages settings for `s3://bucket[/prefix]`; `options` adds to them (tests pass keys)."""
    parts = urlsplit(url)
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": parts.netloc,
            "location": parts.path.strip("/"),
            "endpoint_url": endpoint_url,
            "region_name": region,
            "file_overwrite": True,  # keys are content digests: the same key is the same bytes
            "querystring_auth": True,  # pulls are redirected to presigned URLs that expire
            "querystring_expire": url_ttl,
            # Explicit timeouts on every call to the store (botocore waits a minute to connect by default);
            # given a client config, django-storages takes the signature and addressing from it alone.
            "client_config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
            **options,
        },
    }
