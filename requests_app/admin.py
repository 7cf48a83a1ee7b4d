"""Operators' view of container requests: find by token, image, fingerprint or caller; revoke (action or button).

Every record here is written by the service, never by hand: the pages are read-only (no Save buttons);
revoking is the one operation, gated by the change permission.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from requests_app.models import ContainerRequest, GeneratedDocument, InjectedLayer, LayerDownload
from requests_app.services import container_request_revoke
from wave_site.admin import short_time, truncated
from wave_site.admin_scale import IndexedValuesFilter, LargeTableAdmin
from wave_site.errors import UnknownResource
from wave_site.redact import redact_url

STATE_BADGE = '<span class="wave-state wave-state-{}">{}</span>'


def request_state(obj: ContainerRequest) -> str:
    """active, expired or revoked: what the state filter selects and the state column shows."""
    if obj.revoked_at is not None:
        return "revoked"
    return "active" if obj.is_active() else "expired"


def shown_location(url: str) -> str:
    """A layer's location as operators see it: no user info or signatures (wave_site.redact)."""
    return redact_url(url) if url else "data:"


def download_link(download: LayerDownload | None) -> SafeString | str:
    if download is None:
        return "-"
    url = reverse("admin:requests_app_layerdownload_change", args=[download.pk])
    return format_html('<a href="{}">{} (attempts: {})</a>', url, download.state, download.attempts)


class InjectedLayerColumns:
    """The columns an injected layer shows wherever it is listed: its location redacted, its download's state."""

    @admin.display(description="location")
    def location(self, obj: InjectedLayer) -> str:
        return shown_location(obj.url)

    @admin.display(description="download")
    def download_state(self, obj: InjectedLayer) -> SafeString | str:
        return download_link(obj.download)


class InjectedLayerInline(InjectedLayerColumns, admin.TabularInline):
    model = InjectedLayer
    extra = 0
    can_delete = False
    fields = ("position", "kind", "location", "gzip_digest", "gzip_size", "tar_digest", "state", "download_state",
              "failure_reason")  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[InjectedLayer]:
        return super().get_queryset(request).select_related("download")

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
class ContainerRequestAdmin(LargeTableAdmin):
    # Fits 1400 px with the filters: the target image is the token plus the source, so it is on the page only.
    list_display = ("token", "image", "caller", "created", "expires", "state")
    list_filter = (StateFilter, "api_version", ("platform", IndexedValuesFilter), "created_at")
    # Each one indexed, so that a search is a bitmap OR of index scans, never a read of the whole table: exact
    # values on btree indexes, any part of the image on a trigram index, the start of a caller's name or e-mail
    # in any case on an index of its upper case (both Postgres only: migration 0007).
    search_fields = ("token__exact", "source_image__icontains", "fingerprint__exact", "user_name__istartswith",
                     "user_email__istartswith")  # fmt: skip
    search_help_text = (
        "A token or fingerprint (exact), any part of the source image, the start of a Tower user name or e-mail."
    )
    date_hierarchy = "created_at"
    inlines = [InjectedLayerInline]
    actions = ["revoke"]
    readonly_fields = [*(field.name for field in ContainerRequest._meta.fields), "state"]
    fieldsets = [
        (None, {"fields": ["token", "api_version", "source_image", "target_image", "platform", "container_config"]}),
        ("Digests served", {"fields": ["source_digest", "wave_digest"]}),
        ("Caller", {"fields": ["user_name", "user_email", "user_id", "client_ip", "tower_endpoint",
                               "tower_workspace_id", "tower_auth", "fingerprint", "client_timestamp"]}),
        ("Lifetime", {"fields": ["state", "created_at", "expires_at", "revoked_at", "build_id"]}),
    ]  # fmt: skip
    list_per_page = 50

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("requests_app.change_containerrequest"))

    @admin.display(description="image", ordering="source_image")
    def image(self, obj: ContainerRequest) -> SafeString:
        return truncated(obj.source_image)

    @admin.display(description="caller")
    def caller(self, obj: ContainerRequest) -> SafeString:
        """The Tower user's name when one was identified, else the client's address."""
        return truncated(obj.user_name or obj.client_ip or "-", "wave-truncate wave-short")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ContainerRequest) -> str:
        return short_time(obj.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: ContainerRequest) -> str:
        return short_time(obj.expires_at)

    @admin.display(description="state")
    def state(self, obj: ContainerRequest) -> SafeString:
        name = request_state(obj)
        return format_html(STATE_BADGE, name, name)

    def get_urls(self) -> list[URLPattern]:
        revoke = path(
            "<path:object_id>/revoke/",
            self.admin_site.admin_view(require_POST(self.revoke_view)),
            name="requests_app_containerrequest_revoke",
        )
        return [revoke, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        can_revoke = obj is not None and obj.is_active() and self.has_revoke_permission(request)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_revoke": can_revoke})

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """The request page's Revoke button: the same service as the list's action."""
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            self.message_user(request, f"No container request with ID {object_id!r}.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:requests_app_containerrequest_changelist"))
        try:
            container_request_revoke(token=obj.token)
        except UnknownResource:
            self.message_user(request, f"Token {obj.token} was already expired or revoked.", messages.WARNING)
        else:
            self.message_user(request, f"Token {obj.token} revoked: pulls with it are refused.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:requests_app_containerrequest_change", args=[obj.pk]))

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ContainerRequest]) -> None:
        revoked = 0
        for token in queryset.values_list("token", flat=True):
            try:
                container_request_revoke(token=token)
                revoked += 1
            except UnknownResource:
                continue  # already expired or revoked
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)


