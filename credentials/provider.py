"""Which credentials pull from (and, for builds, push to) a registry on a caller's behalf.

- A caller with a Tower session: their own credentials from Tower, per registry host; on the registries of the
  service's build and cache repositories, the service's own when Tower has none for that host. (What the
  service pulls from or pushes to its own repositories, built images, is asked with the service's credentials
  alone: `credentials_lookup(None)`.)
- Anyone else: the service's own credentials for that host (an admin `RegistryCredential` entry, else the
  `WAVE_REGISTRY_CREDENTIALS` file), else anonymous.

`credentials_lookup(tower)` gives the function a `RegistryClient` asks (`for_credentials`); it remembers its
answers for its own lifetime (one pull, one request), so one pull asks Tower's cache once per registry.
"""

from __future__ import annotations

import threading
import time

from credentials.lookups import registry_host, tower_registry_credentials
from credentials.models import RegistryCredential
from credentials.policy import own_registries
from credentials.sessions import TowerContext
from credentials.static import static_credentials
from registry.client import Credentials, CredentialsLookup

ADMIN_ENTRIES_TTL = 5.0  # seconds: an operator's change in the admin applies within this on every process

_lock = threading.Lock()
_admin_entries: tuple[float, dict[str, Credentials]] | None = None


def _admin_credentials() -> dict[str, Credentials]:
    """The enabled admin entries by host, read at most every ADMIN_ENTRIES_TTL seconds per process."""
    global _admin_entries
    now = time.monotonic()
    with _lock:
        if _admin_entries is not None and now - _admin_entries[0] < ADMIN_ENTRIES_TTL:
            return _admin_entries[1]
    table = {
        registry_host(row.registry): Credentials(username=row.username, password=row.password)
        for row in RegistryCredential.objects.filter(is_enabled=True)
    }
    with _lock:
        _admin_entries = (now, table)
    return table


def admin_credentials_forget() -> None:
    """Read the admin entries again at the next lookup (this process)."""
    global _admin_entries
    with _lock:
        _admin_entries = None


def service_credentials(registry: str) -> Credentials | None:
    """The service's own credentials for a registry host: an admin entry, else the credentials file."""
    return _admin_credentials().get(registry_host(registry)) or static_credentials(registry)


def is_own_registry(registry: str) -> bool:
    return registry.lower() in own_registries()


def credentials_lookup(tower: TowerContext | None) -> CredentialsLookup:
    """The credentials for each registry, by the precedence above, remembered for this lookup's lifetime."""
    if tower is None:
        return service_credentials
    answers: dict[str, Credentials | None] = {}

    def lookup(registry: str) -> Credentials | None:
        if registry not in answers:
            found = tower_registry_credentials(context=tower, registry=registry)
            if found is None and is_own_registry(registry):
                found = service_credentials(registry)
            answers[registry] = found
        return answers[registry]

    return lookup
