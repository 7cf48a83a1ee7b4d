"""Create or update the operator account named by WAVE_ADMIN_USER when WAVE_ADMIN_PASSWORD is set."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or update the operator (staff, superuser) from WAVE_ADMIN_USER / WAVE_ADMIN_PASSWORD."

    def handle(self, *args: Any, **options: Any) -> None:
        password = settings.WAVE_ADMIN_PASSWORD
        if not password:
            self.stdout.write("WAVE_ADMIN_PASSWORD not set: no operator account created")
            return
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=settings.WAVE_ADMIN_USER)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        verb = "created" if created else "updated"
        self.stdout.write(f"operator {user.username!r} {verb}")
