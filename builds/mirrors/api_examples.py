"""Examples shown in the OpenAPI document for the mirror API."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from wave_site.api_examples import error_example

MIRROR_ID = "mr-5f1c0a9e7b3d2468_1"
_COMMON = {
    "mirrorId": MIRROR_ID,
    "sourceImage": "docker.io/library/busybox:1.36",
    "targetImage": "registry.example.org/mirror/library/busybox:1.36",
    "creationTime": "2026-11-27T10:00:00.000Z",
    "pageUri": f"https://wave.example.org/view/mirrors/{MIRROR_ID}",
}
RECORD_EXAMPLES = [
    OpenApiExample("queued", response_only=True, value={**_COMMON, "status": "PENDING", "state": "pending"}),
    OpenApiExample(
        "succeeded",
        response_only=True,
        value={
            **_COMMON,
            "digest": "sha256:" + "4" * 64,
            "status": "COMPLETED",
            "succeeded": True,
            "state": "succeeded",
            "startTime": "2026-11-27T10:00:01.250Z",
            "duration": "6.318000000",
            "finishTime": "2026-11-27T10:00:07.568Z",
        },
    ),
]
LOG_EXAMPLE = OpenApiExample(
    "log so far",
    response_only=True,
    media_type="text/plain",
    status_codes=["200"],
    value="Mirroring docker.io/library/busybox:1.36 (sha256:...) to registry.example.org/mirror/library/busybox:1.36\n",
)
NOT_FOUND_EXAMPLE = error_example("unknown mirror", 404, f"Unknown mirror id '{MIRROR_ID}'")
