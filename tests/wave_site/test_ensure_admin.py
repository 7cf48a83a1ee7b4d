from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from pytest_django.fixtures import Settings

pytestmark = pytest.mark.django_db


def test_without_password_no_operator_is_created(settings: Settings) -> None:
    settings.WAVE_ADMIN_PASSWORD = None
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    assert get_user_model().objects.count() == 0
    assert "not set" in out.getvalue()


def test_operator_is_created_then_updated_and_can_log_in(settings: Settings, client: Client) -> None:
    settings.WAVE_ADMIN_USER = "ops"
    settings.WAVE_ADMIN_PASSWORD = "first-password"
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    user = get_user_model().objects.get(username="ops")
    assert (user.is_staff, user.is_superuser, user.is_active) == (True, True, True)
    assert "first-password" not in out.getvalue()

    settings.WAVE_ADMIN_PASSWORD = "second-password"
    call_command("ensure_admin", stdout=StringIO())
    assert get_user_model().objects.filter(username="ops").count() == 1
    assert not client.login(username="ops", password="first-password")
    assert client.login(username="ops", password="second-password")
    assert client.get("/admin/").status_code == 200
