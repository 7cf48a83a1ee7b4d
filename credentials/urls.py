from __future__ import annotations

from django.urls import path

from credentials import views

urlpatterns = [
    path("validate-creds", views.ValidateCredsView.as_view(), name="validate-creds"),
    path("v1alpha2/validate-creds", views.ValidateCredsV2View.as_view(), name="validate-creds-v2"),
    path("pairing", views.PairingView.as_view(), name="pairing"),
]
