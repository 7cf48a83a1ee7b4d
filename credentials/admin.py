"""Operators' view of credentials: pairing keys, Tower sessions and lookups (read-only records the service
writes), and the service's own registry logins (added and changed here).

No page shows a secret: not the pairing keys (public or private), not Tower tokens, not a registry password
or its sealed form. A registry password is write-only: typed in, sealed, never rendered back.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from credentials.lookups import DOCKER_HUB, DOCKER_HUB_ALIASES
from credentials.models import CredentialLookup, PairingKey, RegistryCredential, TowerAuth
from credentials.provider import admin_credentials_forget
from wave_site.admin import BoundedAdmin, ReadOnlyAdmin, short_time, truncated

HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
REGISTRY_FORMAT = "Enter the registry as host[:port], such as quay.io or registry.example.org:5000"


@admin.register(PairingKey)
class PairingKeyAdmin(ReadOnlyAdmin):
    """The key pairs handed to Tower endpoints: when each was made, handed out until, and kept until."""

    list_display = ("pairing_id", "service", "endpoint_shown", "created", "lease_ends", "retired")
    list_filter = ("service",)
    search_fields = ("endpoint",)
    date_hierarchy = "created_at"
    fields = readonly_fields = ("pairing_id", "service", "endpoint", "created_at", "lease_ends_at", "retired_at")
    list_per_page = 50

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_shown(self, obj: PairingKey) -> SafeString:
        return truncated(obj.endpoint)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: PairingKey) -> str:
        return short_time(obj.created_at)

    @admin.display(description="lease ends", ordering="lease_ends_at")
    def lease_ends(self, obj: PairingKey) -> str:
        return short_time(obj.lease_ends_at)

    @admin.display(description="retired at", ordering="retired_at")
    def retired(self, obj: PairingKey) -> str:
        return short_time(obj.retired_at)


@admin.register(TowerAuth)
class TowerAuthAdmin(ReadOnlyAdmin):
    """Tower sessions: who, where, and how often their tokens were refreshed; never the tokens."""

    list_display = ("who", "user_id", "endpoint_shown", "created_at", "refreshed_at", "refreshes")
    search_fields = ("user_name", "endpoint")
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "user_name", "user_id", "endpoint", "created_at", "refreshed_at", "refreshes",
    )  # fmt: skip
    list_per_page = 50

    @admin.display(description="user name", ordering="user_name")
    def who(self, obj: TowerAuth) -> str:
        return obj.user_name or "(not identified yet)"

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_shown(self, obj: TowerAuth) -> SafeString:
        return truncated(obj.endpoint)


@admin.register(CredentialLookup)
class CredentialLookupAdmin(ReadOnlyAdmin):
    """Each lookup of a caller's registry credentials in Tower, with its outcome; no secrets are recorded."""

    list_display = ("created_at", "registry", "user_name", "workspace_id", "outcome", "credentials_id", "duration_ms")
    list_filter = ("outcome",)
    search_fields = ("registry", "user_name")
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "created_at", "outcome", "registry", "user_name", "user_id", "endpoint", "workspace_id", "credentials_id",
        "error", "duration_ms",
    )  # fmt: skip
    list_per_page = 50


def registry_normalised(value: str) -> str:
    """`host[:port]` in lower case, Docker Hub's aliases as `docker.io`; ValidationError for anything else."""
    registry = value.strip().lower()
    if "://" in registry:
        raise forms.ValidationError(f"{REGISTRY_FORMAT} - without a scheme (https://).")
    if "/" in registry:
        raise forms.ValidationError(f"{REGISTRY_FORMAT} - without a path.")
    if "@" in registry:
        raise forms.ValidationError(f"{REGISTRY_FORMAT} - without user info.")
    host, port = _split_authority(registry)
    if not _is_host(host) or (port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536)):
        raise forms.ValidationError(f"{REGISTRY_FORMAT}.")
    if port is None and host in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return registry


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port or None); IPv6 hosts keep their brackets. A host of "" when nothing sensible is left."""
    if authority.startswith("["):
        host, bracket, rest = authority.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None
        return host + "]", (rest[1:] if rest else None)
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    return len(host) <= 253 and HOST_NAME.fullmatch(host) is not None


class RegistryCredentialForm(forms.ModelForm):
    """The registry normalised; the password write-only: never rendered, required when adding, kept when left
    empty on change, sealed when saved."""

    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = RegistryCredential
        fields = ("registry", "username", "description", "is_enabled")
        widgets = {"username": forms.TextInput(attrs={"autocomplete": "off"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        is_adding = self.instance._state.adding
        self.fields["password"].required = is_adding
        self.fields["password"].help_text = (
            "Write-only: stored encrypted and never shown."
            if is_adding
            else "Write-only: never shown. Leave empty to keep the stored password; type a new one to replace it."
        )

    def clean_registry(self) -> str:
        return registry_normalised(self.cleaned_data["registry"])

    def save(self, commit: bool = True) -> RegistryCredential:
        password = self.cleaned_data.get("password")
        if password:
            self.instance.set_password(password)
        saved: RegistryCredential = super().save(commit)
        return saved


@admin.register(RegistryCredential)
class RegistryCredentialAdmin(BoundedAdmin):
    """The service's own registry logins; a change applies to every process within a few seconds
    (credentials.provider)."""

    form = RegistryCredentialForm
    list_display = ("registry", "username", "is_enabled", "updated_at")
    list_filter = ("is_enabled",)
    search_fields = ("registry", "username")
    fields = ("registry", "username", "password", "description", "is_enabled", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: RegistryCredential, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        admin_credentials_forget()

    def delete_model(self, request: HttpRequest, obj: RegistryCredential) -> None:
        super().delete_model(request, obj)
        admin_credentials_forget()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RegistryCredential]) -> None:
        super().delete_queryset(request, queryset)
        admin_credentials_forget()
