from __future__ import annotations

from django.urls import path, re_path

from requests_app import views
from requests_app.inspect import views as inspect_views
from requests_app.oci import views as oci_views

urlpatterns = [
    path("container-token", views.ContainerTokenV1View.as_view(), name="container-token"),
    path("container-token/<str:token>", views.ContainerTokenDetailView.as_view(), name="container-token-detail"),
    path("v1alpha2/container", views.ContainerTokenV2View.as_view(), name="container-v2"),
    path("v1alpha2/container/<str:token>", views.ContainerRecordV2View.as_view(), name="container-v2-record"),
    path("v1alpha2/container/<str:token>/status", views.ContainerStatusV2View.as_view(), name="container-v2-status"),
    path("v1alpha1/inspect", inspect_views.ContainerInspectView.as_view(), name="container-inspect"),
]

# The OCI registry proxy: image names contain slashes, so the name is everything before the last verb.
urlpatterns += [
    path("v2/", oci_views.v2_root, name="v2-root"),
    re_path(
        r"^v2/wt/(?P<token>[^/]+)/(?P<name>.+)/manifests/(?P<reference>[^/]+)$",
        oci_views.manifest,
        name="v2-manifest",
    ),
    re_path(r"^v2/wt/(?P<token>[^/]+)/(?P<name>.+)/blobs/(?P<digest>[^/]+)$", oci_views.blob, name="v2-blob"),
    re_path(r"^v2/wt/(?P<token>[^/]+)/(?P<name>.+)/tags/list$", oci_views.tags_list, name="v2-tags"),
    re_path(r"^v2/(?P<rest>.*)$", oci_views.v2_unknown, name="v2-unknown"),
]
