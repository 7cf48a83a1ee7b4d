"""Examples shown in the OpenAPI document for the container request API."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from wave_site.api_examples import SERVICE_ERROR_EXAMPLES, error_example

REQUEST_EXAMPLE = OpenApiExample(
    "augment an image",
    request_only=True,
    value={
        "containerImage": "ubuntu:22.04",
        "containerPlatform": "linux/amd64",
        "containerConfig": {
            "env": ["FOO=one"],
            "cmd": ["echo", "hello"],
            "workingDir": "/work",
            "layers": [
                {
                    "location": "https://example.org/layer.tar.gz",
                    "gzipDigest": "sha256:" + "1" * 64,
                    "gzipSize": 1024,
                    "tarDigest": "sha256:" + "2" * 64,
                }
            ],
        },
        "fingerprint": "c3b6f2",
        "timestamp": "2026-11-27T10:00:00Z",
    },
)
BUILD_REQUEST_EXAMPLE = OpenApiExample(
    "build a Containerfile",
    request_only=True,
    value={
        # FROM alpine:3.20 / RUN apk add --no-cache curl
        "containerFile": "RlJPTSBhbHBpbmU6My4yMApSVU4gYXBrIGFkZCAtLW5vLWNhY2hlIGN1cmwK",
        "containerPlatform": "linux/amd64",
    },
)
V1_RESPONSE_EXAMPLE = OpenApiExample(
    "token",
    response_only=True,
    value={
        "containerToken": "0c1f7a9b3e2d",
        "targetImage": "wave.example.org/wt/0c1f7a9b3e2d/library/ubuntu:22.04",
        "expiration": "2026-11-28T22:00:00.000Z",
        "containerImage": "docker.io/library/ubuntu:22.04",
    },
)

V2_RESPONSE_EXAMPLES = [
    OpenApiExample(
        "token (v2)",
        response_only=True,
        value={**V1_RESPONSE_EXAMPLE.value, "freeze": False, "succeeded": True},
    ),
    OpenApiExample(
        "build started (v2)",
        response_only=True,
        value={
            "containerToken": "5a0e7c2b9d14",
            "targetImage": "wave.example.org/wt/5a0e7c2b9d14/wave/build:7efaa2ed59c58a16",
            "expiration": "2026-11-28T22:00:00.000Z",
            "containerImage": "registry.example.org/wave/build:7efaa2ed59c58a16",
            "buildId": "bd-7efaa2ed59c58a16_1",
            "cached": False,
            "freeze": False,
            "detailsUri": "https://wave.example.org/view/builds/bd-7efaa2ed59c58a16_1",
        },
    ),
    OpenApiExample(
        "image already built (v2)",
        response_only=True,
        value={
            "containerToken": "81d3f0c6a2e5",
            "targetImage": "wave.example.org/wt/81d3f0c6a2e5/wave/build:7efaa2ed59c58a16",
            "expiration": "2026-11-28T22:00:00.000Z",
            "containerImage": "registry.example.org/wave/build:7efaa2ed59c58a16",
            "buildId": "bd-7efaa2ed59c58a16_1",
            "cached": True,
            "freeze": False,
            "succeeded": True,
            "detailsUri": "https://wave.example.org/view/builds/bd-7efaa2ed59c58a16_1",
        },
    ),
    OpenApiExample(
        "dry run (v2)",
        response_only=True,
        value={"containerImage": "docker.io/library/ubuntu:22.04", "freeze": False},
    ),
]


ERROR_EXAMPLES = [
    error_example(
        "image missing upstream",
        400,
        "Container image 'docker.io/library/ubuntu:nope' does not exist or access is not authorized",
    ),
    error_example(
        "platform missing upstream",
        400,
        "Container image 'docker.io/library/ubuntu:22.04' is not available for platform 'linux/arm/v7' "
        "- available platforms: linux/amd64, linux/arm64",
    ),
    error_example(
        "Tower endpoint not paired", 400, "Missing pairing record for Tower endpoint 'https://tower.example.org/api'"
    ),
    error_example("Tower workspace refused", 400, "Tower user 'alice' may not read the credentials of workspace 8"),
    error_example(
        "Tower token refused",
        401,
        "Tower access token refused by 'https://api.cloud.seqera.io' - sign in to Tower again",
    ),
    error_example("body too large", 413, "Request body exceeds the maximum allowed size of 33554432 bytes"),
    error_example("not JSON", 415, "Unsupported media type: send a JSON body with Content-Type: application/json"),
    error_example("rate limited", 429, "Request exceeded build rate limit of 10 per hour - retry in 1200 seconds"),
    error_example(
        "too many downloads",
        429,
        "Too many layer downloads in progress for this client (8 queued or running, this request needs 1 more, "
        "at most 8 at once) - retry in 30 seconds",
    ),
    error_example("registry down", 503, "Registry 'quay.io' is unreachable: ConnectTimeout"),
    error_example("Tower down", 503, "Tower at 'https://api.cloud.seqera.io' is unreachable: ConnectTimeout"),
    *SERVICE_ERROR_EXAMPLES,
]
NOT_FOUND_EXAMPLE = error_example("unknown token", 404, "Unknown container token '0c1f7a9b3e2d'")
RECORD_EXAMPLE = {
    "containerImage": "docker.io/library/ubuntu:22.04",
    "containerPlatform": "linux/amd64",
    "containerConfig": {
        "env": ["FOO=one"],
        "layers": [
            {
                # Shown without user info or signature-like query values.
                "location": "https://REDACTED@example.org/layer.tar.gz?X-Amz-Signature=REDACTED",
                "gzipDigest": "sha256:" + "1" * 64,
                "gzipSize": 1024,
                "tarDigest": "sha256:" + "2" * 64,
            }
        ],
    },
    "targetImage": "wave.example.org/wt/0c1f7a9b3e2d/library/ubuntu:22.04",
    "fingerprint": "c3b6f2",
    "towerEndpoint": "https://api.cloud.seqera.io",
    "creationTime": "2026-11-27T10:00:00.000Z",
}
DESCRIPTION_EXAMPLE = OpenApiExample(
    "description",
    response_only=True,
    value={
        "token": "0c1f7a9b3e2d",
        "expiration": "2026-11-28T22:00:00.000Z",
        "request": RECORD_EXAMPLE,
        "source": {"image": "docker.io/library/ubuntu:22.04", "digest": "sha256:" + "a" * 64},
        "wave": {"image": "wave.example.org/wt/0c1f7a9b3e2d/library/ubuntu:22.04", "digest": "sha256:" + "b" * 64},
    },
)
RECORD_V2_EXAMPLE = OpenApiExample(
    "record",
    response_only=True,
    value={
        "requestId": "0c1f7a9b3e2d",
        **RECORD_EXAMPLE,
        "expiration": "2026-11-28T22:00:00.000Z",
        "freeze": False,
        "sourceDigest": "sha256:" + "a" * 64,
    },
)
STATUS_EXAMPLES = [
    OpenApiExample(
        "pending",
        response_only=True,
        value={
            "id": "0c1f7a9b3e2d",
            "status": "PENDING",
            "creationTime": "2026-11-27T10:00:00.000Z",
            "duration": "1.204000000",
        },
    ),
    OpenApiExample(
        "done",
        response_only=True,
        value={
            "id": "0c1f7a9b3e2d",
            "status": "DONE",
            "succeeded": True,
            "creationTime": "2026-11-27T10:00:00.000Z",
            "duration": "3.518000000",
        },
    ),
    OpenApiExample(
        "failed layer",
        response_only=True,
        value={
            "id": "0c1f7a9b3e2d",
            "status": "DONE",
            "succeeded": False,
            "reason": "Layer 0 (sha256:1111...) failed: Download of https://example.org/layer.tar.gz answered HTTP 404",
            "creationTime": "2026-11-27T10:00:00.000Z",
            "duration": "0.412000000",
        },
    ),
]
