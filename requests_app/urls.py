from __future__ import annotations

from django.urls import path

from requests_app import views

urlpatterns = [
    path("container-token", views.ContainerTokenV1View.as_view(), name="container-token"),
    path("container-token/<str:token>", views.ContainerTokenDetailView.as_view(), name="container-token-detail"),
    path("v1alpha2/container", views.ContainerTokenV2View.as_view(), name="container-v2"),
    path("v1alpha2/container/<str:token>", views.ContainerRecordV2View.as_view(), name="container-v2-record"),
    path("v1alpha2/container/<str:token>/status", views.ContainerStatusV2View.as_view(), name="container-v2-status"),
]
