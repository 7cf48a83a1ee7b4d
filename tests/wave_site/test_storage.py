from __future__ import annotations

import logging
import re
import threading

import pytest
from django.core.files.storage import storages

from tests.support.s3 import S3Bucket
from wave_site.s3 import BlobS3Storage
from wave_site.storage import s3_blob_storage


def test_s3_settings_from_a_bucket_url() -> None:
    options = s3_blob_storage("s3://my-bucket/wave/blobs", endpoint_url=None, region="eu-west-1", url_ttl=600)[
        "OPTIONS"
    ]
    assert (options["bucket_name"], options["location"], options["region_name"]) == (
        "my-bucket",
        "wave/blobs",
        "eu-west-1",
    )
    assert options["querystring_expire"] == 600
    assert options["client_config"].signature_version == "s3v4"
    assert options["client_config"].connect_timeout == 5


@pytest.mark.parametrize(
    ("url", "endpoint", "region", "message"),
    [
        ("s3://AKIAEXAMPLE:topsecret@bucket", None, "eu-west-1", "must be s3://bucket[/prefix]"),
        ("s3://bucket:9000/x", None, "eu-west-1", "must be s3://bucket[/prefix]"),
        ("s3://bucket/x", None, None, "needs WAVE_S3_REGION on AWS"),
    ],
)
def test_bad_bucket_urls_are_refused_without_echoing_them(url: str, endpoint: str | None, region: str | None,
                                                          message: str) -> None:  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        s3_blob_storage(url, endpoint_url=endpoint, region=region, url_ttl=600)
    assert "topsecret" not in str(error.value)


def test_s3_compatible_endpoints_get_only_required_checksums() -> None:
    config = s3_blob_storage("s3://b", endpoint_url="http://minio:9000", region=None, url_ttl=600)["OPTIONS"][
        "client_config"
    ]
    assert config.request_checksum_calculation == "when_required"
    assert config.s3["addressing_style"] == "path"


def test_one_boto3_session_per_process_and_a_resource_per_thread(s3_blob_store: S3Bucket) -> None:
    storage = storages["default"]
    assert isinstance(storage, BlobS3Storage)
    seen: list[tuple[object, object]] = []

    def use() -> None:
        seen.append((storage._create_session(), storage.connection))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(session) for session, _ in seen}) == 1
    assert len({id(resource) for _, resource in seen}) == 4


def test_aws_libraries_never_log_below_warning() -> None:
    # botocore logs request headers and credential responses at DEBUG
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
