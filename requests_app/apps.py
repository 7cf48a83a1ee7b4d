from __future__ import annotations

from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Container requests"

    def ready(self) -> None:
        # Builds wait for their build context, a layer download: tell them why one failed (builds.services).
        from builds.services import context_failure_sources
        from requests_app.selectors import layer_download_failure

        if layer_download_failure not in context_failure_sources:
            context_failure_sources.append(layer_download_failure)
