from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from wave_site.views import HealthView, ServiceInfoView

urlpatterns = [
    path("service-info", ServiceInfoView.as_view(), name="service-info"),
    path("health", HealthView.as_view(), name="health"),
    path("openapi/", SpectacularAPIView.as_view(), name="openapi"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    path("admin/", admin.site.urls),
    path("", include("requests_app.urls")),
]

handler404 = "wave_site.errors.not_found_view"
handler500 = "wave_site.errors.server_error_view"
