"""Operators' view of container requests: find by token, image or fingerprint; revoke."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from requests_app.models import ContainerRequest, GeneratedDocument, InjectedLayer
from requests_app.services import container_request_revoke
from wave_site.errors import NotFound


class InjectedLayerInline(admin.TabularInline):
    model = InjectedLayer
    extra = 0
    can_delete = False
    fields = ("position", "kind", "url", "gzip_digest", "gzip_size", "tar_digest", "state", "failure_reason")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: ContainerRequest | None = None) -> bool:
        return False


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ContainerRequest]) -> QuerySet[ContainerRequest]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True, expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ContainerRequest)
class ContainerRequestAdmin(admin.ModelAdmin):
    list_display = ("token", "source_image", "target_image", "user_display", "created_at", "expires_at", "state")
    list_filter = (StateFilter, "api_version", "platform", "created_at")
    search_fields = ("=token", "source_image", "=fingerprint")
    date_hierarchy = "created_at"
    inlines = [InjectedLayerInline]
    actions = ["revoke"]
    readonly_fields = [field.name for field in ContainerRequest._meta.fields]
    fieldsets = [
        (None, {"fields": ["token", "api_version", "source_image", "target_image", "platform", "container_config"]}),
        ("Digests served", {"fields": ["source_digest", "wave_digest"]}),
        ("Caller", {"fields": ["client_ip", "user_id", "user_name", "tower_endpoint", "tower_workspace_id",
                               "fingerprint", "client_timestamp"]}),
        ("Lifetime", {"fields": ["created_at", "expires_at", "revoked_at", "build_id"]}),
    ]  # fmt: skip
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="user")
    def user_display(self, obj: ContainerRequest) -> str:
        return obj.user_name or (obj.client_ip or "")

    @admin.display(description="state")
    def state(self, obj: ContainerRequest) -> str:
        if obj.revoked_at is not None:
            return format_html('<span style="color:#a00">{}</span>', "revoked")
        if not obj.is_active():
            return "expired"
        return "active"

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ContainerRequest]) -> None:
        revoked = 0
        for token in queryset.values_list("token", flat=True):
            try:
                container_request_revoke(token=token)
                revoked += 1
            except NotFound:
                continue  # already expired or revoked
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)


@admin.register(InjectedLayer)
class InjectedLayerAdmin(admin.ModelAdmin):
    list_display = ("gzip_digest", "request", "position", "kind", "gzip_size", "state", "failure_reason")
    list_filter = ("state", "kind")
    search_fields = ("=gzip_digest", "=tar_digest", "request__token")
    list_select_related = ("request",)
    readonly_fields = [field.name for field in InjectedLayer._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(GeneratedDocument)
class GeneratedDocumentAdmin(admin.ModelAdmin):
    """Configs and manifests the proxy generated and serves by digest."""

    list_display = ("digest", "media_type", "size", "created_at")
    list_filter = ("media_type",)
    search_fields = ("=digest",)
    readonly_fields = [field.name for field in GeneratedDocument._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
