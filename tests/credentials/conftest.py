from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_django.fixtures import Settings

from credentials.pairing import pairing_key_register
from credentials.sessions import tower_client
from tests.support.tower import TowerStandIn


@pytest.fixture
def tower(settings: Settings, db: None) -> Iterator[TowerStandIn]:
    """A Tower stand-in paired with this service (its public key registered, as `POST /pairing` does)."""
    tower_client.cache_clear()
    settings.WAVE_TOWER_RETRIES = 2
    with TowerStandIn() as stand_in:
        key = pairing_key_register(service="tower", endpoint=stand_in.url)
        stand_in.register_pairing(key.pairing_id, key.public_key)
        yield stand_in
    tower_client.cache_clear()
