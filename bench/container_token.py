"""POST /container-token throughput on Postgres + Redis, against GET /service-info on the same server.

The source image lives in the service's own local registry; after the first request the upstream
check is answered from the cache, so this measures validation, token allocation and the insert.
Target: >= 300 req/s on 2 cores.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx

from bench.load import interleaved
from bench.service import running_service
from tests.support.images import Builder
from tests.support.network import free_port

TARGET = 300


def main(seconds: int = 10, connections: int = 32, web_workers: int = 2) -> None:
    registry_port = free_port()
    builder = Builder()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
            running_service(
                Path(tmp), WAVE_REGISTRY_PORT=str(registry_port), WAVE_WEB_WORKERS=str(web_workers)
            ) as service,
        ):
            image = f"localhost:{registry_port}/library/busybox:latest"
            builder.push(builder.busybox_image(), image)
            body = json.dumps({"containerImage": image, "containerPlatform": "linux/amd64"})
            first = httpx.post(
                f"{service.url}/container-token", content=body, headers={"Content-Type": "application/json"}
            )
            assert first.status_code == 200, first.text

            script = Path(tmp) / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(body)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            medians = interleaved(
                {
                    "POST /container-token": {"url": f"{service.url}/container-token", "connections": connections,
                                              "seconds": seconds, "script": str(script)},
                    "GET /service-info": {"url": f"{service.url}/service-info", "connections": connections,
                                          "seconds": seconds},
                }
            )  # fmt: skip
            posts, info = medians["POST /container-token"], medians["GET /service-info"]
    finally:
        builder.cleanup()

    print(
        f"\n{connections} connections, {seconds}s each, {web_workers} uvicorn workers, Postgres + Redis (median of 3)"
    )
    print(posts.line("POST /container-token"))
    print(info.line("GET /service-info"))
    print(f"ratio container-token / service-info: {posts.requests_per_second / info.requests_per_second:.2f}")
    verdict = "meets" if posts.requests_per_second >= TARGET else "misses"
    print(f"target >= {TARGET} req/s: {verdict} ({posts.requests_per_second:.0f} req/s)")
