"""Examples shown in the OpenAPI document for the build API: a build queued, running, succeeded and failed; a
Conda lock."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from wave_site.api_examples import error_example

BUILD_ID = "bd-7efaa2ed59c58a16_1"
CONTAINER_FILE = "FROM docker.io/library/busybox:1.36\nRUN echo hello > /hello.txt\n"
PAGE_URI = f"https://wave.example.org/view/builds/{BUILD_ID}"
_COMMON = {
    "buildId": BUILD_ID,
    "dockerFile": CONTAINER_FILE,
    "targetImage": "registry.example.org/wave/build:7efaa2ed59c58a16",
    "platform": "linux/amd64",
    "creationTime": "2026-11-27T10:00:00.000Z",
    "pageUri": PAGE_URI,
}
_STARTED = {"startTime": "2026-11-27T10:00:01.250Z"}
_SUCCEEDED = {
    **_STARTED,
    "duration": "42.318000000",
    "exitStatus": 0,
    "digest": "sha256:" + "3" * 64,
    "status": "COMPLETED",
    "succeeded": True,
    "state": "succeeded",
    "finishTime": "2026-11-27T10:00:43.568Z",
}
_FAILED = {
    **_STARTED,
    "duration": "3.104000000",
    "exitStatus": 1,
    "status": "COMPLETED",
    "succeeded": False,
    "state": "failed",
    "reason": "Build failed: RUN echo hello > /hello.txt exited with status 1",
    "finishTime": "2026-11-27T10:00:04.354Z",
}

RECORD_EXAMPLES = [
    OpenApiExample("queued", response_only=True, value={**_COMMON, "status": "PENDING", "state": "pending"}),
    OpenApiExample(
        "running",
        response_only=True,
        value={**_COMMON, **_STARTED, "duration": "12.004000000", "status": "PENDING", "state": "running"},
    ),
    OpenApiExample("succeeded", response_only=True, value={**_COMMON, **_SUCCEEDED}),
    OpenApiExample("failed", response_only=True, value={**_COMMON, **_FAILED}),
]

STATUS_EXAMPLES = [
    OpenApiExample("queued", response_only=True, value={"id": BUILD_ID, "status": "PENDING"}),
    OpenApiExample(
        "running",
        response_only=True,
        value={"id": BUILD_ID, "status": "PENDING", **_STARTED, "duration": "12.004000000"},
    ),
    OpenApiExample(
        "succeeded",
        response_only=True,
        value={"id": BUILD_ID, "status": "COMPLETED", **_STARTED, "duration": "42.318000000", "succeeded": True},
    ),
    OpenApiExample(
        "failed",
        response_only=True,
        value={"id": BUILD_ID, "status": "COMPLETED", **_STARTED, "duration": "3.104000000", "succeeded": False},
    ),
]

LOG_EXAMPLE = OpenApiExample(
    "log so far",
    response_only=True,
    media_type="text/plain",
    status_codes=["200"],
    value="STEP 1/2: FROM docker.io/library/busybox:1.36\nSTEP 2/2: RUN echo hello > /hello.txt\n",
)

NOT_FOUND_EXAMPLE = error_example("unknown build", 404, f"Unknown build id '{BUILD_ID}'")

CONDA_LOCK_EXAMPLE = OpenApiExample(
    "conda lock",
    response_only=True,
    media_type="text/plain",
    status_codes=["200"],
    value="# This file may be used to create an environment using:\n"
    "# $ conda create --name <env> --file <this file>\n"
    "# platform: linux-64\n"
    "@EXPLICIT\n"
    "https://conda.anaconda.org/conda-forge/linux-64/_libgcc_mutex-0.1-conda_forge.tar.bz2#d7c89558ba9fa0495403155b64376d81\n"
    "https://conda.anaconda.org/bioconda/linux-64/samtools-1.17-h00cdaf9_0.tar.bz2#3d5d2b6e0e2ff6b4b0d0ae3e4c39fb57\n",
)
NO_CONDA_LOCK_EXAMPLE = error_example("no conda lock", 404, f"No Conda lock for build '{BUILD_ID}'")
