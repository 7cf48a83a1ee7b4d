"""Inspect an image: `POST /v1alpha1/inspect` (services, serializers, view)."""
