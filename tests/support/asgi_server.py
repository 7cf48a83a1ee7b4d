"""The ASGI application served by a real uvicorn in a thread of the test process, on the test database.

Tests that pull through it use `transactional_db`, so that what they store is committed and visible
to the server's threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import uvicorn

from tests.support.network import free_port, wait_until


@dataclass
class AsgiServer:
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_asgi_server() -> AsgiServer:
    from wave_site.asgi import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 200, timeout=20, what="uvicorn")
    return AsgiServer(server=server, thread=thread, port=port)
