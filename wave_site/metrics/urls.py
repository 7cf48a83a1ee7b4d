"""Routes of the operators' metrics."""

from __future__ import annotations

from django.urls import path

from wave_site.metrics import views

urlpatterns = [
    path("v1alpha2/metrics/builds", views.BuildMetricsView.as_view(), name="metrics-builds"),
    path("v1alpha2/metrics/pulls", views.PullMetricsView.as_view(), name="metrics-pulls"),
    path("v1alpha2/metrics/mirrors", views.MirrorMetricsView.as_view(), name="metrics-mirrors"),
    path("metrics", views.prometheus_metrics, name="prometheus-metrics"),
]
