"""Routes of the build API (`/v1alpha1/builds/...`) and of the build page (`/view/builds/...`)."""

from __future__ import annotations

from django.urls import path

from builds import views

urlpatterns = [
    path("v1alpha1/builds/<str:build_id>", views.BuildRecordView.as_view(), name="build-record"),
    path("v1alpha1/builds/<str:build_id>/status", views.BuildStatusView.as_view(), name="build-status"),
    path("v1alpha1/builds/<str:build_id>/logs", views.BuildLogView.as_view(), name="build-logs"),
    # Anything under /view/builds/ is a page: an id that is no build (slashes included) gets the HTML 404 page.
    path("view/builds/<path:build_id>", views.build_page, name="build-page"),
]
