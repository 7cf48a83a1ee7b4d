from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_registry import FakeRegistry


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    """A registry serving the (hostile) documents a test puts in it; it records every request."""
    registry = FakeRegistry().start()
    yield registry
    registry.stop()
