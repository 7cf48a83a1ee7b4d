from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from wave_site.views import HealthView, ServiceInfoView, favicon, home

urlpatterns = [
    path("", home, name="home"),
    path("favicon.ico", favicon, name="favicon"),
    path("service-info", ServiceInfoView.as_view(), name="service-info"),
    path("health", HealthView.as_view(), name="health"),
    path("openapi/", SpectacularAPIView.as_view(), name="openapi"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    # APPEND_SLASH is off (the API's paths have no trailing slash); the pages people type get a redirect.
    path("docs", RedirectView.as_view(pattern_name="docs", permanent=True)),
    path("redoc", RedirectView.as_view(pattern_name="redoc", permanent=True)),
    path("openapi", RedirectView.as_view(pattern_name="openapi", permanent=True, query_string=True)),
    path("admin", RedirectView.as_view(url="/admin/", permanent=True)),
    path("admin/", admin.site.urls),
    path("", include("credentials.urls")),
    path("", include("requests_app.urls")),
    path("", include("builds.urls")),
    path("", include("wave_site.metrics.urls")),
]

handler404 = "wave_site.errors.not_found_view"
handler500 = "wave_site.errors.server_error_view"
