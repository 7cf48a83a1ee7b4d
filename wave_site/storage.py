"""Settings of the blob store's S3 backend (`wave_site.s3`), built only when one is configured."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def s3_blob_storage(
    url: str, *, endpoint_url: str | None, region: str | None, url_ttl: int, **options: Any
) -> dict[str, Any]:
    """Storage settings for `s3://bucket[/prefix]`; `options` adds to them (tests pass keys).

    ValueError when the URL is not of that form (credentials never belong in it). boto3 is imported
    here, not at module level: it costs every process tens of MB, and most never use S3.
    """
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname or parts.username or parts.password or parts.port:
        raise ValueError("must be s3://bucket[/prefix], with credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not endpoint_url and not region:
        raise ValueError("needs WAVE_S3_REGION on AWS: presigned URLs are signed for the bucket's region")
    compatible = {}
    if endpoint_url:  # MinIO, Ceph and other S3-compatible stores refuse the newer checksum headers
        compatible = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
    return {
        "BACKEND": "wave_site.s3.BlobS3Storage",
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
                **compatible,
            ),
            # Multipart uploads of big layers: 8 MiB parts, two at a time, to keep memory low.
            "transfer_config": TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=2),
            **options,
        },
    }
