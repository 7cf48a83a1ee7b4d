"""GET /service-info and /health on the whole service (Postgres + Redis), against a bare ASGI app.

The ratio shows what Django + DRF cost per request over uvicorn itself on this machine; later
benchmarks (container requests) print their own ratio to /service-info measured in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.load import wrk
from bench.service import running_service
from tests.support.network import free_port, wait_until

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"serviceInfo":{"version":"0.0.0","commitId":"bare"}}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def main(seconds: int = 10, connections: int = 32) -> None:
    with tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp, running_service(Path(tmp)) as service:
        ours = wrk(f"{service.url}/service-info", connections=connections, seconds=seconds)
        health = wrk(f"{service.url}/health", connections=8, seconds=seconds)

        (Path(tmp) / "bare_app.py").write_text(BARE_APP)
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--workers", "2",
             "--log-level", "warning", "--lifespan", "off"],
            cwd=tmp,
        )  # fmt: skip
        try:
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200, timeout=20, what="bare app")
            baseline = wrk(f"http://127.0.0.1:{port}/", connections=connections, seconds=seconds)
        finally:
            bare.terminate()
            bare.wait()

    print(f"\n{connections} connections, {seconds}s each, 2 uvicorn workers on both sides")
    print(ours.line("GET /service-info (Django+DRF)"))
    print(health.line("GET /health (8 conns)"))
    print(baseline.line("bare ASGI app (uvicorn only)"))
    print(f"ratio service-info / bare ASGI: {ours.requests_per_second / baseline.requests_per_second:.2f}")
