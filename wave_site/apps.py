from __future__ import annotations

from django.apps import AppConfig


class WaveSiteConfig(AppConfig):
    name = "wave_site"
    verbose_name = "Wave"

    def ready(self) -> None:
        from django.contrib import admin

        from wave_site import __version__

        admin.site.site_header = "Wave operations"
        admin.site.site_title = "Wave admin"
        admin.site.index_title = f"Container provisioning service {__version__}"
        # A handful of models: the index lists them, and lists get the width (1400 px screens).
        admin.site.enable_nav_sidebar = False
