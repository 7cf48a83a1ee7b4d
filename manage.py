#!/usr/bin/env python
"""Django's command-line utility: configuration errors reported as one line, the data dir prepared private."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from wave_site.datadir import data_dir_prepare, private_umask

    private_umask()  # the data dir's files are the service's alone, in this process and those it starts
    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads and validates the settings now
        data_dir_prepare(settings.DATA_DIR, embedded_broker=settings.CELERY_BROKER_URL == "filesystem://")
    except ImproperlyConfigured as exc:
        print(f"wave: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
