from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from tests.conftest import PushedImage

Post = Callable[..., HttpResponse]


@pytest.fixture
def post(client: Client) -> Post:
    """POST a JSON body to the API: `post(body)` for v1, `post(body, v2=True)` for v2."""

    def send(body: dict[str, Any] | str, *, v2: bool = False) -> HttpResponse:
        path = "/v1alpha2/container" if v2 else "/container-token"
        data = body if isinstance(body, str) else json.dumps(body)
        return client.post(path, data=data, content_type="application/json", REMOTE_ADDR="192.0.2.10")

    return send


@pytest.fixture
def image(anonymous_image: PushedImage) -> str:
    """A source image that exists, in the anonymous registry fixture."""
    return anonymous_image.reference
