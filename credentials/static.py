"""The service's own registry credentials: `WAVE_REGISTRY_CREDENTIALS`, a JSON file by registry host.

`{"<host[:port]>": {"username": "...", "password": "..."}}`. Read once per change of the file; the
passwords stay in memory only and are never logged.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from registry.client import Credentials
from wave_site.config import registry_credentials_file

_lock = threading.Lock()
_loaded: tuple[str, float, dict[str, Credentials]] | None = None


def _parse(path: Path) -> dict[str, Credentials]:
    entries = registry_credentials_file(str(path))
    return {host: Credentials(username=username, password=password) for host, (username, password) in entries.items()}


def static_credentials(registry: str) -> Credentials | None:
    """The configured credentials for a registry host (`docker.io` also answers to `index.docker.io`)."""
    global _loaded
    path_name = settings.WAVE_REGISTRY_CREDENTIALS
    if not path_name:
        return None
    path = Path(path_name)
    mtime = path.stat().st_mtime if path.exists() else 0.0
    with _lock:
        if _loaded is None or _loaded[0] != path_name or _loaded[1] != mtime:
            _loaded = (path_name, mtime, _parse(path))
        table = _loaded[2]
    registry = registry.lower()
    found = table.get(registry)
    if found is None and registry == "docker.io":
        found = table.get("index.docker.io") or table.get("registry-1.docker.io")
    return found
