"""Examples shown in the OpenAPI document for `POST /v1alpha1/inspect`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from wave_site.api_examples import SERVICE_ERROR_EXAMPLES, error_example

_DIGEST = "sha256:" + "a" * 64
RESPONSE_EXAMPLE = OpenApiExample(
    "an index",
    response_only=True,
    status_codes=["200"],
    value={
        "container": {
            "registry": "docker.io",
            "imageName": "library/busybox",
            "reference": "1.36",
            "digest": _DIGEST,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "platforms": [
                {
                    "digest": "sha256:" + "b" * 64,
                    "size": 610,
                    "os": "linux",
                    "architecture": "amd64",
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                },
                {
                    "digest": "sha256:" + "c" * 64,
                    "size": 610,
                    "os": "linux",
                    "architecture": "arm64",
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                },
            ],
            "manifest": {
                "digest": "sha256:" + "b" * 64,
                "size": 610,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "os": "linux",
                "architecture": "amd64",
                "config": {
                    "digest": "sha256:" + "d" * 64,
                    "size": 1457,
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                },
                "layers": [
                    {
                        "digest": "sha256:" + "e" * 64,
                        "size": 2152262,
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    }
                ],
            },
            "config": {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-09-26T21:31:42Z",
                "cmd": ["sh"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "diffIds": ["sha256:" + "f" * 64],
            },
        }
    },
)
REQUEST_EXAMPLE = OpenApiExample(
    "inspect an image", request_only=True, value={"containerImage": "docker.io/library/busybox:1.36"}
)
ERROR_EXAMPLES = [
    error_example(
        "not readable", 400, "Container image 'example.org/private/app:1' does not exist or access is not authorized"
    ),
    error_example(
        "platform not offered",
        400,
        "Container image 'busybox:1.36' is not available for platform 'linux/arm/v7' - available platforms: "
        "linux/amd64, linux/arm64",
    ),
    error_example("registry down", 503, "Registry 'example.org' is unreachable: ConnectError"),
    *SERVICE_ERROR_EXAMPLES,
]
