"""WSGI entry point, for hosts without an ASGI server (the registry proxy streams best under ASGI)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")

application = get_wsgi_application()
