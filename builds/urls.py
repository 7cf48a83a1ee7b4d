"""Routes of the build API (`/v1alpha1/builds/...`) and of the build page (`/view/builds/...`)."""

from __future__ import annotations

from django.urls import path

from builds import views
from builds.mirrors import views as mirror_views

urlpatterns = [
    path("v1alpha1/builds/<str:build_id>", views.BuildRecordView.as_view(), name="build-record"),
    path("v1alpha1/builds/<str:build_id>/status", views.BuildStatusView.as_view(), name="build-status"),
    path("v1alpha1/builds/<str:build_id>/logs", views.BuildLogView.as_view(), name="build-logs"),
    path("v1alpha1/builds/<str:build_id>/condalock", views.BuildCondaLockView.as_view(), name="build-conda-lock"),
    path("v1alpha1/mirrors/<str:mirror_id>", mirror_views.MirrorRecordView.as_view(), name="mirror-record"),
    path("v1alpha1/mirrors/<str:mirror_id>/logs", mirror_views.MirrorLogView.as_view(), name="mirror-logs"),
    path("view/mirrors/<path:mirror_id>", mirror_views.mirror_page, name="mirror-page"),
    # Anything under /view/builds/ is a page: an id that is no build (slashes included) gets the HTML 404 page.
    path("view/builds/<path:build_id>", views.build_page, name="build-page"),
]
