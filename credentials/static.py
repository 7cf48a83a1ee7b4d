"""The service's own registry credentials: `WAVE_REGISTRY_CREDENTIALS`, a JSON file by registry host.

`{"<host[:port]>": {"username": "...", "password": "..."}}`. Read once per change of the file; the
passwords stay in memory only and are never logged.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from registry.client import Credentials

_lock = threading.Lock()
_loaded: tuple[str, float, dict[str, Credentials]] | None = None


def _parse(path: Path) -> dict[str, Credentials]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImproperlyConfigured(f"WAVE_REGISTRY_CREDENTIALS: cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ImproperlyConfigured("WAVE_REGISTRY_CREDENTIALS: the file must hold a JSON object keyed by host")
    result = {}
    for host, entry in data.items():
        if not isinstance(entry, dict) or not entry.get("username") or not entry.get("password"):
            raise ImproperlyConfigured(f"WAVE_REGISTRY_CREDENTIALS: entry {host!r} needs a username and a password")
        result[host.lower()] = Credentials(username=str(entry["username"]), password=str(entry["password"]))
    return result


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