# The URL redacted, the download as a link to its page.
LAYER_FIELDS_SHOWN = {"url": "location", "download": "download_state"}
LAYER_FIELDS = InjectedLayer._meta.fields


@admin.register(InjectedLayer)
class InjectedLayerAdmin(InjectedLayerColumns, LargeTableAdmin):
    list_display = ("digest", "request_token", "position", "kind", "gzip_size", "state", "reason")
    list_filter = ("state", "kind")
    search_fields = ("gzip_digest__exact", "tar_digest__exact")  # and a request's token: get_search_results
    search_help_text = "A layer's gzip or tar digest, or its request's token (exact)."
    list_select_related = ("request", "download")
    fields = readonly_fields = tuple(LAYER_FIELDS_SHOWN.get(field.name, field.name) for field in LAYER_FIELDS)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[InjectedLayer], search_term: str
    ) -> tuple[QuerySet[InjectedLayer], bool]:
        """A digest, or the token of the layers' request: looked up first, so that every arm of the OR is an
        index of this table (a condition on the joined request's token would read every layer)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        by_token = list(ContainerRequest.objects.filter(token=term).values_list("pk", flat=True))
        return queryset.filter(Q(gzip_digest=term) | Q(tar_digest=term) | Q(request_id__in=by_token)), False

    @admin.display(description="gzip digest", ordering="gzip_digest")
    def digest(self, obj: InjectedLayer) -> SafeString:
        return truncated(obj.gzip_digest, "wave-truncate wave-digest")

    @admin.display(description="request", ordering="request__token")
    def request_token(self, obj: InjectedLayer) -> SafeString:
        url = reverse("admin:requests_app_containerrequest_change", args=[obj.request_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.request.source_image, obj.request.token)

    @admin.display(description="failure reason")
    def reason(self, obj: InjectedLayer) -> SafeString:
        return truncated(obj.failure_reason)


@admin.register(LayerDownload)
class LayerDownloadAdmin(LargeTableAdmin):
    """Durable layer downloads: one per exact layer, shared by the layers that name it (requests_app.downloads)."""

    list_display = ("pk", "gzip_digest", "location", "state", "attempts", "heartbeat_at", "created_at", "finished_at",
                    "joined")  # fmt: skip
    list_filter = ("state",)
    search_fields = ("gzip_digest__exact", "tar_digest__exact")
    search_help_text = "A layer's gzip or tar digest (exact)."
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "location", "gzip_digest", "gzip_size", "tar_digest", "state", "attempts", "claimed_by", "created_at",
        "queued_at", "started_at", "heartbeat_at", "finished_at", "failure_reason", "blob_key", "joined",
    )  # fmt: skip
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[LayerDownload]:
        queryset: QuerySet[LayerDownload] = super().get_queryset(request)
        # Counted for the rows of the page only, not grouped over the whole table.
        joined = InjectedLayer.objects.filter(download=OuterRef("pk")).order_by().values("download")
        count = Subquery(joined.annotate(count=Count("pk")).values("count"), output_field=IntegerField())
        return queryset.annotate(joined_count=count)

    @admin.display(description="location")
    def location(self, obj: LayerDownload) -> SafeString:
        return truncated(redact_url(obj.url))

    @admin.display(description="layers joined")
    def joined(self, obj: LayerDownload) -> int:
        return int(getattr(obj, "joined_count", None) or 0)


@admin.register(GeneratedDocument)
class GeneratedDocumentAdmin(LargeTableAdmin):
    """Configs and manifests the proxy generated and serves by digest."""

    list_display = ("digest", "media_type", "size", "created_at")
    list_filter = (("media_type", IndexedValuesFilter),)
    search_fields = ("digest__exact",)
    search_help_text = "A document's digest (exact)."
    readonly_fields = [field.name for field in GeneratedDocument._meta.fields]
